"""Cholesky reduction of ``A x = λ B x`` to a standard problem.

``B = Lc Lcᵀ``, ``C = Lc⁻¹ A Lc⁻ᵀ``; eigenvectors map back as ``X = Lc⁻ᵀ W``.
"""

from __future__ import annotations

import torch


def cholesky_of_B(B: torch.Tensor) -> torch.Tensor:  # (*batch, n, n) -> lower (*batch, n, n)
    Lc, info = torch.linalg.cholesky_ex(B)
    if bool((info != 0).any()):
        bad = int(info.flatten()[(info.flatten() != 0).nonzero()[0]].item())
        raise ValueError(
            "B is not symmetric positive definite: its Cholesky factorization failed "
            f"(leading minor of order {bad} is not positive). Pass a symmetric positive "
            "definite mass matrix B, or B=None for the standard problem."
        )
    return Lc


def reduce_to_standard(A: torch.Tensor, Lc: torch.Tensor) -> torch.Tensor:
    """``C = Lc⁻¹ A Lc⁻ᵀ`` (symmetrized against rounding)."""
    T = torch.linalg.solve_triangular(Lc, A, upper=False)
    C = torch.linalg.solve_triangular(Lc, T.transpose(-1, -2), upper=False)
    return 0.5 * (C + C.transpose(-1, -2))


def back_transform(Lc: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``X = Lc⁻ᵀ W``."""
    return torch.linalg.solve_triangular(Lc.transpose(-1, -2), W, upper=True)
