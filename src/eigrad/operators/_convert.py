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
          (gradient to the whole matrix, symmetrized);
        * a torch sparse COO or CSR tensor ``(n, n)`` becomes a
          ``SparseOperator`` (gradient to its stored values);
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
            if A.is_complex():
                raise TypeError(f"{name} has complex dtype {A.dtype}: {COMPLEX_UNSUPPORTED} ({name}.to_dense()).")
            if not A.is_floating_point() or A.dtype not in (torch.float32, torch.float64):
                raise TypeError(f"{name} has dtype {A.dtype}; pass a float32 or float64 sparse tensor.")
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


#: complex Hermitian problems run on dense tensors only, for now (eigrad.eigh, eigrad.eigsh)
COMPLEX_UNSUPPORTED = (
    "complex operators are not supported yet; materialize to a dense tensor and call eigrad.eigh/eigsh"
)


def _check_dense(name: str, A: torch.Tensor) -> None:
    if A.is_complex():
        raise TypeError(
            f"{name} has complex dtype {A.dtype} and is paired with a sparse or matrix-free operator: "
            f"{COMPLEX_UNSUPPORTED} (both A and B dense)."
        )
    if A.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"{name} has dtype {A.dtype}; eigrad supports real float32 and float64 matrices. "
            f"Use {name}.to(torch.float64)."
        )
    if A.dim() < 2 or A.shape[-1] != A.shape[-2] or A.shape[-1] == 0:
        raise ValueError(f"{name} must be a square matrix (..., n, n) with n >= 1; received shape {tuple(A.shape)}.")
