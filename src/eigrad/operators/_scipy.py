"""scipy inputs: ``scipy.sparse`` matrices and ``scipy.sparse.linalg.LinearOperator``.

Both are converted once and carry no gradient (scipy arrays are outside
autograd): a sparse matrix becomes a :class:`SparseOperator` with constant
values; a scipy ``LinearOperator`` is applied through numpy.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from ._base import LinearOperator, OperatorSpec
from ._sparse import SparseOperator, SparsePattern


def _torch_dtype(np_dtype, dtype, what: str) -> torch.dtype:
    if dtype is not None:
        return dtype
    if np_dtype == np.float32:
        return torch.float32
    if np_dtype in (np.float64, np.int64, np.int32, np.int16, np.int8, np.bool_):
        return torch.float64
    if np_dtype == np.complex64:
        return torch.complex64
    if np_dtype == np.complex128:
        return torch.complex128
    raise TypeError(
        f"{what} has dtype {np_dtype}; eigrad supports float32/float64 (real symmetric) and "
        "complex64/complex128 (complex Hermitian) problems. Convert it, e.g. M.astype(numpy.float64)."
    )


def from_scipy_sparse(M, *, dtype: torch.dtype | None = None) -> SparseOperator:
    """A :class:`SparseOperator` with the pattern and values of a ``scipy.sparse`` matrix (no gradient)."""
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"a scipy sparse matrix must be square (n, n); received shape {M.shape}.")
    dt = _torch_dtype(M.dtype, dtype, "the scipy sparse matrix")
    C = scipy.sparse.csr_matrix(M, copy=True)
    C.sum_duplicates()  # canonical: sorted indices, no duplicates
    n = C.shape[0]
    crow = torch.from_numpy(C.indptr.astype(np.int64))
    col = torch.from_numpy(C.indices.astype(np.int64))
    values = torch.from_numpy(np.ascontiguousarray(C.data)).to(dt)
    return SparseOperator.from_values(values, SparsePattern(crow, col, n))


class ScipyLinearOperator(LinearOperator):
    """A ``scipy.sparse.linalg.LinearOperator`` (symmetric) applied through numpy; no gradient.

    Parameters
    ----------
    op : scipy.sparse.linalg.LinearOperator
        Square, real.
    dtype : torch.dtype, optional
        Default: float32 for a float32 operator, else float64.
    """

    def __init__(self, op, *, dtype: torch.dtype | None = None):
        if op.shape[0] != op.shape[1]:
            raise ValueError(f"a scipy LinearOperator must be square (n, n); received shape {op.shape}.")
        self.op = op
        self.shape = (int(op.shape[0]), int(op.shape[1]))
        self.dtype = _torch_dtype(np.dtype(op.dtype) if op.dtype is not None else np.float64, dtype, "the LinearOperator")
        self.device = torch.device("cpu")

    def matmat(self, X):
        if X.dim() > 2:
            batch, m = X.shape[:-2], X.shape[-1]
            Y = self.matmat(X.movedim(-2, 0).reshape(self.n, -1))
            return Y.reshape(self.n, *batch, m).movedim(0, -2)
        Y = np.asarray(self.op.matmat(X.detach().cpu().numpy()))
        return torch.from_numpy(np.ascontiguousarray(Y)).to(dtype=self.dtype, device=X.device)

    def flatten(self):
        op, dtype = self.op, self.dtype
        return (), OperatorSpec(lambda ts: ScipyLinearOperator(op, dtype=dtype))

    def bilinear_vjp(self, L, R):
        return ()

    def tangent_matmat(self, dtensors, X):
        return torch.zeros_like(X)


def is_scipy_sparse(obj) -> bool:
    return scipy.sparse.issparse(obj)


def is_scipy_linear_operator(obj) -> bool:
    return isinstance(obj, scipy.sparse.linalg.LinearOperator)
