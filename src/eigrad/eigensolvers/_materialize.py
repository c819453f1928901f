"""A dense eigensolver applied to an operator's explicit matrix.

For small operators (or as a reference) ``Materialized(DenseEigh())`` forms
``A.to_dense()`` (n products with the identity for a matrix-free operator)
and runs the dense solver; its handle (the eigenbasis or the tridiagonal
reduction) then serves the backward's shifted solves exactly.
"""

from __future__ import annotations

import dataclasses

from ._dense import DenseEigh


def _dense(op, name: str):
    M = op.to_dense()
    if not bool(M.isfinite().all()):  # one check of the n×n matrix, before an eigh that would fail on it
        raise ValueError(
            f"{name}.matmat returned NaN or inf when the operator was materialized (applied to the identity "
            f"for its dense matrix); the probe before the solve was finite, so some columns are not: check "
            "matmat (overflow, a division by zero, uninitialized memory) and the scale of the operator."
        )
    return 0.5 * (M + M.mH)  # complex: the Hermitian part


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
        Bd = None if B is None else _dense(B, "B")
        return self.solver(_dense(A, "A"), k, B=Bd, largest=largest, X0=X0, preconditioner=preconditioner,
                           n_guard=n_guard)
