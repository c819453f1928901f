"""The shifted-solve protocol (MATH.md, "Clusters and the mask D").

A shifted solver is called as ``solve(R, shifts, X, M)``:

* ``R`` (*batch, n, c): right-hand sides, each with ``X_gᵀ r_j = 0`` (the
  caller removes its cluster's part first);
* ``shifts`` (*batch, c): ``λ_j`` per column;
* ``X`` (*batch, n, K): B-orthonormal eigenvectors; ``M`` (*batch, K, c) bool:
  column ``j`` is projected against ``X[:, M[:, j]]`` (its cluster ``g``, or
  every computed column: the eigen-Functions pass ``M`` all true and couple
  the computed pairs themselves, see ``autodiff._formulas.split_solve``).

It returns ``Y`` (*batch, n, c) with ``(A - λ_j B) y_j = r_j`` and
``X_gᵀ B y_j = 0`` for the projected set ``g`` (the caller applies the MATH.md projection once more, so a
solver may leave a rounding-level cluster component). Solvers are plain
functions of tensors, no autograd.
"""

from __future__ import annotations

from typing import Protocol

import torch


class ShiftedSolver(Protocol):
    def __call__(
        self, R: torch.Tensor, shifts: torch.Tensor, X: torch.Tensor, M: torch.Tensor
    ) -> torch.Tensor: ...


def project_out(Y: torch.Tensor, X: torch.Tensor, BX: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``y_j <- y_j - X_g (X_gᵀ B y_j)`` for every column: ``Y - X (M ∘ (BXᵀ Y))``."""
    return Y - X @ (M.to(Y.dtype) * (BX.transpose(-1, -2) @ Y))
