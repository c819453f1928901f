"""A dense eigensolver applied to an operator's explicit matrix.

For small operators (or as a reference) ``Materialized(DenseEigh())`` forms
``A.to_dense()`` (n products with the identity for a matrix-free operator)
and runs the dense solver; its handle (the eigenbasis or the tridiagonal
reduction) then serves the backward's shifted solves exactly.
"""

from __future__ import annotations

import dataclasses

from ._dense import DenseEigh


def _dense(op):
    M = op.to_dense()
    return 0.5 * (M + M.transpose(-1, -2))


@dataclasses.dataclass(frozen=True)
class Materialized:
    """Runs ``solver`` (a dense eigensolver) on ``A.to_dense()`` and ``B.to_dense()``.

    Parameters
    ----------
    solver : DenseEigh or LapackSubset
        The dense solver; its ``handle_factory`` serves the backward.
    """

    solver: object = dataclasses.field(default_factory=DenseEigh)

    @property
    def handle_factory(self):
        return self.solver.handle_factory

    def __call__(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        Bd = None if B is None else _dense(B)
        return self.solver(_dense(A), k, B=Bd, largest=largest, X0=X0, preconditioner=preconditioner,
                           n_guard=n_guard)
