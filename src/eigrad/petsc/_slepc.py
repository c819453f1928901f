"""The forward: SLEPc's Krylov–Schur on a distributed matrix, with eigrad's checks.

Eigenvalues are replicated (rank 0's, broadcast), eigenvectors are this rank's
rows; with ``B``, B-orthonormal. Convergence is rechecked on the true residuals
with eigrad's criterion (``eigensolvers/_options.py``):
``‖A x_i − λ_i B x_i‖ <= rtol · max(|λ_i|, eps^¼ ν) · ‖B x_i‖``, ``ν = ‖A‖_∞``
(``‖A‖_∞ / ‖B‖_∞`` with ``B``). Every verdict (converged, missed pairs) comes from collective
reductions, so every rank raises or returns alike.

**Missed copies of a repeated eigenvalue.** Krylov–Schur is a single-vector
method: in exact arithmetic it sees one vector of each eigenspace that its
start vector touches, and in floating point it may return a cluster
incompletely or skip it. As eigrad's ARPACK path (``verify_no_missed``), the
result is re-checked: a second Krylov–Schur run with the computed vectors as
SLEPc's *deflation space* (it works in their orthogonal complement) from a
fresh random start looks for the extreme eigenvalue there; one beyond the
boundary on the wanted side by more than ``δ = rtol · max(|b|, eps^¼ ν)`` is a
missed pair, merged by Rayleigh–Ritz on ``[X, y]`` (the K best of K + 1 kept),
and the check repeats. The verification run is loose
(``min(sqrt(rtol), 1e-3)``) and repeated at ``rtol`` only when its value could
lie on the wanted side. Cost with nothing missed: one loose run for one pair.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch

from .._errors import ConvergenceError
from ..eigensolvers._base import EigSolution
from ..eigensolvers._options import IterativeOptions
from ._comm import allsum, inner, same_everywhere
from ._env import import_backend


@dataclasses.dataclass(frozen=True)
class Slepc(IterativeOptions):
    """SLEPc EPS Krylov–Schur for :class:`eigrad.petsc.DistributedCSR` (``eigsh(..., solver="slepc")``).

    Parameters
    ----------
    rtol, maxiter, seed
        As every eigrad iterative solver (``eigrad.solvers``): ``rtol`` the
        relative residual tolerance (default ``1e-8`` in float64), ``maxiter``
        SLEPc's restart cap (default SLEPc's), ``seed`` the start vector's
        (numpy ``default_rng(seed)`` over the global rows: the same start on
        any number of ranks).
    ncv : int or None
        Krylov–Schur's subspace size (default SLEPc's, ``max(2 nev, nev + 15)``).
    verify : bool
        Re-check that no copy of a repeated eigenvalue was skipped (module
        docstring). Default True.
    on_failure : "raise"
        Non-convergence raises :class:`eigrad.ConvergenceError` on every rank;
        ``"warn"`` is not offered (SLEPc returns no vector for a pair it did
        not converge).
    """

    ncv: int | None = None
    verify: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.on_failure != "raise":
            raise ValueError(f"Slepc(on_failure={self.on_failure!r}): only 'raise' is offered.")
        if self.ncv is not None and (isinstance(self.ncv, bool) or not isinstance(self.ncv, int) or self.ncv < 2):
            raise ValueError(f"Slepc(ncv={self.ncv!r}) must be an int >= 2 or None.")

    def __call__(self, A, k, B=None, largest=False, n_guard=0, X0=None, preconditioner=None):
        return slepc_eigsh(A, k + n_guard, k, largest, self, X0, B)


def _eps_run(op, nev, largest, tol, maxit, ncv, start, deflation=None, Bop=None):
    """One EPS Krylov–Schur solve: ``(values (q,) replicated, vectors (m, q) local, iterations)``, q <= nev.

    With ``Bop``: the generalized problem (``GHEP``, B-orthonormal vectors); SLEPc's spectral
    transformation applies ``B⁻¹`` through a MUMPS Cholesky factorization (distributed).
    """
    PETSc, SLEPc, _ = import_backend()
    eps = SLEPc.EPS().create(comm=op.pattern.comm)
    if Bop is None:
        eps.setOperators(op.mat)
        eps.setProblemType(SLEPc.EPS.ProblemType.HEP)
    else:
        eps.setOperators(op.mat, Bop.mat)
        eps.setProblemType(SLEPc.EPS.ProblemType.GHEP)
        ksp = eps.getST().getKSP()
        if getattr(Bop, "is_shell", False):  # a matrix-free B (SPD): B⁻¹ by CG, far below the EPS tolerance
            ksp.setType(PETSc.KSP.Type.CG)
            ksp.getPC().setType(PETSc.PC.Type.NONE)
            ksp.setTolerances(rtol=min(1e-3 * tol, 1e-13), atol=0.0, max_it=10 * op.n)
        else:
            ksp.setType(PETSc.KSP.Type.PREONLY)
            ksp.getPC().setType(PETSc.PC.Type.CHOLESKY)
            ksp.getPC().setFactorSolverType("mumps")
    eps.setType(SLEPc.EPS.Type.KRYLOVSCHUR)
    eps.setWhichEigenpairs(SLEPc.EPS.Which.LARGEST_REAL if largest else SLEPc.EPS.Which.SMALLEST_REAL)
    eps.setDimensions(nev=nev, ncv=ncv if ncv is not None else PETSc.DECIDE)
    eps.setTolerances(tol=tol, max_it=maxit if maxit is not None else PETSc.DEFAULT)
    eps.setConvergenceTest(SLEPc.EPS.Conv.REL)
    vecs = []
    if deflation is not None:
        vecs = [op.vec(np.ascontiguousarray(deflation[:, j].numpy())) for j in range(deflation.shape[1])]
        eps.setDeflationSpace(vecs)
    starts = [op.vec(np.ascontiguousarray(start[:, j].numpy())) for j in range(start.shape[1])]
    eps.setInitialSpace(starts)
    eps.solve()
    q = min(eps.getConverged(), nev)
    vals = np.empty(q)
    X = np.empty((op.pattern.m, q))
    v = op.mat.createVecRight()
    for i in range(q):
        vals[i] = eps.getEigenpair(i, v).real
        X[:, i] = v.getArray(readonly=True)
    its = eps.getIterationNumber()
    for o in (eps, v, *vecs, *starts):
        o.destroy()
    vals = same_everywhere(vals, op.mpi)  # replicated: rank 0's values on every rank
    order = np.argsort(vals, kind="stable")
    return torch.from_numpy(vals[order].copy()), torch.from_numpy(X[:, order].copy()), its


def _apply_B(Bop, X):
    return X if Bop is None else Bop.matmat(X)


def _random_start(op, seed, X=None, Bop=None):
    """A start vector over the global rows (the same on any split), B-orthogonal to ``X`` when given."""
    p = op.pattern
    v = torch.from_numpy(np.random.default_rng(seed).uniform(-1.0, 1.0, p.n)[p.start : p.end].copy())
    v = v.unsqueeze(-1)
    if X is not None:
        ip, BX = inner(op.mpi), _apply_B(Bop, X)
        for _ in range(2):
            v = v - X @ ip(BX, v)
    return v


def _rayleigh_ritz(op, W, K, largest, Bop=None):
    """The K best Ritz pairs of ``span W`` (B-orthonormal columns, local rows)."""
    ip = inner(op.mpi)
    H = ip(W, op.matmat(W))
    H = 0.5 * (H + H.T)
    if Bop is None:
        theta, Q = torch.linalg.eigh(H)
    else:  # H q = θ M q with M = Wᵀ B W (≈ I): reduce by M's Cholesky factor
        M = ip(W, Bop.matmat(W))
        C = torch.linalg.cholesky(0.5 * (M + M.T))
        Ht = torch.linalg.solve_triangular(C, torch.linalg.solve_triangular(C, H, upper=False).T, upper=False)
        theta, Qt = torch.linalg.eigh(0.5 * (Ht + Ht.T))
        Q = torch.linalg.solve_triangular(C.T, Qt, upper=True)
    sel = slice(theta.shape[0] - K, None) if largest else slice(0, K)
    return theta[sel], W @ Q[:, sel]


def _verify_no_missed(op, vals, X, largest, rtol, nu, solver, seed, Bop=None):
    """Merge in eigenpairs Krylov–Schur skipped (module docstring). Returns ``(vals, X, rounds)``."""
    K = vals.shape[0]
    eps = torch.finfo(X.dtype).eps
    loose = max(min(rtol**0.5, 1e-3), 0.5 * rtol)
    ip = inner(op.mpi)
    merged = 0
    for r in range(K + 1):
        b = float(vals[0] if largest else vals[-1])
        floor = max(abs(b), eps**0.25 * nu)
        start = _random_start(op, seed + 1 + r, X, Bop)
        mu, Y, _ = _eps_run(op, 1, largest, loose, solver.maxiter, solver.ncv, start, deflation=X, Bop=Bop)
        if mu.numel() == 0:
            break  # not converged to the loose tolerance: nothing found within it (reported below)
        side = (float(mu[0]) - b) if largest else (b - float(mu[0]))  # > 0: on the wanted side
        if side < -loose * floor:
            return vals, X, merged
        mu, Y, _ = _eps_run(op, 1, largest, rtol, solver.maxiter, solver.ncv, Y, deflation=X, Bop=Bop)
        if mu.numel() == 0:
            break
        side = (float(mu[0]) - b) if largest else (b - float(mu[0]))
        if side <= rtol * floor:
            return vals, X, merged
        y, BX = Y[:, :1], _apply_B(Bop, X)
        for _ in range(2):
            y = y - X @ ip(BX, y)
        y = y / ip(y, _apply_B(Bop, y)).sqrt()
        vals, X = _rayleigh_ritz(op, torch.cat([X, y], dim=1), K, largest, Bop)
        merged += 1
    warnings.warn(
        "eigrad.petsc: the check for skipped copies of a repeated eigenvalue did not converge; the "
        "result is not certified complete (raise Slepc(maxiter=) or pass Slepc(verify=False) to skip it).",
        RuntimeWarning, stacklevel=4)
    return vals, X, merged


def slepc_eigsh(op, K, k, largest, solver: Slepc, X0=None, Bop=None) -> EigSolution:
    """K extreme eigenpairs of the distributed ``op`` (and ``Bop``); the wanted k of them, the rest as guards.

    ``ν``, the spectrum's magnitude (criterion floor, degeneracy scale): ``‖A‖_∞``, or
    ``‖A‖_∞ / ‖B‖_∞`` for a generalized problem.
    """
    n = op.n
    if K > n:
        K = n
    rtol = solver.resolved_rtol(torch.float64)
    nu = op.norm_inf() if Bop is None else op.norm_inf() / Bop.norm_inf()
    eps = torch.finfo(torch.float64).eps
    start = _random_start(op, solver.seed) if X0 is None else X0.detach().to(torch.float64)
    tol = rtol
    for attempt in range(3):
        vals, X, its = _eps_run(op, K, largest, tol, solver.maxiter, solver.ncv, start, Bop=Bop)
        if vals.numel() < K:
            raise ConvergenceError(
                f"eigrad.petsc: SLEPc Krylov–Schur converged {vals.numel()} of the {K} eigenpairs wanted "
                f"({k} asked + {K - k} guard(s)) to rtol={tol:.1e} within {its} restarts "
                f"(maxiter={solver.maxiter}); raise Slepc(maxiter=) or Slepc(ncv=), or loosen rtol.")
        if largest:
            vals, X = vals[-K:], X[:, -K:]
        else:
            vals, X = vals[:K], X[:, :K]
        if Bop is not None:
            # SLEPc's vectors are B-orthonormal only to ~1e-10 (measured); MATH.md's formulas and the
            # backward's projector P = I − X (B X)ᵀ need Xᵀ B X = I to rounding: Rayleigh–Ritz on span X
            vals, X = _rayleigh_ritz(op, X, K, largest, Bop)
        if solver.verify and K < n:
            vals, X, _ = _verify_no_missed(op, vals, X, largest, rtol, nu, solver, solver.seed, Bop)
        BX = _apply_B(Bop, X)
        res = allsum(((op.matmat(X) - BX * vals) ** 2).sum(0), op.mpi).sqrt()
        bnorm = allsum((BX**2).sum(0), op.mpi).sqrt()
        bound = rtol * torch.clamp(vals.abs(), min=eps**0.25 * nu) * bnorm
        ratio = float((res / bound).max())
        if ratio <= 1.0:
            break
        # SLEPc's relative test reads its own residual estimate, frozen when a pair is locked (measured
        # with B: 3-10x below the true residual): solve again from the same start, tighter by 4x the
        # factor missed (at most twice)
        tol = max(tol / (4.0 * ratio), 10 * eps)
    else:
        raise ConvergenceError(
            f"eigrad.petsc: SLEPc's eigenpairs do not meet eigrad's criterion ‖A x − λ B x‖ <= rtol·max(|λ|, "
            f"eps^¼ ν)·‖B x‖ on their true residuals (worst {ratio * rtol:.1e} relative, rtol={rtol:.1e}), also "
            f"after solves down to SLEPc tolerance {tol:.1e}; an eigenvalue near 0 (SLEPc's relative test "
            "cannot reach it): shift A; else loosen rtol.")
    g = K - k
    if largest:
        wanted, guards, Xw, Xg = vals[g:], vals[:g], X[:, g:], X[:, :g]
    else:
        wanted, guards, Xw, Xg = vals[:k], vals[k:], X[:, :k], X[:, k:]
    status = "converged"
    return EigSolution(
        eigenvalues=wanted, eigenvectors=Xw, residual_norms=res[g:] if largest else res[:k], n_iter=its,
        status=status, guard_eigenvalues=guards, guard_eigenvectors=Xg, handle=None,
        n_matvec=0, scale=torch.tensor(nu, dtype=torch.float64))
