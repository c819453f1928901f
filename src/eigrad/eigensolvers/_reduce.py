"""Cholesky reduction of ``A x = λ B x`` to a standard problem.

``B = Lc Lcᴴ``, ``C = Lc⁻¹ A Lc⁻ᴴ``; eigenvectors map back as ``X = Lc⁻ᴴ W``
(``ᴴ``: the conjugate transpose, the transpose for real problems).
"""

from __future__ import annotations

import torch


def cholesky_of_B(B: torch.Tensor) -> torch.Tensor:  # (*batch, n, n) -> lower (*batch, n, n)
    Lc, info = torch.linalg.cholesky_ex(B)
    if bool((info != 0).any()):
        bad = int(info.flatten()[(info.flatten() != 0).nonzero()[0]].item())
        kind = "Hermitian" if B.is_complex() else "symmetric"
        raise ValueError(
            f"B is not {kind} positive definite: its Cholesky factorization failed "
            f"(leading minor of order {bad} is not positive). Pass a {kind} positive "
            "definite mass matrix B, or B=None for the standard problem."
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
