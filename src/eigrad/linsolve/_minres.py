"""Projected block MINRES for the shifted systems of the operator backward.

Solves ``(A - λ_j B) y_j = r_j`` for all columns ``j`` at once (MATH.md,
"Clusters and the mask D"): one operator application per iteration serves
every column, each with its own shift and its own Lanczos recurrence. For
column ``j`` with cluster ``g`` and deflation set ``Z ⊇ g`` (all computed
eigenpairs by default, the guards included):

* the components along computed eigenvectors outside the cluster are exact,
  ``x_i (x_iᵀ r_j) / (λ_i - λ_j)``;
* the rest solves ``P K Pᵀ z = P r`` with ``K = A - λ_j B``,
  ``P = I - B Z Zᵀ``, by preconditioned MINRES (Paige & Saunders) with the
  projected preconditioner ``T = Pᵀ M P`` (SPD on ``range(P)`` when ``M`` is
  SPD), so every iterate satisfies ``Zᵀ B z = 0``.

Complex Hermitian problems (MATH-complex) run the same recurrence with ``ᵀ``
read as ``ᴴ``: the inner products conjugate their first argument, the
Lanczos coefficients ``α = vᴴ P K v`` and ``β`` are real, and so are the
Givens rotations.

Deflating every computed pair removes the eigenvalues nearest the shifts; for
the ``k`` smallest (largest) pairs the projected operator is then definite.

Stopping rule: the recurrence's residual estimate only decides when to look;
convergence is declared on the **true** residual recomputed from scratch,
``‖P_g (r_j - (A - λ_j B) y_j)‖ <= rtol ‖r_j‖`` (``P_g`` removes the cluster
part, which no ``y`` can reach: the system is singular there), or, for
systems so ill-conditioned that this is unattainable, at the rounding level of
forming that residual, ``32 eps (‖A‖ + |λ_j| ‖B‖) ‖y_j‖`` with the norms
estimated from the products MINRES computed. A column whose true residual is
still too large restarts from it (iterative refinement).
Running out of ``maxiter`` or stagnating raises :class:`eigrad.ConvergenceError`;
the answer is never used silently.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import torch
from torch._C import _functorch

from .. import _monitor
from .._errors import ConvergenceError
from .._scaling import ldexp, pow2_exponent
from ..operators import LinearOperator, OperatorSpec


@dataclasses.dataclass(frozen=True)
class MinresInfo:
    """What a failed solve had (``ConvergenceError.solution``).

    Attributes
    ----------
    Y : Tensor (*batch, n, c)
        The best iterate.
    relative_residuals : Tensor (*batch, c)
        ``‖P_g (r_j - (A - λ_j B) y_j)‖ / ‖r_j‖``.
    n_iter : int
        MINRES iterations (block operator applications).
    """

    Y: torch.Tensor
    relative_residuals: torch.Tensor
    n_iter: int


#: residuals below ``_FLOOR · eps · (‖A‖ + |λ_j|‖B‖) · ‖y_j‖`` count as converged: that is the
#: rounding level of computing ``r_j - (A - λ_j B) y_j`` itself (reached only by ill-conditioned
#: systems, e.g. a guard eigenvalue 1e-6 above a wanted one, where ``rtol`` is unattainable)
_FLOOR = 32
#: the first Lanczos vectors (rich in high frequencies) estimate ‖A‖ + |λ|‖B‖; later ones add little
_NORM_ITERS = 20


def _dot(u, v):  # column-wise inner products uᴴ v (*b, n, c) -> (*b, c), real part (Hermitian forms)
    d = torch.linalg.vecdot(u, v, dim=-2)  # vecdot conjugates u
    return d.real if d.is_complex() else d


def _mH(t):  # ᵀ, or ᴴ for complex
    return t.mH


def _col(s):  # (*b, c) -> (*b, 1, c) to scale columns
    return s.unsqueeze(-2)


def preconditioner_apply(preconditioner, n: int | None = None, label: str = "BackwardOptions(linsolve_preconditioner=...)",
                         ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``R -> M R`` for a callable, an operator (anything with ``matmat``) or a dense matrix ``M`` (SPD).

    With ``n``, a matrix or operator of another size is refused at once; every output is checked to
    be a tensor of its input's shape (host metadata: no synchronization). ``label`` names the
    preconditioner in the messages (the backward's, or an eigensolver's: ``"LOBPCG: the preconditioner"``).
    """
    if preconditioner is None:
        return None
    if isinstance(preconditioner, LinearOperator) or hasattr(preconditioner, "matmat"):
        size, raw = tuple(getattr(preconditioner, "shape", ())), preconditioner.matmat
    elif torch.is_tensor(preconditioner):
        P = preconditioner
        size, raw = tuple(P.shape), (lambda R: P @ R)
    elif callable(preconditioner):
        size, raw = None, preconditioner
    else:
        raise TypeError(
            f"{label}: preconditioner must be a callable R -> M R, an eigrad.LinearOperator or a dense tensor "
            f"(SPD, approximating (A - σB)⁻¹); received {type(preconditioner).__name__}."
        )
    if n is not None and size is not None and (len(size) < 2 or size[-2:] != (n, n)):
        raise ValueError(
            f"{label} has shape {size}; it must be (n, n) = ({n}, {n}) (or (*batch, {n}, {n})), an "
            f"approximation of (A - σB)⁻¹ for the operator of size n = {n}."
        )

    def apply(R):
        Y = raw(R)
        if not torch.is_tensor(Y) or Y.shape != R.shape:
            got = f"shape {tuple(Y.shape)}" if torch.is_tensor(Y) else f"a {type(Y).__name__}"
            raise ValueError(
                f"{label} returned {got} for input {tuple(R.shape)}; it must map (*batch, n, c) to a "
                "tensor of the same shape."
            )
        return Y

    return apply


