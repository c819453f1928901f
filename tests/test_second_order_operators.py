"""Second derivatives through operators (issue 4, step 1): sparse values, FunctionOperator
parameters and ModuleOperator parameters, with and without ``B``, with the backward's shifted
solves on the materialized eigenbasis (``solver="dense"``) and on projected block MINRES
(``NoHandle``: exact forward, no handle).

References: ``torch.linalg.eigh`` on the materialized matrix (twice differentiable at simple
spectra), eigrad's dense path, gradgradcheck (finite differences of eigrad's own backward),
central differences of eigrad's gradient.
"""

from __future__ import annotations

import pytest
import scipy.sparse as sp
import torch
from _operator_helpers import NoHandle, laplacian_2d, scipy_to_torch_csr
from torch.func import grad, hessian, jacfwd, jacrev, jvp

import eigrad
from eigrad.autodiff._operator_second_order import OperatorProjectedSolve, OpSolveInfo
from eigrad.linsolve._eigenbasis import eigenbasis_factory
from eigrad.linsolve._minres import MinresFactory
from eigrad.operators import SparseOperator
from eigrad.testing import central_difference

DT = torch.float64
#: the MINRES route solves to rounding level, so finite differences of the backward stay clean
OPTS = eigrad.BackwardOptions(linsolve_rtol=1e-14)
ROUTES = {"eigenbasis": "dense", "minres": NoHandle()}


