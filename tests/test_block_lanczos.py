"""BlockLanczos (eigensolvers/_block_lanczos.py): forward against dense eigh, every copy of repeated
eigenvalues, gradients against the dense route and finite differences, complex, failures, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import eigrad
from eigrad import ConvergenceError
from eigrad.eigensolvers import BlockLanczos, choose_solver
from eigrad.operators import LinearOperator, OperatorSpec


def lap3d(N):
    T = sp.diags([-np.ones(N - 1), 2 * np.ones(N), -np.ones(N - 1)], [-1, 0, 1])
    Id = sp.identity(N)
    return sp.csr_matrix(sp.kron(sp.kron(T, Id), Id) + sp.kron(sp.kron(Id, T), Id) + sp.kron(sp.kron(Id, Id), T))


class Mat(LinearOperator):
    def __init__(self, M):
        self.M = torch.as_tensor(M)
        self.shape, self.dtype, self.device = tuple(self.M.shape), self.M.dtype, torch.device("cpu")

    def matmat(self, X):
        return self.M @ X

    def flatten(self):
        return (), OperatorSpec(lambda ts: self)


def random_spd(n, seed, dtype=torch.float64, spectrum=None):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=dtype))
    d = torch.linspace(1, 10, n, dtype=torch.float64) if spectrum is None else spectrum
    return (Q * d.to(dtype)) @ Q.mH


@pytest.mark.parametrize("largest", [False, True])
def test_forward_matches_dense_eigh(largest):
    A = random_spd(300, 0)
    sol = BlockLanczos()(Mat(A), 5, largest=largest)
    w = torch.linalg.eigvalsh(A)
    ref = w[-5:] if largest else w[:5]
    torch.testing.assert_close(sol.eigenvalues, ref, rtol=1e-10, atol=0)
    X = sol.eigenvectors
    torch.testing.assert_close(X.mT @ X, torch.eye(5, dtype=X.dtype), atol=1e-10, rtol=0)
    assert sol.converged and sol.n_matvec > 0


@pytest.mark.parametrize("N", [8, 10])
def test_all_copies_of_cubic_levels(N):
    L = Mat(torch.from_numpy(lap3d(N).toarray()))
    w = torch.linalg.eigvalsh(L.M)
    sol = BlockLanczos()(L, 7, n_guard=1)  # levels 1, 3, 3
    torch.testing.assert_close(sol.eigenvalues, w[:7], rtol=1e-9, atol=0)


def test_cluster_wider_than_the_block_is_found():
    # a 6-fold lowest eigenvalue with block size 2: the block is widened until it is wider than the cluster
    d = torch.cat([torch.ones(6), torch.linspace(2, 10, 294, dtype=torch.float64)])
    A = random_spd(300, 1, spectrum=d)
    sol = BlockLanczos(block_size=2)(Mat(A), 8)
    torch.testing.assert_close(sol.eigenvalues, torch.linalg.eigvalsh(A)[:8], rtol=1e-9, atol=0)


def test_complex_hermitian():
    A = random_spd(240, 2, dtype=torch.complex128)
    sol = BlockLanczos()(Mat(A), 4)
    torch.testing.assert_close(sol.eigenvalues, torch.linalg.eigvalsh(A)[:4], rtol=1e-10, atol=0)
    X = sol.eigenvectors
    r = torch.linalg.vector_norm(A @ X - X * sol.eigenvalues, dim=0)
    assert float(r.max()) < 1e-6


def test_tiny_problem_is_dense():
    A = random_spd(40, 3)
    sol = BlockLanczos()(Mat(A), 3)
    torch.testing.assert_close(sol.eigenvalues, torch.linalg.eigvalsh(A)[:3], rtol=1e-10, atol=0)


def test_nonconvergence_raises_and_warns():
    A = Mat(torch.from_numpy(lap3d(10).toarray()))
    with pytest.raises(ConvergenceError) as err:
        BlockLanczos(maxiter=1, ncv=20)(A, 6)
    assert "BlockLanczos" in str(err.value) and err.value.solution is not None
    with pytest.warns(eigrad.ConvergenceWarning):
        sol = BlockLanczos(maxiter=1, ncv=20, on_failure="warn")(A, 6)
    assert not sol.converged


def test_refusals_say_what_to_pass():
    A = Mat(random_spd(200, 4))
    with pytest.raises(ValueError, match="mass matrix B"):
        BlockLanczos()(A, 3, B=Mat(torch.eye(200, dtype=torch.float64)))
    with pytest.raises(ValueError, match="preconditioner"):
        BlockLanczos()(A, 3, preconditioner=lambda X: X)
    batched = Mat(torch.stack([random_spd(200, 5)] * 2))
    with pytest.raises(ValueError, match="one problem at a time"):
        BlockLanczos()(batched, 3)
    with pytest.raises(ValueError):
        BlockLanczos(block_size=1)
    with pytest.raises(ValueError, match="block-lanczos"):
        eigrad.eigsh(A, 3, solver="block-lancos")


def test_nonfinite_operator_is_reported():
    class Bad(Mat):
        def matmat(self, X):
            Y = self.M @ X
            Y[0] = float("nan")
            return Y

    with pytest.raises(ValueError, match="NaN or inf"):
        BlockLanczos()(Bad(random_spd(200, 6)), 3)


def test_deterministic_and_global_rng_untouched():
    A = Mat(random_spd(200, 7))
    state = torch.get_rng_state()
    a = BlockLanczos(seed=3)(A, 3)
    b = BlockLanczos(seed=3)(A, 3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.eigenvalues, b.eigenvalues)


def _potential_problem(N, seed):
    L = torch.from_numpy(lap3d(N).toarray())
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(N**3, generator=g, dtype=torch.float64)
    return L, v


def _projector_loss(L, v, k, solver, W):
    A = eigrad.FunctionOperator(lambda X, v: L @ X + v.unsqueeze(-1) * X, (v,), (L.shape[0],) * 2)
    _, X = eigrad.eigsh(A, k, solver=solver)
    return ((X @ X.mT) * W).sum()


def test_gradient_matches_dense_route():
    L, v = _potential_problem(8, 0)
    W = torch.from_numpy(np.random.default_rng(0).standard_normal((512, 512)))
    W = W + W.T
    grads = []
    for solver in ("block-lanczos", "dense"):
        vv = v.clone().requires_grad_()
        if solver == "dense":
            loss = ((lambda X: ((X @ X.mT) * W).sum())(torch.linalg.eigh(L + torch.diag(vv))[1][:, :4]))
        else:
            loss = _projector_loss(L, vv, 4, solver, W)
        (gv,) = torch.autograd.grad(loss, vv)
        grads.append(gv)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-7)


def test_gradient_at_repeated_levels_matches_fd():
    # symmetric potential (zero): levels 1, 3 copies; the projector onto all k=4 is gauge invariant
    L = torch.from_numpy(lap3d(7).toarray())
    v = torch.zeros(343, dtype=torch.float64, requires_grad=True)
    W = torch.from_numpy(np.random.default_rng(1).standard_normal((343, 343)))
    W = W + W.T
    loss = _projector_loss(L, v, 4, "block-lanczos", W)
    (gv,) = torch.autograd.grad(loss, v)
    d = torch.from_numpy(np.random.default_rng(2).standard_normal(343))
    h = 1e-5
    with torch.no_grad():
        fd = (_projector_loss(L, v + h * d, 4, "block-lanczos", W) - _projector_loss(L, v - h * d, 4, "block-lanczos", W)) / (2 * h)
    assert abs(float(gv @ d) - float(fd)) <= 1e-5 * max(1.0, abs(float(fd)))


def test_eigsh_ex_reports_the_solver():
    A = Mat(torch.from_numpy(lap3d(8).toarray()))
    L, X, info = eigrad.eigsh_ex(A, 4, solver="block-lanczos")
    assert info.converged and info.matvecs > 0
    assert "BlockLanczos" in str(info.solver)


def test_solvers_namespace_and_auto_table():
    assert eigrad.solvers.BlockLanczos is BlockLanczos
    from eigrad.eigensolvers import Arpack

    class Diag(LinearOperator):
        def __init__(self, n, dtype=torch.float64):
            self.d = torch.arange(1, n + 1, dtype=torch.float64).to(dtype)
            self.shape, self.dtype, self.device = (n, n), dtype, torch.device("cpu")

        def matmat(self, X):
            return self.d.unsqueeze(-1) * X

    assert isinstance(choose_solver(Diag(8000)), BlockLanczos)
    assert isinstance(choose_solver(Diag(8000, torch.complex128)), BlockLanczos)
    assert isinstance(choose_solver(Diag(7999)), Arpack)
    assert not isinstance(choose_solver(Diag(8000), B=Diag(8000)), BlockLanczos)
    assert not isinstance(choose_solver(Diag(8000), preconditioner=lambda X: X), BlockLanczos)


def test_many_fold_cluster_with_a_small_basis():
    # a 10-fold cluster, block 2 and a small basis: widened repeatedly, the basis grows with the block
    d = torch.cat([torch.full((10,), 0.5), torch.linspace(2, 10, 290, dtype=torch.float64)])
    A = random_spd(300, 9, spectrum=d)
    sol = BlockLanczos(block_size=2, ncv=16)(Mat(A), 11)
    torch.testing.assert_close(sol.eigenvalues, torch.linalg.eigvalsh(A)[:11], rtol=1e-9, atol=0)