class ProjectedMinres:
    """Shifted solver over operators (the protocol of :mod:`eigrad.linsolve`).

    Parameters
    ----------
    A, B : LinearOperator
        ``B`` is ``None`` for the standard problem.
    evals : Tensor (*batch, K) or None
        Eigenvalues of the columns of ``X`` the solver will be called with;
        needed for deflation (``deflate=True``).
    rtol : float
        Required true relative residual of every column.
    maxiter : int, optional
        Cap on MINRES iterations over all restarts; default ``max(10 n, 1000)``.
    preconditioner : callable, LinearOperator or Tensor, optional
        ``M ≈ (A - σB)⁻¹``, symmetric positive definite (one for all shifts).
    deflate : bool
        Deflate all computed eigenpairs outside each column's cluster.
    max_restarts : int
        Refinement rounds after the first solve.
    """

    def __init__(self, A, B=None, evals=None, *, rtol: float, maxiter: int | None = None,
                 preconditioner=None, deflate: bool = True, max_restarts: int = 6):
        self.A, self.B, self.evals = A, B, evals
        self.rtol = float(rtol)
        self.maxiter = maxiter if maxiter is not None else max(10 * A.n, 1000)
        self.precond = preconditioner_apply(preconditioner, A.n)
        self.deflate = deflate and evals is not None
        self.max_restarts = max_restarts
        #: statistics of the last call: iterations, operator applications (columns), and the
        #: true relative residual of every column (eigsh_ex's BackwardSolveInfo)
        self.n_iter = 0
        self.n_matvec = 0
        self.relative_residuals = None

    # Operator pieces -------------------------------------------------------
    def _K(self, V, shifts, track=True):  # (A - λ_j B) v_j for every column
        self.n_matvec += V.shape[-1]
        AV = self.A.matmat(V)
        BV = V if self.B is None else self.B.matmat(V)
        if not track:
            return AV - BV * _col(shifts)
        # running estimate of ‖A‖ + |λ|‖B‖ (the scale of the rounding floor of a residual)
        vn = torch.linalg.vector_norm(V, dim=-2)
        size = torch.linalg.vector_norm(AV, dim=-2) + shifts.abs() * torch.linalg.vector_norm(BV, dim=-2)
        ratio = torch.where(vn > 0, size / torch.where(vn > 0, vn, torch.ones_like(vn)), torch.zeros_like(vn))
        if ratio.numel():
            self._knorm = torch.maximum(self._knorm, ratio.amax())
        return AV - BV * _col(shifts)

    def __call__(self, R, shifts, X, M):  # R (*b,n,c), shifts (*b,c), X (*b,n,K), M (*b,K,c)
        if not bool(torch.isfinite(R).all()):
            # MINRES would iterate to maxiter on NaN and report a convergence failure
            raise ValueError(
                "eigrad: the backward's shifted systems (A - λ_j B) y_j = r_j have right-hand sides with NaN "
                "or inf: the cotangents reaching eigsh (the loss's gradient with respect to the eigenvalues "
                "and eigenvectors) are not finite. Find where the loss produces them, e.g. with "
                "torch.autograd.detect_anomaly()."
            )
        if R.dim() > 2 and X.dim() == 2 and len(self.A.shape) == 2:
            # unbatched operator and eigenvectors: fold the batch of right-hand sides into columns
            batch, (n, c) = R.shape[:-2], R.shape[-2:]
            Rf = R.movedim(-2, 0).reshape(n, -1)
            sf = shifts.expand(*batch, c).reshape(-1)
            Mf = M.expand(*batch, *M.shape[-2:]).movedim(-2, 0).reshape(M.shape[-2], -1)
            Y = self(Rf, sf, X, Mf)
            return Y.reshape(n, *batch, c).movedim(0, -2)
        with torch.no_grad():
            scaled = self._scaled(R, shifts, X)
            if scaled is not None:  # far outside the range where norms' squares are safe
                solver, Rs, ss, Xs, back = scaled
                try:
                    Z = solver._entry(Rs, ss, Xs, M)
                finally:
                    self.n_iter, self.n_matvec = solver.n_iter, solver.n_matvec + 1
                    self.relative_residuals = solver.relative_residuals
                return ldexp(Z, back.unsqueeze(-2), dims=0)
            return self._entry(R, shifts, X, M)

    def _entry(self, R, shifts, X, M):
        self._knorm = torch.zeros((), dtype=R.real.dtype, device=R.device)
        self.n_matvec = 0
        self._progress_base = (0, 0, R.shape[-1])
        return self._solve(R, shifts, X, M)

    def _scaled(self, R, shifts, X):
        """The problem in units where every norm is safe, when it is not already (else ``None``).

        MINRES squares norms: beyond ``‖A‖, ‖r‖ ≈ 1e±150`` they over- or underflow. With ``2^b`` the
        scale of ``B`` (even; read off the B-orthonormal ``X ~ 2^(-b/2)``), ``2^a = 2^b max|λ|`` that
        of ``A`` and ``2^c`` that of each right-hand side, ``K = A - λB`` becomes
        ``K_s = 2^-a K = A_s - μ B_s`` (``A_s = 2^-a A``, ``B_s = 2^-b B``, ``μ = 2^(b-a) λ``,
        ``X_s = 2^(b/2) X`` B_s-orthonormal, the preconditioner ``2^a M``), ``K_s z = 2^-c r``, and
        ``y = 2^(c-a) z``: exact powers of two (any exponents would do; these make the norms O(1)),
        the same projections. Unbatched, unwrapped tensors only (the iterative eigensolvers' case;
        under torch.func the exponents could not be read)."""
        if len(self.A.shape) != 2 or any(_functorch.is_functorch_wrapped_tensor(t) for t in (R, shifts, X)):
            return None
        lam = shifts if self.evals is None else torch.cat([shifts.reshape(-1), self.evals.reshape(-1)])
        b = -2 * pow2_exponent(X.reshape(-1), dims=1) if self.B is not None else torch.zeros((), dtype=torch.int64)
        a = b + pow2_exponent(lam.reshape(-1), dims=1)
        c = pow2_exponent(R.mT, dims=1)  # (*b, c)
        limit = 256
        if not (bool(a.abs() > limit) or bool(b.abs() > limit) or bool((c.abs() > limit).any())):
            return None
        s = copy.copy(self)
        s.A = _Pow2(self.A, a)
        s.B = None if self.B is None else _Pow2(self.B, b)
        s.evals = None if self.evals is None else ldexp(self.evals, b - a, dims=0)
        if self.precond is not None:
            T = self.precond
            s.precond = lambda U: ldexp(T(U), a, dims=0)
        half = torch.div(b, 2, rounding_mode="floor")
        return s, ldexp(R, -c.unsqueeze(-2), dims=0), ldexp(shifts, b - a, dims=0), ldexp(X, half, dims=0), c - a

    def _solve(self, R, shifts, X, M):
        dtype = R.dtype
        BX = X if self.B is None else self.B.matmat(X)  # (*b, n, K)
        Mg = M.to(R.real.dtype)  # the 0/1 mask stays real (complex R: compared below)
        Mz = torch.ones_like(Mg) if self.deflate else Mg
        mT = _mH
        R = R - BX @ (Mg * (mT(X) @ R))  # P_g r: the caller's X_gᵀ r = 0, to rounding
        rnorm = torch.linalg.vector_norm(R, dim=-2)  # (*b, c)
        target = self.rtol * rnorm
        Y = torch.zeros_like(R)
        res, res_norm = R, rnorm
        done = res_norm <= target
        tau = torch.full_like(rnorm, 0.5 * self.rtol)
        eps = torch.finfo(R.real.dtype).eps
        iters, hit_max, stagnated = 0, False, False
        for _ in range(self.max_restarts + 1):
            cols = (~done).reshape(-1, done.shape[-1]).any(0).nonzero().flatten()
            if cols.numel() == 0 or hit_max or stagnated:
                break
            sel = lambda t: t.index_select(-1, cols)  # noqa: E731
            res_c = torch.where(_col(sel(done)), torch.zeros_like(sel(res)), sel(res))
            self._progress_base = (iters, int(done.sum()), done.numel())
            dY, n_it, hit_max = self._deflated(res_c, sel(shifts), X, BX, sel(Mg), sel(Mz), sel(tau),
                                               self.maxiter - iters)
            iters += n_it
            Yc = sel(Y) + dY
            Y = Y.index_copy(-1, cols, Yc)
            # the true residual, recomputed from scratch (never the recurrence's estimate)
            new = sel(R) - self._K(Yc, sel(shifts))
            new = new - BX @ (sel(Mg) * (mT(X) @ new))  # P_g (r - K y)
            new_norm = torch.linalg.vector_norm(new, dim=-2)
            # below the rounding floor of forming r - (A - λB) y no iteration can go
            floor = _FLOOR * eps * self._knorm * torch.linalg.vector_norm(Yc, dim=-2)
            target = target.index_copy(-1, cols, torch.maximum(sel(target), floor))
            old_norm = sel(res_norm)
            still = ~sel(done) & (new_norm > sel(target))
            stagnated = bool((still & (new_norm > 0.5 * old_norm)).any())
            res = res.index_copy(-1, cols, new)
            res_norm = res_norm.index_copy(-1, cols, new_norm)
            done = res_norm <= target
            # tighten the inner tolerance of columns whose estimate was optimistic
            ratio = (sel(target) / new_norm.clamp_min(torch.finfo(rnorm.dtype).tiny)).clamp(max=1.0)
            tau = tau.index_copy(-1, cols, (sel(tau) * 0.5 * ratio).clamp_min(4 * eps))
        self.n_iter = iters
        rel = res_norm / rnorm.clamp_min(torch.finfo(rnorm.dtype).tiny)
        self.relative_residuals = rel
        if not bool(done.all()):
            worst = float(rel.max())
            why = (f"reached maxiter={self.maxiter}" if hit_max else
                   "stagnated (the true residual stopped decreasing across restarts)")
            raise ConvergenceError(
                f"eigrad: the backward's MINRES solve of the shifted systems (A - λ_j B) y_j = r_j {why} "
                f"after {iters} iterations: worst true relative residual {worst:.2e} > rtol={self.rtol:.1e} "
                f"({int((~done).sum())} of {done.numel()} column(s) unconverged). The gradient was not "
                "computed. Raise BackwardOptions(linsolve_maxiter=...), loosen linsolve_rtol, or pass "
                "BackwardOptions(linsolve_preconditioner=...) (SPD, approximating (A - σB)⁻¹).",
                MinresInfo(Y, rel, iters),
            )
        return Y - X @ (Mg * (mT(BX) @ Y))  # X_gᵀ B y = 0 (MATH.md: the answer must be projected)

    def _deflated(self, Rr, shifts, X, BX, Mg, Mz, tau, budget):
        """``y = Σ_{i∈Z∖g} x_i (x_iᵀ r)/(λ_i - λ_j) + z`` with ``z`` from projected MINRES."""
        C = X.mH @ Rr  # (*b, K, c)
        Y = torch.zeros_like(Rr)
        if self.deflate:
            outside = (Mz > 0) & (Mg == 0)
            denom = self.evals.unsqueeze(-1) - shifts.unsqueeze(-2)  # λ_i - λ_j (*b, K, c)
            safe = torch.where(outside, denom, torch.ones_like(denom))
            Y = X @ torch.where(outside, C / safe, torch.zeros_like(C))
        rhs = Rr - BX @ (Mz * C)  # P_Z r
        Z, n_it, hit = self._minres(rhs, shifts, X, BX, Mz, tau, budget)
        # Zᵀ B z = 0: with T = I the iterates may pick up rounding along the deflated directions,
        # which P K hides from the recurrence; remove them once here
        Z = Z - X @ (Mz * (X.mH @ Z)) if self.B is None else Z
        return Y + Z, n_it, hit

    def _minres(self, b, shifts, X, BX, Mz, tau, budget):
        """Lockstep preconditioned MINRES (Paige & Saunders), one recurrence per column.

        ``b`` lies in ``range(P)``. Residual-space vectors (``r1``, ``r2``) stay
        there, solution-space vectors (``v``, ``w``, ``x``) in ``range(Pᵀ)``, so
        each iteration projects twice at most: ``P`` on the new Lanczos vector
        (the computed eigenvectors are not exact, and rounding must not
        accumulate along ``B Z``) and ``Pᵀ`` in the preconditioner
        ``T = Pᵀ M P`` (skipped when ``B = I`` and ``M = I``: then ``T r = r``).
        """
        mT = _mH
        dtype = b.real.dtype  # the recurrence's scalars are real (Hermitian K)
        identity_T = self.precond is None and self.B is None

        def T(u, Mzc):  # Pᵀ M P u for u in range(P)
            if identity_T:
                return u
            if self.precond is not None:
                u = self.precond(u)
            return u - X @ (Mzc * (mT(BX) @ u))

        out = torch.zeros_like(b)
        yv = T(b, Mz)
        beta1 = self._beta(b, yv)
        conv = beta1 == 0
        cols = torch.arange(b.shape[-1], device=b.device)
        z = torch.zeros_like(b)
        zero = torch.zeros_like(beta1)
        # in-place updates below touch only x and freshly computed vectors; r1/r2/yv may alias
        s = dict(r1=b, r2=b, yv=yv, w=z, w2=z.clone(), x=z.clone(), beta=beta1, beta1=beta1, oldb=zero,
                 dbar=zero, epsln=zero, phibar=beta1, cs=-torch.ones_like(beta1), sn=zero, shifts=shifts,
                 tau=tau, conv=conv, Mz=Mz)
        itn = 0
        while True:
            keep = (~s["conv"]).reshape(-1, s["conv"].shape[-1]).any(0)
            if not bool(keep.all()):  # drop the columns converged in every batch element
                out = out.index_copy(-1, cols[~keep], s["x"][..., ~keep])
                cols = cols[keep]
                s = {key: v[..., keep] for key, v in s.items()}
            if cols.numel() == 0 or itn >= budget:
                break
            itn += 1
            Mzc = s["Mz"]
            beta, oldb = s["beta"], s["oldb"]
            inv = torch.where(beta > 0, 1.0 / torch.where(beta > 0, beta, torch.ones_like(beta)), zero[..., :1])
            v = s["yv"] * _col(inv)
            y = self._K(v, s["shifts"], track=itn <= _NORM_ITERS)
            ratio = torch.where(oldb > 0, beta / torch.where(oldb > 0, oldb, torch.ones_like(oldb)), zero[..., :1])
            y.addcmul_(s["r1"], _col(-ratio))
            alfa = _dot(v, y)  # = vᵀ P K v for v in range(Pᵀ) (complex: vᴴ P K v, real)
            y.addcmul_(s["r2"], _col(-alfa * inv))
            # one projection of the new Lanczos vector keeps every residual-space vector in range(P):
            # P (K v - c₁ r₁ - c₂ r₂) = P K v - c₁ r₁ - c₂ r₂, and rounding along B Z never accumulates
            y.sub_(BX @ (Mzc * (mT(X) @ y)))
            r1, r2 = s["r2"], y
            yv = T(r2, Mzc)
            oldb = beta
            beta = self._beta(r2, yv)
            oldeps = s["epsln"]
            delta = s["cs"] * s["dbar"] + s["sn"] * alfa
            gbar = s["sn"] * s["dbar"] - s["cs"] * alfa
            epsln = s["sn"] * beta
            dbar = -s["cs"] * beta
            # only an exact breakdown (gamma = 0) needs a guard: an absolute eps clamped every gamma of
            # an operator below ‖K‖ ≈ 1e-16 (stagnation at ‖A‖ = 1e-17, found by the fuzz suite)
            gamma = torch.hypot(gbar, beta).clamp_min(torch.finfo(dtype).tiny)
            cs, sn = gbar / gamma, beta / gamma
            phi = torch.where(s["conv"], zero[..., :1], cs * s["phibar"])  # frozen columns keep their x
            phibar = sn * s["phibar"]
            w1, w2 = s["w2"], s["w"]
            w = v.addcmul_(w1, _col(-oldeps)).addcmul_(w2, _col(-delta)).mul_(_col(1.0 / gamma))
            s["x"].addcmul_(w, _col(phi))
            conv = s["conv"] | (phibar.abs() <= s["tau"] * s["beta1"]) | (beta == 0)
            mon = _monitor.active()
            if mon is not None:  # eigsh_ex / progress=True: the recurrence's estimates
                est = phibar.abs() / s["beta1"].clamp_min(torch.finfo(dtype).tiny)
                it0, done0, total = self._progress_base
                active = int(out.shape[-1] - cols.numel() + conv.reshape(-1, conv.shape[-1]).all(0).sum())
                mon.report(iteration=it0 + itn, converged=done0 + active, total=total,
                           residual=float(est.max()) if est.numel() else 0.0, matvecs=self.n_matvec)
            s.update(r1=r1, r2=r2, yv=yv, w=w, w2=w2, beta=beta, oldb=oldb, dbar=dbar, epsln=epsln,
                     phibar=phibar, cs=cs, sn=sn, conv=conv)
        if cols.numel():
            out = out.index_copy(-1, cols, s["x"])
        return out, itn, cols.numel() > 0

    def _beta(self, r, yv):
        b2 = _dot(r, yv)
        if self.precond is None:  # rᵀ Pᵀ r = ‖r‖² for r in range(P)
            return torch.sqrt(b2.clamp_min(0))
        eps = torch.finfo(b2.dtype).eps
        scale = torch.linalg.vector_norm(r, dim=-2) * torch.linalg.vector_norm(yv, dim=-2)
        if bool((b2 < -1e3 * eps * scale).any()):
            raise ValueError(
                "the backward's preconditioner is not positive definite (rᵀ M r < 0 for a residual r); "
                "MINRES needs a symmetric positive definite M approximating (A - σB)⁻¹. Pass an SPD "
                "preconditioner in BackwardOptions(linsolve_preconditioner=...), or None."
            )
        return torch.sqrt(b2.clamp_min(0))


