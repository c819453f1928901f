"""The existence checks measured per cluster, without false alarms (docs/guide.md, "When the derivative exists").

* condition 2 is measured against the cotangents of the cluster itself, so a large cotangent on
  other eigenvalues does not hide a non-uniform weight on a repeated eigenvalue;
* eigenvalues that are distinct to working accuracy but merged by the degeneracy tolerance (a
  tunnelling splitting) keep their exact eigenvalue derivatives ``x_i x_iᵀ`` without a report;
  exact degeneracies are still reported;
* the messages say what is true: whether the derivative exists, what was returned, and in
  ``spectral_norm``'s own terms for ``spectral_norm``.

References: closed forms (``∂λ_i/∂A = x_i x_iᵀ``; a 2×2 block with exact eigenvectors
``(1, ±1)/√2``) and central finite differences.
"""

from __future__ import annotations

import math

import pytest
import torch

import eigrad
from eigrad.testing import central_difference, clustered_spectrum, planted, random_symmetric

DT = torch.float64
N = 12
SPEC = clustered_spectrum(N, [1, 1, 3, 2])  # 1, 2, [3, 3, 3] at positions 2-4, [4, 4] at 5-6, 5, ...
TRIPLE = [2, 3, 4]
RAISE = eigrad.BackwardOptions(gauge="raise")


def _grad(loss, A, k=None, backward=RAISE, solver="auto", B=None):
    A = A.clone().requires_grad_(True)
    if k is None:
        L, X = eigrad.eigh(A, B, backward=backward)
    else:
        L, X = eigrad.eigsh(A, k, B=B, solver=solver, backward=backward)
    (g,) = torch.autograd.grad(loss(L, X), [A])
    return g, L.detach(), X.detach()


# --- condition 2 per cluster -------------------------------------------------------------------------
@pytest.mark.parametrize("c", [1e4, 1e8, 1e12])
@pytest.mark.parametrize("solver", ["lapack", "dense"])
def test_condition_2_is_reported_however_large_other_cotangents(c, solver):
    """``c·λ_7 + λ_3`` with ``λ_3`` inside the triple: not differentiable for every ``c``."""
    A = planted(SPEC, seed=1).A
    with pytest.raises(eigrad.GaugeError, match=r"positions \[2, 3, 4\].*condition 2"):
        _grad(lambda L, X: c * L[7] + L[3], A, k=8, solver=solver)


def test_condition_1_is_measured_against_the_cluster_own_cotangent():
    """A basis-dependent ``X[0, 3]`` on the triple beside a huge cotangent on a simple eigenvector."""
    A = planted(SPEC, seed=1).A
    with pytest.raises(eigrad.GaugeError, match=r"positions \[2, 3, 4\].*condition 1"):
        _grad(lambda L, X: 1e12 * (X[:, 7] ** 2 * torch.arange(N, dtype=DT)).sum() + X[0, 3], A, k=8)


def test_condition_2_rounding_floor_is_relative_to_the_whole_cotangent():
    """A spread below the rounding of the largest cotangent is rounding, not a violation; above it the
    spread is measured against the cluster's own cotangent."""
    from eigrad.autodiff._checks import eigenvalue_violation

    fine = torch.tensor([0, 1, 1])
    v = eigenvalue_violation(torch.tensor([20.0, -1.4e-14, 5.7e-14], dtype=DT), fine)  # newton_degenerate.py
    assert float(v[1]) == 0.0  # 7e-14 below 1e3·eps·20 = 4.4e-12
    v = eigenvalue_violation(torch.tensor([1e4, 1.0, 1.0 + 1e-3], dtype=DT), fine)
    assert abs(float(v[1]) - 1e-3 / (1 + 1e-3)) < 1e-12


