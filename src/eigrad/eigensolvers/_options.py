"""Options shared by the iterative eigensolvers: frozen dataclasses, no global settings.

Convergence criterion (the same for every iterative solver, checked on the
true residuals of the returned vectors):

    ``‖A x_i − λ_i B x_i‖ <= rtol · max(|λ_i|, floor) · ‖B x_i‖``

for each of the ``k`` wanted and the guard eigenpairs, with
``floor = eps ** 0.25 · ν`` and ``ν`` the solver's estimate of the magnitude of
the spectrum (the largest Ritz value magnitude it saw). The floor only matters
for eigenvalues near zero, where a purely relative test is unattainable. The
test is scale invariant in ``A`` and ``B``.

Default ``rtol``: ``1e-8`` in float64, ``1e-4`` in float32 (about
``1e-8 · sqrt(eps32 / eps64)``, leaving room for ``‖A‖ / |λ|`` up to ``1e3``).
"""

from __future__ import annotations

import dataclasses
import math

import torch

_ON_FAILURE = ("raise", "warn")
_DEFAULT_RTOL = {torch.float64: 1e-8, torch.float32: 1e-4}


def default_rtol(dtype: torch.dtype) -> float:
    """Default relative residual tolerance for ``dtype`` (see module docstring; complex: that of its
    component dtype)."""
    dtype = {torch.complex128: torch.float64, torch.complex64: torch.float32}.get(dtype, dtype)
    if dtype not in _DEFAULT_RTOL:
        raise TypeError(f"iterative eigensolvers support float32 and float64; received dtype {dtype}.")
    return _DEFAULT_RTOL[dtype]


@dataclasses.dataclass(frozen=True)
class IterativeOptions:
    """Options every iterative eigensolver takes.

    Parameters
    ----------
    rtol : float or None
        Relative residual tolerance of the convergence criterion (module
        docstring). ``None``: ``1e-8`` in float64, ``1e-4`` in float32.
    maxiter : int or None
        Iteration cap; its unit is the solver's (restart cycles for ARPACK,
        outer iterations for PRIMME and LOBPCG). ``None``: the solver's
        default.
    on_failure : {"raise", "warn"}
        When the criterion is not met: raise :class:`eigrad.ConvergenceError`
        (its ``solution`` holds the best iterate), or return the best iterate
        with an :class:`eigrad.ConvergenceWarning`. Never silent.
    seed : int
        Seed of the solver's own random start vectors (the global RNGs of
        torch and numpy are never touched).
    """

    rtol: float | None = None
    maxiter: int | None = None
    on_failure: str = "raise"
    seed: int = 0

    def __post_init__(self):
        name = type(self).__name__
        if self.rtol is not None and (
            isinstance(self.rtol, bool)
            or not isinstance(self.rtol, (int, float))
            or not math.isfinite(self.rtol)
            or not 0 < self.rtol < 1
        ):
            raise ValueError(f"{name}(rtol={self.rtol!r}) must be a float in (0, 1), or None for the dtype default.")
        if self.maxiter is not None and (
            isinstance(self.maxiter, bool) or not isinstance(self.maxiter, int) or self.maxiter < 1
        ):
            raise ValueError(f"{name}(maxiter={self.maxiter!r}) must be a positive int or None.")
        if self.on_failure not in _ON_FAILURE:
            raise ValueError(
                f"{name}(on_failure={self.on_failure!r}) is not a policy; pass 'raise' or 'warn'."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"{name}(seed={self.seed!r}) must be an int.")

    def resolved_rtol(self, dtype: torch.dtype) -> float:
        return default_rtol(dtype) if self.rtol is None else float(self.rtol)


def check_positive_int(owner: object, field: str, value, minimum: int = 1) -> None:
    """``ValueError`` unless ``value`` is None or an int ``>= minimum``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{type(owner).__name__}({field}={value!r}) must be an int >= {minimum}, or None for the default."
        )