class _Pow2(LinearOperator):
    """``2^-e M`` through ``matmat`` (exact)."""

    def __init__(self, M, e):
        self.M, self.e = M, e
        self.shape, self.dtype, self.device = M.shape, M.dtype, M.device

    def matmat(self, X):
        return ldexp(self.M.matmat(X), -self.e, dims=0)


@dataclasses.dataclass(frozen=True)
class MinresFactory:
    """Builds :class:`ProjectedMinres` over operators rebuilt from saved tensors.

    Called as ``factory(tensors, atol, rtol)`` (the handle-factory signature)
    with ``tensors = (*A_tensors, *B_tensors, evals)``; ``atol``/``rtol`` are
    the degeneracy tolerances (unused: clusters arrive as the mask ``M``).
    The factory holds only specs and options, never tensors.
    """

    spec_A: OperatorSpec
    n_A: int
    spec_B: OperatorSpec | None
    rtol: float
    maxiter: int | None = None
    preconditioner: object | None = None
    deflate: bool = True

    def __call__(self, tensors, atol=None, rtol=None) -> ProjectedMinres:
        tensors = tuple(tensors)
        A = self.spec_A.rebuild(tensors[: self.n_A])
        B = None if self.spec_B is None else self.spec_B.rebuild(tensors[self.n_A : -1])
        return ProjectedMinres(A, B, tensors[-1], rtol=self.rtol, maxiter=self.maxiter,
                               preconditioner=self.preconditioner, deflate=self.deflate)
