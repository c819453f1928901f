"""Projected block MINRES (eigrad.linsolve._minres) against exact eigenbasis solutions."""

from __future__ import annotations

import pytest
import torch

import eigrad
from eigrad.linsolve._minres import MinresFactory, MinresInfo, ProjectedMinres
from eigrad.operators import DenseOperator
from eigrad.testing import clustered_spectrum, planted

DT = torch.float64
K = 6  # computed pairs: λ = 1 | 2 2 | 3 3 3
CLUSTERS = [[0], [1, 2], [3, 4, 5]]


def _problem(B=None, n=50, seed=0, spectrum=None):
    spec = clustered_spectrum(n, [1, 2, 3]) if spectrum is None else spectrum
    p = planted(spec, B=B, seed=seed)
    labels = torch.zeros(K, dtype=torch.long)
    for c, pos in enumerate(CLUSTERS):
        labels[pos] = c
    M = labels.unsqueeze(-1) == labels.unsqueeze(-2)  # (K, K) column j's cluster
    return p, M


def _rhs(p, M, seed=1):
    """Right-hand sides with X_gᵀ r_j = 0 (MATH.md: the caller removes each cluster's part)."""
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(p.n, K, dtype=DT, generator=g)
    X = p.eigenvectors[:, :K]
    BX = X if p.B is None else p.B @ X
    return R - BX @ (M.to(DT) * (X.T @ R))


def _exact(p, R, shifts, M):
    """G_j r_j from the whole eigenbasis: Σ_{i ∉ g_j} x_i (x_iᵀ r_j) / (λ_i - λ_j)."""
    lam, Xf = p.eigenvalues, p.eigenvectors
    C = Xf.T @ R
    diff = lam.unsqueeze(-1) - shifts.unsqueeze(-2)
    inside = torch.zeros_like(diff, dtype=torch.bool)
    inside[:K] = M
    return Xf @ torch.where(inside, torch.zeros_like(C), C / torch.where(inside, torch.ones_like(diff), diff))


def _true_residual(p, R, shifts, M, Y):
    """‖P_g (r_j - (A - λ_j B) y_j)‖ / ‖r_j‖, computed independently of the solver."""
    X = p.eigenvectors[:, :K]
    Bm = torch.eye(p.n, dtype=DT) if p.B is None else p.B
    res = R - (p.A @ Y - (Bm @ Y) * shifts)
    res = res - (Bm @ X) @ (M.to(DT) * (X.T @ res))
    return torch.linalg.vector_norm(res, dim=0) / torch.linalg.vector_norm(R, dim=0)


def _solver(p, **kw):
    B = None if p.B is None else DenseOperator(p.B)
    return ProjectedMinres(DenseOperator(p.A), B, p.eigenvalues[:K], **kw)


@pytest.mark.parametrize("B", [None, "random"])
@pytest.mark.parametrize("deflate", [True, False])
@pytest.mark.parametrize("precond", [False, True])
def test_matches_eigenbasis_solution(B, deflate, precond):
    p, M = _problem(B)
    R = _rhs(p, M)
    shifts = p.eigenvalues[:K]
    P = None
    if precond:  # SPD: (A - σB)⁻¹ with σ below the spectrum, slightly perturbed
        Bm = torch.eye(p.n, dtype=DT) if p.B is None else p.B
        P = torch.linalg.inv(p.A - 0.5 * Bm + 0.3 * torch.eye(p.n, dtype=DT))
    solver = _solver(p, rtol=1e-11, deflate=deflate, preconditioner=P)
    Y = solver(R, shifts, p.eigenvectors[:, :K], M)
    Y_exact = _exact(p, R, shifts, M)
    err = torch.linalg.vector_norm(Y - Y_exact) / torch.linalg.vector_norm(Y_exact)
    assert err < 1e-8
    assert float(_true_residual(p, R, shifts, M, Y).max()) <= 1e-11
    # the answer is projected: X_gᵀ B y_j = 0 for every column's cluster
    X = p.eigenvectors[:, :K]
    BX = X if p.B is None else p.B @ X
    assert float((M.to(DT) * (BX.T @ Y)).abs().max()) < 1e-12


