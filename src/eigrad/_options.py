"""Frozen option dataclasses (no global settings).

Tolerance defaults derive from ``torch.finfo(dtype).eps`` of the problem and
are documented here and in ``docs/guide.md``:

* degeneracy: eigenvalues ``λ_i``, ``λ_j`` are in one cluster when
  ``|λ_i - λ_j| <= degen_atol + degen_rtol * max(|λ_i|, |λ_j|)``, linked
  transitively. Default ``degen_rtol = sqrt(eps)`` and
  ``degen_atol = sqrt(eps) * scale`` with ``scale`` the magnitude of the
  spectrum (the largest ``|λ|`` the forward solver saw, or a norm bound of
  the reduced matrix). In float64 that merges eigenvalues that agree to
  about 1.5e-8 relative to the matrix; in float32, 3.5e-4.
* existence checks: a cluster violates a condition when the violation,
  relative to that cluster's own cotangents, exceeds ``check_rtol`` (default
  ``eps ** 0.25``: 1.2e-4 in float64, 1.9e-2 in float32). Condition 2
  (uniform eigenvalue cotangent) is judged only over eigenvalues closer than
  ``eps · scale / check_rtol`` (1.8e-12 · scale in float64): farther apart,
  an eigenvalue cotangent has its exact derivative, computed to about
  ``eps · scale / gap`` (``benchmarks/existence_gap.py``, docs/guide.md).
* operator backward (MINRES): required true relative residual
  ``linsolve_rtol``, default ``max(1e-2 · rtol_fwd, 1e3 · eps)`` with
  ``rtol_fwd`` the iterative eigensolvers' default residual tolerance
  (``1e-8`` in float64, ``1e-4`` in float32): ``1e-10`` in float64,
  ``1.2e-4`` in float32. The gradient cannot be more accurate than the
  eigenpairs it starts from. Measured on the 3D Laplacian + potential of
  ``benchmarks/matrix_free.py`` (k = 8, gradient of ``n Σ_j ρ_j² + Σ λ`` with
  respect to the potential, 12³ against the dense full-eigenbasis gradient,
  24³ against a 1e-13/1e-13 iterative one): a linear-solve residual ``r``
  adds about ``0.02–0.05 r`` relative error to the gradient, a forward residual
  ``1e-8`` about ``4e-10``; so with the default forward, ``linsolve_rtol``
  1e-12, 1e-10 and 1e-8 gave gradient errors 3.6e-10, 3.6e-10 and 4.0e-10,
  and 1e-10 took ~30% less backward time than 1e-12 without a preconditioner.
  Tighten ``linsolve_rtol`` together with the forward's ``rtol``
  (``1e-2 ·`` it): with a forward at 1e-12, 1e-10 gives 4e-12, 1e-12 gives
  8e-13.
"""

from __future__ import annotations

import dataclasses
import math

import torch

_GAUGE_POLICIES = ("warn", "raise", "ignore")
#: default linsolve_rtol relative to the forward's residual tolerance (module docstring)
_LINSOLVE_FACTOR = 1e-2


