"""``torch.func`` transforms through ``eigrad.eigsh`` / ``eigrad.eigh`` (float64).

grad, vjp, jvp, vmap (over a batch of problems, and over cotangents/tangents
as jacrev/jacfwd do), batched dense ``A (b, n, n)`` with batched or shared
``B``, and the dot-product test ``<u, J v> = <Jᵀ u, v>`` that ties the JVP
to the VJP, also at degenerate points.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, jacfwd, jacrev, jvp, vjp, vmap

import eigrad
from eigrad.testing import (
    central_difference,
    cluster_positions,
    clustered_spectrum,
    invariant_loss,
    planted,
    random_symmetric,
)

N, K = 12, 6
SPEC = clustered_spectrum(N, [2, 3, 1], start=0.5, spacing=0.8)  # [0,1] double, [2,3,4] triple, [5]
CLUSTERS = cluster_positions(SPEC[:K])
IGNORE = eigrad.BackwardOptions(gauge="ignore")


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _valid_cotangent(X, seed):
    """A cotangent that satisfies MATH.md's two conditions at CLUSTERS: Λ̄ uniform, X̄_g = S X_g."""
    S = random_symmetric(N, seed=seed)
    Lbar = torch.zeros(K, dtype=torch.float64)
    for j, c in enumerate(CLUSTERS):
        Lbar[c] = 0.5 + j
    return Lbar, S @ X