@pytest.mark.parametrize("rtol", [1e-4, 1e-8, 1e-12])
def test_stops_on_the_true_residual(rtol):
    """The bound holds on the residual recomputed here, not on the recurrence's estimate."""
    p, M = _problem("random", n=80, seed=3)
    R = _rhs(p, M, seed=4)
    shifts = p.eigenvalues[:K]
    solver = _solver(p, rtol=rtol, deflate=False)
    Y = solver(R, shifts, p.eigenvectors[:, :K], M)
    rel = _true_residual(p, R, shifts, M, Y)
    assert float(rel.max()) <= rtol
    if rtol >= 1e-8:  # and it stops near the bound instead of solving to rounding
        assert float(rel.max()) > 1e-4 * rtol


def test_looser_rtol_needs_fewer_iterations():
    p, M = _problem()
    R = _rhs(p, M)
    its = []
    for rtol in (1e-3, 1e-12):
        s = _solver(p, rtol=rtol, deflate=False)
        s(R, p.eigenvalues[:K], p.eigenvectors[:, :K], M)
        its.append(s.n_iter)
    assert its[0] < its[1]


def test_preconditioner_reduces_iterations():
    p, M = _problem(n=120, spectrum=clustered_spectrum(120, [1, 2, 3], spacing=0.05))
    R = _rhs(p, M)
    P = torch.linalg.inv(p.A - 0.5 * torch.eye(p.n, dtype=DT))  # SPD: σ = 0.5 below λ_1 = 1
    counts = {}
    for name, pre in (("none", None), ("exact-ish", P)):
        s = _solver(p, rtol=1e-10, preconditioner=pre)
        s(R, p.eigenvalues[:K], p.eigenvectors[:, :K], M)
        counts[name] = s.n_iter
    assert counts["exact-ish"] * 2 < counts["none"], counts


def test_deflation_handles_a_close_guard():
    """λ_{k+1} just above the last cluster: deflating the computed guard keeps MINRES short."""
    spec = clustered_spectrum(60, [1, 2, 3], gaps=[1.0, 1.0, 1e-6])
    p, M = _problem(spectrum=spec)
    Kg = K + 1
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 3])
    Mg = labels.unsqueeze(-1) == labels.unsqueeze(-2)
    g = torch.Generator().manual_seed(2)
    X = p.eigenvectors[:, :Kg]
    R = torch.randn(p.n, Kg, dtype=DT, generator=g)
    R = R - X @ (Mg.to(DT) * (X.T @ R))
    shifts = p.eigenvalues[:Kg]
    s = ProjectedMinres(DenseOperator(p.A), None, p.eigenvalues[:Kg], rtol=1e-10)
    Y = s(R, shifts, X, Mg)
    lam, Xf = p.eigenvalues, p.eigenvectors
    inside = torch.zeros(p.n, Kg, dtype=torch.bool)
    inside[:Kg] = Mg
    diff = lam.unsqueeze(-1) - shifts
    Y_exact = Xf @ torch.where(inside, 0.0, (Xf.T @ R) / torch.where(inside, 1.0, diff))
    assert float(torch.linalg.vector_norm(Y - Y_exact) / torch.linalg.vector_norm(Y_exact)) < 1e-8
    assert s.n_iter < 60


def test_maxiter_raises_convergence_error():
    p, M = _problem("random")
    R = _rhs(p, M)
    s = _solver(p, rtol=1e-12, maxiter=3)
    with pytest.raises(eigrad.ConvergenceError, match=r"reached maxiter=3 .* > rtol=1\.0e-12") as info:
        s(R, p.eigenvalues[:K], p.eigenvectors[:, :K], M)
    sol = info.value.solution
    assert isinstance(sol, MinresInfo)
    assert sol.Y.shape == R.shape and sol.n_iter == 3
    assert float(sol.relative_residuals.max()) > 1e-12


