"""ARPACK (implicitly restarted Lanczos) through ``scipy.sparse.linalg.eigsh``, over any LinearOperator.

The operator is applied in torch (on its device) and the vectors cross to
numpy for ARPACK. The standard problem runs in ARPACK's mode 1; ``A x = λ B x``
runs in mode 2 (``OP = B⁻¹ A`` with B-inner products), ``B⁻¹`` applied by
conjugate gradients on ``B`` to near machine precision (Jacobi-preconditioned
when ``B`` exposes its diagonal). Mode 2 costs one CG solve per Lanczos step:
for a generalized problem with a cheap preconditioner, LOBPCG or PRIMME are
usually the better choice.

Single-vector Lanczos sees, in exact arithmetic, one direction per eigenspace:
it can return one copy of an exactly repeated eigenvalue and skip the others
(cubic-symmetric grids do this reliably). Every ARPACK result is therefore
checked by :func:`verify_no_missed`, a second, small Lanczos run on the
deflated operator ``A ± σ B X Xᵀ B`` from a fresh random start (see there for
the rule and the cost).

ARPACK also skipped eigenvalues that are exactly zero (a graph Laplacian's, a
Neumann problem's), simple or repeated, without a report (scipy 1.17): it is
run on ``A - σ B`` with a tiny shift ``|σ| = 0.618 eps^{1/3} ν₀`` (``ν₀`` the
start vector's ``‖A v‖/‖B v‖``), and the residual floor and the degeneracy
tolerances are relative to ``max(max |λ|, ν₀)``, so that a result made only
of zero eigenvalues still converges and its copies are recognized.

Complex Hermitian operators (complex64/complex128) run through scipy's
complex ``eigsh``, which calls ARPACK's non-Hermitian ``znaupd`` (``eigs``
with ``which="SR"/"LR"``) and drops the eigenvalues' imaginary parts. Its
eigenvectors are not orthonormal to rounding inside a cluster (they come from
a Schur form), so a Rayleigh–Ritz step over them (``m`` products) returns
B-orthonormal Ritz pairs. Start vectors are complex; the verification's
deflation and the inner CG's inner products use ``ᴴ``.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import torch

from .._errors import ConvergenceError
from ._iterative import (
    NumpyBridge,
    apply_B,
    dense_fallback,
    finish,
    make_solution,
    rayleigh_ritz,
    real_dtype,
    relative_residuals,
    true_residuals,
)
from ._definite import NOT_SPD, PASS_SPD, check_B_gram, check_B_positive
from ._options import IterativeOptions, check_positive_int
from ._scaled import scale_invariant


def _diagonal_of(B):
    """The diagonal of ``B`` when it is cheap to get, else None."""
    diag = getattr(B, "diagonal", None)
    if callable(diag):
        try:
            return diag()
        except (NotImplementedError, TypeError):
            return None
    if getattr(B, "is_dense", False):
        return B.to_dense().diagonal(dim1=-2, dim2=-1)
    return None


def cg_solve(B, b: torch.Tensor, rtol: float, maxiter: int, diag=None) -> tuple[torch.Tensor, int, float]:
    """Solve ``B y = b`` (``b`` of shape ``(n, q)``) by (Jacobi-preconditioned) conjugate gradients.

    Stops when every column satisfies ``‖b − B y‖ <= rtol ‖b‖`` (true residual
    recurrence). Returns ``(y, iterations, worst relative residual)``: the
    caller applies its failure policy when that exceeds ``rtol`` (``B``
    ill-conditioned). A direction with ``pᵀ B p <= 0`` while the residual is
    still above ``rtol`` is a certificate that ``B`` is not positive definite:
    a ``ValueError`` naming ``B``.
    """
    def dot(u, v):  # column-wise uᴴ v, real for the Hermitian forms used here
        d = (u.conj() * v).sum(0) if u.is_complex() else (u * v).sum(0)
        return d.real if d.is_complex() else d

    if diag is not None and diag.is_complex():
        diag = diag.real  # a Hermitian B's diagonal is real
    minv = None if diag is None else 1.0 / diag.unsqueeze(-1)
    y = torch.zeros_like(b)
    r = b.clone()
    z = r if minv is None else minv * r
    p = z.clone()
    rz = dot(r, z)
    bnorm = torch.linalg.vector_norm(b, dim=0)
    target = rtol * bnorm
    rnorm = bnorm
    for it in range(1, maxiter + 1):
        Bp = B.matmat(p)
        pBp = dot(p, Bp)
        breakdown = (pBp <= 0) & (torch.linalg.vector_norm(r, dim=0) > target)
        if bool(breakdown.any()):
            j = int(breakdown.nonzero()[0])
            raise ValueError(
                NOT_SPD + f"conjugate gradients on B (ARPACK's mode 2 applies B⁻¹) met a direction p with "
                f"pᵀ B p = {float(pBp[j]):.3e} <= 0, so B is indefinite or singular." + PASS_SPD
            )
        alpha = torch.where(pBp > 0, rz / pBp, torch.zeros_like(rz))
        y = y + alpha * p
        r = r - alpha * Bp
        rnorm = torch.linalg.vector_norm(r, dim=0)
        if bool((rnorm <= target).all()):
            return y, it, _worst(rnorm, bnorm)
        z = r if minv is None else minv * r
        rz_new = dot(r, z)
        p = z + torch.where(rz > 0, rz_new / rz, torch.zeros_like(rz)) * p
        rz = rz_new
    return y, maxiter, _worst(rnorm, bnorm)


def _worst(rnorm, bnorm) -> float:
    return float((rnorm / torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))).max()) if rnorm.numel() else 0.0


class _Deflated:
    """``A + s (B X)(B X)ᴴ`` through ``matmat``: the pairs of ``X`` (B-orthonormal) moved by ``s``, the rest kept."""

    def __init__(self, A, BX: torch.Tensor, s: float):
        self.A, self.BX, self.s = A, BX, s  # BX (n, m)
        self.shape, self.dtype, self.device = A.shape, A.dtype, A.device

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.A.matmat(V) + self.BX @ (self.s * (self.BX.mH @ V))


def verify_no_missed(A, B, vals, X, largest: bool, rtol: float, p: int, eigsh, rng):
    """Find the eigenpairs a Lanczos run skipped (copies of a repeated eigenvalue) and merge them in.

    With the ``m`` computed pairs ``(vals, X)`` (ascending, B-orthonormal) and
    the boundary ``b = vals[-1]`` (``vals[0]`` for ``largest``), the deflated
    operator ``A_d = A + σ B X Xᵀ B`` (``−σ`` for ``largest``) keeps every
    eigenpair of ``A`` that is B-orthogonal to ``X`` and moves the computed
    ones past the boundary: ``σ = 2 (vals[-1] − vals[0]) + ½ |ρ − vals[0]| +
    eps^{1/4} ν``, with ``ρ`` the Rayleigh quotient of the random start (about
    the mean of the spectrum, so the moved pairs land inside it rather than
    widening it) and ``ν`` the magnitude of the values. ``eigsh(A_d, p, v0)``
    (ARPACK again, from a fresh random start B-orthogonal to ``X``, so that
    it has components along any missed eigenspace) returns the ``p`` extreme
    pairs of ``A_d`` to the loose tolerance ``tol = min(sqrt(rtol), 1e-3)``.
    If a value lies within ``tol · |b|`` of the boundary or beyond it (it
    cannot be told apart from the boundary at that tolerance), the run is
    repeated at ``rtol``. A value beyond the boundary on the wanted side by
    more than ``δ = rtol · max(|b|, eps^{1/4} ν)`` is a missed pair: the ``m``
    best pairs of ``span [X, missed]`` (Rayleigh–Ritz) replace ``X`` and the
    check repeats. Copies of the boundary value itself are not missed
    pairs (the values are right; the guard logic asks for more pairs when a
    cluster reaches the last one).

    Cost with nothing missed: one loose ARPACK run for ``p`` pairs plus one
    application (measured in ``docs/benchmarks_matrix_free.md``); each round
    that finds a missed pair, or whose next eigenvalue lies within ``tol`` of
    the boundary, adds a run at ``rtol`` (and ``m + q`` applications). ``p = 1``
    (the default) is the cheapest: more pairs make the run's cost depend on
    the gaps further up the spectrum (``p = 3`` cost ten times more on the
    benchmark's 32³ problem, whose 3rd and 4th eigenvalues past the boundary
    are 0.2 % apart).

    Parameters
    ----------
    eigsh : callable ``(op, p, v0, tol) -> (mu (q,), Y (n, q), n_applications, complete)``
    rng : numpy.random.Generator
        For the start vectors.

    Returns
    -------
    ``(vals, X, n_applications, reason)``; ``reason`` is empty unless a
    verification run stopped before its ``p`` pairs converged without finding
    a missed pair (the result is then not certified).
    """
    n, m = X.shape
    eps = torch.finfo(real_dtype(X.dtype)).eps
    detect_tol = max(min(rtol**0.5, 1e-3), 0.5 * rtol)
    count = 0
    for _ in range(m + 1):  # each round replaces the boundary pair by a strictly better one
        lo, hi = float(vals[0]), float(vals[-1])
        BX = apply_B(B, X)  # (n, m)
        v = torch.from_numpy(_start(rng, n, X.dtype)).to(X.device, X.dtype).unsqueeze(-1)  # (n, 1)
        for _ in range(2):
            v = v - X @ (BX.mH @ v)
        Av = A.matmat(v)
        count += 1
        rho = float((v.conj() * Av).sum().real / (v.conj() * apply_B(B, v)).sum().real)
        nu = max(abs(lo), abs(hi), abs(rho))
        sigma = 2.0 * (hi - lo) + 0.5 * abs(rho - (hi if largest else lo)) + eps**0.25 * nu
        delta = rtol * max(abs(lo if largest else hi), eps**0.25 * nu)
        Ad = _Deflated(A, BX, -sigma if largest else sigma)
        mu, Y, used, complete = eigsh(Ad, p, v[:, 0], detect_tol)  # detection: a loose tolerance
        count += used
        window = detect_tol * max(abs(lo if largest else hi), eps**0.25 * nu)
        near = mu > lo - window if largest else mu < hi + window
        if bool(near.any()) and detect_tol > 0.5 * rtol:  # too close to the boundary to tell: at rtol
            mu, Y, used, complete = eigsh(Ad, p, v[:, 0], 0.5 * rtol)
            count += used
        missed = mu > lo + delta if largest else mu < hi - delta
        if not bool(missed.any()):
            reason = "" if complete else (
                f"the verification run for missed copies of repeated eigenvalues did not converge "
                f"({mu.numel()}/{p} pairs)"
            )
            return vals, X, count, reason
        vals, X, used = rayleigh_ritz(A, B, torch.cat([X, Y[:, missed]], dim=-1), m, largest)
        count += used
    return vals, X, count, "the verification for missed copies of repeated eigenvalues did not settle"


def _start(rng, n: int, dtype: torch.dtype) -> np.ndarray:
    """A random start vector, uniform in [-1, 1) (complex: real and imaginary parts)."""
    v = rng.uniform(-1.0, 1.0, n)
    if dtype.is_complex:
        v = v + 1j * rng.uniform(-1.0, 1.0, n)
    return v


@dataclasses.dataclass(frozen=True)
class Arpack(IterativeOptions):
    """ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``, ``which="SA"/"LA"``).

    The fastest CPU solver measured for a few extreme eigenpairs of a large
    operator without a preconditioner (``benchmarks/matrix_free.py``).

    Parameters
    ----------
    rtol, maxiter, on_failure, seed
        See :class:`IterativeOptions`; ``maxiter`` counts ARPACK's restart
        cycles (``None``: scipy's default ``10 n``). ARPACK is run at
        ``rtol / 2`` on its own Ritz estimates, then the true residuals are
        checked against ``rtol``.
    ncv : int or None
        Lanczos basis size, ``> k + n_guard``. ``None``: scipy's default
        ``max(2 (k + n_guard) + 1, 20)`` (capped at ``n``); larger bases did
        not reduce the operator applications for the smallest eigenvalues of
        a 3D Laplacian and cost more orthogonalization.
    n_verify : int
        Eigenvalues sought by each verification run on the deflated operator
        (:func:`verify_no_missed`); ``0`` switches the verification off, and
        then copies of a repeated eigenvalue can be missed silently.
    cg_rtol, cg_maxiter : float or None, int
        Inner CG solves with ``B`` (generalized problems only); ``None``:
        ``1e-3 · rtol``, and if the true residuals then miss ``rtol`` (the
        CG error limits eigenvalues far below the spectrum's scale, e.g. an
        exact zero) one more solve with ``0.1 · rtol · eps^{1/4}``. A solve
        that misses ``cg_rtol`` in ``cg_maxiter`` iterations follows
        ``on_failure``: :class:`eigrad.ConvergenceError` at once, or with
        ``"warn"`` a :class:`eigrad.ConvergenceWarning` when the result is
        returned.

    Notes
    -----
    ``B`` must be symmetric positive definite: a short Lanczos run on ``B``
    (:func:`eigrad.eigensolvers._definite.check_B_positive`), a breakdown of
    the inner CG (``pᵀ B p <= 0``) and a Cholesky factorization of ``Xᵀ B X``
    raise a ``ValueError`` naming ``B``.

    One problem at a time (no batch dimensions; use :class:`LOBPCG`), no
    preconditioner (use :class:`Primme` or :class:`LOBPCG`). ``X0``: ARPACK
    takes one start vector, the sum of the columns of ``X0``. Problems with
    ``k + n_guard >= n - 1`` are solved densely.
    """

    ncv: int | None = None
    n_verify: int = 1
    cg_rtol: float | None = None
    cg_maxiter: int = 1000

    handle_factory = None
    #: complex Hermitian operators (scipy's complex eigsh; module docstring)
    supports_complex = True

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "ncv", self.ncv, 2)
        check_positive_int(self, "n_verify", self.n_verify, 0)
        check_positive_int(self, "cg_maxiter", self.cg_maxiter)

    @scale_invariant
    def __call__(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        args = (A, k, B, largest, X0, preconditioner, n_guard)
        if B is None or self.cg_rtol is not None:
            return self._solve(*args)
        # Mode 2's Lanczos vectors carry the inner CG's error, cg_rtol·ν₀ in absolute terms: the
        # default 1e-3·rtol is enough for eigenvalues down to ~1e-3 ν₀, not for an exact zero
        # (measured: relative residual 7.2e-8 against rtol 1e-8; cg_rtol 1e-13 converged). Where
        # the default does not certify the result, solve once more with 0.1·rtol·eps^{1/4}.
        rtol = self.resolved_rtol(A.dtype)
        try:
            return dataclasses.replace(self, cg_rtol=1e-3 * rtol, on_failure="raise")._solve(*args)
        except ConvergenceError:
            tight = 0.1 * rtol * torch.finfo(A.dtype).eps ** 0.25
            return dataclasses.replace(self, cg_rtol=tight)._solve(*args)

    def _solve(self, A, k, B, largest, X0, preconditioner, n_guard):
        import scipy.sparse.linalg as spla

        name = "Arpack"
        if len(A.shape) != 2:
            raise ValueError(
                f"solver='arpack' solves one problem at a time; received an operator of shape {tuple(A.shape)}. "
                "Pass solver='lobpcg' for batched operators."
            )
        if preconditioner is not None:
            raise ValueError(
                "solver='arpack' cannot use a preconditioner; pass solver='primme' (pip install primme) or "
                "solver='lobpcg', or preconditioner=None."
            )
        n = A.shape[-1]
        g = max(0, min(n_guard, n - k))
        m = k + g
        if m >= n - 1:
            return dense_fallback(A, B, k, g, largest)
        dtype, device = A.dtype, A.device
        rdtype = real_dtype(dtype)  # eigenvalues' dtype
        rtol = self.resolved_rtol(rdtype)
        ncv = self.ncv if self.ncv is not None else max(2 * m + 1, 20)
        ncv = min(max(ncv, m + 1), n)
        bridge = NumpyBridge(A, keep=2 * ncv)
        np_dtype = bridge.linop.dtype.type
        which = "LA" if largest else "SA"  # scipy maps them to "LR"/"SR" for complex (Hermitian) operators

        if X0 is not None:
            v0 = X0.detach().reshape(n, -1).sum(-1).cpu().numpy().astype(np_dtype)
        else:
            v0 = _start(np.random.default_rng(self.seed), n, dtype).astype(np_dtype)

        kwargs = {}
        cg_worst = [0.0]  # the largest relative residual an inner CG solve with B stopped at
        if B is not None:
            check_B_positive(B, self.seed)  # B SPD (_definite.py); CG's breakdown is the second check
            diag = _diagonal_of(B)
            cg_tol = self.cg_rtol if self.cg_rtol is not None else 1e-3 * rtol
            Mop = NumpyBridge(B, what="B.matmat").linop

            def minv(x):
                b = torch.from_numpy(np.ascontiguousarray(x).reshape(n, -1)).to(device, dtype)
                y, _, worst = cg_solve(B, b, cg_tol, self.cg_maxiter, diag)
                cg_worst[0] = max(cg_worst[0], worst)
                if worst > cg_tol and self.on_failure == "raise":
                    raise ConvergenceError(cg_failure(worst))
                return y.cpu().numpy().reshape(x.shape)

            def cg_failure(worst):
                return (
                    f"Arpack did not converge: an inner conjugate-gradient solve with B (mode 2 applies B⁻¹ every "
                    f"Lanczos step) stopped at relative residual {worst:.1e} > cg_rtol={cg_tol:.1e} after "
                    f"cg_maxiter={self.cg_maxiter} iterations: B is ill-conditioned. Raise Arpack(cg_maxiter=...) "
                    "or cg_rtol, or pass solver='lobpcg' (or 'primme'), which need no solves with B."
                )

            kwargs = {"M": Mop, "Minv": spla.LinearOperator((n, n), matvec=minv, matmat=minv, dtype=np_dtype)}

        if "rng" in inspect.signature(spla.eigsh).parameters:  # scipy >= 1.15: ARPACK's restarts
            kwargs["rng"] = np.random.default_rng(self.seed)

        # ARPACK (scipy 1.17, measured) skips eigenvalues that are exactly zero, simple or repeated:
        # the 2 smallest of a planted spectrum 0, 1, 2, ... came back as [1, 2] with nothing
        # reported, and the deflated verification run skipped them again. An eigenvalue at 1e-8
        # was found. ARPACK therefore sees A - σB with a small shift away from zero (|σ| =
        # 0.618·eps^{1/3}·ν₀, ν₀ = ‖A v₀‖/‖B v₀‖ the start vector's scale: 6e-6 ν₀ in float64),
        # which moves ARPACK's relative test max(eps^{2/3}, |θ|) for a zero eigenvalue to
        # |σ| (stricter than eigrad's floor eps^{1/4}·ν for ν >= 0.05 ν₀), and hits another
        # eigenvalue exactly only by coincidence.
        start_t = torch.from_numpy(np.ascontiguousarray(v0)).to(device, dtype).reshape(n, 1)
        nu0 = float(torch.linalg.vector_norm(A.matmat(start_t)) / torch.linalg.vector_norm(apply_B(B, start_t)))
        bridge.count += 1
        eps = torch.finfo(rdtype).eps
        sigma = -0.618 * eps ** (1.0 / 3.0) * nu0 if np.isfinite(nu0) else 0.0

        def shifted(linop):
            if sigma == 0.0:
                return linop
            if B is None:
                def mm(x):
                    return linop.matmat(x.reshape(n, -1)) - sigma * x.reshape(n, -1)
            else:
                def mm(x):
                    x = x.reshape(n, -1)
                    return linop.matmat(x) - sigma * kwargs["M"].matmat(x)
            return spla.LinearOperator((n, n), matvec=lambda x: mm(x).reshape(-1), matmat=mm, dtype=np_dtype)

        def arpack(linop, kk, start, nv, tol=0.5 * rtol):
            try:
                vals, vecs = spla.eigsh(
                    shifted(linop), k=kk, which=which, v0=start, ncv=nv,
                    maxiter=self.maxiter, tol=tol, **kwargs,
                )
            except spla.ArpackNoConvergence as err:
                err.eigenvalues = np.asarray(err.eigenvalues).real + sigma
                raise
            return np.asarray(vals).real + sigma, vecs

        reason = ""
        try:
            vals, vecs = arpack(bridge.linop, m, v0, ncv)
        except spla.ArpackNoConvergence as err:
            # best iterate: Rayleigh–Ritz over the converged vectors and the last Lanczos vectors
            reason = (
                f"ARPACK stopped at maxiter={self.maxiter} restart cycles "
                f"({len(err.eigenvalues)}/{m} pairs converged)"
            )
            V = [bridge.recent(), torch.from_numpy(np.asarray(err.eigenvectors)).to(device, dtype).reshape(n, -1)]
            if X0 is not None:
                V.append(X0.detach().reshape(n, -1).to(device, dtype))
            vals_t, X, used = rayleigh_ritz(A, B, torch.cat(V, dim=-1), m, largest)
            bridge.count += used
            vals = None
        extra, unverified = 0, ""
        if vals is not None:
            order = np.argsort(vals)
            vals_t = torch.from_numpy(np.ascontiguousarray(vals[order])).to(device, rdtype)
            X = torch.from_numpy(np.ascontiguousarray(vecs[:, order])).to(device, dtype)
            if dtype.is_complex:  # eigs' vectors: not orthonormal inside clusters (module docstring)
                vals_t, X, used = rayleigh_ritz(A, B, X, m, largest)
                bridge.count += used
            if self.n_verify and X.shape[-1] == m:

                def deflated_eigsh(op, kk, start, tol):
                    br = NumpyBridge(op, what="A.matmat (verification run)")
                    nv = min(max(2 * kk + 1, 20), n)
                    try:
                        mu, Y = arpack(br.linop, kk, start.cpu().numpy().astype(np_dtype), nv, tol)
                        complete = True
                    except spla.ArpackNoConvergence as err:
                        mu, Y, complete = np.asarray(err.eigenvalues), np.asarray(err.eigenvectors), False
                    to = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(device, dt)  # noqa: E731
                    return to(mu, rdtype), to(Y, dtype).reshape(n, -1), br.count, complete

                vals_t, X, extra, unverified = verify_no_missed(
                    A, B, vals_t, X, largest, rtol, min(self.n_verify, n - 2), deflated_eigsh,
                    np.random.default_rng([self.seed, 1]),
                )
        if X.shape[-1] < m:  # the Krylov space held fewer directions than pairs wanted
            pad = m - X.shape[-1]
            X = torch.cat([X, torch.zeros(n, pad, dtype=dtype, device=device)], dim=-1)
            vals_t = torch.cat([vals_t, torch.full((pad,), float("nan"), dtype=rdtype, device=device)])
        rnorm, bxnorm = true_residuals(A, B, X, vals_t)
        if bool(torch.isfinite(vals_t).all()):
            check_B_gram(B, X)
        n_matvec = bridge.count + extra + m
        # the spectrum's scale for the residual floor and the degeneracy tolerances: the computed
        # values alone say nothing when they are all (near) zero (k = 1 at a graph Laplacian's 0)
        scale = torch.clamp_min(vals_t.abs().nan_to_num(0.0).amax(), nu0 if np.isfinite(nu0) else 0.0)
        rho = relative_residuals(rnorm, vals_t, bxnorm, scale).nan_to_num(float("inf"))
        if X.shape[-1] == m and bool(torch.isfinite(vals_t).all()) and not bool((rho <= rtol).all()):
            # ARPACK stops on its own Ritz estimates, whose true residuals can miss rtol by a small
            # factor (measured: 1.3e-8 at rtol 1e-8, a guard mixing with a nearly equal eigenvalue
            # just outside the computed set): one Rayleigh–Ritz step over [X, R] (2m products)
            R = A.matmat(X) - apply_B(B, X) * vals_t.unsqueeze(-2)
            vals2, X2, used = rayleigh_ritz(A, B, torch.cat([X, R], dim=-1), m, largest)
            rnorm2, bxnorm2 = true_residuals(A, B, X2, vals2)
            n_matvec += m + used + m
            rho2 = relative_residuals(rnorm2, vals2, bxnorm2, scale).nan_to_num(float("inf"))
            if X2.shape[-1] == m and float(rho2.max()) < float(rho.max()):
                vals_t, X, rnorm, rho = vals2, X2, rnorm2, rho2
        sol = make_solution(
            vals_t, X, rnorm, k, g, largest,
            n_iter=bridge.count + extra, status="converged",
            n_matvec=n_matvec, scale=scale,
        )
        if B is not None and cg_worst[0] > cg_tol:  # on_failure="warn": inner solves missed cg_rtol
            reason = "; ".join(r for r in (reason, unverified, (
                f"the inner CG solves with B stopped at relative residual up to {cg_worst[0]:.1e} > "
                f"cg_rtol={cg_tol:.1e} (raise cg_maxiter, or pass solver='lobpcg')")) if r)
            return finish(sol, rho, rtol, self.on_failure, name, reason, failed=True)
        # a verification that could not conclude is a failure too: never returned as converged
        return finish(sol, rho, rtol, self.on_failure, name, reason or unverified, failed=bool(unverified))

