"""Shifted solves through the tridiagonal reduction kept by the forward.

The dense subset eigensolver reduces ``2**σ C = Q T Qᵀ`` with
``C = Lc⁻¹ A Lc⁻ᵀ`` (LAPACK ``sytrd``; ``Lc`` the Cholesky factor of ``B``,
absent when ``B = I``; ``2**σ`` the exact power of two that scaled ``C`` into
``max|2**σ C| ∈ [0.5, 1)``, ``eigensolvers._reduce.scaled_standard_form``).
Then

    (A - s B) y = r   <=>   (T - 2**σ s) z = Qᵀ Lc⁻¹ r,   y = 2**σ Lc⁻ᵀ Q z,

so the shifted systems are solved on the scaled ``T`` that the forward's
eigenvalues came from, at every magnitude of ``A`` and ``B``,
and the B-projection against a cluster becomes the Euclidean projection
against ``Z_g = Qᵀ Lcᵀ X_g`` (orthonormal). Each shifted tridiagonal system is
O(n) (LAPACK ``gtsv``); applying ``Q`` costs O(n² c). The system is singular
on the cluster, so the answer is projected and refined (iterative refinement
on the projected residual), as MATH.md requires: an unprojected answer of a
singular solve drifts into the null space.

Complex Hermitian problems: ``C = Lc⁻¹ A Lc⁻ᴴ = Q T Qᴴ`` (``hetrd``) with
``T`` real symmetric, ``ᵀ`` above read as ``ᴴ``; the shifted systems keep
the real ``T`` and take complex right-hand sides (``zgtsv``/``cgtsv``).
"""

from __future__ import annotations

from typing import Sequence

import warnings

import numpy as np
import scipy.linalg.lapack as lapack
import torch

from .._errors import ConvergenceWarning
from .._scaling import ldexp, pow2_exponent


