"""Spectral functions and λ_max objectives on operators (issue 5, items 2 and 5).

``funm``/``projector`` on torch sparse matrices, FunctionOperator and
ModuleOperator against the dense path (values and gradients, clusters inside
k, B ≠ I), the MINRES backward against central finite differences, the
gradient of ``λ_max`` (and ``spectral_norm``) against closed forms, and the
report of a repeated top eigenvalue (set-valued derivative).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import eigrad
from eigrad.linsolve._minres import ProjectedMinres

from _operator_helpers import NoHandle, laplacian_2d, scipy_to_torch_csr
from _spectral_problems import planted

DT = torch.float64
# a triple and a pair inside k = 6, a gap of 0.6 to the rest
VALS = [0.5, 0.5, 0.5, 1.0, 1.7, 1.7] + list(np.linspace(2.3, 6.0, 34))
K = 6


def cotangent(n, seed=5):
    return torch.randn(n, n, dtype=DT, generator=torch.Generator().manual_seed(seed))


def sym_matmat(X, M):  # (M + Mᵀ)/2 X: the gradient w.r.t. M is then symmetric, as the dense path's
    return 0.5 * (M + M.mT) @ X


def as_sparse(A):
    """A dense symmetric matrix as a torch CSR tensor (every entry stored), values requiring grad."""
    S = A.detach().to_sparse_csr()
    vals = S.values().clone().requires_grad_(True)
    return torch.sparse_csr_tensor(S.crow_indices(), S.col_indices(), vals, S.shape), vals


def dense_reference(fun, A, B, C):
    """``fun(A, B)`` and the gradients of ``<C, fun(A, B)>`` by eigrad's dense path."""
    A = A.clone().requires_grad_(True)
    B = None if B is None else B.clone().requires_grad_(True)
    F = fun(A, B)
    grads = torch.autograd.grad((F * C).sum(), [A] + ([B] if B is not None else []))
    return F.detach(), grads


FUNS = {
    "exp": lambda A, B, **kw: eigrad.funm(A, torch.exp, K, B=B, **kw),
    "projector": lambda A, B, **kw: eigrad.projector(A, K, B=B, **kw),
}


@pytest.mark.parametrize("name", sorted(FUNS))
@pytest.mark.parametrize("solver", ["auto", NoHandle(), "lobpcg"], ids=["eigenbasis", "minres", "lobpcg"])
def test_sparse_matches_dense(name, solver):
    fun = FUNS[name]
    A, _ = planted(VALS, seed=1)
    C = cotangent(A.shape[-1])
    F_ref, (gA,) = dense_reference(fun, A, None, C)
    S, vals = as_sparse(A)
    F = fun(S, None, solver=solver)
    (gv,) = torch.autograd.grad((F * C).sum(), vals)
    tol = 1e-6 if solver == "lobpcg" else 1e-9
    torch.testing.assert_close(F, F_ref, atol=tol, rtol=0)
    torch.testing.assert_close(gv, gA.flatten(), atol=tol, rtol=0)  # every entry is stored


