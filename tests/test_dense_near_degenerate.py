"""A pair of eigenvalues at gaps 1e-2 … 1e-12: gauge-invariant losses against finite differences.

The loss (Σ h(λ_i) plus the pair's projector and the neighbours' projectors)
is an analytic function of ``A`` and ``B`` whatever the gap, so central
differences with a step much larger than the gap are still an exact
reference. What changes with the gap is eigrad's own rounding error:

* gap above the merge tolerance (``sqrt(eps)·(scale + |λ|)``, here ~3e-7): the
  pair is two clusters and the formulas contain ``skew(x_1ᵀ x̄_2)/(λ_2 - λ_1)``.
  For this loss the skew part is zero in exact arithmetic but ``O(eps ‖W‖)``
  in floating point, so the gradient carries an error ``~ eps ‖W‖ / gap``;
* gap below it: the pair is one cluster, the masked term is dropped (exact
  for an invariant loss), and the error is back to rounding in the solves,
  ``~ eps / merge_tol`` at worst.

Hence the tolerance ``RTOL_FLOOR + C_EPS * eps / max(gap, merge_tol)``, with
``C_EPS`` (100) covering ‖W‖ and the accumulation in O(n) sums, and
``RTOL_FLOOR`` (1e-8) covering finite differences (5-point stencil, step
1e-4: truncation ~1e-16, rounding ~1e-12 relative) and the solves. The
eigenbasis route ("dense") measures <= 6e-10 at every gap.

Both routes reach the same accuracy: the backward solves the coupling between
computed eigenpairs exactly in their eigenbasis (``1/(λ_i - λ_j)`` on the
K×K block) and hands the solvers only the complement of the computed vectors.
(Before that split, the tridiagonal route solved the systems of ``λ_1`` and
``λ_2`` independently, and the two ``1/gap`` terms that cancel in exact
arithmetic carried independent rounding: a measured error ``~ eps·scale·‖W‖/gap²``,
3.5e-4 at gap 1e-6. ``test_lapack_pair_just_above_merge_tolerance`` guards that.)
"""

from __future__ import annotations

import math

import pytest
import torch

import eigrad
from eigrad.testing import central_difference, cluster_direction, invariant_loss, planted, random_symmetric

N, K = 20, 5
GAPS = [1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12]
EPS = torch.finfo(torch.float64).eps
RTOL_FLOOR = 1e-8
C_EPS = 100.0
H = 1e-4


def _spectrum(gap):
    # -1, 0.5, [1.5, 1.5 + gap], 2.5, then simple levels; k = 5 keeps the pair and a gap of 1 at k
    rest = [3.5 + i for i in range(N - 5)]
    return [-1.0, 0.5, 1.5, 1.5 + gap, 2.5] + rest


def _merge_tol(spectrum):
    # BackwardOptions defaults: atol = sqrt(eps)·scale (scale >= max|λ|), rtol = sqrt(eps)
    return math.sqrt(EPS) * (max(abs(v) for v in spectrum) + 1.5)


def _rtol(solver, gap, spectrum):
    g = max(gap, _merge_tol(spectrum))
    return RTOL_FLOOR + C_EPS * EPS / g


@pytest.mark.parametrize("gap", GAPS, ids=lambda g: f"gap={g:.0e}")
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
@pytest.mark.parametrize("solver", ["lapack", "dense"])
def test_pair_sweep_against_fd(gap, with_B, solver, assert_fd_close):
    spec = _spectrum(gap)
    p = planted(spec, B="random" if with_B else None, seed=17, cond=5.0)
    clusters = [[0], [1], [2, 3], [4]]  # the pair is one cluster of the loss at every gap
    W = random_symmetric(N, seed=18)

    def loss(A, B):
        L, X = eigrad.eigsh(A, K, B=B, solver=solver)
        return invariant_loss(L, X, clusters, W)

    A = p.A.clone().requires_grad_(True)
    B = p.B.clone().requires_grad_(True) if with_B else None
    grads = torch.autograd.grad(loss(A, B), [A] + ([B] if with_B else []))

    rtol = _rtol(solver, gap, spec)
    # generic, and splitting the pair much more than its gap (h·‖S‖ >> gap for gap <= 1e-6)
    dirs = [random_symmetric(N, seed=19), cluster_direction(p, [2, 3], seed=20)]
    for j, E in enumerate(dirs):
        fd = central_difference(loss, [p.A, p.B], [E, None], h=H)
        assert_fd_close((grads[0] * E).sum(), fd, rtol, f"dA dir {j}, gap {gap:.0e}")
    if with_B:
        EB = 0.2 * random_symmetric(N, seed=21)
        fd = central_difference(loss, [p.A, p.B], [None, EB], h=H)
        assert_fd_close((grads[1] * EB).sum(), fd, rtol, f"dB, gap {gap:.0e}")


@pytest.mark.parametrize("gap", GAPS, ids=lambda g: f"gap={g:.0e}")
def test_pair_sweep_forward_mode(gap, assert_fd_close):
    """The JVP of the same loss, also with a tangent that splits the pair."""
    spec = _spectrum(gap)
    p = planted(spec, B="random", seed=22, cond=5.0)
    W = random_symmetric(N, seed=23)
    clusters = [[0], [1], [2, 3], [4]]

    def loss(A, B):
        L, X = eigrad.eigsh(A, K, B=B, solver="lapack")
        return invariant_loss(L, X, clusters, W)

    rtol = _rtol("lapack", gap, spec)
    EA, EB = cluster_direction(p, [2, 3], seed=24), 0.2 * random_symmetric(N, seed=25)
    _, t = torch.func.jvp(loss, (p.A, p.B), (EA, EB))
    fd = central_difference(loss, [p.A, p.B], [EA, EB], h=H)
    assert_fd_close(t, fd, rtol, f"jvp, gap {gap:.0e}")


def test_merge_tolerance_is_what_the_sweep_assumes():
    """The sweep's error model needs to know which gaps are merged: check it against the options."""
    spec = _spectrum(1e-6)
    atol, rtol = eigrad.BackwardOptions().resolved_degen(torch.float64, max(abs(v) for v in spec))
    # merged iff gap <= atol + rtol·|λ| (λ = 1.5): between 1e-8 (merged) and 1e-6 (separate)
    assert 1e-8 < atol + rtol * 1.5 < 1e-6
    assert atol + rtol * 1.5 <= _merge_tol(spec)


def test_lapack_pair_just_above_merge_tolerance(assert_fd_close):
    """The lapack route reaches the eigenbasis route's accuracy for an unmerged pair at gap 1e-6."""
    spec = _spectrum(1e-6)
    p = planted(spec, seed=17)
    W = random_symmetric(N, seed=18)
    clusters = [[0], [1], [2, 3], [4]]

    def loss(A):
        return invariant_loss(*eigrad.eigsh(A, K, solver="lapack"), clusters, W)

    A = p.A.clone().requires_grad_(True)
    (gA,) = torch.autograd.grad(loss(A), [A])
    E = random_symmetric(N, seed=19)
    assert_fd_close((gA * E).sum(), central_difference(loss, [p.A], [E], h=H), _rtol("dense", 1e-6, spec))