def test_unattainable_rtol_stops_at_the_rounding_floor():
    """rtol=1e-20 cannot be met: the solve ends at the rounding level of (A - λB)y, documented."""
    p, M = _problem()
    s = _solver(p, rtol=1e-20)
    R = _rhs(p, M)
    shifts = p.eigenvalues[:K]
    Y = s(R, shifts, p.eigenvectors[:, :K], M)
    knorm = torch.linalg.matrix_norm(p.A, ord=2) + shifts.abs()
    res = _true_residual(p, R, shifts, M, Y) * torch.linalg.vector_norm(R, dim=0)
    floor = 32 * torch.finfo(DT).eps * knorm * torch.linalg.vector_norm(Y, dim=0)
    assert bool((res <= floor).all())


def test_inexact_operator_stagnates_and_raises():
    """An operator with 1e-8 relative noise cannot reach rtol=1e-12: stagnation is reported."""
    p, M = _problem()
    gen = torch.Generator().manual_seed(11)

    def noisy(X, A):
        Y = A @ X
        return Y + 1e-8 * torch.linalg.vector_norm(Y) * torch.randn(Y.shape, dtype=DT, generator=gen)

    op = eigrad.FunctionOperator(noisy, (p.A,), p.n)
    s = ProjectedMinres(op, None, p.eigenvalues[:K], rtol=1e-12)
    with pytest.raises(eigrad.ConvergenceError, match="stagnated"):
        s(_rhs(p, M), p.eigenvalues[:K], p.eigenvectors[:, :K], M)


def test_indefinite_preconditioner_is_rejected():
    p, M = _problem()
    s = _solver(p, rtol=1e-10, preconditioner=lambda R: -R)
    with pytest.raises(ValueError, match="not positive definite"):
        s(_rhs(p, M), p.eigenvalues[:K], p.eigenvectors[:, :K], M)


def test_bad_preconditioner_type():
    p, _ = _problem()
    with pytest.raises(TypeError, match="preconditioner must be"):
        _solver(p, rtol=1e-10, preconditioner="jacobi")


def test_zero_right_hand_sides():
    p, M = _problem()
    s = _solver(p, rtol=1e-10)
    Y = s(torch.zeros(p.n, K, dtype=DT), p.eigenvalues[:K], p.eigenvectors[:, :K], M)
    assert torch.equal(Y, torch.zeros_like(Y)) and s.n_iter == 0


def test_batched_right_hand_sides_fold_into_columns():
    p, M = _problem()
    R1, R2 = _rhs(p, M, seed=5), _rhs(p, M, seed=6)
    X, shifts = p.eigenvectors[:, :K], p.eigenvalues[:K]
    Y = _solver(p, rtol=1e-11)(torch.stack([R1, R2]), shifts, X, M)
    for Rb, Yb in ((R1, Y[0]), (R2, Y[1])):
        Yref = _solver(p, rtol=1e-11)(Rb, shifts, X, M)
        assert torch.allclose(Yb, Yref, atol=1e-9, rtol=0)


def test_factory_rebuilds_operators_from_tensors():
    p, M = _problem("random")
    A_op = eigrad.FunctionOperator(lambda X, A: A @ X, (p.A,), p.n)
    B_op = eigrad.FunctionOperator(lambda X, B: B @ X, (p.B,), p.n)
    (tA, sA), (tB, sB) = A_op.flatten(), B_op.flatten()
    factory = MinresFactory(sA, len(tA), sB, rtol=1e-11)
    solve = factory((*tA, *tB, p.eigenvalues[:K]), None, None)
    R = _rhs(p, M)
    Y = solve(R, p.eigenvalues[:K], p.eigenvectors[:, :K], M)
    Y_exact = _exact(p, R, p.eigenvalues[:K], M)
    assert float(torch.linalg.vector_norm(Y - Y_exact) / torch.linalg.vector_norm(Y_exact)) < 1e-8
