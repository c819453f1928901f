"""Second derivatives at exactly repeated eigenvalues (issue 4 item 2, docs/second_order.md).

Reference: central finite differences (5-point) of an *independent* closed-form
gradient computed from torch.linalg.eigh (Cholesky reduction for B): for the
loss ``<W, X_G X_Gᵀ> + Σ_{i<k} h(λ_i)`` over a cluster ``G``

    ∇_A = Σ_{i<k} h'(λ_i) x_i x_iᵀ + Σ_{i∈G, j∉G} c_ij (x_i x_jᵀ + x_j x_iᵀ),
    ∇_B = -Σ_{i<k} h'(λ_i) λ_i x_i x_iᵀ - Σ_{i∈G, j∉G} λ_i c_ij (x_i x_jᵀ + x_j x_iᵀ) - P W P,

with ``c_ij = x_iᵀ W x_j / (λ_i - λ_j)`` and ``P = X_G X_Gᵀ``: smooth across the
cluster (it depends on the cluster only through symmetric functions and
its projector), so its finite differences are valid there. The peers'
Hessian-vector products (torch.linalg.eigh: ~5e14 relative error) and the
ablation without the adapted frame are measured by
``benchmarks/degenerate_accuracy.py``, not asserted here: what a peer returns
depends on its LAPACK and CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, hessian, jacfwd, jacrev, jvp

import eigrad
from eigrad.testing import central_difference, planted, random_symmetric

DT = torch.float64
N, K = 8, 4


def _eigh(A, B):
    if B is None:
        return torch.linalg.eigh(A)
    C = torch.linalg.cholesky(B)
    Ci = torch.linalg.inv(C)
    L, Q = torch.linalg.eigh(Ci @ A @ Ci.T)
    return L, Ci.T @ Q


def _gradient_ref(A, B, W, G, k, p):
    """Closed-form (∇_A, ∇_B) of ``<W, X_G X_Gᵀ> + Σ_{i<k} λ_i^p`` (module docstring)."""
    A = 0.5 * (A + A.T)
    B = None if B is None else 0.5 * (B + B.T)
    L, X = _eigh(A, B)
    hp = p * L[:k] ** (p - 1)
    gA = (X[:, :k] * hp) @ X[:, :k].T
    gB = -(X[:, :k] * (hp * L[:k])) @ X[:, :k].T
    out = [j for j in range(A.shape[-1]) if j not in G]
    for i in G:
        for j in out:
            c = (X[:, i] @ W @ X[:, j]) / (L[i] - L[j])
            S = torch.outer(X[:, i], X[:, j]) + torch.outer(X[:, j], X[:, i])
            gA = gA + c * S
            gB = gB - L[i] * c * S
    P = X[:, G] @ X[:, G].T
    gB = gB - P @ W @ P
    return gA, gB


def _problem(spec, B, seed):
    p = planted(spec, B=B, seed=seed)
    W = random_symmetric(N, seed=seed + 1)
    VA = random_symmetric(N, seed=seed + 2)
    VB = None if B is None else 0.2 * random_symmetric(N, seed=seed + 3)
    return p, W, VA, VB


def _loss(solver, W, G, k, p, largest=False):
    def f(A, B=None):
        L, X = eigrad.eigsh(A, k, B=B, solver=solver, largest=largest)
        XG = X[..., G]
        return (W * (XG @ XG.transpose(-1, -2))).sum() + (L**p).sum()

    return f


def _hvp(f, mode, A, B, VA, VB):
    """The Hessian-vector product of ``f`` at ``(A, B)`` along ``(VA, VB)`` by ``mode``; (hA, hB)."""
    args, dirs = ((A,), (VA,)) if B is None else ((A, B), (VA, VB))
    argnums = tuple(range(len(args)))
    if mode == "fwd-rev":
        _, h = jvp(grad(f, argnums=argnums), args, dirs)
    elif mode == "rev-rev":
        xs = [a.clone().requires_grad_() for a in args]
        gs = torch.autograd.grad(f(*xs), xs, create_graph=True)
        h = torch.autograd.grad(sum((g * v).sum() for g, v in zip(gs, dirs)), xs)
    elif mode in ("hessian", "jacrev-jacrev"):
        second = hessian if mode == "hessian" else (lambda F, argnums: jacrev(jacrev(F, argnums), argnums))
        H = second(f, argnums=argnums)(*args)
        h = tuple(sum((H[i][j] * dirs[j]).sum((-2, -1)) for j in range(len(args))) for i in range(len(args)))
    else:
        raise AssertionError(mode)
    return (h[0], None if B is None else h[1])


def _rel(x, y):
    return float((x - y).norm() / y.norm())


MODES = ["fwd-rev", "rev-rev", "hessian", "jacrev-jacrev"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("solver", ["dense", "lapack"])
@pytest.mark.parametrize("B", [None, "random"], ids=["B=I", "B"])
def test_hvp_over_a_triple_matches_fd_of_the_closed_form_gradient(mode, solver, B):
    spec = [1.0, 1.0, 1.0, 2.0, 3.5, 4.0, 5.0, 6.5]
    G = [0, 1, 2]
    p, W, VA, VB = _problem(spec, B, seed=3)
    f = _loss(solver, W, G, K, 2)
    hA, hB = _hvp(f, mode, p.A, p.B, VA, VB)
    dirs = (VA,) if B is None else (VA, VB)
    args = (p.A,) if B is None else (p.A, p.B)
    refA = central_difference(lambda *a: _gradient_ref(a[0], a[1] if B else None, W, G, K, 2)[0], args, dirs,
                              h=1e-4)
    assert _rel(hA, refA) < 1e-7
    if B is not None:
        refB = central_difference(lambda a, b: _gradient_ref(a, b, W, G, K, 2)[1], args, dirs, h=1e-4)
        assert _rel(hB, refB) < 1e-7


@pytest.mark.parametrize("mode", ["fwd-rev", "rev-rev"])
def test_hvp_largest_double_and_cubic_eigenvalue_loss(mode):
    """The k largest with a double eigenvalue on top, and a cubic eigenvalue loss."""
    spec = [0.5, 1.0, 1.7, 2.0, 2.5, 3.0, 4.0, 4.0]
    G = [2, 3]  # positions of the double among the k = 4 largest (ascending)
    p, W, VA, _ = _problem(spec, None, seed=11)
    f = _loss("dense", W, G, K, 3, largest=True)
    hA, _ = _hvp(f, mode, p.A, None, VA, None)

    def gref(A):  # the module's closed form on the top k: ∇ Σ λ³ + the double's projector
        L, X = torch.linalg.eigh(0.5 * (A + A.T))
        top = X[:, N - K :]
        g = (top * (3 * L[N - K :] ** 2)) @ top.T
        Gf = [N - K + i for i in G]  # the double's positions in the whole spectrum
        for i in Gf:
            for j in (j for j in range(N) if j not in Gf):
                c = (X[:, i] @ W @ X[:, j]) / (L[i] - L[j])
                g = g + c * (torch.outer(X[:, i], X[:, j]) + torch.outer(X[:, j], X[:, i]))
        return g

    ref = central_difference(gref, (p.A,), (VA,), h=1e-4)
    assert _rel(hA, ref) < 1e-7


def test_hvp_batch_with_different_clusters_per_element():
    """A batch as a leading dimension: a triple in one element, a double elsewhere in the other."""
    specs = [[1.0, 1.0, 1.0, 2.0, 3.5, 4.0, 5.0, 6.5], [0.5, 1.5, 1.5, 2.5, 3.0, 4.0, 5.0, 6.0]]
    Gs = [[0, 1, 2], [1, 2]]
    ps = [planted(s, seed=20 + i) for i, s in enumerate(specs)]
    A = torch.stack([q.A for q in ps])
    W = random_symmetric(N, seed=30)
    V = torch.stack([random_symmetric(N, seed=31), random_symmetric(N, seed=32)])

    def f(A):
        L, X = eigrad.eigsh(A, K, solver="lapack")
        tot = (L**2).sum()
        for b, G in enumerate(Gs):
            XG = X[b][:, G]
            tot = tot + (W * (XG @ XG.T)).sum()
        return tot

    _, h = jvp(grad(f), (A,), (V,))
    for b, G in enumerate(Gs):
        ref = central_difference(lambda a, G=G: _gradient_ref(a, None, W, G, K, 2)[0], (A[b],), (V[b],), h=1e-4)
        assert _rel(h[b], ref) < 1e-7


@pytest.mark.parametrize("mode", ["fwd-rev", "rev-rev"])
@pytest.mark.parametrize("gap", [1e-2, 1e-4, 1e-6, 3e-7, 2e-7, 1e-8, 1e-10, 1e-12, 0.0])
def test_hvp_near_degenerate_is_accurate(gap, mode):
    """Across the merge tolerance (√eps·scale ≈ 1e-7 here) the HVP stays at the finite-difference
    level: merged clusters use the adapted frame (error O(gap)); split ones the exact couplings,
    masked where the loss is basis invariant on the group (without that mask: 1-3% error at gaps
    1.2e-7-3e-7, 4.4e-4 at 1e-6, from the eps/gap² rounding of the couplings' derivative)."""
    spec = [1.0, 1.0 + gap, 1.0 + 2 * gap, 2.0, 3.5, 4.0, 5.0, 6.5]
    G = [0, 1, 2]
    p, W, VA, _ = _problem(spec, None, seed=5)
    f = _loss("dense", W, G, K, 2)
    hA, _ = _hvp(f, mode, p.A, None, VA, None)
    ref = central_difference(lambda a: _gradient_ref(a, None, W, G, K, 2)[0], (p.A,), (VA,), h=1e-4)
    assert _rel(hA, ref) < 1e-7


def test_gradient_penalty_through_a_repeated_eigenvalue():
    """d/dA ‖∇f‖² = 2 H ∇f (reverse-over-reverse with the direction the gradient itself)."""
    spec = [1.0, 1.0, 1.0, 2.0, 3.5, 4.0, 5.0, 6.5]
    G = [0, 1, 2]
    p, W, _, _ = _problem(spec, None, seed=7)
    f = _loss("lapack", W, G, K, 2)
    a = p.A.clone().requires_grad_()
    (g,) = torch.autograd.grad(f(a), a, create_graph=True)
    (pen,) = torch.autograd.grad((g**2).sum(), a)
    g0 = _gradient_ref(p.A, None, W, G, K, 2)[0]
    ref = 2 * central_difference(lambda x: _gradient_ref(x, None, W, G, K, 2)[0], (p.A,), (g0,), h=1e-4)
    assert _rel(pen, ref) < 1e-7


# --- when the second derivative does not exist, or the composition is not supported ---------------


def _split_loss(A):
    """λ₀ + λ₁ + (λ₁ - λ₀)·λ₀ at a double eigenvalue 0: gradient uniform there (1, 1), but not
    symmetric in the pair: along a direction that keeps the pair degenerate the gradient leaves
    the set where it exists (no second derivative)."""
    L, _ = eigrad.eigsh(A, 3, solver="dense")
    return L[0] + L[1] + (L[1] - L[0]) * L[0] + L[2] ** 2


def test_no_second_derivative_repeated_slopes_is_reported():
    p = planted([0.0, 0.0, 1.0, 2.0, 3.0, 4.0], seed=40)
    X = p.eigenvectors
    V = X[:, :2] @ X[:, :2].T + 0.1 * X[:, 3:4] @ X[:, 3:4].T  # T_g = I: slopes repeated
    with pytest.warns(eigrad.GaugeWarning, match="second derivative.*slopes repeated"):
        jvp(grad(_split_loss), (p.A,), (V,))
    a = p.A.clone().requires_grad_()
    (g,) = torch.autograd.grad(_split_loss(a), a, create_graph=True)
    with pytest.warns(eigrad.GaugeWarning, match="second derivative.*slopes repeated"):
        torch.autograd.grad((g * V).sum(), a)


def test_basis_dependence_along_the_direction_is_reported():
    """Σ_{i∈g} (x_iᵀ W x_i)² with W diagonal on the returned basis of the triple: both first-order
    conditions hold at the point, but the loss depends on the individual eigenvectors, and its
    basis invariance does not persist along a direction that couples the cluster outwards."""
    p, _, VA, _ = _problem([1.0, 1.0, 1.0, 2.0, 3.5, 4.0, 5.0, 6.5], None, seed=9)
    X0 = eigrad.eigsh(p.A, K, solver="dense").eigenvectors
    Xall = torch.linalg.eigh(p.A).eigenvectors
    C = random_symmetric(N, seed=60)[:3, 3:] @ Xall[:, 3:].T  # couples the cluster to the rest
    W = X0[:, :3] @ torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=DT)) @ X0[:, :3].T
    W = W + X0[:, :3] @ C + C.T @ X0[:, :3].T

    def f(A):
        L, X = eigrad.eigsh(A, K, solver="dense", backward=eigrad.BackwardOptions(gauge="raise"))
        XG = X[:, :3]
        return (L**2).sum() + ((XG * (W @ XG)).sum(0) ** 2).sum()

    grad(f)(p.A)  # the gradient exists at the point (no error)
    with pytest.raises(eigrad.GaugeError, match="basis invariance does not persist"):
        jvp(grad(f), (p.A,), (VA,))


