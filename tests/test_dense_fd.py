"""Gradients at exactly degenerate eigenvalues against central finite differences (float64).

The problems have planted double and triple clusters inside ``k`` (closed: the
boundary eigenvalue is separated from the next one), with ``B = I`` and a
random SPD ``B``. The losses are gauge invariant (:func:`eigrad.testing.invariant_loss`:
symmetric functions of the eigenvalues plus cluster projectors), so they are
smooth functions of ``A`` and ``B`` even though the eigenvectors are not, and
finite differences are an independent reference. The directions include ones
that split the clusters (``B X_g S X_gᵀ B``), where any formula that drops
or mistreats the within-cluster terms is wrong to first order.
"""

from __future__ import annotations

import pytest
import torch

import eigrad
from eigrad.testing import (
    central_difference,
    cluster_direction,
    cluster_positions,
    clustered_spectrum,
    invariant_loss,
    planted,
    random_symmetric,
)

N = 24
K = 9
# positions 0-1 double, 2 simple, 3-5 triple, 6 simple, 7-8 double; then 9 is simple (k=9 closes)
SIZES = [2, 1, 3, 1, 2]
# 5-point stencil: truncation O(h⁴ f⁽⁵⁾) ~ 1e-16 for gaps ~1, rounding ~ eps·|f|/h ~ 1e-12·|f|;
# eigrad's own error is rounding in the shifted solves: measured <= 2e-10 relative, so 1e-7
# leaves a 500x margin and still catches the paper's errors (1e-3 .. 3e-1, test_dense_paper_errata).
H = 1e-4
RTOL = 1e-7


def _problem(with_B: bool, largest: bool, seed: int):
    vals = clustered_spectrum(N, SIZES, start=-2.0, spacing=0.75)
    if largest:  # mirror: the clusters sit at the top of the spectrum
        vals = [-v for v in vals]
    return planted(vals, B="random" if with_B else None, seed=seed, cond=8.0)


def _clusters(p, largest):
    """Cluster positions among the k returned (ascending) columns."""
    L = p.eigenvalues[N - K :] if largest else p.eigenvalues[:K]
    return cluster_positions(L)


def _decompose(method, A, B, largest):
    if method == "eigh":
        L, X = eigrad.eigh(A, B)
        return (L[..., N - K :], X[..., N - K :]) if largest else (L[..., :K], X[..., :K])
    return eigrad.eigsh(A, K, B=B, largest=largest, solver=method)


