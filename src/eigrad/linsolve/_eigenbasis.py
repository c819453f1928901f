"""Shifted solves when the whole eigenbasis is known (MATH.md, "Full decomposition").

With ``Xf`` B-orthonormal (all ``N = n`` eigenpairs),
``A - s B = B Xf (Λf - s) Xfᴴ B``, so the projected solution of
``(A - s B) y = r`` is ``Xf [E ∘ (Xfᴴ r)]`` with ``E_ij = 1/(λ_i - s_j)`` outside
the cluster of ``s_j`` and ``0`` inside: diagonal in the eigenbasis, O(n² c).
(``ᴴ`` is the transpose for real problems; eigenvalues are real either way.)

With a Lorentzian broadening ``ε`` (``BackwardOptions(broadening=ε)``, opt-in,
approximate) ``E_ij = (λ_i - s_j)/((λ_i - s_j)² + ε²)`` outside the cluster:
each term is scaled by ``d²/(d² + ε²)`` (relative error ``ε²/(d² + ε²)``) and
bounded by ``1/(2ε)`` near crossings.
"""

from __future__ import annotations

from typing import Sequence

import torch


class EigenbasisSolve:
    """Shifted solver from a full eigendecomposition ``(evals (*b,N), evecs (*b,n,N))``."""

    def __init__(self, tensors: Sequence[torch.Tensor], atol: float, rtol: float, broadening: float | None = None):
        self.evals, self.evecs = tensors
        self.atol = atol
        self.rtol = rtol
        self.broadening = broadening

    def __call__(self, R, shifts, X, M):  # R (*b,n,c), shifts (*b,c)
        C = self.evecs.mH @ R  # (*b, N, c)
        diff = self.evals.unsqueeze(-1) - shifts.unsqueeze(-2)  # (*b, N, c)
        atol = self.atol.unsqueeze(-1).unsqueeze(-1) if torch.is_tensor(self.atol) else self.atol
        tol = atol + self.rtol * torch.maximum(self.evals.abs().unsqueeze(-1), shifts.abs().unsqueeze(-2))
        inside = diff.abs() <= tol
        safe = torch.where(inside, torch.ones_like(diff), diff)
        if self.broadening is None:
            E = torch.where(inside, torch.zeros_like(diff), 1.0 / safe)
        else:  # Lorentzian: 1/d -> d/(d² + ε²)
            E = torch.where(inside, torch.zeros_like(diff), safe / (safe**2 + self.broadening**2))
        return self.evecs @ (E * C)


def eigenbasis_factory(tensors, atol, rtol, broadening=None):
    return EigenbasisSolve(tensors, atol, rtol, broadening)


#: this factory applies ``BackwardOptions(broadening=...)``
eigenbasis_factory.supports_broadening = True
#: its handle is the whole eigenbasis ``(evals (*b,n), evecs (*b,n,n))``, ascending (the dense backward's
#: closed form for simple spectra reads it, ``autodiff._formulas.full_simple_vjp``)
eigenbasis_factory.full_eigenbasis = True
