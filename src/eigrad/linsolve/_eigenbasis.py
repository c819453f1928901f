"""Shifted solves when the whole eigenbasis is known (MATH.md, "Full decomposition").

With ``Xf`` B-orthonormal (all ``N = n`` eigenpairs),
``A - s B = B Xf (Λf - s) Xfᵀ B``, so the projected solution of
``(A - s B) y = r`` is ``Xf [E ∘ (Xfᵀ r)]`` with ``E_ij = 1/(λ_i - s_j)`` outside
the cluster of ``s_j`` and ``0`` inside: diagonal in the eigenbasis, O(n² c).
"""

from __future__ import annotations

from typing import Sequence

import torch


class EigenbasisSolve:
    """Shifted solver from a full eigendecomposition ``(evals (*b,N), evecs (*b,n,N))``."""

    def __init__(self, tensors: Sequence[torch.Tensor], atol: float, rtol: float):
        self.evals, self.evecs = tensors
        self.atol = atol
        self.rtol = rtol

    def __call__(self, R, shifts, X, M):  # R (*b,n,c), shifts (*b,c)
        C = self.evecs.transpose(-1, -2) @ R  # (*b, N, c)
        diff = self.evals.unsqueeze(-1) - shifts.unsqueeze(-2)  # (*b, N, c)
        atol = self.atol.unsqueeze(-1).unsqueeze(-1) if torch.is_tensor(self.atol) else self.atol
        tol = atol + self.rtol * torch.maximum(self.evals.abs().unsqueeze(-1), shifts.abs().unsqueeze(-2))
        inside = diff.abs() <= tol
        E = torch.where(inside, torch.zeros_like(diff), 1.0 / torch.where(inside, torch.ones_like(diff), diff))
        return self.evecs @ (E * C)


def eigenbasis_factory(tensors, atol, rtol):
    return EigenbasisSolve(tensors, atol, rtol)
