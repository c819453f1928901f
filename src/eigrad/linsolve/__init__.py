"""Projected shifted solves ``(A - λ_j B) y_j = r_j``. Imports operators only."""

from ._base import ShiftedSolver as ShiftedSolver
from ._base import project_out as project_out
from ._eigenbasis import EigenbasisSolve as EigenbasisSolve
from ._eigenbasis import eigenbasis_factory as eigenbasis_factory
from ._tridiagonal import TridiagonalSolve as TridiagonalSolve
from ._tridiagonal import apply_Q as apply_Q
from ._tridiagonal import tridiagonal_factory as tridiagonal_factory
