"""``as_operator``: every accepted matrix representation as a :class:`LinearOperator`."""

from __future__ import annotations

import numpy as np
import torch

from ._base import DenseOperator, LinearOperator, OperatorSpec
from ._scipy import ScipyLinearOperator, from_scipy_sparse, is_scipy_linear_operator, is_scipy_sparse
from ._sparse import SparseOperator


def as_operator(A, *, name: str = "A") -> LinearOperator:
    """``A`` as an eigrad :class:`LinearOperator`.

    Parameters
    ----------
    A : LinearOperator, Tensor, scipy.sparse matrix or scipy LinearOperator
        * an eigrad ``LinearOperator`` (``FunctionOperator``,
          ``ModuleOperator``, ...) is returned as is;
        * a dense tensor ``(*batch, n, n)`` becomes a ``DenseOperator``
          (gradient to the whole matrix, symmetrized; complex: its Hermitian part);
        * a torch sparse COO or CSR tensor ``(n, n)`` becomes a
          ``SparseOperator`` (gradient to its stored values; real or complex Hermitian);
        * a ``scipy.sparse`` matrix is converted to a ``SparseOperator`` and a
          ``scipy.sparse.linalg.LinearOperator`` is wrapped; neither carries a
          gradient.
    name : str
        Used in error messages.

    Returns
    -------
    LinearOperator
    """
    if isinstance(A, LinearOperator):
        return A
    if torch.is_tensor(A):
        if A.layout in (torch.sparse_coo, torch.sparse_csr):
            if A.dtype not in _DTYPES:
                raise TypeError(
                    f"{name} has dtype {A.dtype}; pass a float32, float64, complex64 or complex128 sparse tensor."
                )
            return SparseOperator(A)
        if A.layout != torch.strided:
            raise TypeError(
                f"{name} has layout {A.layout}; eigrad accepts dense (strided), sparse COO and sparse CSR "
                f"tensors. Convert with {name}.to_sparse_csr()."
            )
        _check_dense(name, A)
        return DenseOperator(A)
    if is_scipy_sparse(A):
        return from_scipy_sparse(A)
    if is_scipy_linear_operator(A):
        return ScipyLinearOperator(A)
    raise TypeError(
        f"{name} must be a torch.Tensor (dense, sparse COO or CSR), a scipy.sparse matrix, a "
        f"scipy.sparse.linalg.LinearOperator or an eigrad.LinearOperator; received {type(A).__name__}. "
        f"Convert arrays with torch.as_tensor({name}, dtype=torch.float64); wrap a function X -> A X as "
        "eigrad.FunctionOperator(matmat, params, shape)."
    )


#: real symmetric and complex Hermitian operators
_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _check_dense(name: str, A: torch.Tensor) -> None:
    if A.dtype not in _DTYPES:
        raise TypeError(
            f"{name} has dtype {A.dtype}; eigrad supports float32, float64, complex64 and complex128 "
            f"matrices. Use {name}.to(torch.float64)."
        )
    if A.dim() < 2 or A.shape[-1] != A.shape[-2] or A.shape[-1] == 0:
        raise ValueError(f"{name} must be a square matrix (..., n, n) with n >= 1; received shape {tuple(A.shape)}.")


def promote_pair(A: LinearOperator, B: LinearOperator | None) -> tuple[LinearOperator, LinearOperator | None]:
    """``(A, B)`` in one dtype: a real operator paired with a complex one of the same precision
    (float64 with complex128, float32 with complex64) becomes complex, as ``torch.promote_types``
    does. Differentiable: a real input's tensors get the real part of their gradient (a real
    ``B`` with a complex Hermitian ``A`` is a real symmetric, hence Hermitian, ``B``).

    Different precisions (float32 with complex128, float64 with complex64, float32 with float64)
    raise ``TypeError``: eigrad does not change an operator's precision silently.
    """
    if B is None or B.dtype == A.dtype:
        return A, B
    if A.dtype.to_real() != B.dtype.to_real():
        mixed = (
            " (a real matrix is promoted to complex only at the same precision: float64 with complex128, "
            "float32 with complex64)" if A.dtype.is_complex or B.dtype.is_complex else ""
        )
        raise TypeError(
            f"A has dtype {A.dtype} but B has dtype {B.dtype}{mixed}; convert one, e.g. B.to(A.dtype) "
            "(for an operator: the tensor behind it)."
        )
    dtype = torch.promote_types(A.dtype, B.dtype)
    return to_complex(A, dtype), to_complex(B, dtype)


def to_complex(op: LinearOperator, dtype: torch.dtype) -> LinearOperator:
    """``op`` as an operator of the complex ``dtype`` of its precision (itself when it already is)."""
    if op.dtype == dtype:
        return op
    if isinstance(op, SparseOperator):
        return SparseOperator.from_values(op.values.to(dtype), op.pattern)
    if isinstance(op, DenseOperator):
        return DenseOperator(op.A.to(dtype))
    return ComplexifiedOperator(op, dtype)


class ComplexifiedOperator(LinearOperator):
    """A real symmetric operator applied to complex blocks: ``A X = A Re X + i A Im X``.

    Keeps the real operator's tensors (``flatten``) and derivative hooks: for
    complex ``L, R``, ``Re⟨L, A R⟩ = ⟨Re L, A Re R⟩ + ⟨Im L, A Im R⟩`` (MATH-complex,
    "Operators"), so the gradient of the real tensors is two real VJPs.
    """

    def __init__(self, op: LinearOperator, dtype: torch.dtype):
        self.op = op
        self.shape = tuple(op.shape)
        self.dtype = dtype
        self.device = op.device

    def matmat(self, X):
        if not X.is_complex():
            return self.op.matmat(X).to(self.dtype)
        return torch.complex(self.op.matmat(X.real.contiguous()), self.op.matmat(X.imag.contiguous()))

    def to_dense(self):
        return self.op.to_dense().to(self.dtype)

    def flatten(self):
        tensors, spec = self.op.flatten()
        dtype = self.dtype
        return tensors, OperatorSpec(lambda ts: ComplexifiedOperator(spec.rebuild(ts), dtype))

    def as_scipy_csr(self):
        M = self.op.as_scipy_csr()
        return None if M is None else M.astype(np.complex64 if self.dtype == torch.complex64 else np.complex128)

    def bilinear_vjp(self, L, R):
        if not (L.is_complex() or R.is_complex()):
            return self.op.bilinear_vjp(L, R)
        L, R = L.to(self.dtype), R.to(self.dtype)
        g1 = self.op.bilinear_vjp(L.real.contiguous(), R.real.contiguous())
        g2 = self.op.bilinear_vjp(L.imag.contiguous(), R.imag.contiguous())
        return tuple(None if a is None and b is None else (b if a is None else a if b is None else a + b)
                     for a, b in zip(g1, g2))

    def tangent_matmat(self, dtensors, X):
        if not X.is_complex():
            return self.op.tangent_matmat(dtensors, X).to(self.dtype)
        return torch.complex(self.op.tangent_matmat(dtensors, X.real.contiguous()),
                             self.op.tangent_matmat(dtensors, X.imag.contiguous()))
