"""Exceptions and warnings that eigrad users catch.

``GaugeWarning`` / ``GaugeError`` report that a derivative does not exist, or
cannot be formed from the eigenpairs, at a degenerate cluster (MATH.md, "When the derivative exists"); the policy between
them is ``BackwardOptions(gauge=...)``. ``ConvergenceError`` /
``ConvergenceWarning`` report an iterative solver that did not converge.
"""

from __future__ import annotations


class GaugeWarning(UserWarning):
    """A derivative was requested that eigrad cannot form at a degenerate cluster.

    Either it does not exist (a basis-dependent loss, ``λ_min`` of a repeated
    pair, a cluster cut by ``k``) or the eigenpairs cannot give it (a spectral
    function over a cluster: use :func:`eigrad.funm`); the message says which.
    Raised as a warning under ``BackwardOptions(gauge="warn")`` (the default).
    The returned derivative drops the in-cluster terms that have no limit (its
    eigenvalue part is ``Σ_i Λ̄_i x_i x_iᵀ`` in the returned basis), not the
    derivative of the loss itself.
    """


class GaugeError(RuntimeError):
    """Same condition as :class:`GaugeWarning`, under ``gauge="raise"``."""


class ConvergenceError(RuntimeError):
    """An iterative solver stopped before reaching its tolerance.

    Attributes
    ----------
    solution : object or None
        The best iterate the solver had (an ``EigSolution`` for eigensolvers),
        for inspection.
    """

    def __init__(self, message: str, solution: object | None = None):
        super().__init__(message)
        self.solution = solution


class ConvergenceWarning(UserWarning):
    """An iterative solver did not converge and ``on_failure="warn"`` was set."""