def test_loss_converged_on_a_repeated_eigenvalue_does_not_warn():
    """``Σ (λ_i - t_i)²`` with ``t`` equal on the triple and ``λ = t`` there: rounding-level Λ̄, no report."""
    A = planted(SPEC, seed=1).A
    t = torch.tensor(SPEC[:8], dtype=DT) + torch.tensor([20.0, -20, 0, 0, 0, 5, 5, 3], dtype=DT)
    _grad(lambda L, X: 0.5 * ((L - t) ** 2).sum(), A, k=8)


# --- nearly equal eigenvalues: exact eigenvalue derivatives, no report -------------------------------
def _block(gap):
    """``[[1, g/2], [g/2, 1]] ⊕ diag(2..N-1)``: eigenvalues ``1 ∓ g/2`` with eigenvectors ``(1, ±1)/√2``
    exactly (for any float ``g``), then ``2, 3, ...``; ``‖A‖ = N - 1``."""
    A = torch.diag(torch.cat([torch.ones(2, dtype=DT), torch.arange(2, N, dtype=DT)]))
    A[0, 1] = A[1, 0] = -gap / 2
    v0 = torch.zeros(N, dtype=DT)
    v0[:2] = 1 / math.sqrt(2)
    v1 = v0.clone()
    v1[1] = -v1[1]
    return A, v0, v1


def _eigvecs(gap):
    """The exact eigenvectors of :func:`_block` (columns, ascending) and its eigenvalues."""
    _, v0, v1 = _block(gap)
    V = torch.eye(N, dtype=DT)
    V[:, 0], V[:, 1] = v0, v1
    lam = torch.cat([torch.tensor([1 - gap / 2, 1 + gap / 2], dtype=DT), torch.arange(2, N, dtype=DT)])
    return V, lam


@pytest.mark.parametrize("solver", ["lapack", "dense"])
@pytest.mark.parametrize("gap", [1e-7, 1e-8, 1e-10])
def test_eigenvalue_of_a_nearly_equal_pair_has_its_exact_gradient_without_a_report(gap, solver):
    """A tunnelling splitting: ``λ_0`` alone, k=1 (the pair cut by k) and k=2; merged by the tolerance
    (``sqrt(eps)·‖A‖ ≈ 1.6e-7``) but distinct: ``∂λ_0/∂A = v_0 v_0ᵀ`` exactly, no GaugeWarning/Error."""
    A, v0, _ = _block(gap)
    ref = torch.outer(v0, v0)
    for k in (1, 2):
        g, _, _ = _grad(lambda L, X: L[0], A, k=k, solver=solver)
        err = float((g - ref).norm())
        assert err < 30 * torch.finfo(DT).eps * (N - 1) / gap, (k, err)  # eps·‖A‖/gap (benchmarks/existence_gap.py)
    g, _, _ = _grad(lambda L, X: L[0] + 3 * L[1], A)  # unequal weights on the pair, full decomposition
    _, v1 = _block(gap)[1:]
    assert float((g - ref - 3 * torch.outer(v1, v1)).norm()) < 100 * torch.finfo(DT).eps * (N - 1) / gap


def test_nearly_equal_pair_through_an_operator_is_not_reported():
    """The same check on the operator route (a FunctionOperator, materialized and ARPACK)."""
    A, v0, _ = _block(1e-8)
    ref = torch.outer(v0, v0)
    for solver in ("dense", "arpack"):
        M = A.clone().requires_grad_(True)
        op = eigrad.FunctionOperator(lambda X, M: M @ X, (M,), (N, N))
        L, _ = eigrad.eigsh(op, 1, solver=solver, backward=RAISE)
        (g,) = torch.autograd.grad(L[0], [M])
        assert float((g - ref).norm()) < 1e-6, solver


@pytest.mark.parametrize("gap", [0.0, 1e-13])
def test_eigenvalue_of_an_exactly_repeated_pair_is_still_reported(gap):
    """Below ``eps·‖A‖/check_rtol ≈ 2e-11`` the eigenvalues are equal to working accuracy: ``λ_min`` of
    the pair is not differentiable, and both the cut (k=1) and the whole pair (k=2) are reported."""
    A, _, _ = _block(gap)
    with pytest.raises(eigrad.GaugeError, match="k=1 cuts a degenerate cluster.*set-valued"):
        _grad(lambda L, X: L[0], A, k=1)
    with pytest.raises(eigrad.GaugeError, match=r"positions \[0, 1\].*condition 2"):
        _grad(lambda L, X: L[0], A, k=2)