@dataclasses.dataclass(frozen=True)
class BackwardOptions:
    """How derivatives are computed and checked.

    Parameters
    ----------
    degen_atol, degen_rtol : float or None
        Degeneracy tolerances (see module docstring). ``None`` derives them
        from the dtype: ``degen_rtol = sqrt(eps)``,
        ``degen_atol = sqrt(eps) * scale``.
    gauge : {"warn", "raise", "ignore"}
        What to do when a derivative cannot be formed at a degenerate cluster
        (MATH.md's two conditions, or a cluster cut by ``k``): emit
        :class:`eigrad.GaugeWarning`, raise :class:`eigrad.GaugeError`, or
        return the masked derivative (in-cluster terms dropped) silently.
    check_rtol : float or None
        Relative size above which a violation is reported. ``None`` gives
        ``eps ** 0.25`` of the dtype.
    n_guard : int
        How many eigenvalues beyond the k-th to compute (at least) to detect a
        cluster cut by ``k``. More are computed while they stay degenerate.
        ``0`` turns that detection off: a cluster cut by ``k`` then goes
        unreported (and its derivative is wrong), so ``n_guard=0`` with
        ``gauge="raise"`` is refused (ValueError); with ``gauge="warn"`` the
        other checks still warn, cuts do not.
    linsolve_rtol, linsolve_maxiter : float or None, int or None
        Tolerance and iteration cap for iterative backward solves (operators).
        ``None`` gives ``max(1e-2 * rtol_fwd, 1e3 * eps)`` (module docstring):
        1e-10 in float64, 1.2e-4 in float32; a forward solved to a tighter
        ``rtol`` than its default wants ``linsolve_rtol = 1e-2 * rtol``.
    broadening : float or None
        Lorentzian broadening ``ε`` (in eigenvalue units) of the eigenvalue
        differences in the backward: ``1/(λ_i - λ_j)`` becomes
        ``(λ_i - λ_j)/((λ_i - λ_j)² + ε²)``. Opt-in and approximate: each term
        is off by the factor ``ε²/((λ_i - λ_j)² + ε²)`` (relative error about
        ``ε²/gap²`` for well-separated eigenvalues) and stays bounded by
        ``1/(2ε)`` near crossings. Applied by the full-eigenbasis backward
        (``eigh``, ``eigsh(solver="dense")``, ``funm``); solvers that cannot
        apply it raise. ``None`` (default): exact derivatives.
    """

    degen_atol: float | None = None
    degen_rtol: float | None = None
    gauge: str = "warn"
    check_rtol: float | None = None
    n_guard: int = 1
    linsolve_rtol: float | None = None
    linsolve_maxiter: int | None = None
    linsolve_preconditioner: object | None = None
    broadening: float | None = None
    #: internal: the public function whose words the existence reports use ("eigsh", "spectral_norm")
    _caller: str = dataclasses.field(default="eigsh", repr=False)

    def __post_init__(self):
        if self.gauge not in _GAUGE_POLICIES:
            raise ValueError(
                f"BackwardOptions(gauge={self.gauge!r}) is not a policy; pass one of "
                f"{', '.join(repr(p) for p in _GAUGE_POLICIES)}."
            )
        if self.broadening is not None and (
            isinstance(self.broadening, bool)
            or not isinstance(self.broadening, (int, float))
            or not math.isfinite(self.broadening)
            or self.broadening <= 0
        ):
            raise ValueError(
                f"BackwardOptions(broadening={self.broadening!r}) must be a finite positive float "
                "(the Lorentzian width ε, in eigenvalue units) or None for exact derivatives."
            )
        for name in ("degen_atol", "degen_rtol", "check_rtol", "linsolve_rtol"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
                raise ValueError(
                    f"BackwardOptions({name}={v!r}) must be a finite non-negative float or None "
                    "(None derives it from the dtype)."
                )
        if not isinstance(self.n_guard, int) or self.n_guard < 0:
            raise ValueError(f"BackwardOptions(n_guard={self.n_guard!r}) must be an int >= 0.")
        if self.n_guard == 0 and self.gauge == "raise":
            raise ValueError(
                "BackwardOptions(n_guard=0, gauge='raise'): with no guard eigenvalue beyond the k-th, a "
                "degenerate cluster cut by k cannot be detected, so gauge='raise' could not keep its promise "
                "(a derivative through a cut cluster would be returned, wrong, without an error). Pass "
                "n_guard >= 1 (default 1), or gauge='warn'/'ignore' to accept undetected cuts."
            )
        if self._caller not in ("eigsh", "spectral_norm"):
            raise ValueError(f"BackwardOptions(_caller={self._caller!r}) is internal; leave it unset.")
        if self.linsolve_maxiter is not None and (
            not isinstance(self.linsolve_maxiter, int) or self.linsolve_maxiter < 1
        ):
            raise ValueError(
                f"BackwardOptions(linsolve_maxiter={self.linsolve_maxiter!r}) must be a positive int or None."
            )

    # Resolved tolerances -------------------------------------------------
    def resolved_degen(self, dtype: torch.dtype, scale: float) -> tuple[float, float]:
        """``(atol, rtol)`` for clustering at spectral magnitude ``scale``."""
        eps = torch.finfo(dtype).eps
        rtol = math.sqrt(eps) if self.degen_rtol is None else float(self.degen_rtol)
        atol = math.sqrt(eps) * float(scale) if self.degen_atol is None else float(self.degen_atol)
        return atol, rtol

    def resolved_check_rtol(self, dtype: torch.dtype) -> float:
        eps = torch.finfo(dtype).eps
        return eps**0.25 if self.check_rtol is None else float(self.check_rtol)

    def resolved_linsolve_rtol(self, dtype: torch.dtype, forward_rtol: float | None = None) -> float:
        """``linsolve_rtol``, or ``max(1e-2 * forward_rtol, 1e3 * eps)`` (module docstring).

        ``forward_rtol`` defaults to the iterative eigensolvers' default for ``dtype``.
        """
        if self.linsolve_rtol is not None:
            return float(self.linsolve_rtol)
        eps = torch.finfo(dtype).eps
        if forward_rtol is None:
            from .eigensolvers._options import _DEFAULT_RTOL  # lazy: eigensolvers import this module

            forward_rtol = _DEFAULT_RTOL.get(dtype, 1e3 * eps)
        return max(_LINSOLVE_FACTOR * float(forward_rtol), 1e3 * eps)
