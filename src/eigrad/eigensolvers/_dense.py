"""Dense forward eigensolvers: full (``torch.linalg.eigh``) and subset (LAPACK).

Both take dense ``A`` (and ``B``) tensors ``(*batch, n, n)`` and return an
:class:`~eigrad.eigensolvers._base.EigSolution` with a handle the backward
reuses: the whole eigenbasis (full) or the tridiagonal reduction (subset), so
the backward never recomputes a decomposition.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.linalg
import scipy.linalg.lapack as lapack
import torch

from ..linsolve import apply_Q, eigenbasis_factory, tridiagonal_factory
from ._base import EigSolution, SolveHandle
from .._scaling import ldexp, pow2_exponent
from ._reduce import back_transform, scaled_standard_form, unscale_eigenvalues


def _index_range(n: int, k: int, g: int, largest: bool) -> tuple[int, int, int]:
    """Ascending index range ``[lo, hi)`` holding the k wanted and ``g`` guards, and ``g`` clipped."""
    g = max(0, min(g, n - k))
    if largest:
        return n - k - g, n, g
    return 0, k + g, g


def _split(vals, vecs, k, g, largest):
    """Split ascending ``vals``/``vecs`` over ``[lo, hi)`` into wanted and guards."""
    if largest:
        return vals[..., g:], vecs[..., g:], vals[..., :g], vecs[..., :g]
    return vals[..., :k], vecs[..., :k], vals[..., k:], vecs[..., k:]


def _residuals(A, B, X, L, scaled=True):
    AX = A @ X
    BX = X if B is None else B @ X
    R = AX - BX * L.unsqueeze(-2)  # (*b, n, k)
    if not scaled:  # A in the safe range (scaled_standard_form): the squares neither under- nor overflow;
        # summed explicitly (vector_norm over the middle dimension is ~4x slower on small batched matrices)
        sq = R.square() if not R.is_complex() else (R.real.square() + R.imag.square())
        return sq.sum(-2).sqrt()
    # the norm of R · 2**-e (each column's max in [0.5, 1)) times 2**e: its square neither
    # under- nor overflows at any scale of A (torch's vector_norm squares the entries)
    e = pow2_exponent(R.mT, dims=1)
    return ldexp(torch.linalg.vector_norm(ldexp(R, -e.unsqueeze(-2), dims=0), dim=-2), e, dims=0)


@dataclasses.dataclass(frozen=True)
class DenseEigh:
    """Full dense decomposition with ``torch.linalg.eigh`` (any device, batched).

    The generalized problem is reduced with the Cholesky factor of ``B``.
    ``A`` and ``B`` are scaled by powers of two first (exact;
    :func:`~eigrad.eigensolvers._reduce.scaled_standard_form`), so every
    magnitude of ``A`` and ``B`` is solved as accurately as ``max|A| ≈ 1``
    (skipped for ``B = None`` when ``max|A|`` is already in the safe range,
    where it would change results by rounding only).
    The backward reuses the whole eigenbasis (MATH.md, "Full decomposition").
    """

    handle_factory = staticmethod(eigenbasis_factory)
    #: eigenvalues and guards come out ascending (``solve_with_guards`` skips sorting them)
    ascending = True

    def __call__(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        n = A.shape[-1]
        C, Lc, s = scaled_standard_form(A, B)
        mu, W = torch.linalg.eigh(C)
        evals = unscale_eigenvalues(mu, s)
        evecs = W if Lc is None else back_transform(Lc, W)
        lo, hi, g = _index_range(n, k, n_guard, largest)
        L, X, Lg, Xg = _split(evals[..., lo:hi], evecs[..., lo:hi], k, g, largest)
        scale = evals.abs().amax(dim=-1)
        return EigSolution(
            eigenvalues=L,
            eigenvectors=X,
            residual_norms=functools.partial(_residuals, A, B, X, L, scaled=s is not None),  # read by eigsh_ex only
            n_iter=1,
            status="converged",
            guard_eigenvalues=Lg,
            guard_eigenvectors=Xg,
            handle=SolveHandle((evals, evecs), eigenbasis_factory),
            n_matvec=0,
            scale=scale,
        )


#: LAPACK's reduction to real symmetric tridiagonal form, per dtype: ``sytrd`` (real symmetric) and
#: ``hetrd`` (complex Hermitian: ``C = Q T Qᴴ`` with ``T`` real, ``Q`` complex reflectors)
_TRD = {
    np.float64: (lapack.dsytrd, lapack.dsytrd_lwork),
    np.float32: (lapack.ssytrd, lapack.ssytrd_lwork),
    np.complex128: (lapack.zhetrd, lapack.zhetrd_lwork),
    np.complex64: (lapack.chetrd, lapack.chetrd_lwork),
}


def _sytrd(C: np.ndarray):
    """``sytrd``/``hetrd`` of ``C`` (Fortran order, lower triangle): ``(reflectors, d, e, tau)``, ``d``, ``e`` real."""
    sytrd, lwork_fn = _TRD[C.dtype.type]
    n = C.shape[0]
    lwork, info = lwork_fn(n, lower=1)
    c, d, e, tau, info = sytrd(C, lower=1, lwork=max(int(np.real(lwork)), 1))
    if info != 0:
        raise RuntimeError(f"LAPACK sytrd/hetrd failed with info={info}")
    return c, d, e, tau


@dataclasses.dataclass(frozen=True)
class LapackSubset:
    """Partial dense decomposition on the CPU with LAPACK's subset route.

    ``C = Q T Qᵀ`` (``sytrd``), the selected eigenpairs of ``T`` by MRRR
    (``stemr`` through ``scipy.linalg.eigh_tridiagonal``), ``X = Q Z`` with
    ``ormqr``: the work of ``syevr`` without forming the other eigenvectors.
    Complex Hermitian ``C``: ``C = Q T Qᴴ`` (``hetrd``) with ``T`` real
    symmetric, so the eigenpairs of ``T`` are real and ``X = Q Z`` is applied
    with ``unmqr`` (``torch.ormqr`` on complex reflectors): the work of
    ``heevr``.
    The reduction (``d``, ``e``, reflectors, ``tau``) is kept for the backward,
    whose shifted solves then cost O(n) per system plus two applications of
    ``Q`` (:class:`eigrad.linsolve.TridiagonalSolve`).

    Like ``syevr``, the problem is first scaled into the range where the
    reduction and MRRR are safe, by powers of two (exact; skipped when ``B = None``
    and ``max|A|`` is already in the safe range, ``s = 0``):
    ``T`` is the reduction of ``2**s C`` with ``max|2**s C| ∈ [0.5, 1)``
    (:func:`~eigrad.eigensolvers._reduce.scaled_standard_form`), the
    eigenvalues are scaled back and ``s`` is kept with the reduction, so
    that the backward solves ``(T - 2**s λ_j) z = b`` on the same scaled
    matrix. Unscaled, LAPACK returned eigenvalues 18-90 % wrong (residual
    ~0.5, no error) for ``max|C|`` below about 1e-153 (float64) or 1e-18
    (float32) and failed in ``stebz`` above 1e154.
    """

    handle_factory = staticmethod(tridiagonal_factory)
    #: eigenvalues and guards come out ascending (``solve_with_guards`` skips sorting them)
    ascending = True

    def __call__(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        if A.device.type != "cpu":
            raise ValueError(
                f"solver='lapack' runs on the CPU; received A on {A.device}. "
                "Pass solver='dense' (torch.linalg.eigh) for GPU tensors."
            )
        n = A.shape[-1]
        batch = A.shape[:-2]
        C, Lc, s = scaled_standard_form(A, B)
        if s is None:  # unscaled (in the safe range): the backward's tridiagonal solves take s = 0
            s = torch.zeros(batch, dtype=torch.int64)
        lo, hi, g = _index_range(n, k, n_guard, largest)
        Cn = C.detach().reshape(-1, n, n).cpu().numpy()
        ds, es, refls, taus, vals_l, Zs, scales = [], [], [], [], [], [], []
        for C1 in Cn:
            if n == 1:
                rd = np.finfo(C1.dtype).dtype  # d, e are real (also for complex C1)
                c, d, e, tau = C1.copy(), C1[0].real.copy(), np.zeros(0, rd), np.zeros(0, C1.dtype)
            else:
                # C1 is exactly symmetric (sym / reduce_to_standard), so its transpose is
                # the same matrix in Fortran order: LAPACK reads it without a transposing copy.
                # A Hermitian C1's transpose is its conjugate: LAPACK needs a Fortran-order copy
                c, d, e, tau = _sytrd(np.asfortranarray(C1) if np.iscomplexobj(C1) else C1.T)
            if n == 1:
                vals, Z = d.copy(), np.ones((1, 1), d.dtype)
            else:
                vals, Z = scipy.linalg.eigh_tridiagonal(d, e, select="i", select_range=(lo, hi - 1))
            ds.append(d); es.append(e); refls.append(c); taus.append(tau)
            vals_l.append(vals); Zs.append(Z)
            gersh = np.abs(d).copy()
            if n > 1:
                gersh[:-1] += np.abs(e)
                gersh[1:] += np.abs(e)
            scales.append(gersh.max())
        as_t = lambda arrs, *shape: torch.from_numpy(np.stack(arrs)).reshape(*batch, *shape)  # noqa: E731
        d_t, e_t = as_t(ds, n), as_t(es, n - 1)
        refl_t, tau_t = as_t(refls, n, n), as_t(taus, max(n - 1, 0))
        vals_t, Z_t = unscale_eigenvalues(as_t(vals_l, hi - lo), s), as_t(Zs, n, hi - lo)
        Z_t = Z_t.to(A.dtype)  # T is real: its eigenvectors are real, Q may be complex
        W = apply_Q(refl_t, tau_t, Z_t) if n > 1 else Z_t
        vecs = back_transform(Lc, W) if Lc is not None else W
        L, X, Lg, Xg = _split(vals_t, vecs, k, g, largest)
        Lc_t = Lc if Lc is not None else torch.empty(*batch, 0, 0, dtype=A.dtype)
        return EigSolution(
            eigenvalues=L,
            eigenvectors=X,
            residual_norms=functools.partial(_residuals, A, B, X, L),  # read by eigsh_ex only
            n_iter=1,
            status="converged",
            guard_eigenvalues=Lg,
            guard_eigenvectors=Xg,
            handle=SolveHandle((d_t, e_t, refl_t, tau_t, Lc_t, s), tridiagonal_factory),
            n_matvec=0,
            scale=ldexp(torch.tensor(scales, dtype=A.real.dtype).reshape(batch), -s, dims=0),
        )
