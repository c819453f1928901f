"""Shifted solves through the tridiagonal reduction kept by the forward.

The dense subset eigensolver reduces ``C = Lc⁻¹ A Lc⁻ᵀ = Q T Qᵀ`` (LAPACK
``sytrd``; ``Lc`` the Cholesky factor of ``B``, absent when ``B = I``). Then

    (A - s B) y = r   <=>   (T - s) z = Qᵀ Lc⁻¹ r,   y = Lc⁻ᵀ Q z,

and the B-projection against a cluster becomes the Euclidean projection
against ``Z_g = Qᵀ Lcᵀ X_g`` (orthonormal). Each shifted tridiagonal system is
O(n) (LAPACK ``gtsv``); applying ``Q`` costs O(n² c). The system is singular
on the cluster, so the answer is projected and refined (iterative refinement
on the projected residual), as MATH.md requires: an unprojected answer of a
singular solve drifts into the null space.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.linalg.lapack as lapack
import torch


def apply_Q(refl: torch.Tensor, tau: torch.Tensor, Z: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``Q Z`` (or ``Qᵀ Z``) for ``Q`` stored as ``sytrd(lower)`` reflectors.

    ``Q = diag(1, Q')`` with ``Q'`` in ``geqrf`` layout in ``refl[1:, :n-1]``.
    """
    n = refl.shape[-1]
    out = torch.empty_like(Z)
    out[..., :1, :] = Z[..., :1, :]
    if n > 1:
        out[..., 1:, :] = torch.ormqr(refl[..., 1:, : n - 1], tau, Z[..., 1:, :], left=True, transpose=transpose)
    return out


def _gtsv(dl, dm, du, b):
    fn = lapack.dgtsv if dm.dtype == np.float64 else lapack.sgtsv
    _, _, _, x, info = fn(dl, dm, du, b)
    return x, info


def _tridiag_matvec(d, e, z):  # T z for z (n,) or (n, m)
    if z.ndim == 2:
        d, e = d[:, None], e[:, None]
    out = d * z
    out[:-1] += e * z[1:]
    out[1:] += e * z[:-1]
    return out


def _solve_block(d, e, s, b, Zg, scale, n_refine=3):
    """Projected solutions of ``(T - s) z_j = b_j``, ``Zgᵀ z_j = 0`` for the m columns of ``b``.

    numpy; ``b`` (n, m), ``Zg`` (n, g) orthonormal. One shift and one projection
    set for all columns, so each LAPACK ``gtsv`` call solves all m at once.
    """
    n = d.shape[0]
    if Zg.shape[1]:
        b = b - Zg @ (Zg.T @ b)
    if not np.any(b):
        return np.zeros_like(b)
    eps = np.finfo(d.dtype).eps
    shift = s
    dm = d - shift
    bnorm = np.linalg.norm(b, axis=0)
    z = None
    for attempt in range(8):
        x, info = _gtsv(e.copy(), dm.copy(), e.copy(), b.copy())
        if info == 0 and np.all(np.isfinite(x)):
            z = x
            break
        # exactly singular in floating point: move the shift by a few ulps of the scale
        shift = shift + (4.0**attempt) * eps * max(scale, abs(s), np.finfo(d.dtype).tiny)
        dm = d - shift
    if z is None:
        raise FloatingPointError("tridiagonal shifted solve failed: the shifted matrix is singular")
    if Zg.shape[1]:
        z = z - Zg @ (Zg.T @ z)
    dms = d - s
    for _ in range(n_refine):  # iterative refinement on the projected residual
        res = b - _tridiag_matvec(dms, e, z)
        if Zg.shape[1]:
            res = res - Zg @ (Zg.T @ res)
        if np.all(np.linalg.norm(res, axis=0) <= 4 * n * eps * (scale * np.linalg.norm(z, axis=0) + bnorm)):
            break
        dz, info = _gtsv(e.copy(), dm.copy(), e.copy(), res)
        if info != 0 or not np.all(np.isfinite(dz)):
            break
        if Zg.shape[1]:
            dz = dz - Zg @ (Zg.T @ dz)
        z = z + dz
    return z