def _rand(shape, seed):
    return torch.rand(shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


class Grid:
    """An ``m × m`` Dirichlet Laplacian (n = m²) as a stored-values pattern, plus a potential."""

    def __init__(self, m):
        self.n = m * m
        S = laplacian_2d(m).tocsr()
        S.sort_indices()
        self.lap_dense = torch.from_numpy(S.toarray())
        op = SparseOperator(scipy_to_torch_csr(S))
        self.pattern, self.lap_values = op.pattern, op.values.clone()
        self.diag = (self.pattern.row == self.pattern.col).nonzero().flatten()  # positions of a_ii
        self.transpose, _ = self.pattern.transpose_positions()

    def values(self, v, u=None):
        """Stored values of ``Lap + diag(v)`` (+ symmetrized ``u`` on the whole pattern)."""
        vals = self.lap_values.index_add(0, self.diag, v)
        if u is not None:
            vals = vals + 0.5 * (u + u[self.transpose])
        return vals

    def op(self, v, u=None):
        return SparseOperator.from_values(self.values(v, u), self.pattern)

    def dense(self, v, u=None):
        p = self.pattern
        return torch.zeros(self.n, self.n, dtype=DT).index_put((p.row, p.col), self.values(v, u), accumulate=True)


G3, G5 = Grid(3), Grid(5)


def _loss(L, X):
    """Eigenvalues and a gauge-invariant eigenvector term (``X`` enters as ``x_i x_iᵀ``)."""
    return (L**3).sum() + (X[..., :2] ** 4).sum()


def _geig(A, B):
    """Generalized eigh from torch ops (Cholesky reduction), twice differentiable at simple spectra."""
    if B is None:
        return torch.linalg.eigh(A)
    C = torch.linalg.cholesky(B)
    M = torch.linalg.solve_triangular(C, torch.linalg.solve_triangular(C, A, upper=False).T, upper=False)
    L, Z = torch.linalg.eigh(0.5 * (M + M.T))
    return L, torch.linalg.solve_triangular(C.T, Z, upper=True)


def _ref(A, B, k):
    """``_loss`` of the k smallest pairs from ``torch.linalg.eigh``."""
    L, X = _geig(A, B)
    return _loss(L[:k], X[:, :k])


def _mass(n):
    """A fixed sparse SPD ``B``: tridiagonal ``I + 0.1·(1, -½, ...)``, stored as CSR."""
    S = sp.diags([-0.05 * torch.ones(n - 1).numpy(), (1.1 * torch.ones(n)).numpy(), -0.05 * torch.ones(n - 1).numpy()],
                 [-1, 0, 1]).tocsr()
    S.sort_indices()
    op = SparseOperator(scipy_to_torch_csr(S))
    return op, torch.from_numpy(S.toarray())


# --- the differentiable projected solve over operators itself ---------------------------------


@pytest.mark.parametrize("core", ["eigenbasis", "minres"])
@pytest.mark.parametrize("use_B", [False, True], ids=["B=I", "B"])
def test_operator_projected_solve_gradgradcheck(core, use_B):
    """``v, r, φ ↦ G_j Π r`` with ``λ(v, φ)``, ``X(v, φ)`` from torch.linalg (two wanted columns,
    one guard): finite differences of the solve itself, every term of its VJP and JVP."""
    g, k = G3, 2
    lap = g.lap_dense

    def f(v, r, *phi):
        A = _fn_op(lap, v)
        B = _fn_B(phi[0]) if phi else None
        Bd = None if B is None else torch.diag(1 + phi[0] ** 2)
        L, X = _geig(lap + torch.diag(torch.exp(v)), Bd)
        with torch.no_grad():
            Lh, Xh = _geig(lap + torch.diag(torch.exp(v)), Bd)
        Xk = X[:, :k]
        BX = Xk if Bd is None else Bd @ Xk
        R = r - BX @ (Xk.T @ r)  # Xᵀ r = 0
        tensors = (v, *phi)
        spec_B = None if B is None else B.flatten()[1]
        if core == "eigenbasis":
            factory, handle = eigenbasis_factory, (Lh, Xh)
        else:
            factory = MinresFactory(A.flatten()[1], 1, spec_B, rtol=1e-14)
            handle = (*(t.detach() for t in tensors), Lh[: k + 1])
        info = OpSolveInfo(factory, 1e-9, A.flatten()[1], 1, spec_B, len(tensors))
        atol = torch.tensor(1e-9, dtype=DT)
        return OperatorProjectedSolve.apply(R, L[:k], Xk, Xh[:, k : k + 1], Lh[k : k + 1], atol, info,
                                            *tensors, *handle)

    args = [_rand(g.n, 20), _rand((g.n, k), 21) - 0.5] + ([_rand(g.n, 22)] if use_B else [])
    args = tuple(a.requires_grad_() for a in args)
    assert torch.autograd.gradcheck(f, args, check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, args, check_fwd_over_rev=True, fast_mode=True)


# --- gradgradcheck: finite differences of eigrad's own backward --------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("use_B", [False, True], ids=["B=I", "B"])
def test_gradgradcheck_sparse_values(route, use_B):
    """Stored values of a sparse A (and B) on a 3×3 grid, n = 9, k = 3; forward-over-reverse too."""
    g, k = G3, 3
    v0, u0 = _rand(g.n, 0), 0.1 * _rand(g.pattern.nnz, 1)
    Bop, _ = _mass(g.n)
    bp = Bop.pattern
    btr, _ = bp.transpose_positions()

    def f(u, *b):
        B = SparseOperator.from_values(0.5 * (b[0] + b[0][btr]), bp) if b else None
        L, X = eigrad.eigsh(g.op(v0, u), k, B=B, solver=ROUTES[route], backward=OPTS)
        return _loss(L, X)

    args = (u0.requires_grad_(),) + ((Bop.values.clone().requires_grad_(),) if use_B else ())
    assert torch.autograd.gradgradcheck(f, args, check_fwd_over_rev=True, fast_mode=True)


def _fn_op(lap, v):
    """``A(v) = Lap + diag(exp(v))``: nonlinear in its parameter (the θθ-term of the solve's VJP)."""
    return eigrad.FunctionOperator(lambda X, v: lap @ X + torch.exp(v).unsqueeze(-1) * X, (v,), lap.shape)


def _fn_B(phi):
    """``B(φ) = diag(1 + φ²)``: SPD, nonlinear in φ."""
    return eigrad.FunctionOperator(lambda X, p: (1 + p**2).unsqueeze(-1) * X, (phi,), (phi.shape[0],) * 2)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("use_B", [False, True], ids=["B=I", "B"])
def test_gradgradcheck_function_operator(route, use_B):
    g, k = G3, 3

    def f(v, *phi):
        B = _fn_B(phi[0]) if phi else None
        L, X = eigrad.eigsh(_fn_op(g.lap_dense, v), k, B=B, solver=ROUTES[route], backward=OPTS)
        return _loss(L, X)

    args = (_rand(g.n, 2).requires_grad_(),) + ((_rand(g.n, 3).requires_grad_(),) if use_B else ())
    assert torch.autograd.gradgradcheck(f, args, check_fwd_over_rev=True, fast_mode=True)


# --- Hessians against torch.linalg and the dense path ------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_hessian_wrt_potential_of_sparse_laplacian_vs_dense_path(route):
    """Eigenvalue loss, 5×5 grid (n = 25), k = 4: hessian wrt the diagonal potential, every
    second-order composition, against eigrad's dense path and torch.linalg.eigvalsh."""
    g, k = G5, 4
    v = _rand(g.n, 4)

    def f(v):
        return (eigrad.eigsh(g.op(v), k, solver=ROUTES[route], backward=OPTS).eigenvalues ** 2).sum()

    H = hessian(f)(v)
    Hd = hessian(lambda v: (eigrad.eigsh(g.dense(v), k, solver="dense").eigenvalues ** 2).sum())(v)
    Hr = hessian(lambda v: (torch.linalg.eigvalsh(g.dense(v))[:k] ** 2).sum())(v)
    torch.testing.assert_close(H, Hd, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(H, Hr, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(jacrev(jacfwd(f))(v), H, rtol=1e-9, atol=1e-10)
    a = v.clone().requires_grad_()
    (gr,) = torch.autograd.grad(f(a), a, create_graph=True)
    w = _rand(g.n, 5)
    (hw,) = torch.autograd.grad((gr * w).sum(), a)
    torch.testing.assert_close(hw, H @ w, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("route", ROUTES)
def test_hessian_eigenvector_loss_with_B_vs_torch_linalg(route):
    """Sparse A (potential and symmetric values) and sparse B (values), jacfwd(jacrev) vs Cholesky + eigh."""
    g, k = G3, 3
    Bop, _ = _mass(g.n)
    bp, b0 = Bop.pattern, Bop.values.clone()
    v0, u0 = _rand(g.n, 6), 0.1 * _rand(g.pattern.nnz, 7)

    def f(u, b):
        L, X = eigrad.eigsh(g.op(v0, u), k, B=SparseOperator.from_values(b, bp), solver=ROUTES[route], backward=OPTS)
        return _loss(L, X)

    def ref(u, b):
        Bd = torch.zeros(g.n, g.n, dtype=DT).index_put((bp.row, bp.col), b, accumulate=True)
        return _ref(g.dense(v0, u), 0.5 * (Bd + Bd.T), k)

    Hr = jacfwd(jacrev(ref, argnums=(0, 1)), argnums=(0, 1))(u0, b0)
    for second in (jacfwd, jacrev):  # forward-over-reverse and reverse-over-reverse
        H = second(jacrev(f, argnums=(0, 1)), argnums=(0, 1))(u0, b0)
        torch.testing.assert_close(H, Hr, rtol=1e-8, atol=1e-9)


def test_module_operator_hessian_vs_torch_linalg():
    """ModuleOperator: A = Lap + diag(exp(w)) + c·I with parameters (w, c), MINRES route."""
    g, k = G3, 3

    class Pot(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(_rand(g.n, 8))
            self.c = torch.nn.Parameter(torch.tensor(0.3, dtype=DT))

        def forward(self, X):
            return g.lap_dense @ X + (torch.exp(self.w) + self.c).unsqueeze(-1) * X

    mod = Pot()
    op = eigrad.ModuleOperator(mod, (g.n, g.n))
    params = dict(mod.named_parameters())

    def f(p):
        L, X = eigrad.eigsh(_bound(op, p), k, solver=NoHandle(), backward=OPTS)
        return _loss(L, X)

    def ref(p):
        return _ref(g.lap_dense + torch.diag(torch.exp(p["w"]) + p["c"]), None, k)

    p0 = {n: t.detach() for n, t in params.items()}
    Hr = hessian(ref)(p0)
    for H in (hessian(f)(p0), jacrev(jacrev(f))(p0)):
        for a in H:
            for b in H[a]:
                torch.testing.assert_close(H[a][b], Hr[a][b], rtol=1e-8, atol=1e-9)


def _bound(op, p):
    """``op`` with its parameters replaced by ``p`` (what ``flatten``/``rebuild`` do inside eigrad)."""
    _, spec = op.flatten()
    return spec.rebuild(tuple(p[n] for n in op.names))


# --- HVP vs finite differences of the gradient -------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_hvp_vs_fd_of_gradient_function_operator_with_B(route):
    """jvp(grad) along (δv, δφ) against central differences of eigrad's gradient, n = 25, k = 4."""
    g, k = G5, 4
    v, phi = _rand(g.n, 9), _rand(g.n, 10)
    dv, dphi = _rand(g.n, 11) - 0.5, _rand(g.n, 12) - 0.5
    W = _rand((g.n, g.n), 13)

    def f(v, phi):
        L, X = eigrad.eigsh(_fn_op(g.lap_dense, v), k, B=_fn_B(phi), solver=ROUTES[route], backward=OPTS)
        return (L**2).sum() + (W * (X @ X.T)).sum()

    gf = grad(f, argnums=(0, 1))
    _, hv = jvp(gf, (v, phi), (dv, dphi))
    h = 1e-5
    gp, gm = gf(v + h * dv, phi + h * dphi), gf(v - h * dv, phi - h * dphi)
    for x, p, m in zip(hv, gp, gm):
        fd = (p - m) / (2 * h)
        assert (x - fd).norm() <= 1e-6 * fd.norm()


# --- never silently wrong ----------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_repeated_eigenvalue_second_derivatives(route):
    """The plain 4×4 grid Laplacian: λ₂ = λ₃ exactly. Hessians (forward-over-reverse and
    reverse-over-reverse) match finite differences of the Hellmann–Feynman gradient
    2 Σ_{i<k} λ_i x_i² (smooth: the pair is inside k); reverse-over-forward raises naming it."""
    g, k = Grid(4), 3
    v0 = torch.zeros(g.n, dtype=DT)

    def f(v):
        return (eigrad.eigsh(g.op(v), k, solver=ROUTES[route], backward=OPTS).eigenvalues ** 2).sum()

    def g_ref(v):
        L, X = torch.linalg.eigh(g.op(v).to_dense())
        return 2 * (X[:, :k] ** 2 * L[:k]).sum(-1)

    torch.testing.assert_close(grad(f)(v0), g_ref(v0), rtol=1e-9, atol=1e-11)
    dv = _rand((g.n,), 23)
    ref = central_difference(g_ref, (v0,), (dv,), h=1e-4)
    torch.testing.assert_close(hessian(f)(v0) @ dv, ref, rtol=1e-7, atol=1e-8)
    a = v0.clone().requires_grad_()
    (ga,) = torch.autograd.grad(f(a), a, create_graph=True)
    (hv,) = torch.autograd.grad((ga * dv).sum(), a)
    torch.testing.assert_close(hv, ref, rtol=1e-7, atol=1e-8)
    with pytest.raises(RuntimeError, match=r"repeated eigenvalue.*positions \[1, 2\].*size 2"):
        jacrev(jacfwd(f))(v0)