def test_reverse_over_forward_raises_with_the_alternatives():
    p = planted([1.0, 1.0, 2.0, 3.0, 4.0], seed=18)

    def f(a):
        L, _ = eigrad.eigsh(a, 3, solver="dense")
        return (L**2).sum()

    with pytest.raises(RuntimeError, match=r"repeated eigenvalue.*positions \[0, 1\].*size 2.*torch.func.hessian"):
        jacrev(jacfwd(f))(p.A)


def test_two_second_order_paths_through_one_decomposition_raise():
    p, W, VA, _ = _problem([1.0, 1.0, 1.0, 2.0, 3.5, 4.0, 5.0, 6.5], None, seed=3)
    a = p.A.clone().requires_grad_()
    L, X = eigrad.eigsh(a, K, solver="dense")
    f1 = (L**2).sum()
    f2 = (W * (X[:, :3] @ X[:, :3].T)).sum()
    (g1,) = torch.autograd.grad(f1, a, create_graph=True, retain_graph=True)
    (g2,) = torch.autograd.grad(f2, a, create_graph=True)
    V2 = random_symmetric(N, seed=50)
    with pytest.raises(RuntimeError, match="several second-order paths"):
        torch.autograd.grad((g1 * VA).sum() + (g2 * V2).sum(), a)


