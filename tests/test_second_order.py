"""Second derivatives (issue 4): differentiable backward and JVP at simple spectra,
a clear error at repeated eigenvalues.

References: ``torch.linalg.eigvalsh`` / ``torch.linalg.eigh`` autograd (exact and
twice differentiable where the spectrum is simple), finite differences of
gradients, gradcheck/gradgradcheck.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, hessian, jacfwd, jacrev, jvp

import eigrad
from eigrad.autodiff._second_order import ProjectedSolve
from eigrad.linsolve._eigenbasis import eigenbasis_factory
from eigrad.testing import central_difference

dt = torch.float64
SOLVERS = ["dense", "lapack"]


def _sym(n, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, dtype=dt, generator=g)
    return A + A.T


def _spd(n, seed):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, dtype=dt, generator=g)
    return M @ M.T / n + torch.eye(n, dtype=dt)


def _planted(vals, seed):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(vals), len(vals), dtype=dt, generator=g))
    return Q @ torch.diag(torch.tensor(vals, dtype=dt)) @ Q.T


def _geig(A, B):
    """Reference generalized eigh from torch ops (Cholesky + torch.linalg.eigh), differentiable."""
    if B is None:
        return torch.linalg.eigh(A)
    Lc = torch.linalg.cholesky(B)
    C = torch.linalg.solve_triangular(Lc, torch.linalg.solve_triangular(Lc, A, upper=False).T, upper=False)
    L, Z = torch.linalg.eigh(0.5 * (C + C.T))
    return L, torch.linalg.solve_triangular(Lc.T, Z, upper=True)


def _s(t):
    return None if t is None else 0.5 * (t + t.T)


# --- the differentiable projected solve itself -------------------------------------------------


@pytest.mark.parametrize("use_B", [False, True], ids=["B=I", "B"])
def test_projected_solve_matches_bordered_system_and_its_fd(use_B):
    """Forward against the bordered system; VJP, JVP and their derivatives against FD (gradcheck)."""
    n, k = 6, 3
    A0, B0, r0 = _sym(n, 0), (_spd(n, 1) if use_B else None), torch.randn(n, k, dtype=dt,
                                                                         generator=torch.Generator().manual_seed(2))

    def f(A, r, *B):
        A, B = _s(A), (_s(B[0]) if B else None)
        L, X = _geig(A, B)
        with torch.no_grad():
            h = _geig(A.detach(), None if B is None else B.detach())
        Xk = X[:, :k]
        BX = Xk if B is None else B @ Xk
        R = r - BX @ (Xk.T @ r)
        return ProjectedSolve.apply(R, L[:k], Xk, A, B, torch.tensor(1e-9, dtype=dt), eigenbasis_factory, 1e-9, *h)

    Bargs = (B0,) if use_B else ()
    with torch.no_grad():
        Y = f(A0, r0, *Bargs)
        L, X = _geig(A0, B0)
        Bm = torch.eye(n, dtype=dt) if B0 is None else B0
        Xk = X[:, :k]
        R = r0 - Bm @ Xk @ (Xk.T @ r0)
        for j in range(k):
            K = torch.zeros(n + k, n + k, dtype=dt)
            K[:n, :n], K[:n, n:], K[n:, :n] = A0 - L[j] * Bm, Bm @ Xk, (Bm @ Xk).T
            ref = torch.linalg.solve(K, torch.cat([R[:, j], torch.zeros(k, dtype=dt)]))[:n]
            assert torch.allclose(Y[:, j], ref, atol=1e-12)
    args = tuple(t.clone().requires_grad_() for t in (A0, r0, *Bargs))
    assert torch.autograd.gradcheck(f, args, check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, args, check_fwd_over_rev=True)


# --- eigsh / eigh: gradgradcheck and Hessians against torch.linalg ---------------------------


def _loss(solver, k, largest, W):
    def f(A, B=None):
        L, X = eigrad.eigsh(_s(A), k, B=_s(B), solver=solver, largest=largest)
        return (L**3).sum() + (W * (X[:, :2] @ X[:, :2].T)).sum()

    return f


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("largest", [False, True], ids=["smallest", "largest"])
@pytest.mark.parametrize("use_B", [False, True], ids=["B=I", "B"])
def test_gradgradcheck_partial(solver, largest, use_B):
    n, k = 5, 3
    f = _loss(solver, k, largest, _sym(n, 7))
    args = (_sym(n, 3).requires_grad_(),) + ((_spd(n, 4).requires_grad_(),) if use_B else ())
    assert torch.autograd.gradgradcheck(f, args, check_fwd_over_rev=True, fast_mode=use_B)


def _eig_loss_ref(k, largest, W):
    def f(A, B=None):
        L, X = _geig(_s(A), _s(B))
        L, X = (L[-k:], X[:, -k:]) if largest else (L[:k], X[:, :k])
        return (L**3).sum() + (W * (X[:, :2] @ X[:, :2].T)).sum()

    return f


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("largest", [False, True], ids=["smallest", "largest"])
@pytest.mark.parametrize("use_B", [False, True], ids=["B=I", "B"])
def test_hessian_matches_torch_linalg(solver, largest, use_B):
    """torch.func.hessian (forward-over-reverse) of eigenvalue and eigenvector losses vs torch.linalg.eigh."""
    n, k = 6, 3
    W = _sym(n, 8)
    A, B = _sym(n, 5), (_spd(n, 6) if use_B else None)
    f, ref = _loss(solver, k, largest, W), _eig_loss_ref(k, largest, W)
    argnums = (0, 1) if use_B else 0
    H = hessian(f, argnums=argnums)(A, B)
    Hr = hessian(ref, argnums=argnums)(A, B)
    torch.testing.assert_close(H, Hr, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("solver", SOLVERS)
def test_eigenvalue_only_hessian_vs_eigvalsh_full_and_partial(solver):
    """A cotangent independent of A (an eigenvalue itself): used to be silently zero."""
    n = 5
    A = _sym(n, 9)

    def ref(a):
        v = torch.linalg.eigvalsh(_s(a))
        return v[0] + (v[1:3] ** 2).sum()

    Hr = hessian(ref)(A)
    Hf = hessian(lambda a: (lambda v: v[0] + (v[1:3] ** 2).sum())(eigrad.eigh(_s(a)).eigenvalues))(A)
    Hp = hessian(lambda a: (lambda v: v[0] + (v[1:3] ** 2).sum())(eigrad.eigsh(_s(a), 3, solver=solver)[0]))(A)
    torch.testing.assert_close(Hf, Hr, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(Hp, Hr, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_second_order_composition_agrees(solver):
    """jacfwd(jacrev), jacrev(jacrev), jacrev(jacfwd) and create_graph=True give one Hessian."""
    n, k = 5, 2
    f = _loss(solver, k, False, _sym(n, 10))
    A = _sym(n, 11)
    H1 = jacfwd(jacrev(f))(A)
    for H in (jacrev(jacrev(f))(A), jacrev(jacfwd(f))(A)):
        torch.testing.assert_close(H, H1, rtol=1e-10, atol=1e-10)
    a = A.clone().requires_grad_()
    (g,) = torch.autograd.grad(f(a), a, create_graph=True)
    V = _sym(n, 12)
    (hv,) = torch.autograd.grad((g * V).sum(), a)
    torch.testing.assert_close(hv, (H1 * V).sum((-1, -2)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("use_B", [False, True], ids=["B=I", "B"])
def test_forward_over_reverse_hvp_vs_fd_of_gradient(solver, use_B):
    """HVP = jvp(grad) against central differences of eigrad's own gradient, n=30, k=4."""
    n, k = 30, 4
    W = _sym(n, 13)
    A, B = _sym(n, 14), (_spd(n, 15) if use_B else None)
    V, U = _sym(n, 16), (_sym(n, 17) if use_B else None)

    def loss(a, b):
        L, X = eigrad.eigsh(a, k, B=b, solver=solver)
        return (L**2).sum() + (W * (X @ X.T)).sum()

    if use_B:
        g = grad(loss, argnums=(0, 1))
        _, hv = jvp(g, (A, B), (V, U))
        h = 1e-5
        gp, gm = g(A + h * V, B + h * U), g(A - h * V, B - h * U)
        fd = tuple((p - m) / (2 * h) for p, m in zip(gp, gm))
    else:
        g = grad(lambda a: loss(a, None))
        _, hv = jvp(g, (A,), (V,))
        h = 1e-5
        fd = (g(A + h * V) - g(A - h * V)) / (2 * h)
        hv, fd = (hv,), (fd,)
    for x, y in zip(hv, fd):
        assert (x - y).norm() <= 1e-6 * y.norm()


