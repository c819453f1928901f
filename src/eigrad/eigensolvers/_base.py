"""What every forward eigensolver returns (DESIGN.md, "Core abstractions").

Eigensolvers run under ``torch.no_grad`` and know nothing of autograd. Each is
a frozen dataclass called as
``solver(A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0)``
with ``A``, ``B`` :class:`eigrad.operators.LinearOperator` s, and returns an
:class:`EigSolution`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch


@dataclasses.dataclass(frozen=True)
class SolveHandle:
    """What the backward may reuse for its shifted solves.

    ``tensors`` cross the autograd boundary (saved with ``save_for_backward``);
    ``factory(tensors, atol, rtol)`` builds a shifted solver from them. The
    factory must not capture tensors itself.
    """

    tensors: tuple[torch.Tensor, ...]
    factory: Callable[[Sequence[torch.Tensor], float, float], object]


class _Deferred:
    """A dataclass field that may be given as a zero-argument callable, called on the first read.

    For auxiliary results that most callers never read (the dense solvers' residual norms: only
    ``eigsh_ex`` reports them), so that computing them costs nothing otherwise."""

    def __set_name__(self, owner, name):
        self._slot = name  # the instance dict keeps the field's own name (EigSolution(**sol.__dict__) works)

    def __get__(self, obj, objtype=None):
        if obj is None:
            raise AttributeError  # a required field (dataclasses: no default)
        value = obj.__dict__[self._slot]
        if callable(value) and not torch.is_tensor(value):
            value = value()
            obj.__dict__[self._slot] = value
        return value

    def __set__(self, obj, value):
        obj.__dict__[self._slot] = value


@dataclasses.dataclass(frozen=True)
class EigSolution:
    """Result of a forward eigensolve.

    Attributes
    ----------
    eigenvalues : Tensor (*batch, k)
        Ascending, also for ``largest=True``.
    eigenvectors : Tensor (*batch, n, k)
        B-orthonormal: ``Xᵀ B X = I``.
    residual_norms : Tensor (*batch, k)
        ``‖A x_i - λ_i B x_i‖``; a solver may pass a zero-argument callable
        instead, called when the attribute is first read.
    n_iter : int
        Iterations (1 for direct solvers).
    status : str
        ``"converged"`` or a description of the failure.
    guard_eigenvalues : Tensor (*batch, g)
        The next ``g`` eigenvalues beyond the requested ones (above for
        smallest, below for largest), ascending; used to detect a cluster
        cut by ``k``.
    guard_eigenvectors : Tensor (*batch, n, g) or None
    handle : SolveHandle or None
        Lets the backward reuse a factorization or eigenbasis.
    n_matvec : int
        Operator applications (0 for dense direct solvers).
    scale : Tensor (*batch,)
        Magnitude of the spectrum (a norm bound), for default tolerances.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residual_norms: torch.Tensor = _Deferred()
    n_iter: int
    status: str
    guard_eigenvalues: torch.Tensor
    guard_eigenvectors: torch.Tensor | None
    handle: SolveHandle | None
    n_matvec: int
    scale: torch.Tensor

    @property
    def converged(self) -> bool:
        return self.status == "converged"


def residual_norms(A, B, X, L):
    """``‖A x_i - λ_i B x_i‖`` for operators ``A``, ``B`` (``B`` may be None)."""
    AX = A.matmat(X)
    BX = X if B is None else B.matmat(X)
    return torch.linalg.vector_norm(AX - BX * L.unsqueeze(-2), dim=-2)