def test_eigenvector_of_a_nearly_equal_pair_says_the_derivative_exists_and_how_to_get_it():
    """``x_0ᵀ W x_0`` on a pair split by 1e-7: its derivative exists (it grows like 1/gap); merged, the
    coupling is dropped. The message says so, and its suggested tolerances give the closed form."""
    gap = 1e-7
    A, _, _ = _block(gap)
    W = random_symmetric(N, seed=3)

    def loss(L, X):
        return X[:, 0] @ W @ X[:, 0]

    with pytest.warns(eigrad.GaugeWarning) as rec:
        _grad(loss, A, k=4, backward=None)
    msg = str(rec[0].message)
    assert "nearly equal eigenvalues" in msg and "does not exist" not in msg
    assert "Its derivative exists but grows like 1/gap" in msg
    suggested = eigrad.BackwardOptions(gauge="raise", degen_atol=1e-8, degen_rtol=0.0)
    assert "BackwardOptions(degen_atol=1e-08, degen_rtol=0)" in msg
    g, _, _ = _grad(loss, A, k=4, backward=suggested)
    V, lam = _eigvecs(gap)  # dx_0 = Σ_{j≠0} x_j (x_jᵀ dA x_0)/(λ_0 - λ_j)
    ref = torch.zeros(N, N, dtype=DT)
    for j in range(1, N):
        c = 2 * (V[:, 0] @ W @ V[:, j]) / (lam[0] - lam[j])
        ref += c * 0.5 * (torch.outer(V[:, j], V[:, 0]) + torch.outer(V[:, 0], V[:, j]))
    assert float((g - ref).norm() / ref.norm()) < 1e-6


# --- what the messages say ------------------------------------------------------------------------------
def test_linear_spectral_function_over_a_cluster_is_not_called_nonexistent():
    """``<W, X_g Λ_g X_gᵀ>`` over the whole triple (linear f) has a derivative: the finite difference
    agrees with funm's; the eigen-API's message must not say it does not exist."""
    spec = [1.0, 1.0, 1.0, 2.0, 3.5, 4.0, 5.0, 6.0]
    p = planted(spec, seed=4)
    W = random_symmetric(len(spec), seed=5)

    def eig_loss(L, X):
        Xg = X[:, :3]
        return (W * ((Xg * L[:3]) @ Xg.T)).sum()

    with pytest.warns(eigrad.GaugeWarning) as rec:
        _grad(eig_loss, p.A, k=4, backward=None)
    msg = str(rec[0].message)
    assert "does not exist at a degenerate eigenvalue" not in msg
    assert "cannot be formed from the eigenpairs" in msg and "linear f too" in msg and "eigrad.funm" in msg

    def funm_loss(A):
        return (W * eigrad.funm(A, lambda x: x, k=3)).sum()

    A = p.A.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(funm_loss(A), [A])
    E = random_symmetric(len(spec), seed=6)
    fd = float(central_difference(lambda A: funm_loss(A), [p.A], [E], h=1e-4))
    assert abs(float((g * E).sum()) - fd) < 1e-8 * abs(fd)


def test_message_describes_what_is_returned_for_a_single_eigenvalue():
    """``L[0]`` at ``diag(1, 1, 2, 3)``: the returned gradient is ``x_0 x_0ᵀ`` of the returned basis."""
    A = torch.diag(torch.tensor([1.0, 1.0, 2.0, 3.0], dtype=DT))
    with pytest.warns(eigrad.GaugeWarning) as rec:
        g, _, X = _grad(lambda L, X: L[0], A, backward=None)
    msg = str(rec[0].message)
    assert "averaged over the bases" not in msg
    assert "Σ_i Λ̄_i x_i x_iᵀ in the basis x_i that was returned (x_0 x_0ᵀ for λ_0 alone)" in msg
    torch.testing.assert_close(g, torch.outer(X[:, 0], X[:, 0]), atol=1e-14, rtol=0)


