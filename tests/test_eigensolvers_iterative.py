"""Iterative forward eigensolvers (ARPACK, PRIMME, LOBPCG) against torch.linalg.eigh on the dense matrix."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import torch

import eigrad
from eigrad.eigensolvers import LOBPCG, Arpack, Primme, choose_solver, run_solver
from eigrad.eigensolvers._auto import primme_available
from eigrad.operators import DenseOperator, LinearOperator, OperatorSpec

HAVE_PRIMME = primme_available()
needs_primme = pytest.mark.skipif(not HAVE_PRIMME, reason="primme is not installed")


class CSR(LinearOperator):
    """A scipy CSR matrix seen only through ``matmat`` (matrix-free for the solvers)."""

    def __init__(self, M, dtype=torch.float64):
        self.M = sp.csr_matrix(M).astype(np.float64 if dtype == torch.float64 else np.float32)
        self.shape, self.dtype, self.device = tuple(self.M.shape), dtype, torch.device("cpu")
        self.products = 0

    def matmat(self, X):
        self.products += X.shape[-1]
        return torch.from_numpy(np.asarray(self.M @ X.numpy()))

    def flatten(self):
        return (), OperatorSpec(lambda ts: self)


def laplacian(shape):
    """Dirichlet finite-difference Laplacian on the unit box with ``shape`` interior points."""
    L = None
    for i, n in enumerate(shape):
        T = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1]) * (n + 1) ** 2
        factors = [sp.identity(m) for m in shape]
        factors[i] = T
        K = factors[0]
        for F in factors[1:]:
            K = sp.kron(K, F)
        L = K if L is None else L + K
    return sp.csr_matrix(L)


def problem(shape, seed=0, potential=50.0):
    L = laplacian(shape)
    v = np.random.default_rng(seed).uniform(0, potential, L.shape[0])
    return sp.csr_matrix(L + sp.diags(v))


def reference(M, Bm=None):
    Md = M.toarray()
    return scipy.linalg.eigh(Md) if Bm is None else scipy.linalg.eigh(Md, Bm.toarray())


SOLVERS = [
    pytest.param(Arpack(), id="arpack"),
    pytest.param(LOBPCG(), id="lobpcg"),
    pytest.param(Primme(), id="primme", marks=needs_primme),
]


def check_solution(sol, M, k, g, largest, Bm=None, rtol=1e-8):
    w, V = reference(M, Bm)
    n = M.shape[0]
    lo, hi = (n - k, n) if largest else (0, k)
    glo, ghi = (n - k - g, n - k) if largest else (k, k + g)
    scale = np.abs(w).max()
    assert sol.converged, sol.status
    assert sol.eigenvalues.shape == (k,) and sol.eigenvectors.shape == (n, k)
    assert sol.guard_eigenvalues.shape == (g,)
    np.testing.assert_allclose(sol.eigenvalues.numpy(), w[lo:hi], rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(sol.guard_eigenvalues.numpy(), w[glo:ghi], rtol=0, atol=1e-9 * scale)
    assert bool((sol.eigenvalues[1:] >= sol.eigenvalues[:-1]).all())
    X = sol.eigenvectors.numpy()
    BX = X if Bm is None else Bm @ X
    np.testing.assert_allclose(X.T @ BX, np.eye(k), atol=1e-10)
    # reported residual norms are the true ones and meet the documented criterion
    R = M @ X - BX * sol.eigenvalues.numpy()
    rn = np.linalg.norm(R, axis=0)
    np.testing.assert_allclose(sol.residual_norms.numpy(), rn, rtol=1e-6, atol=1e-12 * scale)
    assert np.all(rn <= rtol * np.abs(sol.eigenvalues.numpy()) * np.linalg.norm(BX, axis=0) * 1.0001)
    # the eigenvectors span the reference eigenspace (no cluster is cut at k here)
    P = V[:, lo:hi] @ V[:, lo:hi].T @ (np.eye(n) if Bm is None else Bm.toarray())
    np.testing.assert_allclose(P @ X, X, atol=1e-6)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shape", [(300,), (18, 18), (7, 8, 9)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("largest", [False, True], ids=["smallest", "largest"])
def test_standard_matches_eigh(solver, shape, largest):
    M = problem(shape)
    A = CSR(M)
    sol = solver(A, 5, largest=largest, n_guard=2)
    check_solution(sol, M, 5, 2, largest)
    assert sol.n_matvec >= A.products - 5 > 0  # reported applications cover the work done


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("mass", ["diagonal", "sparse"])
@pytest.mark.parametrize("largest", [False, True], ids=["smallest", "largest"])
def test_generalized_matches_eigh(solver, mass, largest):
    M = problem((12, 12), seed=1)
    n = M.shape[0]
    if mass == "diagonal":
        Bm = sp.diags(np.random.default_rng(2).uniform(0.5, 2.0, n))
    else:  # P1 mass matrix of the 2D grid (tensor product of 1D ones)
        m1 = sp.diags([np.ones(11), 4 * np.ones(12), np.ones(11)], [-1, 0, 1]) / 6
        Bm = sp.kron(m1, m1) * 3.0
    Bm = sp.csr_matrix(Bm)
    sol = solver(CSR(M), 4, B=CSR(Bm), largest=largest, n_guard=1)
    check_solution(sol, M, 4, 1, largest, Bm=Bm)


@pytest.mark.parametrize("solver", SOLVERS)
def test_degenerate_square_grid(solver):
    """The 2D square-grid Laplacian has exact pairs; k = 6 closes {1}, {2, 3}, {4}, {5, 6}."""
    M = laplacian((20, 20))
    w, V = reference(M)
    assert abs(w[1] - w[2]) < 1e-9 * w[2] and abs(w[4] - w[5]) < 1e-9 * w[5]  # the pairs exist
    sol = solver(CSR(M), 6, n_guard=1)
    assert sol.converged
    np.testing.assert_allclose(sol.eigenvalues.numpy(), w[:6], rtol=1e-10)
    X = sol.eigenvectors.numpy()
    for lo, hi in [(1, 3), (4, 6)]:  # the eigenspace of each pair, not just some vectors in it
        P_ref = V[:, lo:hi] @ V[:, lo:hi].T
        P = X[:, lo:hi] @ X[:, lo:hi].T
        np.testing.assert_allclose(P, P_ref, atol=1e-7)
    # k = 7 cuts the pair {7, 8}: the guard carries its partner
    sol = solver(CSR(M), 7, n_guard=1)
    np.testing.assert_allclose(sol.guard_eigenvalues.numpy(), w[7:8], rtol=1e-10)
    np.testing.assert_allclose(sol.eigenvalues[-1].item(), w[6], rtol=1e-10)


def test_lobpcg_preconditioner_is_applied_and_pays_off():
    M = problem((24, 24), seed=3)
    A = CSR(M)
    shifted = torch.from_numpy(laplacian((24, 24)).toarray())
    T = torch.linalg.inv(shifted)  # exact inverse of the Laplacian part
    calls = []

    def precond(X):
        calls.append(X.shape[-1])
        return T @ X

    plain = LOBPCG()(A, 6, n_guard=1)
    pre = LOBPCG()(A, 6, n_guard=1, preconditioner=precond)
    assert calls, "the preconditioner was never called"
    assert pre.n_iter * 3 < plain.n_iter, (pre.n_iter, plain.n_iter)
    np.testing.assert_allclose(pre.eigenvalues.numpy(), plain.eigenvalues.numpy(), rtol=1e-10)
    # an operator works as preconditioner too, and PRIMME takes the same
    pre_op = LOBPCG()(A, 6, n_guard=1, preconditioner=DenseOperator(T))
    assert pre_op.n_iter == pre.n_iter


@needs_primme
def test_primme_preconditioner_pays_off():
    M = problem((24, 24), seed=3)
    T = torch.linalg.inv(torch.from_numpy(laplacian((24, 24)).toarray()))
    plain = Primme()(CSR(M), 6, n_guard=1)
    pre = Primme()(CSR(M), 6, n_guard=1, preconditioner=lambda X: T @ X)
    assert pre.n_matvec * 2 < plain.n_matvec, (pre.n_matvec, plain.n_matvec)
    np.testing.assert_allclose(pre.eigenvalues.numpy(), plain.eigenvalues.numpy(), rtol=1e-10)


@pytest.mark.parametrize("solver_cls", [Arpack, LOBPCG, pytest.param(Primme, marks=needs_primme)])
def test_nonconvergence_raises_or_warns(solver_cls):
    M = problem((20, 20))
    tiny = {"maxiter": 2}
    with pytest.raises(eigrad.ConvergenceError, match="did not converge") as info:
        solver_cls(**tiny)(CSR(M), 5, n_guard=1)
    best = info.value.solution
    assert best is not None and best.eigenvalues.shape == (5,) and best.eigenvectors.shape == (400, 5)
    assert not best.converged and "did not converge" in best.status
    with pytest.warns(eigrad.ConvergenceWarning, match="did not converge"):
        sol = solver_cls(on_failure="warn", **tiny)(CSR(M), 5, n_guard=1)
    assert not sol.converged
    assert torch.isfinite(sol.eigenvalues).all()
    # the reported residual norms are the true ones: they show the failure
    w = np.linalg.eigvalsh(M.toarray())[:5]
    X = sol.eigenvectors.numpy()
    rn = np.linalg.norm(M @ X - X * sol.eigenvalues.numpy(), axis=0)
    np.testing.assert_allclose(sol.residual_norms.numpy(), rn, rtol=1e-6)
    assert rn.max() > 1e-8 * w.max()


def test_x0_is_respected():
    M = problem((20, 20), seed=4)
    w, V = reference(M)
    X0 = torch.from_numpy(V[:, :6].copy())
    sol = LOBPCG()(CSR(M), 5, n_guard=1, X0=X0)
    assert sol.n_iter == 1  # exact start: converged at the first check
    np.testing.assert_allclose(sol.eigenvalues.numpy(), w[:5], rtol=1e-12)
    cold = Arpack()(CSR(M), 5, n_guard=1)
    warm = Arpack()(CSR(M), 5, n_guard=1, X0=X0)
    assert warm.n_matvec < cold.n_matvec
    # a rank-deficient X0 (repeated columns) is repaired, not fatal
    dup = LOBPCG()(CSR(M), 5, n_guard=1, X0=torch.cat([X0[:, :3], X0[:, :3]], dim=-1))
    np.testing.assert_allclose(dup.eigenvalues.numpy(), w[:5], rtol=1e-10)


@needs_primme
def test_primme_matvec_cap():
    with pytest.raises(eigrad.ConvergenceError, match="max_matvecs=20"):
        Primme(max_matvecs=20)(CSR(problem((20, 20))), 5, n_guard=1)


@needs_primme
def test_primme_x0_is_respected():
    M = problem((20, 20), seed=4)
    w, V = reference(M)
    cold = Primme()(CSR(M), 5, n_guard=1)
    warm = Primme()(CSR(M), 5, n_guard=1, X0=torch.from_numpy(V[:, :6].copy()))
    assert warm.n_matvec < cold.n_matvec


@pytest.mark.parametrize("solver", SOLVERS)
def test_no_global_rng_change_and_deterministic(solver):
    M = problem((12, 12))
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = solver(CSR(M), 4, n_guard=1)
    b = solver(CSR(M), 4, n_guard=1)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert np_state[0] == after[0] and np.array_equal(np_state[1], after[1]) and np_state[2:] == after[2:]
    assert torch.equal(a.eigenvalues, b.eigenvalues) and torch.equal(a.eigenvectors, b.eigenvectors)


@pytest.mark.parametrize("solver", SOLVERS)
def test_float32(solver):
    M = problem((16, 16))
    sol = solver(CSR(M, dtype=torch.float32), 4, n_guard=1)
    assert sol.converged and sol.eigenvalues.dtype == torch.float32 and sol.eigenvectors.dtype == torch.float32
    w = np.linalg.eigvalsh(M.toarray())
    np.testing.assert_allclose(sol.eigenvalues.numpy(), w[:4], rtol=1e-4)


def test_lobpcg_batched_dense_and_broadcast_B():
    As = torch.stack([torch.from_numpy(problem((9, 9), seed=s).toarray()) for s in range(3)])  # (3, 81, 81)
    d = torch.linspace(1.0, 2.0, 81, dtype=torch.float64)
    B = torch.diag(d)
    sol = LOBPCG()(DenseOperator(As), 4, B=DenseOperator(B), n_guard=1)
    assert sol.eigenvalues.shape == (3, 4) and sol.eigenvectors.shape == (3, 81, 4) and sol.scale.shape == (3,)
    for i in range(3):
        w = scipy.linalg.eigh(As[i].numpy(), B.numpy(), eigvals_only=True)
        np.testing.assert_allclose(sol.eigenvalues[i].numpy(), w[:4], rtol=1e-9)
        np.testing.assert_allclose(sol.guard_eigenvalues[i].numpy(), w[4:5], rtol=1e-9)
    X = sol.eigenvectors
    torch.testing.assert_close(X.transpose(-1, -2) @ B @ X, torch.eye(4, dtype=torch.float64).expand(3, 4, 4))


def test_tiny_problems_fall_back_to_dense():
    M = problem((10,))
    for solver in [Arpack(), LOBPCG()]:
        sol = solver(CSR(M), 8, n_guard=2)
        np.testing.assert_allclose(sol.eigenvalues.numpy(), np.linalg.eigvalsh(M.toarray())[:8], rtol=1e-12)


def test_choice_table_and_run_solver():
    A = CSR(problem((12, 12)))
    assert isinstance(choose_solver(A), Arpack)
    assert isinstance(choose_solver(A, preconditioner=lambda X: X), Primme if HAVE_PRIMME else LOBPCG)
    assert isinstance(choose_solver(A, B=A), Primme if HAVE_PRIMME else LOBPCG)
    batched = DenseOperator(torch.eye(5, dtype=torch.float64).expand(2, 5, 5))
    assert isinstance(choose_solver(batched), LOBPCG)
    sol = run_solver("auto", A, 3, n_guard=1)
    ref = run_solver("lobpcg", A, 3, n_guard=1)
    np.testing.assert_allclose(sol.eigenvalues.numpy(), ref.eigenvalues.numpy(), rtol=1e-10)
    sol = run_solver(LOBPCG(rtol=1e-6), A, 3)
    assert sol.converged
    with pytest.raises(ValueError, match="not an iterative eigensolver"):
        run_solver("lanczos", A, 3)
    with pytest.raises(TypeError, match="eigensolver instance"):
        run_solver(3, A, 3)


def test_user_errors_say_what_to_pass():
    A = CSR(problem((12, 12)))
    with pytest.raises(ValueError, match="rtol"):
        LOBPCG(rtol=-1.0)
    with pytest.raises(ValueError, match="on_failure"):
        Arpack(on_failure="ignore")
    with pytest.raises(ValueError, match="block_size"):
        LOBPCG(block_size=0)
    with pytest.raises(ValueError, match="maxiter"):
        Arpack(maxiter=0)
    with pytest.raises(ValueError, match="preconditioner"):
        Arpack()(A, 3, preconditioner=lambda X: X)
    batched = DenseOperator(torch.eye(50, dtype=torch.float64).expand(2, 50, 50))
    with pytest.raises(ValueError, match="lobpcg"):
        Arpack()(batched, 3)
    with pytest.raises(ValueError, match="same shape"):
        LOBPCG()(A, 3, preconditioner=lambda X: X[:-1])
    with pytest.raises(TypeError, match="preconditioner"):
        LOBPCG()(A, 3, preconditioner="jacobi")


def test_primme_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "primme", None)  # makes `import primme` fail
    with pytest.raises(ImportError, match="pip install primme"):
        Primme()(CSR(problem((12, 12))), 3)


def test_lobpcg_largest_with_negative_spectrum_and_zero_eigenvalue():
    """Shifted so the spectrum straddles zero and contains 0 exactly: the residual floor keeps it attainable."""
    M = laplacian((15, 15))
    w = np.linalg.eigvalsh(M.toarray())
    S = sp.csr_matrix(M - w[2] * sp.identity(M.shape[0]))  # eigenvalue 0 at index 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = LOBPCG()(CSR(S), 5, n_guard=1)
    np.testing.assert_allclose(sol.eigenvalues.numpy(), w[:5] - w[2], atol=1e-9 * np.abs(w).max())
    sol = LOBPCG()(CSR(-S), 4, largest=True, n_guard=1)
    np.testing.assert_allclose(sol.eigenvalues.numpy(), (w[2] - w[:4])[::-1], atol=1e-9 * np.abs(w).max())