@pytest.mark.parametrize("name", sorted(FUNS))
@pytest.mark.parametrize("largest", [False, True])
def test_function_operator_generalized_matches_dense(name, largest):
    vals = VALS if not largest else [-v for v in VALS]  # the clusters at the top for largest=True
    A, B = planted(vals, seed=2, generalized=True)
    C = cotangent(A.shape[-1], seed=6)
    fun = FUNS[name]
    F_ref, (gA, gB) = dense_reference(lambda a, b: fun(a, b, largest=largest), A, B, C)
    M = A.clone().requires_grad_(True)
    Bs, bvals = as_sparse(B)
    op = eigrad.FunctionOperator(sym_matmat, (M,), tuple(A.shape))
    F = fun(op, Bs, largest=largest, solver=NoHandle())  # MINRES with B in the backward
    gM, gb = torch.autograd.grad((F * C).sum(), (M, bvals))
    torch.testing.assert_close(F, F_ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(gM, gA, atol=1e-8, rtol=0)
    torch.testing.assert_close(gb, gB.flatten(), atol=1e-8, rtol=0)


def test_module_operator_and_scipy():
    A, _ = planted(VALS, seed=3)
    n = A.shape[-1]
    C = cotangent(n, seed=7)
    F_ref, (gA,) = dense_reference(lambda a, b: eigrad.funm(a, torch.sin, K), A, None, C)

    class Sym(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.M = torch.nn.Parameter(A.clone())

        def forward(self, X):
            return sym_matmat(X, self.M)

    mod = Sym()
    F = eigrad.funm(eigrad.ModuleOperator(mod, (n, n)), torch.sin, K, solver=NoHandle())
    (gM,) = torch.autograd.grad((F * C).sum(), mod.M)
    torch.testing.assert_close(F, F_ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(gM, gA, atol=1e-8, rtol=0)
    # a scipy matrix: values only (no gradient)
    import scipy.sparse as sp

    F_sp = eigrad.funm(sp.csr_matrix(A.numpy()), torch.sin, K)
    torch.testing.assert_close(F_sp, F_ref, atol=1e-9, rtol=0)


def _grid_problem(m=6, seed=0):
    lap = eigrad.as_operator(scipy_to_torch_csr(laplacian_2d(m)))
    v0 = 0.3 * torch.rand(m * m, dtype=DT, generator=torch.Generator().manual_seed(seed))

    def op(v):
        return eigrad.FunctionOperator(lambda X, v: lap.matmat(X) + v.unsqueeze(-1) * X, (v,), (m * m, m * m))

    return op, v0


def test_projector_fd_through_minres():
    """Directional derivative of <C, P_k(Lap + diag v)> (MINRES backward) vs central differences."""
    op, v0 = _grid_problem()
    n = v0.shape[0]
    C = cotangent(n, seed=8)
    k = 4  # 1 + 2 (a near pair) + 1: ends in a gap
    loss = lambda v: (eigrad.projector(op(v), k, solver=NoHandle()) * C).sum()  # noqa: E731
    v = v0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(v), v)
    d = torch.randn(n, dtype=DT, generator=torch.Generator().manual_seed(9))
    h = 1e-5
    with torch.no_grad():
        fd = (loss(v0 + h * d) - loss(v0 - h * d)) / (2 * h)
    assert abs(float(g @ d) - float(fd)) <= 1e-6 * max(1.0, abs(float(fd)))
    # forward mode through the same solves
    _, jv = torch.func.jvp(loss, (v0,), (d,))
    assert abs(float(jv) - float(fd)) <= 1e-6 * max(1.0, abs(float(fd)))


def test_cut_cluster_reported_and_full_k():
    A, _ = planted(VALS, seed=4)
    S, _ = as_sparse(A)
    with pytest.warns(eigrad.GaugeWarning, match="k=2 cuts a degenerate cluster.*Pass k=3"):
        eigrad.projector(S, 2)
    with pytest.raises(eigrad.GaugeError, match="cuts a degenerate cluster"):
        eigrad.projector(S, 5, backward=eigrad.BackwardOptions(gauge="raise"))
    # k=None on a small operator: the full function of the materialized matrix, gradients to the values
    C = cotangent(A.shape[-1], seed=10)
    F_ref, (gA,) = dense_reference(lambda a, b: eigrad.expm(a), A, None, C)
    S, vals = as_sparse(A)
    F = eigrad.expm(S)
    (gv,) = torch.autograd.grad((F * C).sum(), vals)
    torch.testing.assert_close(F, F_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(gv, gA.flatten(), atol=1e-9, rtol=0)


# --- λ_max and the spectral norm ------------------------------------------------------------


class CountingOperator(eigrad.FunctionOperator):
    """``(M + Mᵀ)/2 X`` counting its products (forward and VJP alike)."""

    def __init__(self, M):
        self.calls = 0

        def mm(X, M):
            self.calls += 1
            return sym_matmat(X, M)

        super().__init__(mm, (M,), tuple(M.shape))


def test_lambda_max_hellmann_feynman_without_solves(monkeypatch):
    n = 300  # above the materialization threshold: ARPACK's Lanczos forward
    vals = list(np.linspace(0.0, 4.0, n - 1)) + [5.0]
    A, _ = planted(vals, seed=11)
    M = A.clone().requires_grad_(True)
    op = CountingOperator(M)
    lam, X = eigrad.eigsh(op, 1, largest=True)

    def no_minres(*args, **kwargs):
        raise AssertionError("the gradient of λ_max alone must not solve a linear system")

    monkeypatch.setattr(ProjectedMinres, "__call__", no_minres)
    before = op.calls
    (gM,) = torch.autograd.grad(lam[0], M)
    # a rebuilt operator counts on the same closure: one product (the VJP) in the backward
    assert op.calls - before == 1
    x = torch.linalg.eigh(A).eigenvectors[:, -1]
    assert abs(float(lam.detach()[0]) - 5.0) < 1e-10
    torch.testing.assert_close(gM, torch.outer(x, x), atol=1e-9, rtol=0)  # ∂λ_max/∂A = x xᵀ


@pytest.mark.parametrize("shape", [(260, 210), (40, 70), (3, 12, 9)])
def test_spectral_norm_vs_svd(shape):
    W = torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(12)).requires_grad_(True)
    s = eigrad.spectral_norm(W)
    (gW,) = torch.autograd.grad(s.sum(), W)
    U, S, Vh = torch.linalg.svd(W.detach(), full_matrices=False)
    torch.testing.assert_close(s, S[..., 0], atol=1e-10, rtol=0)
    torch.testing.assert_close(gW, U[..., :, :1] @ Vh[..., :1, :], atol=1e-9, rtol=0)  # ∂σ/∂W = u vᵀ


def test_repeated_top_eigenvalue_reported_as_set_valued():
    n = 40
    vals = list(np.linspace(0.0, 3.0, n - 2)) + [4.0, 4.0]
    A, _ = planted(vals, seed=13)
    Q = torch.linalg.eigh(A).eigenvectors[:, -2:]  # the top eigenspace
    M = A.clone().requires_grad_(True)
    op = eigrad.FunctionOperator(sym_matmat, (M,), (n, n))
    lam, X = eigrad.eigsh(op, 1, largest=True)
    with pytest.warns(eigrad.GaugeWarning, match=r"set-valued.*one subgradient.*eigsh\(A, 2, largest=True\)"):
        (gM,) = torch.autograd.grad(lam[0], M)
    # the gradient returned is one subgradient x xᵀ, x a unit vector of the top eigenspace
    x = X[:, 0].detach()
    assert abs(float(torch.linalg.vector_norm(Q.T @ x)) - 1.0) < 1e-8
    torch.testing.assert_close(gM, torch.outer(x, x), atol=1e-9, rtol=0)
    raising = eigrad.BackwardOptions(gauge="raise")
    lam, _ = eigrad.eigsh(eigrad.FunctionOperator(sym_matmat, (M,), (n, n)), 1, largest=True, backward=raising)
    with pytest.raises(eigrad.GaugeError, match="set-valued"):
        torch.autograd.grad(lam[0], M)
    # the suggested objective, the cluster's sum, is differentiable: gradient = the projector Q Qᵀ
    lam2, _ = eigrad.eigsh(eigrad.FunctionOperator(sym_matmat, (M,), (n, n)), 2, largest=True, backward=raising)
    (g2,) = torch.autograd.grad(lam2.sum(), M)
    torch.testing.assert_close(g2, Q @ Q.T, atol=1e-9, rtol=0)


@pytest.mark.parametrize("solver", ["dense", "minres"])
def test_vmap_over_operator_parameters(solver):
    """torch.func.vmap of funm/projector over a batch of potentials (and vmap of grad) equals a loop."""
    op, v0 = _grid_problem()
    n = v0.shape[0]
    vs = torch.stack([v0, 0.5 * v0.flip(0), v0**2])
    C = cotangent(n, seed=10)
    s = "dense" if solver == "dense" else NoHandle()

    def F(v):
        return eigrad.funm(op(v), torch.exp, 4, solver=s)

    def loss(v):
        return (eigrad.projector(op(v), 4, solver=s) * C).sum() + (F(v) * C).sum()

    batched = torch.func.vmap(F)(vs)
    looped = torch.stack([F(v) for v in vs])
    torch.testing.assert_close(batched, looped, rtol=1e-10, atol=1e-12)
    gb = torch.func.vmap(torch.func.grad(loss))(vs)
    gl = torch.stack([torch.func.grad(loss)(v) for v in vs])
    torch.testing.assert_close(gb, gl, rtol=1e-8, atol=1e-10)