def _groups(shifts, M):
    """Column indices grouped by equal (shift, projection set), in order of appearance.

    A vmapped backward (``jacrev``) repeats each shift for every cotangent, so
    its columns collapse into K groups.
    """
    groups = {}
    for j in range(shifts.shape[0]):
        groups.setdefault((float(shifts[j]), M[:, j].tobytes()), []).append(j)
    return list(groups.values())


BROADENING_UNSUPPORTED = (
    "BackwardOptions(broadening=...) needs the whole eigenbasis in the backward; {name} solves the "
    "shifted systems directly and cannot apply it. Pass solver='dense' (eigrad.eigsh) or broadening=None."
)


class TridiagonalSolve:
    """Shifted solver on the kept tridiagonal reduction.

    ``tensors = (d (*b,n), e (*b,n-1), refl (*b,n,n), tau (*b,n-1), Lc)``
    with ``Lc`` (*b,n,n) the Cholesky factor of ``B`` or an empty tensor.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], atol: float, rtol: float):
        self.d, self.e, self.refl, self.tau, self.Lc = tensors
        self.atol = atol
        self.rtol = rtol

    def __call__(self, R, shifts, X, M):  # R (*b,n,c), shifts (*b,c), X (*b,n,K), M (*b,K,c)
        has_B = self.Lc.numel() > 0
        batch = R.shape[:-2]
        n, c = R.shape[-2:]
        Rt = torch.linalg.solve_triangular(self.Lc, R, upper=False) if has_B else R
        W = self.Lc.transpose(-1, -2) @ X if has_B else X
        # Qᵀ [Rt, W] in one pass over the reflectors (memory-bound for few columns)
        bb = torch.broadcast_shapes(Rt.shape[:-2], W.shape[:-2], self.tau.shape[:-1])
        RW = torch.cat([Rt.expand(*bb, n, c), W.expand(*bb, n, W.shape[-1])], dim=-1)
        QtRW = apply_Q(self.refl, self.tau, RW, transpose=True)
        Bt, Zx = QtRW[..., :c], QtRW[..., c:]  # (*b, n, c), (*b, n, K) orthonormal
        d = self.d.reshape(-1, n).cpu().numpy()
        e = self.e.reshape(-1, max(n - 1, 0)).cpu().numpy()
        Bn = Bt.reshape(-1, n, c).cpu().numpy()
        Zn = Zx.reshape(-1, n, Zx.shape[-1]).cpu().numpy()
        Mn = M.reshape(-1, M.shape[-2], c).cpu().numpy()
        sn = shifts.reshape(-1, c).cpu().numpy()
        out = np.zeros_like(Bn)
        for b in range(Bn.shape[0]):
            scale = float(np.max(np.abs(d[b]))) + (2 * float(np.max(np.abs(e[b]))) if n > 1 else 0.0)
            for cols in _groups(sn[b], Mn[b]):
                j = cols[0]
                out[b][:, cols] = _solve_block(d[b], e[b], float(sn[b, j]), Bn[b][:, cols], Zn[b][:, Mn[b, :, j]], scale)
        Z = torch.from_numpy(out).to(R.device).reshape(*batch, n, c)
        Y = apply_Q(self.refl, self.tau, Z)
        if has_B:
            Y = torch.linalg.solve_triangular(self.Lc.transpose(-1, -2), Y, upper=True)
        return Y


def tridiagonal_factory(tensors, atol, rtol, broadening=None):
    if broadening is not None:
        raise ValueError(BROADENING_UNSUPPORTED.format(name="the tridiagonal (solver='lapack') backward"))
    return TridiagonalSolve(tensors, atol, rtol)