def test_batched_hessian():
    As = torch.stack([_sym(4, s) for s in range(3)])

    def f(a):
        return (eigrad.eigsh(_s(a), 2, solver="lapack")[0] ** 2).sum()

    def ref(a):
        return (torch.linalg.eigvalsh(_s(a))[:2] ** 2).sum()

    H = torch.func.vmap(hessian(f))(As)
    Hr = torch.stack([hessian(ref)(a) for a in As])
    torch.testing.assert_close(H, Hr, rtol=1e-9, atol=1e-10)


# --- never silently wrong ----------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_repeated_eigenvalue_second_derivatives(solver):
    """At a double eigenvalue: the first derivative is exact; hessian, jacrev(jacrev) and
    create_graph + backward agree with finite differences of the Hellmann–Feynman gradient
    2 X Λ Xᵀ (smooth: the whole cluster is inside k); reverse-over-forward raises naming the
    cluster (tests/test_second_order_degenerate.py has the full set)."""
    A = _planted([1.0, 1.0, 2.0, 3.0, 4.0], seed=18)

    def f(a):
        L, X = eigrad.eigsh(_s(a), 3, solver=solver)
        return (L**2).sum()

    def g_ref(a):
        L, X = torch.linalg.eigh(_s(a))
        return 2 * (X[:, :3] * L[:3]) @ X[:, :3].T

    torch.testing.assert_close(grad(f)(A), g_ref(A), rtol=1e-10, atol=1e-12)
    V = _sym(5, 21)
    ref = central_difference(g_ref, (A,), (V,), h=1e-4)
    for H in (hessian(f)(A), jacrev(jacrev(f))(A)):
        torch.testing.assert_close((H * V).sum((-2, -1)), ref, rtol=1e-8, atol=1e-9)
    a = A.clone().requires_grad_()
    (g,) = torch.autograd.grad(f(a), a, create_graph=True)
    (hv,) = torch.autograd.grad((g * V).sum(), a)
    torch.testing.assert_close(hv, ref, rtol=1e-8, atol=1e-9)
    with pytest.raises(RuntimeError, match=r"repeated eigenvalue.*positions \[0, 1\].*size 2"):
        jacrev(jacfwd(f))(A)


def test_forward_over_forward_raises():
    """PyTorch drops the outer tangent of a custom Function's jvp: refuse rather than return 0."""
    f = _loss("dense", 2, False, _sym(4, 19))
    with pytest.raises(RuntimeError, match="forward-over-forward"):
        jacfwd(jacfwd(f))(_sym(4, 20))