# --- operators ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fwd-rev", "rev-rev", "hessian"])
@pytest.mark.parametrize("route", ["eigenbasis", "minres"])
def test_operator_hvp_over_a_triple_with_B(mode, route):
    """Function operators ``A(v) = A₀ + diag(v)``, ``B(φ) = B₀ + diag(φ)`` at a planted triple: the HVP
    in ``(v, φ)`` against central differences of the closed-form gradient's diagonals."""
    from _operator_helpers import NoHandle

    spec = [1.0, 1.0, 1.0, 2.0, 3.5, 4.0, 5.0, 6.5]
    G = [0, 1, 2]
    p, W, _, _ = _problem(spec, "random", seed=13)
    dv, dphi = torch.randn(N, dtype=DT, generator=torch.Generator().manual_seed(14)), 0.1 * torch.randn(
        N, dtype=DT, generator=torch.Generator().manual_seed(15))
    solver = "dense" if route == "eigenbasis" else NoHandle()
    opts = eigrad.BackwardOptions(linsolve_rtol=1e-14)

    def f(v, phi):
        A = eigrad.FunctionOperator(lambda X, v: p.A @ X + v.unsqueeze(-1) * X, (v,), (N, N))
        B = eigrad.FunctionOperator(lambda X, phi: p.B @ X + phi.unsqueeze(-1) * X, (phi,), (N, N))
        L, X = eigrad.eigsh(A, K, B=B, solver=solver, backward=opts)
        XG = X[:, G]
        return (W * (XG @ XG.T)).sum() + (L**2).sum()

    z = torch.zeros(N, dtype=DT)
    if mode == "fwd-rev":
        _, (hv, hphi) = jvp(grad(f, argnums=(0, 1)), (z, z), (dv, dphi))
    elif mode == "rev-rev":
        v, phi = z.clone().requires_grad_(), z.clone().requires_grad_()
        gv, gphi = torch.autograd.grad(f(v, phi), (v, phi), create_graph=True)
        hv, hphi = torch.autograd.grad((gv * dv).sum() + (gphi * dphi).sum(), (v, phi))
    else:
        H = hessian(f, argnums=(0, 1))(z, z)
        hv, hphi = H[0][0] @ dv + H[0][1] @ dphi, H[1][0] @ dv + H[1][1] @ dphi

    def gref(v, phi):
        gA, gB = _gradient_ref(p.A + torch.diag(v), p.B + torch.diag(phi), W, G, K, 2)
        return torch.cat([torch.diagonal(gA), torch.diagonal(gB)])

    ref = central_difference(gref, (z, z), (dv, dphi), h=1e-4)
    assert _rel(torch.cat([hv, hphi]), ref) < 1e-7