METHODS = ["lapack", "dense", "eigh"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("largest", [False, True], ids=["smallest", "largest"])
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
def test_gradient_at_double_and_triple_clusters(method, largest, with_B, assert_fd_close):
    p = _problem(with_B, largest, seed=3 + 2 * largest + with_B)
    clusters = _clusters(p, largest)
    assert sorted(len(c) for c in clusters)[-2:] == [2, 3]  # the test is about exact clusters
    W = random_symmetric(N, seed=11)

    def loss(A, B):
        L, X = _decompose(method, A, B, largest)
        return invariant_loss(L, X, clusters, W)

    A = p.A.clone().requires_grad_(True)
    B = p.B.clone().requires_grad_(True) if with_B else None
    inputs = [A] + ([B] if with_B else [])
    grads = torch.autograd.grad(loss(A, B), inputs)
    gA = grads[0]
    assert torch.allclose(gA, gA.mT, atol=1e-12), "the gradient w.r.t. A must be symmetric"

    # directions for A: generic, and ones that split each non-trivial cluster (positions among all n)
    offset = N - K if largest else 0
    multi = [[offset + i for i in c] for c in clusters if len(c) > 1]
    dirs_A = [random_symmetric(N, seed=21)] + [cluster_direction(p, c, seed=31 + j) for j, c in enumerate(multi)]
    for j, E in enumerate(dirs_A):
        fd = central_difference(loss, [p.A, p.B], [E, None], h=H)
        assert_fd_close((gA * E).sum(), fd, RTOL, f"d/dA direction {j}")

    if with_B:
        gB = grads[1]
        assert torch.allclose(gB, gB.mT, atol=1e-12)
        dirs_B = [0.2 * random_symmetric(N, seed=41)] + [
            0.2 * cluster_direction(p, c, seed=51 + j) for j, c in enumerate(multi)
        ]
        for j, E in enumerate(dirs_B):
            fd = central_difference(loss, [p.A, p.B], [None, E], h=H)
            assert_fd_close((gB * E).sum(), fd, RTOL, f"d/dB direction {j}")


@pytest.mark.parametrize("method", ["lapack", "dense"])
def test_splitting_direction_really_splits(method):
    """Sanity of the reference: along ``cluster_direction`` the cluster's eigenvalues separate."""
    p = _problem(True, False, seed=5)
    E = cluster_direction(p, [3, 4, 5], seed=1)
    L0 = eigrad.eigsh(p.A, K, B=p.B, solver=method).eigenvalues
    L1 = eigrad.eigsh(p.A + 1e-3 * E, K, B=p.B, solver=method).eigenvalues
    assert float((L0[3:6] - L0[3]).abs().max()) < 1e-12
    assert float(L1[5] - L1[3]) > 1e-5
    # everything outside the cluster moves at second order only
    assert float((L1[:3] - L0[:3]).abs().max()) < 1e-5


@pytest.mark.parametrize("method", METHODS)
def test_gradient_wrt_both_inputs_in_one_direction(method, assert_fd_close):
    """A joint perturbation of ``A`` and ``B``: the two gradients add up (JVP-free check of ``B̄``'s sign)."""
    p = _problem(True, False, seed=9)
    clusters = _clusters(p, False)
    W = random_symmetric(N, seed=12)

    def loss(A, B):
        L, X = _decompose(method, A, B, False)
        return invariant_loss(L, X, clusters, W)

    A = p.A.clone().requires_grad_(True)
    B = p.B.clone().requires_grad_(True)
    gA, gB = torch.autograd.grad(loss(A, B), [A, B])
    EA, EB = cluster_direction(p, [3, 4, 5], seed=2), 0.3 * cluster_direction(p, [0, 1], seed=3)
    fd = central_difference(loss, [p.A, p.B], [EA, EB], h=H)
    assert_fd_close((gA * EA).sum() + (gB * EB).sum(), fd, RTOL, "joint direction")


@pytest.mark.parametrize("method", ["lapack", "dense"])
def test_batched_gradients_at_clusters(method, assert_fd_close):
    """A batch ``(2, n, n)`` of degenerate problems with one shared ``B``: per-element and summed gradients."""
    n, k = 16, 6
    vals = clustered_spectrum(n, [3, 1, 2])
    p = planted(vals, B="random", seed=7, batch_shape=(2,))
    B1 = p.B[0]
    A = planted(vals, B=B1, seed=8, batch_shape=(2,)).A
    clusters = cluster_positions(vals[:k])
    W = random_symmetric(n, seed=13)

    def loss(A, B):
        L, X = eigrad.eigsh(A, k, B=B, solver=method)
        return invariant_loss(L, X, clusters, W)

    Ar = A.clone().requires_grad_(True)
    Br = B1.clone().requires_grad_(True)
    gA, gB = torch.autograd.grad(loss(Ar, Br), [Ar, Br])
    assert gA.shape == A.shape and gB.shape == B1.shape
    EA = random_symmetric(n, seed=3, batch_shape=(2,))
    EB = 0.2 * random_symmetric(n, seed=4)
    assert_fd_close((gA * EA).sum(), central_difference(loss, [A, B1], [EA, None], h=H), RTOL, "batched A")
    assert_fd_close((gB * EB).sum(), central_difference(loss, [A, B1], [None, EB], h=H), RTOL, "shared B")


def test_jvp_with_a_guard_inside_a_repeated_eigenvalue_is_silent():
    """examples/hofstadter.py at twist π (complex, every level exactly 3-fold): the guard beyond
    k = 48 is one copy of a repeated level whose other copies were not computed, so its own shifted
    system is singular. The dense JVP solved it anyway (its column is discarded) and the LAPACK route
    warned "did not reach the rounding level"; now only the wanted columns are solved."""
    import math
    import sys
    import warnings
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        from hofstadter import Lattice
    finally:
        sys.path.pop(0)
    lat = Lattice(12, 1 / 3)
    gen = torch.Generator().manual_seed(0)
    v0 = lat.superlattice(0.5 * torch.randn(2, 2, dtype=torch.float64, generator=gen))

    def projector(solver):
        def P(t):
            X = eigrad.eigsh(lat.H(v0, t), 48, solver=solver).eigenvectors
            return X @ X.mH
        return P

    t0, dt = torch.tensor([math.pi, 0.0], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", eigrad.ConvergenceWarning)
        _, d_lapack = torch.func.jvp(projector("lapack"), (t0,), (dt,))
    _, d_dense = torch.func.jvp(projector("dense"), (t0,), (dt,))
    torch.testing.assert_close(d_lapack, d_dense, rtol=1e-9, atol=1e-10)
