"""The ``LinearOperator`` protocol (DESIGN.md, "Core abstractions").

An operator is an immutable description of a symmetric ``(*batch, n, n)``
matrix known through ``matmat``. Its tensors cross the autograd boundary
explicitly: ``flatten() -> (tensors, spec)`` and ``spec.rebuild(tensors)``.
This module imports nothing else of eigrad.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch


class OperatorSpec:
    """Rebuilds an operator from its tensors (``spec.rebuild(tensors)``)."""

    def __init__(self, rebuild: Callable[[Sequence[torch.Tensor]], "LinearOperator"]):
        self._rebuild = rebuild

    def rebuild(self, tensors: Sequence[torch.Tensor]) -> "LinearOperator":
        return self._rebuild(tuple(tensors))


class LinearOperator:
    """A symmetric linear operator ``X -> A X`` of shape ``(*batch, n, n)``.

    Subclasses implement ``matmat`` and ``flatten``; ``to_dense`` defaults to
    applying the operator to the identity. The derivative hooks
    ``bilinear_vjp`` and ``tangent_matmat`` have generic ``torch.func``
    defaults that adapters may override for speed.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    #: whether ``to_dense`` is cheap (an explicit matrix is stored)
    is_dense: bool = False
    #: whether the operator is a torch sparse matrix
    is_sparse: bool = False

    @property
    def n(self) -> int:
        return self.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[:-2])

    def matmat(self, X: torch.Tensor) -> torch.Tensor:  # X (*batch, n, m) -> (*batch, n, m)
        raise NotImplementedError

    def to_dense(self) -> torch.Tensor:  # (*batch, n, n)
        eye = torch.eye(self.n, dtype=self.dtype, device=self.device)
        return self.matmat(eye.expand(*self.batch_shape, self.n, self.n))

    def flatten(self) -> tuple[tuple[torch.Tensor, ...], OperatorSpec]:
        raise NotImplementedError

    def as_scipy_csr(self):
        """The assembled matrix as a ``scipy.sparse.csr_matrix`` (constant, no gradient), or ``None``
        for operators known only through ``matmat`` (what sparse direct solvers need)."""
        return None

    # Derivative hooks ----------------------------------------------------
    def bilinear_vjp(self, L: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """Gradient of ``<L, A R>`` with respect to the tensors of ``flatten()``.

        Generic default: one ``torch.func.vjp`` of ``θ -> A(θ) R`` (complex: with
        ``grad_outputs = L``, not conjugated; MATH-complex, "Operators").
        """
        tensors, spec = self.flatten()
        if not tensors:
            return ()
        _, pullback = torch.func.vjp(lambda *ts: spec.rebuild(ts).matmat(R), *tensors)
        return tuple(pullback(L))

    def tangent_matmat(self, dtensors: Sequence[torch.Tensor | None], X: torch.Tensor) -> torch.Tensor:
        """``A' X`` for tangents ``dtensors`` of the tensors of ``flatten()``.

        Generic default: one ``torch.func.jvp`` of ``θ -> A(θ) X``.
        """
        tensors, spec = self.flatten()
        dts = tuple(torch.zeros_like(t) if d is None else d for t, d in zip(tensors, dtensors))
        _, out = torch.func.jvp(lambda *ts: spec.rebuild(ts).matmat(X), tuple(tensors), dts)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype})"


class DenseOperator(LinearOperator):
    """A dense symmetric matrix ``(*batch, n, n)``."""

    is_dense = True

    def __init__(self, A: torch.Tensor):
        self.A = A
        self.shape = tuple(A.shape)
        self.dtype = A.dtype
        self.device = A.device

    def matmat(self, X):
        return self.A @ X

    def to_dense(self):
        return self.A

    def flatten(self):
        return (self.A,), OperatorSpec(lambda ts: DenseOperator(ts[0]))

    def bilinear_vjp(self, L, R):
        # d<L, A R>/dA = L Rᵀ, symmetrized onto symmetric matrices (MATH.md: Ā = sym(L_A Xᵀ));
        # complex: Ā = herm(L_A Xᴴ) (MATH-complex, "Reverse mode")
        G = L @ R.mH
        return (0.5 * (G + G.mH),)

    def tangent_matmat(self, dtensors, X):
        (dA,) = dtensors
        if dA is None:
            return torch.zeros_like(X)
        return dA @ X


def is_operator(obj: Any) -> bool:
    return isinstance(obj, LinearOperator)