def apply_Q(refl: torch.Tensor, tau: torch.Tensor, Z: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``Q Z`` (or ``Qᵀ Z``, ``Qᴴ Z`` for complex ``Q``) for ``Q`` stored as ``sytrd``/``hetrd(lower)`` reflectors.

    ``Q = diag(1, Q')`` with ``Q'`` in ``geqrf`` layout in ``refl[1:, :n-1]``.
    """
    n = refl.shape[-1]
    out = torch.empty_like(Z)
    out[..., :1, :] = Z[..., :1, :]
    if n > 1:
        out[..., 1:, :] = torch.ormqr(refl[..., 1:, : n - 1], tau, Z[..., 1:, :], left=True, transpose=transpose)
    return out


_GTSV = {np.float64: lapack.dgtsv, np.float32: lapack.sgtsv,
         np.complex128: lapack.zgtsv, np.complex64: lapack.cgtsv}


def _gtsv(dl, dm, du, b):
    """Tridiagonal solve; a real tridiagonal with complex right-hand sides runs in complex."""
    fn = _GTSV[np.result_type(dm, b).type]
    if np.iscomplexobj(b):
        dl, dm, du = dl.astype(b.dtype), dm.astype(b.dtype), du.astype(b.dtype)
    _, _, _, x, info = fn(dl, dm, du, b)
    return x, info


def _shifted_matvec(d, e, shifts, z):  # (T - s_j) z_j for z (n, m), shifts (m,)
    out = (d[:, None] - shifts[None, :]) * z
    out[:-1] += e[:, None] * z[1:]
    out[1:] += e[:, None] * z[:-1]
    return out


def _by_value(keys) -> dict:
    """Column indices grouped by equal key, in order of appearance."""
    groups: dict = {}
    for j, key in enumerate(keys):
        groups.setdefault(key, []).append(j)
    return groups


def _factor_shift(s, others, scale, eps, tiny):
    """A shift ``s' = s - κ`` just below ``s`` that keeps ``κ/4`` away from every computed eigenvalue.

    ``κ`` starts at ``√eps·scale`` and doubles past close computed eigenvalues, so ``T - s'`` is
    nonsingular and amplifies the rounding-level components along the computed (projected-out)
    eigenvectors by at most ``~1/κ``, while it stays a good preconditioner for ``T - s`` on the
    complement (contraction ``κ / (γ + κ)``, ``γ`` the distance from ``s`` to the nearest
    eigenvalue that was not computed).
    """
    kappa = np.sqrt(eps) * max(scale, tiny)
    for _ in range(60):
        sp = s - kappa
        if not others.size or np.min(np.abs(others - sp)) >= 0.25 * kappa:
            return sp
        kappa *= 2.0
    return sp


def _solve_columns(d, e, shifts, b, Zg, scale, max_iter=40):
    """Projected solutions of ``(T - s_j) z_j = b_j``, ``Zgᵀ z_j = 0`` for the columns of ``b``.

    numpy; ``b`` (n, m), ``shifts`` (m,), ``Zg`` (n, g) orthonormal and shared
    by all m columns. ``T - s_j`` is singular on the computed eigenvectors
    (``s_j`` is one of their eigenvalues) and nearly singular wherever other
    computed eigenvalues are close to it. Factoring it directly made the
    solution's components along those directions huge before the projection,
    which then cancelled them only to ``eps × huge`` (measured: 3.5e-4 relative
    error in a gradient at a triple split by 2.7e-5). So the system is solved
    by preconditioned Richardson iteration on the complement, ``z ← z + P (T -
    s')⁻¹ P (b - (T - s) z)``, with ``s'`` from :func:`_factor_shift`, until
    the projected residual is at the rounding level. The columns that share a
    shift (a vmapped backward repeats each shift for every cotangent) share one
    multi-right-hand-side LAPACK ``gtsv`` call per step.
    """
    # projections with torch (the BLAS of the surrounding torch code): numpy's own threaded
    # BLAS would wake a second thread pool that then competes with torch's for the cores
    Zt = torch.from_numpy(Zg)

    def project(y):
        if not Zg.shape[1]:
            return y
        yt = torch.from_numpy(y)
        return (yt - Zt @ (Zt.mH @ yt)).numpy()

    n = d.shape[0]
    if Zg.shape[1] >= n:  # every eigenvector computed (n = 1, k = n): the complement is empty
        return np.zeros_like(b)
    b = project(b)
    eps = np.finfo(d.dtype).eps
    tiny = np.finfo(d.dtype).tiny
    groups = _by_value(shifts.tolist())
    values = np.array(sorted(groups), dtype=d.dtype)
    factored = {}  # shift -> diagonal of T - s' (the preconditioner)
    for s in groups:
        factored[s] = d - _factor_shift(s, values[values != s], scale, eps, tiny)
    z = np.zeros_like(b)
    bnorm = np.linalg.norm(b, axis=0)
    res = b
    for _ in range(max_iter):
        bad = np.linalg.norm(res, axis=0) > 4 * n * eps * (scale * np.linalg.norm(z, axis=0) + bnorm)
        if not bad.any():
            return z
        dz = np.zeros_like(z)
        for s, cols in groups.items():
            cols = [j for j in cols if bad[j]]
            if not cols:
                continue
            x, info = _gtsv(e.copy(), factored[s].copy(), e.copy(), res[:, cols])
            if info != 0 or not np.all(np.isfinite(x)):
                raise FloatingPointError("tridiagonal shifted solve failed: the shifted matrix is singular")
            dz[:, cols] = x
        z = z + project(dz)
        res = project(b - _shifted_matvec(d, e, shifts, z))
    worst = float(np.max(np.linalg.norm(res, axis=0) / np.maximum(scale * np.linalg.norm(z, axis=0) + bnorm, tiny)))
    warnings.warn(
        f"eigrad: a shifted tridiagonal solve of the backward did not reach the rounding level in "
        f"{max_iter} steps (relative residual {worst:.1e}): an eigenvalue that was not computed lies very "
        "close to a computed one. Pass a larger k to include it, or solver='dense'.",
        ConvergenceWarning,
        stacklevel=2,
    )
    return z


BROADENING_UNSUPPORTED = (
    "BackwardOptions(broadening=...) needs the whole eigenbasis in the backward; {name} solves the "
    "shifted systems directly and cannot apply it. Pass solver='dense' (eigrad.eigsh) or broadening=None."
)


class TridiagonalSolve:
    """Shifted solver on the kept tridiagonal reduction.

    ``tensors = (d (*b,n), e (*b,n-1), refl (*b,n,n), tau (*b,n-1), Lc, sigma (*b,))``
    with ``Lc`` (*b,n,n) the Cholesky factor of ``B`` or an empty tensor and
    ``sigma`` (int64) the exponent of the scaling ``T = Qᵀ (2**σ C) Q`` (module
    docstring).
    """

    def __init__(self, tensors: Sequence[torch.Tensor], atol: float, rtol: float):
        self.d, self.e, self.refl, self.tau, self.Lc, self.sigma = tensors
        self.atol = atol
        self.rtol = rtol

    def __call__(self, R, shifts, X, M):  # R (*b,n,c), shifts (*b,c), X (*b,n,K), M (*b,K,c)
        has_B = self.Lc.numel() > 0
        batch = R.shape[:-2]
        n, c = R.shape[-2:]
        # each right-hand side scaled by a power of two to max 1 (exact; undone at the end): with
        # B far from 1 the columns of Lc⁻¹ R reach 1e300, and numpy's norms square them
        er = pow2_exponent(R.mT, dims=1)  # (*b, c)
        R = ldexp(R, -er.unsqueeze(-2), dims=0)
        Rt = torch.linalg.solve_triangular(self.Lc, R, upper=False) if has_B else R
        W = self.Lc.mH @ X if has_B else X
        # Qᵀ [Rt, W] (complex: Qᴴ) in one pass over the reflectors (memory-bound for few columns)
        bb = torch.broadcast_shapes(Rt.shape[:-2], W.shape[:-2], self.tau.shape[:-1])
        RW = torch.cat([Rt.expand(*bb, n, c), W.expand(*bb, n, W.shape[-1])], dim=-1)
        QtRW = apply_Q(self.refl, self.tau, RW, transpose=True)
        Bt, Zx = QtRW[..., :c], QtRW[..., c:]  # (*b, n, c), (*b, n, K) orthonormal
        eb = pow2_exponent(Bt.mT, dims=1)  # (*b, c)
        Bt = ldexp(Bt, -eb.unsqueeze(-2), dims=0)
        d = self.d.reshape(-1, n).cpu().numpy()
        e = self.e.reshape(d.shape[0], max(n - 1, 0)).cpu().numpy()  # n = 1: (batch, 0)
        Bn = Bt.reshape(-1, n, c).cpu().numpy()
        Zn = Zx.reshape(-1, n, Zx.shape[-1]).cpu().numpy()
        Mn = M.reshape(-1, M.shape[-2], c).cpu().numpy()
        # the shifts in the units of T (2**σ λ_j: eigenvalues of the scaled matrix, O(1))
        sigma = self.sigma.expand(bb)
        sn = ldexp(shifts.expand(*bb, c), sigma, dims=1).reshape(-1, c).cpu().numpy()
        out = np.zeros_like(Bn)
        for b in range(Bn.shape[0]):
            scale = float(np.max(np.abs(d[b]))) + (2 * float(np.max(np.abs(e[b]))) if n > 1 else 0.0)
            # columns with one projection set share its basis Zg (all of them in the usual backward)
            for cols in _by_value(Mn[b, :, j].tobytes() for j in range(c)).values():
                Zg = Zn[b][:, Mn[b, :, cols[0]]]
                out[b][:, cols] = _solve_columns(d[b], e[b], sn[b, cols], Bn[b][:, cols], Zg, scale)
        Z = torch.from_numpy(out).to(R.device).reshape(*batch, n, c)
        Y = apply_Q(self.refl, self.tau, Z)
        if has_B:
            Y = torch.linalg.solve_triangular(self.Lc.mH, Y, upper=True)
        # y = 2**σ Lc⁻ᴴ Q z, and the two scalings of the right-hand side undone
        return ldexp(Y, (sigma.unsqueeze(-1) + er + eb).unsqueeze(-2), dims=0)


def tridiagonal_factory(tensors, atol, rtol, broadening=None):
    if broadening is not None:
        raise ValueError(BROADENING_UNSUPPORTED.format(name="the tridiagonal (solver='lapack') backward"))
    return TridiagonalSolve(tensors, atol, rtol)
