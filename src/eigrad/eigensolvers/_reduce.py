"""Cholesky reduction of ``A x = λ B x`` to a standard problem.

``B = Lc Lcᴴ``, ``C = Lc⁻¹ A Lc⁻ᴴ``; eigenvectors map back as ``X = Lc⁻ᴴ W``
(``ᴴ``: the conjugate transpose, the transpose for real problems).
"""

from __future__ import annotations

import math

import torch

from .._scaling import in_safe_range, ldexp, pow2_exponent


def cholesky_of_B(B: torch.Tensor) -> torch.Tensor:  # (*batch, n, n) -> lower (*batch, n, n)
    """The Cholesky factor of ``B``, or a ``ValueError`` naming ``B`` when it is not SPD.

    Besides a failing factorization, a pivot ``l_ii² <= n·eps·max_j B_jj`` is
    rejected: pivots lie between ``λ_min(B)`` and ``max_j B_jj``, so such a
    ``B`` is within the factorization's own rounding error (``~n·eps·‖B‖``)
    of a singular matrix, and an exactly singular ``B`` whose factorization
    rounding let through would otherwise give eigenvalues ~1/eps.
    """
    Lc, info = torch.linalg.cholesky_ex(B)
    if bool((info != 0).any()):
        bad = int(info.flatten()[(info.flatten() != 0).nonzero()[0]].item())
        kind = "Hermitian" if B.is_complex() else "symmetric"
        raise ValueError(
            f"B is not {kind} positive definite: its Cholesky factorization failed "
            f"(leading minor of order {bad} is not positive). Pass a {kind} positive "
            "definite mass matrix B, or B=None for the standard problem."
        )
    n = B.shape[-1]
    if n:
        eps = torch.finfo(B.dtype).eps
        piv = Lc.diagonal(dim1=-2, dim2=-1).abs().square()  # (*batch, n)
        bmax = B.diagonal(dim1=-2, dim2=-1).real.amax(dim=-1, keepdim=True)
        small = piv <= n * eps * bmax
        if bool(small.any()):
            i = int(small.any(dim=-1).flatten().nonzero()[0])
            p_i = float(piv.reshape(-1, n)[i].min())
            raise ValueError(
                "B is not symmetric positive definite: it is singular to working precision (a pivot of its "
                f"Cholesky factorization is {p_i:.3e}, within n·eps = {n * eps:.1e} of its largest diagonal "
                f"entry {float(bmax.flatten()[i]):.3e}). Pass a symmetric positive definite mass matrix B, "
                "or B=None for the standard problem."
            )
    return Lc


def reduce_to_standard(A: torch.Tensor, Lc: torch.Tensor) -> torch.Tensor:
    """``C = Lc⁻¹ A Lc⁻ᴴ`` (symmetrized, or made Hermitian, against rounding)."""
    T = torch.linalg.solve_triangular(Lc, A, upper=False)
    C = torch.linalg.solve_triangular(Lc, T.mH, upper=False)  # A Hermitian: (Lc⁻¹ A)ᴴ = A Lc⁻ᴴ
    return 0.5 * (C + C.mH)


def back_transform(Lc: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``X = Lc⁻ᴴ W``."""
    return torch.linalg.solve_triangular(Lc.mH, W, upper=True)


def scaled_standard_form(A: torch.Tensor, B: torch.Tensor | None):
    """``(C, Lc, s)``: the standard problem of ``(A, B)`` scaled into the safe range.

    ``C = 2**s · Lc⁻¹ A Lc⁻ᴴ`` with ``max|C| ∈ [0.5, 1)``, ``Lc`` the Cholesky
    factor of ``B`` (``None`` for ``B = I``: ``C = 2**s A``) and ``s`` (int64,
    ``(*batch,)``). The eigenvalues of ``(A, B)`` are those of ``C`` times
    ``2**-s`` and the eigenvectors ``X = Lc⁻ᴴ W`` (``W`` those of ``C``).

    ``A`` is scaled by a power of two before the reduction and ``B`` by an even
    one before its factorization (``eigrad._scaling``), so no product or
    square of entries under- or overflows at any magnitude of ``A`` or ``B``,
    and the reduced matrix is scaled once more: LAPACK's tridiagonal
    eigensolvers return wrong eigenvalues without an error below
    ``max|C| ≈ 1e-153`` (float64) and fail above ``1e154``.

    For ``B = None`` and every ``max|A|`` already in the safe range
    (:func:`eigrad._scaling.in_safe_range`, about ``1e±77`` in float64) ``A``
    is returned unscaled and ``s`` is ``None`` (one host synchronization instead
    of the scaling's dozen small operations; the results differ by rounding only).
    """
    if B is None and in_safe_range(A):
        return A, None, None
    a = pow2_exponent(A)
    As = ldexp(A, -a)
    if B is None:
        return As, None, -a
    b = pow2_exponent(B, even=True)
    Ls = cholesky_of_B(ldexp(B, -b))
    Cs = reduce_to_standard(As, Ls)  # = 2**(b - a) Lc⁻¹ A Lc⁻ᵀ
    c = pow2_exponent(Cs)
    return ldexp(Cs, -c), ldexp(Ls, torch.div(b, 2, rounding_mode="floor")), b - a - c


def unscale_eigenvalues(mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``λ = μ · 2**-s``, or a ``ValueError`` when the eigenvalues leave the dtype's range.

    ``s = None`` (an unscaled problem in the safe range, :func:`scaled_standard_form`): ``μ`` itself."""
    if s is None:
        return mu
    lam = ldexp(mu, -s, dims=1)
    if not mu.shape[-1]:
        return lam
    finfo = torch.finfo(mu.dtype)
    big, lam_big = mu.abs().amax(dim=-1), lam.abs().amax(dim=-1)
    bad = ~torch.isfinite(lam_big) | ((big > 0) & (lam_big < finfo.tiny))
    if bool(bad.any()):
        i = int(bad.flatten().nonzero()[0])
        b_i = float(big.flatten()[i])
        if not math.isfinite(b_i):
            raise FloatingPointError(f"the dense eigensolver returned non-finite eigenvalues ({b_i}) for finite input.")
        log10 = math.log10(b_i) - float(s.flatten()[i]) * math.log10(2.0)
        raise ValueError(
            f"the eigenvalues of (A, B) have magnitude about 1e{log10:.0f}, outside the range of {mu.dtype} "
            f"(normal numbers {finfo.tiny:.1e} to {finfo.max:.1e}). Divide A (or multiply B) by a constant: "
            "the eigenvalues scale by it and the eigenvectors keep their directions."
        )
    return lam