@pytest.mark.parametrize("solver", ["lapack", "dense"])
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
def test_grad_matches_autograd_and_jvp(solver, with_B):
    p = planted(SPEC, B="random" if with_B else None, seed=1)
    W = random_symmetric(N, seed=2)

    def loss(A, B):
        L, X = eigrad.eigsh(A, K, B=B, solver=solver)
        return invariant_loss(L, X, CLUSTERS, W)

    argnums = (0, 1) if with_B else (0,)
    g_func = grad(loss, argnums=argnums)(p.A, p.B)
    A = p.A.clone().requires_grad_(True)
    B = p.B.clone().requires_grad_(True) if with_B else None
    g_ag = torch.autograd.grad(loss(A, B), [A] + ([B] if with_B else []))
    for a, b in zip(g_func, g_ag):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)

    # scalar dot-product test: jvp along (EA, EB) equals <grad, (EA, EB)>
    EA, EB = random_symmetric(N, seed=3), 0.2 * random_symmetric(N, seed=4)
    if with_B:
        _, t = jvp(loss, (p.A, p.B), (EA, EB))
        expected = (g_func[0] * EA).sum() + (g_func[1] * EB).sum()
    else:
        _, t = jvp(lambda A: loss(A, None), (p.A,), (EA,))
        expected = (g_func[0] * EA).sum()
    torch.testing.assert_close(t, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("solver", ["lapack", "dense"])
@pytest.mark.parametrize("point", ["simple", "degenerate"])
def test_dot_product_raw_outputs(solver, point):
    """``<u, J v> = <Jᵀ u, v>`` for the map ``(A, B) -> (Λ, X)`` with arbitrary ``v`` and ``u``.

    The masked JVP and VJP of MATH.md are exact adjoints of each other also at a
    degenerate point (where neither is the derivative of ``X`` itself: ``gauge="ignore"``),
    for an eigenvalue cotangent uniform on each cluster: there the JVP of the eigenvalues is
    their one-sided directional derivative, the slopes μ (not linear in ``v``; see
    test_eigenvalue_jvp_at_a_cluster_is_the_directional_derivative), whose sum is linear.
    """
    spec = [0.3 + 0.9 * i for i in range(N)] if point == "simple" else SPEC
    p = planted(spec, B="random", seed=5)

    def f(A, B):
        return tuple(eigrad.eigsh(A, K, B=B, solver=solver, backward=IGNORE))

    vA, vB = random_symmetric(N, seed=6), random_symmetric(N, seed=7)
    uL, uX = _randn(K, seed=8), _randn(N, K, seed=9)
    if point == "degenerate":
        for c in CLUSTERS:
            uL[c] = uL[c[0]].clone()
    _, (tL, tX) = jvp(f, (p.A, p.B), (vA, vB))
    _, pullback = vjp(f, p.A, p.B)
    gA, gB = pullback((uL, uX))
    lhs = (uL * tL).sum() + (uX * tX).sum()
    rhs = (gA * vA).sum() + (gB * vB).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("solver", ["lapack", "dense"])
@pytest.mark.parametrize("B", [None, "random"])
def test_eigenvalue_jvp_at_a_cluster_is_the_directional_derivative(solver, B):
    """Inside a cluster the JVP of the sorted eigenvalues is lim_{t→0⁺} (λ(A + tV) - λ(A))/t: the
    eigenvalues μ of X_gᵀ (A' - λ B') X_g, ascending, not its diagonal in the returned basis.
    Reference: Richardson-extrapolated one-sided differences of scipy-independent
    torch.linalg.eigvalsh (Cholesky reduction for B)."""
    p = planted(SPEC, B=B, seed=12)
    vA = random_symmetric(N, seed=13)
    vB = None if B is None else 0.1 * random_symmetric(N, seed=14)

    def lam(t):
        A = p.A + t * vA
        if B is None:
            return torch.linalg.eigvalsh(A)[:K]
        Bt = p.B + t * vB
        C = torch.linalg.cholesky(Bt)
        Ci = torch.linalg.inv(C)
        return torch.linalg.eigvalsh(Ci @ A @ Ci.T)[:K]

    if B is None:
        _, (tL, _) = jvp(lambda A: tuple(eigrad.eigsh(A, K, solver=solver)), (p.A,), (vA,))
    else:
        _, (tL, _) = jvp(lambda A, Bm: tuple(eigrad.eigsh(A, K, B=Bm, solver=solver)), (p.A, p.B), (vA, vB))
    h = 1e-4
    d1, d2 = (lam(h) - lam(0.0)) / h, (lam(h / 2) - lam(0.0)) / (h / 2)
    ref = 2 * d2 - d1  # one-sided, O(h²)
    torch.testing.assert_close(tL, ref, rtol=1e-6, atol=1e-6)
    # the diagonal in the returned basis is not it (it depends on the basis LAPACK happened to return)
    L, X = eigrad.eigsh(p.A, K, B=p.B if B is not None else None, solver=solver)
    V = vA @ X if B is None else vA @ X - (vB @ X) * L
    diag = torch.diagonal(X.T @ V)
    assert (diag - ref).abs().max() > 1e-3


@pytest.mark.parametrize("solver", ["lapack", "dense"])
def test_dot_product_degenerate_valid_cotangent_default_policy(solver):
    """At exact clusters, with a valid cotangent (no warning under the default policy)."""
    p = planted(SPEC, B="random", seed=10)

    def f(A, B):
        return tuple(eigrad.eigsh(A, K, B=B, solver=solver))

    (L, X), pullback = vjp(f, p.A, p.B)
    u = _valid_cotangent(X, seed=11)
    gA, gB = pullback(u)
    for seed in (12, 13):
        # a generic tangent, and one that does not mix clusters (B X_g c X_gᵀ B: a shift of each cluster)
        if seed == 12:
            vA, vB = random_symmetric(N, seed=seed), random_symmetric(N, seed=seed + 100)
        else:
            BX = p.B @ X
            vA = sum((1.0 + j) * BX[:, c] @ BX[:, c].T for j, c in enumerate(CLUSTERS))
            vB = torch.zeros_like(vA)
        _, (tL, tX) = jvp(f, (p.A, p.B), (vA, vB))
        lhs = (u[0] * tL).sum() + (u[1] * tX).sum()
        rhs = (gA * vA).sum() + (gB * vB).sum()
        torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("solver", ["lapack", "dense"])
def test_vmap_over_a_batch_of_problems(solver):
    """``vmap`` of values, of ``grad`` and of ``jvp`` equals the loop over the batch."""
    b = 3
    As = torch.stack([planted(SPEC, seed=20 + i).A for i in range(b)])
    Bs = torch.stack([planted(SPEC, B="random", seed=30 + i).B for i in range(b)])
    W = random_symmetric(N, seed=21)

    def values(A, B):
        return eigrad.eigsh(A, K, B=B, solver=solver).eigenvalues

    def loss(A, B):
        L, X = eigrad.eigsh(A, K, B=B, solver=solver)
        return invariant_loss(L, X, CLUSTERS, W)

    torch.testing.assert_close(vmap(values)(As, Bs), torch.stack([values(As[i], Bs[i]) for i in range(b)]))
    torch.testing.assert_close(vmap(values, in_dims=(0, None))(As, Bs[0]), values(As, Bs[0]))
    g_v = vmap(grad(loss, argnums=(0, 1)))(As, Bs)
    for i in range(b):
        g_i = grad(loss, argnums=(0, 1))(As[i], Bs[i])
        torch.testing.assert_close(g_v[0][i], g_i[0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(g_v[1][i], g_i[1], rtol=1e-10, atol=1e-10)
    E = random_symmetric(N, seed=22, batch_shape=(b,))
    t_v = vmap(lambda A, B, E: jvp(lambda a: loss(a, B), (A,), (E,))[1])(As, Bs, E)
    torch.testing.assert_close(t_v, torch.stack([(g_v[0][i] * E[i]).sum() for i in range(b)]), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("solver", ["lapack", "dense"])
def test_batched_dense_input_and_batched_B(solver):
    """``A (b, n, n)`` with ``B (b, n, n)``: values and gradients equal the per-element ones."""
    b = 2
    ps = [planted(SPEC, B="random", seed=40 + i) for i in range(b)]
    As, Bs = torch.stack([q.A for q in ps]), torch.stack([q.B for q in ps])
    W = random_symmetric(N, seed=41)

    def loss(A, B):
        L, X = eigrad.eigsh(A, K, B=B, solver=solver)
        return invariant_loss(L, X, CLUSTERS, W)

    L, X = eigrad.eigsh(As, K, B=Bs, solver=solver)
    assert L.shape == (b, K) and X.shape == (b, N, K)
    gA, gB = grad(loss, argnums=(0, 1))(As, Bs)
    for i in range(b):
        torch.testing.assert_close(L[i], ps[i].eigenvalues[:K], rtol=0, atol=1e-12)
        gAi, gBi = grad(loss, argnums=(0, 1))(As[i], Bs[i])
        torch.testing.assert_close(gA[i], gAi, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(gB[i], gBi, rtol=1e-10, atol=1e-10)


def _invariant_outputs(solver, B=None):
    """A vector of gauge-invariant quantities at CLUSTERS: cluster sums and the triple's projector."""

    def F(A):
        L, X = eigrad.eigsh(A, K, B=B, solver=solver)
        sums = torch.stack([L[c].sum() for c in CLUSTERS])
        Xg = X[:, CLUSTERS[1]]
        return torch.cat([sums, (Xg @ Xg.T).reshape(-1)])

    return F


@pytest.mark.parametrize("solver", ["lapack", "dense"])
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
def test_jacrev_jacfwd_agree_with_fd_at_clusters(solver, with_B):
    p = planted(SPEC, B="random" if with_B else None, seed=50)
    F = _invariant_outputs(solver, p.B)
    Jr = jacrev(F)(p.A)  # (m, n, n)
    Jf = jacfwd(F)(p.A)
    assert Jr.shape == Jf.shape == (len(CLUSTERS) + N * N, N, N)
    # jacfwd differentiates along unsymmetrized entries; both are read on symmetric directions
    for seed in (51, 52):
        E = random_symmetric(N, seed=seed)
        fd = central_difference(F, [p.A], [E], h=1e-4)
        torch.testing.assert_close((Jr * E).sum((-2, -1)), fd, rtol=1e-7, atol=1e-8)
        torch.testing.assert_close((Jf * E).sum((-2, -1)), fd, rtol=1e-7, atol=1e-8)


def test_jacrev_of_eigenvalues_is_hellmann_feynman():
    """Non-degenerate: ``∂λ_i/∂A = x_i x_iᵀ`` (symmetric) and ``∂λ_i/∂B = -λ_i x_i x_iᵀ``."""
    p = planted([0.2 + 0.7 * i for i in range(N)], B="random", seed=60)
    JA, JB = jacrev(lambda A, B: eigrad.eigsh(A, 4, B=B, largest=True).eigenvalues, argnums=(0, 1))(p.A, p.B)
    X, L = p.eigenvectors[:, -4:], p.eigenvalues[-4:]
    outer = torch.einsum("ni,mi->inm", X, X)
    torch.testing.assert_close(JA, outer, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(JB, -L[:, None, None] * outer, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("solver", ["lapack", "dense"])
def test_legacy_batched_gradients(solver):
    """torch.autograd.functional.jacobian(vectorize=True) (is_grads_batched=True) at a simple
    spectrum equals torch.func.jacrev; its Hessian works through solver="dense" and, for the
    LAPACK tridiagonal backward, raises naming the alternatives; at a repeated eigenvalue the
    existence check cannot inspect legacy batched cotangents and says so."""
    A = random_symmetric(N, seed=70)

    def f(a):
        return eigrad.eigsh(a, K, solver=solver).eigenvalues

    J = torch.autograd.functional.jacobian(f, A, vectorize=True)
    torch.testing.assert_close(J, jacrev(f)(A), rtol=1e-12, atol=1e-12)

    def h(a):
        return (eigrad.eigsh(a, K, solver=solver).eigenvalues ** 2).sum()

    if solver == "dense":
        H = torch.autograd.functional.hessian(h, A, vectorize=True)
        torch.testing.assert_close(H, torch.func.hessian(h)(A), rtol=1e-10, atol=1e-10)
    else:
        with pytest.raises(RuntimeError, match="is_grads_batched.*torch.func"):
            torch.autograd.functional.hessian(h, A, vectorize=True)
    p = planted(SPEC, seed=71)
    with pytest.raises(RuntimeError, match="repeated eigenvalue under.*is_grads_batched"):
        torch.autograd.functional.jacobian(f, p.A, vectorize=True)
