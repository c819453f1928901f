"""``as_operator``: every accepted matrix representation as a :class:`LinearOperator`."""

from __future__ import annotations

import torch

from ._base import DenseOperator, LinearOperator
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