@pytest.mark.parametrize("batched", [False, True])
def test_spectral_norm_speaks_of_singular_values(batched):
    Q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=DT, generator=torch.Generator().manual_seed(7)))
    W = (Q.expand(2, 6, 6) if batched else Q).clone().requires_grad_(True)
    with pytest.warns(eigrad.GaugeWarning) as rec:
        eigrad.spectral_norm(W).sum().backward()
    msg = str(rec[0].message)
    assert msg.startswith("eigrad.spectral_norm: σ_max(W) has no gradient here")
    assert "largest singular value of W is repeated (σ = 1, multiplicity 6)" in msg
    assert "set-valued" in msg and "u vᵀ is one subgradient" in msg
    assert "k=" not in msg and "eigsh" not in msg
    with pytest.raises(eigrad.GaugeError, match="spectral_norm: σ_max"):
        eigrad.spectral_norm(Q.clone().requires_grad_(True), backward=RAISE).backward()


def test_spectral_norm_of_nearly_equal_top_singular_values_is_not_reported():
    """σ = 1 ± 3e-9 (merged by the tolerance, distinct to working accuracy): ``∂σ_max/∂W = u vᵀ``."""
    s = torch.tensor([1.0 + 3e-9, 1.0 - 3e-9, 0.5, 0.25], dtype=DT)
    W = torch.diag(s).requires_grad_(True)
    eigrad.spectral_norm(W, backward=RAISE).backward()
    ref = torch.zeros(4, 4, dtype=DT)
    ref[0, 0] = 1.0
    assert float((W.grad - ref).norm()) < 1e-6


# --- options --------------------------------------------------------------------------------------------
def test_no_guard_under_raise_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"n_guard=0, gauge='raise'.*cut by k cannot be detected"):
        eigrad.BackwardOptions(n_guard=0, gauge="raise")
    eigrad.BackwardOptions(n_guard=0)  # "warn": documented, cuts are not detected
    eigrad.BackwardOptions(n_guard=0, gauge="ignore")


# --- the limit of a first-order check (documented in docs/guide.md) --------------------------------------
def test_first_order_check_cannot_see_a_loss_stationary_under_rotations():
    """``X[0, 0]²`` on the pair of ``diag(1, 1, 2)``: ``X_gᵀ X̄_g`` is symmetric (no cotangent test can
    object), yet the loss is not a function of A (any unit vector of the pair may be returned)."""
    A = torch.diag(torch.tensor([1.0, 1.0, 2.0], dtype=DT))
    g, _, X = _grad(lambda L, X: X[0, 0] ** 2, A)  # gauge="raise": silent
    assert float(g.abs().max()) == 0.0
    c, s = math.cos(0.8), math.sin(0.8)
    x_other = c * X[:, 0] + s * X[:, 1]  # another valid eigenvector of the pair
    assert abs(float(X[0, 0] ** 2 - x_other[0] ** 2)) > 0.1


def test_funm_cut_of_a_nearly_equal_pair_is_reported_as_such():
    """funm with k=1 on a pair split by 1e-8: the value is unique, the merged backward drops the 1/gap
    coupling (measured: the gradient is 100% off), so it is reported, without calling the value non-unique."""
    A, _, _ = _block(1e-8)
    with pytest.warns(eigrad.GaugeWarning, match="nearly equal to 1 eigenvalue.*is unique, but its derivative") as rec:
        eigrad.funm(A, torch.exp, k=1)
    assert "not unique" not in str(rec[0].message)
    A, _, _ = _block(0.0)
    with pytest.raises(eigrad.GaugeError, match="eigenspace is not unique"):
        eigrad.funm(A, torch.exp, k=1, backward=RAISE)