@pytest.mark.parametrize("route", ["eigenbasis", "minres"])
def test_operator_hvp_near_degenerate(route):
    """A function operator with a split triple (gap 2e-7, just above the merge tolerance)."""
    from _operator_helpers import NoHandle

    spec = [1.0, 1.0 + 2e-7, 1.0 + 4e-7, 2.0, 3.5, 4.0, 5.0, 6.5]
    G = [0, 1, 2]
    p, W, _, _ = _problem(spec, None, seed=17)
    dv = torch.randn(N, dtype=DT, generator=torch.Generator().manual_seed(18))
    solver = "dense" if route == "eigenbasis" else NoHandle()

    def f(v):
        A = eigrad.FunctionOperator(lambda X, v: p.A @ X + v.unsqueeze(-1) * X, (v,), (N, N))
        L, X = eigrad.eigsh(A, K, solver=solver, backward=eigrad.BackwardOptions(linsolve_rtol=1e-14))
        XG = X[:, G]
        return (W * (XG @ XG.T)).sum() + (L**2).sum()

    z = torch.zeros(N, dtype=DT)
    _, hv = jvp(grad(f), (z,), (dv,))
    ref = central_difference(lambda v: torch.diagonal(_gradient_ref(p.A + torch.diag(v), None, W, G, K, 2)[0]),
                             (z,), (dv,), h=1e-4)
    assert _rel(hv, ref) < 1e-7


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["dense", "lapack"])
@pytest.mark.parametrize("B", [None, "random"], ids=["B=I", "B"])
def test_gradgradcheck_at_a_triple(solver, B):
    """torch.autograd.gradgradcheck (reverse-over-reverse and forward-over-reverse through
    torch.autograd.forward_ad) at an exact triple: its finite differences of eigrad's gradient run
    at split, near-degenerate points, so this also checks the gradient there to ~1e-9."""
    p = planted([1.0, 1.0, 1.0, 2.0, 3.5, 4.0, 5.0, 6.5], B=B, seed=3)
    W = random_symmetric(N, seed=4)

    def f(A, *Bs):
        Bm = 0.5 * (Bs[0] + Bs[0].T) if Bs else None
        L, X = eigrad.eigsh(0.5 * (A + A.T), K, B=Bm, solver=solver)
        XG = X[:, :3]
        return (W * (XG @ XG.T)).sum() + (L**2).sum()

    ins = (p.A.clone().requires_grad_(),) + (() if B is None else (p.B.clone().requires_grad_(),))
    assert torch.autograd.gradgradcheck(f, ins, check_fwd_over_rev=True, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("gap", [2.7e-5, 1e-6, 2e-7])
def test_lapack_gradient_near_a_split_cluster(gap):
    """The tridiagonal backward at shifts with close computed partners (a triple split by ``gap``):
    before the preconditioned solve it factored the singular T - λ_j directly, and the projection
    of its huge null-space components left 3.5e-4 relative error at gap 2.7e-5 (a projector loss)."""
    spec = [1.0, 1.0 + gap, 1.0 + 2 * gap, 2.0, 3.5, 4.0, 5.0, 6.5]
    p, W, _, _ = _problem(spec, None, seed=21)
    a = p.A.clone().requires_grad_()
    L, X = eigrad.eigsh(a, K, solver="lapack")
    (g,) = torch.autograd.grad((W * (X[:, :3] @ X[:, :3].T)).sum() + (L**2).sum(), a)
    ref, _ = _gradient_ref(p.A, None, W, [0, 1, 2], K, 2)
    assert _rel(g, ref) < 1e-12
