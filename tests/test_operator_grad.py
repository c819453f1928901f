"""Derivatives through eigsh for sparse and matrix-free operators (MATH.md, operator case).

Routes: ``"dense"`` (the materialized matrix, exact eigenbasis backward),
``NoHandle`` (exact forward, backward by projected block MINRES over the
operator) and ``ScipyEigsh`` (ARPACK forward with inexact eigenvectors, MINRES
backward). References: Hellmann–Feynman closed forms, the dense-tensor path,
central finite differences of gauge-invariant losses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _operator_grid import (
    A0,
    CLUSTERS,
    LAP,
    LAP_OP,
    M_GRID,
    N,
    ROUTES,
    SPECTRUM,
    V0,
    closing_k,
    grid_loss,
    radial_potential,
    sparse_A,
)
from _operator_helpers import DT, NoHandle, laplacian_2d, laplacian_2d_eigenvalues, potential_operator, sym_direction

import eigrad
from eigrad.testing import central_difference, cluster_positions, clustered_spectrum, invariant_loss, planted


def test_grid_has_exact_degenerate_pairs():
    assert np.allclose(laplacian_2d_eigenvalues(M_GRID), torch.linalg.eigvalsh(torch.from_numpy(LAP.toarray())))
    assert [len(c) for c in CLUSTERS[:3]] == [1, 2, 1]  # the D4 potential keeps the pair exact


# Hellmann–Feynman ------------------------------------------------------------


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("n_clusters", [2, 4])
def test_hellmann_feynman_on_grid(route, n_clusters):
    """∂ Σ_{i<k} λ_i / ∂v = Σ_i x_i² for a diagonal potential, with k closing the clusters."""
    k = closing_k(n_clusters)
    v = V0.clone().requires_grad_()
    L, X = eigrad.eigsh(potential_operator(LAP_OP, v), k, solver=ROUTES[route])
    assert torch.allclose(L, SPECTRUM[:k], atol=1e-10, rtol=0)
    L.sum().backward()
    assert torch.allclose(v.grad, (X.detach() ** 2).sum(-1), atol=1e-9, rtol=0)


@pytest.mark.parametrize("route", ["dense", "minres"])
def test_hellmann_feynman_sparse_diagonal_values(route):
    """The same identity on the stored diagonal values of a sparse matrix."""
    k = closing_k(2)
    S0 = sparse_A()
    vals = S0.values().clone().requires_grad_()
    L, X = eigrad.eigsh(sparse_A(vals), k, solver=ROUTES[route])
    L.sum().backward()
    crow, col = S0.crow_indices(), S0.col_indices()
    row = torch.repeat_interleave(torch.arange(N), crow[1:] - crow[:-1])
    diag = row == col
    assert torch.allclose(vals.grad[diag], (X.detach() ** 2).sum(-1)[row[diag]], atol=1e-9, rtol=0)
    # off the diagonal: ½[(L Xᵀ)_ij + (L Xᵀ)_ji] with L_A = X: Σ_c x_ic x_jc
    XX = X.detach() @ X.detach().T
    assert torch.allclose(vals.grad[~diag], XX[row[~diag], col[~diag]], atol=1e-9, rtol=0)


@pytest.mark.parametrize("route", ["dense", "minres"])
def test_cut_cluster_is_reported(route):
    k_cut = CLUSTERS[1][0] + 1  # takes one of the degenerate pair
    v = V0.clone().requires_grad_()
    L, _ = eigrad.eigsh(potential_operator(LAP_OP, v), k_cut, solver=ROUTES[route],
                        backward=eigrad.BackwardOptions(gauge="raise"))
    lo, hi = CLUSTERS[1][0], CLUSTERS[1][-1] + 1
    with pytest.raises(eigrad.GaugeError, match=rf"k={k_cut} cuts a degenerate cluster.*Pass k={lo} or k={hi}"):
        L.sum().backward()


# Representations and routes agree --------------------------------------------


@pytest.mark.parametrize("route", list(ROUTES))
def test_three_representations_agree_with_the_dense_path(route):
    """Dense tensor, sparse CSR and FunctionOperator of one matrix: values and gradients agree."""
    k = closing_k(4)
    W = sym_direction(N, 3)
    Ad = A0.clone().requires_grad_()
    L_ref, X_ref = eigrad.eigsh(Ad, k)  # the dense-tensor core path
    (gA,) = torch.autograd.grad(grid_loss(L_ref, X_ref, W), Ad)

    S0 = sparse_A()
    vals = S0.values().clone().requires_grad_()
    v = V0.clone().requires_grad_()
    reps = {
        "dense-operator": (eigrad.as_operator(A0.clone().requires_grad_()), None),
        "sparse": (sparse_A(vals), vals),
        "function": (potential_operator(LAP_OP, v), v),
    }
    crow, col = S0.crow_indices(), S0.col_indices()
    row = torch.repeat_interleave(torch.arange(N), crow[1:] - crow[:-1])
    for name, (A, leaf) in reps.items():
        if leaf is None:
            leaf = A.A
        L, X = eigrad.eigsh(A, k, solver=ROUTES[route])
        assert torch.allclose(L, L_ref, atol=1e-10, rtol=0), name
        (g,) = torch.autograd.grad(grid_loss(L, X, W), leaf)
        expect = {"dense-operator": gA, "sparse": gA[row, col], "function": torch.diagonal(gA)}[name]
        assert torch.allclose(g, expect, atol=1e-8, rtol=1e-7), (name, float((g - expect).abs().max()))


def test_sparse_coo_leaf_gets_a_sparse_gradient_on_its_pattern():
    S = sparse_A().to_sparse_coo().coalesce().detach().requires_grad_()
    k = closing_k(3)
    W = sym_direction(N, 4)
    L, X = eigrad.eigsh(S, k, solver=NoHandle())
    grid_loss(L, X, W).backward()
    assert S.grad.layout == torch.sparse_coo
    Ad = A0.clone().requires_grad_()
    L2, X2 = eigrad.eigsh(Ad, k)
    grid_loss(L2, X2, W).backward()
    G = S.grad.coalesce()
    i, j = G.indices()
    assert torch.equal(G.indices(), S.detach().indices())
    assert torch.allclose(G.values(), Ad.grad[i, j], atol=1e-8, rtol=1e-7)


@pytest.mark.parametrize("route", ["dense", "minres", "arpack+minres"])
def test_largest_eigenpairs(route):
    W = sym_direction(N, 5)
    v = V0.clone().requires_grad_()
    L, X = eigrad.eigsh(potential_operator(LAP_OP, v), 3, largest=True, solver=ROUTES[route])
    loss = (L**2).sum() + (W * (X @ X.T)).sum()
    (g,) = torch.autograd.grad(loss, v)
    Ad = A0.clone().requires_grad_()
    L2, X2 = eigrad.eigsh(Ad, 3, largest=True)
    (gA,) = torch.autograd.grad((L2**2).sum() + (W * (X2 @ X2.T)).sum(), Ad)
    assert torch.allclose(L, L2, atol=1e-10, rtol=0)
    assert torch.allclose(g, torch.diagonal(gA), atol=1e-8, rtol=1e-7)


# Generalized operator pairs --------------------------------------------------


@pytest.mark.parametrize("route", ["dense", "minres"])
def test_generalized_pair_with_known_spectrum(route):
    """A(a) X = B(b) X Λ with a planted spectrum 1 | 2 2 | 3 3 3: FD of both parameters."""
    n = 30
    p = planted(clustered_spectrum(n, [1, 2, 3]), B="random", seed=1)
    E1, E2 = sym_direction(n, 8), 0.01 * sym_direction(n, 9)
    W = sym_direction(n, 10)
    clusters = [[0], [1, 2], [3, 4, 5]]

    def ops(a, b):
        A = eigrad.FunctionOperator(lambda X, a: p.A @ X + a * (E1 @ X), (a,), n)
        B = eigrad.FunctionOperator(lambda X, b: p.B @ X + b * (E2 @ X), (b,), n)
        return A, B

    def f(a, b, solver=ROUTES[route]):
        A, B = ops(a, b)
        return invariant_loss(*eigrad.eigsh(A, 6, B=B, solver=solver), clusters, W)

    a = torch.zeros((), dtype=DT, requires_grad=True)
    b = torch.zeros((), dtype=DT, requires_grad=True)
    L, _ = eigrad.eigsh(*ops(a, b)[:1], 6, B=ops(a, b)[1], solver=ROUTES[route])
    assert torch.allclose(L, p.eigenvalues[:6], atol=1e-10, rtol=0)
    ga, gb = torch.autograd.grad(f(a, b), (a, b))
    z, one = torch.zeros((), dtype=DT), torch.ones((), dtype=DT)
    fa = central_difference(lambda a, b: f(a, b, "dense"), [z, z], [one, None], h=1e-4)
    fb = central_difference(lambda a, b: f(a, b, "dense"), [z, z], [None, one], h=1e-4)
    assert abs(float(ga - fa)) <= 1e-7 * max(1.0, abs(float(fa)))
    assert abs(float(gb - fb)) <= 1e-7 * max(1.0, abs(float(fb)))


def test_generalized_sparse_B_values_match_the_dense_path():
    n = N
    Bd = torch.from_numpy((2.0 * np.eye(n) + 0.25 * laplacian_2d(M_GRID).toarray() / 4)).to(DT)
    Bsp = Bd.to_sparse_csr()
    bvals = Bsp.values().clone().requires_grad_()
    Bop = torch.sparse_csr_tensor(Bsp.crow_indices(), Bsp.col_indices(), bvals, (n, n))
    v = V0.clone().requires_grad_()
    W = sym_direction(n, 11)
    L, X = eigrad.eigsh(potential_operator(LAP_OP, v), 4, B=Bop, solver=NoHandle())
    gv, gb = torch.autograd.grad((L**2).sum() + (W * (X[:, :1] @ X[:, :1].T)).sum(), (v, bvals))
    Ad, Bdd = A0.clone().requires_grad_(), Bd.clone().requires_grad_()
    L2, X2 = eigrad.eigsh(Ad, 4, B=Bdd)
    gA, gB = torch.autograd.grad((L2**2).sum() + (W * (X2[:, :1] @ X2[:, :1].T)).sum(), (Ad, Bdd))
    crow = Bsp.crow_indices()
    row = torch.repeat_interleave(torch.arange(n), crow[1:] - crow[:-1])
    assert torch.allclose(gv, torch.diagonal(gA), atol=1e-8, rtol=1e-7)
    assert torch.allclose(gb, gB[row, Bsp.col_indices()], atol=1e-8, rtol=1e-7)


# Finite differences, JVP, torch.func -----------------------------------------


@pytest.mark.parametrize("route", ["minres", "arpack+minres"])
def test_projector_loss_against_finite_differences(route):
    k = closing_k(3)
    W = sym_direction(N, 12)
    d = torch.randn(N, dtype=DT, generator=torch.Generator().manual_seed(13))

    def f(v, solver=ROUTES[route]):
        L, X = eigrad.eigsh(potential_operator(LAP_OP, v), k, solver=solver)
        Xp = X[:, CLUSTERS[1]]  # the degenerate pair's projector and the whole-k projector
        return (W * (Xp @ Xp.T)).sum() + 0.5 * (W * (X @ X.T)).sum()

    v = V0.clone().requires_grad_()
    (g,) = torch.autograd.grad(f(v), v)
    fd = central_difference(lambda v: f(v, "dense"), [V0], [d], h=1e-4)
    assert abs(float(g @ d - fd)) <= 1e-7 * max(1.0, abs(float(fd)))


@pytest.mark.parametrize("route", ["dense", "minres"])
def test_jvp_matches_finite_differences_and_vjp(route):
    k = closing_k(3)
    W = sym_direction(N, 14)
    d = torch.randn(N, dtype=DT, generator=torch.Generator().manual_seed(15))

    def f(v):
        L, X = eigrad.eigsh(potential_operator(LAP_OP, v), k, solver=ROUTES[route])
        return grid_loss(L, X, W)

    _, t = torch.func.jvp(f, (V0,), (d,))
    g = torch.func.grad(f)(V0)
    fd = central_difference(f, [V0], [d], h=1e-4)
    assert abs(float(t - fd)) <= 1e-7 * max(1.0, abs(float(fd)))
    assert abs(float(t - g @ d)) <= 1e-10 * max(1.0, abs(float(t)))


def test_jacrev_jacfwd_vmap_through_operators():
    k = closing_k(2)
    weights = torch.tensor([1.0] + [2.0] * (k - 1), dtype=DT)  # uniform on the pair

    def f(v):
        return eigrad.eigsh(potential_operator(LAP_OP, v), k, solver=NoHandle()).eigenvalues * weights

    J = torch.func.jacrev(lambda v: f(v).sum())(V0)
    Jf = torch.func.jacfwd(lambda v: f(v).sum())(V0)
    _, X = eigrad.eigsh(A0, k)
    assert torch.allclose(J, (X**2) @ weights, atol=1e-9, rtol=0)
    assert torch.allclose(J, Jf, atol=1e-9, rtol=0)
    vs = torch.stack([V0, V0 + 0.1 * sym_direction(N, 1).diagonal()])
    out = torch.func.vmap(lambda v: eigrad.eigsh(potential_operator(LAP_OP, v), k, solver=NoHandle()).eigenvalues)(vs)
    for i in range(2):
        ref = torch.linalg.eigvalsh(torch.from_numpy(LAP.toarray()) + torch.diag(vs[i]))[:k]
        assert torch.allclose(out[i], ref, atol=1e-10, rtol=0)


def test_module_operator_gradients():
    class Potential(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.v = torch.nn.Parameter(V0.clone())
            self.c = torch.nn.Parameter(torch.ones((), dtype=DT))
            self.register_buffer("shift", torch.zeros((), dtype=DT))

        def forward(self, X):
            return self.c * LAP_OP.matmat(X) + (self.v + self.shift).unsqueeze(-1) * X

    mod = Potential()
    k = closing_k(3)
    W = sym_direction(N, 16)
    L, X = eigrad.eigsh(eigrad.ModuleOperator(mod, N), k, solver=NoHandle())
    grid_loss(L, X, W).backward()
    v, c = V0.clone().requires_grad_(), torch.ones((), dtype=DT, requires_grad=True)
    op = eigrad.FunctionOperator(lambda X, v, c: c * LAP_OP.matmat(X) + v.unsqueeze(-1) * X, (v, c), N)
    L2, X2 = eigrad.eigsh(op, k, solver="dense")
    gv, gc_ = torch.autograd.grad(grid_loss(L2, X2, W), (v, c))
    assert torch.allclose(mod.v.grad, gv, atol=1e-8, rtol=1e-7)
    assert torch.allclose(mod.c.grad, gc_, atol=1e-8, rtol=1e-7)
    assert mod.shift.grad is None


def test_float32_sparse_operator_matches_float64():
    k = closing_k(3)
    W = sym_direction(N, 21)
    grads = {}
    for dt in (torch.float32, torch.float64):
        S0 = sparse_A()
        vals = S0.values().to(dt).clone().requires_grad_()
        A = torch.sparse_csr_tensor(S0.crow_indices(), S0.col_indices(), vals, (N, N))
        L, X = eigrad.eigsh(A, k, solver=NoHandle())
        assert L.dtype == dt
        (grads[dt],) = torch.autograd.grad(grid_loss(L, X, W.to(dt)), vals)
    g32, g64 = grads[torch.float32].double(), grads[torch.float64]
    assert float((g32 - g64).abs().max() / g64.abs().max()) < 1e-3


@pytest.mark.parametrize("solver", ["arpack", "lobpcg"])
def test_iterative_forward_solvers_feed_the_minres_backward(solver):
    """eigrad's own iterative eigensolvers (no handle) with the MINRES backward, n = 256 > materialize size."""
    try:
        from eigrad.eigensolvers import _auto  # noqa: F401
    except ImportError:
        pytest.skip("this build has no iterative eigensolvers")
    m = 16
    lap = eigrad.as_operator(laplacian_2d(m))
    v0 = radial_potential(m)
    A = torch.from_numpy(laplacian_2d(m).toarray()) + torch.diag(v0)
    k = cluster_positions(torch.linalg.eigvalsh(A)[:10], tol=1e-10)[2][-1] + 1  # closes 1 | 2 2 | 1
    W = sym_direction(m * m, 22)
    Ad = A.clone().requires_grad_()
    L_ref, X_ref = eigrad.eigsh(Ad, k)
    (gA,) = torch.autograd.grad(L_ref.sum() + (W * (X_ref @ X_ref.T)).sum(), Ad)
    v = v0.clone().requires_grad_()
    L, X = eigrad.eigsh(potential_operator(lap, v), k, solver=solver)
    (g,) = torch.autograd.grad(L.sum() + (W * (X @ X.T)).sum(), v)
    assert torch.allclose(L, L_ref, atol=1e-9, rtol=0)
    assert float((g - torch.diagonal(gA)).abs().max() / gA.diagonal().abs().max()) < 1e-6


def test_vmap_when_slices_need_different_guard_counts():
    """k=2 cuts the exact pair of the first potential (more guards), not of the second."""
    vs = torch.stack([V0, V0 + 0.05 * torch.arange(N, dtype=DT) / N])
    out = torch.func.vmap(lambda v: eigrad.eigsh(potential_operator(LAP_OP, v), 2, solver=NoHandle()).eigenvalues)(vs)
    for i in range(2):
        ref = torch.linalg.eigvalsh(torch.from_numpy(LAP.toarray()) + torch.diag(vs[i]))[:2]
        assert torch.allclose(out[i], ref, atol=1e-10, rtol=0)
