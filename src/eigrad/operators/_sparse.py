"""Torch sparse matrices (COO, CSR) as operators.

The differentiable tensor of a sparse operator is its vector of stored values
in row-major (CSR) order; the pattern (row, column indices) is fixed and lives
in the spec. Gradients therefore flow to the stored values only, restricted to
the sparsity pattern (MATH.md, "Reverse mode": ``L_A Xᵀ`` sampled on the
pattern, symmetrized):

    v̄_e = ½ [(L Rᵀ)_ij + (L Rᵀ)_ji]   for the stored entry e = (i, j).

Complex Hermitian matrices (MATH-complex, "Operators"): ``herm(L Rᴴ)`` sampled,
``v̄_e = ½ [(L Rᴴ)_ij + conj((L Rᴴ)_ji)]``.

Products on the CPU go through scipy's CSR kernel (about 2.5× faster than
torch's on one thread, measured on a 64³ Laplacian with 9 columns); torch ops
are used on other devices and whenever autograd or ``torch.func`` must see
the product.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse
import torch
from torch._C import _functorch

from ._base import LinearOperator, OperatorSpec

#: elements per temporary ``(nnz, chunk)`` block in the gather-based products
_CHUNK_ELEMENTS = 1 << 24


class SparsePattern:
    """The fixed structure of a sparse ``(n, n)`` matrix in CSR order.

    Attributes
    ----------
    crow : Tensor (n + 1,) int64
    col, row : Tensor (nnz,) int64
        Column and row of every stored entry, sorted row-major.
    """

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, n: int):
        self.n = n
        self.crow = crow.to(torch.int64)
        self.col = col.to(torch.int64)
        counts = self.crow[1:] - self.crow[:-1]
        self.row = torch.repeat_interleave(torch.arange(n, device=crow.device), counts)
        self._scipy_index = None

    @property
    def nnz(self) -> int:
        return int(self.col.shape[0])

    def scipy_index(self):
        """``(indices, indptr)`` as numpy arrays for ``scipy.sparse.csr_matrix`` (cached)."""
        if self._scipy_index is None:
            idx_dtype = np.int32 if self.nnz < 2**31 - 1 else np.int64
            self._scipy_index = (
                self.col.cpu().numpy().astype(idx_dtype),
                self.crow.cpu().numpy().astype(idx_dtype),
            )
        return self._scipy_index

    def symmetric_transpose(self) -> tuple[torch.Tensor, bool]:
        """``(positions of (j, i), whether every transpose is stored)``, cached."""
        cached = getattr(self, "_sym_t", None)
        if cached is None:
            pos, found = self.transpose_positions()
            cached = self._sym_t = (pos, bool(found.all()))
        return cached

    def transpose_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For every entry ``(i, j)``: the position of ``(j, i)`` and whether it is stored."""
        key = self.row * self.n + self.col  # sorted (row-major)
        key_t = self.col * self.n + self.row
        pos = torch.searchsorted(key, key_t).clamp(max=max(self.nnz - 1, 0))
        found = key[pos] == key_t if self.nnz else torch.zeros(0, dtype=torch.bool)
        return pos, found


class TransposedPattern:
    """``(row, col)`` of a pattern swapped, entries in the original order (gather products only)."""

    def __init__(self, p: SparsePattern):
        self.n, self.row, self.col = p.n, p.col, p.row

    @property
    def nnz(self) -> int:
        return int(self.col.shape[0])


def _plain(t: torch.Tensor) -> bool:
    return not _functorch.is_functorch_wrapped_tensor(t)


def _under_transform() -> bool:
    """Inside a torch.func transform (grad, vjp, jvp, vmap): numpy must not see the tensors."""
    return _functorch.peek_interpreter_stack() is not None


#: the autograd nodes of torch's sparse constructors (``torch.sparse_csr_tensor``, ``torch.sparse_coo_tensor``)
_CONSTRUCTOR_NODES = ("SparseCompressedTensorBackward", "SparseCsrTensorBackward", "SparseCooTensorWithDimsAndTensorsBackward")
#: warn when torch's CSR constructor would densify a gradient larger than this (bytes)
_DENSE_GRADIENT_WARN_BYTES = 256 * 2**20


def constructor_leaf(A: torch.Tensor) -> torch.Tensor | None:
    """The leaf ``values`` tensor a sparse ``A`` was built from, or ``None``.

    ``A = torch.sparse_csr_tensor(crow, col, values, size)`` (or the COO
    constructor) with ``values`` a leaf that requires grad: ``A.grad_fn`` is the
    constructor's node, whose only input edge is ``values``' AccumulateGrad.
    Taking ``values`` as the operator's tensor routes the gradient around that
    node (torch's CSR formula is ``grad.to_dense().sparse_mask(result).values()``,
    an ``n × n`` allocation; neither constructor's backward is differentiable).
    """
    if not _plain(A) or not torch.is_grad_enabled():
        return None
    node = A.grad_fn
    if node is None or not type(node).__name__.startswith(_CONSTRUCTOR_NODES):
        return None
    edges = [e for e in node.next_functions if e[0] is not None]
    if len(edges) != 1 or not hasattr(edges[0][0], "variable"):
        return None
    leaf = edges[0][0].variable
    stored = A.values() if A.layout == torch.sparse_csr else A._values()
    if leaf.shape != stored.shape or leaf.dtype != stored.dtype or leaf.device != stored.device:
        return None
    return leaf


def _coalesce_coo(indices: torch.Tensor, values: torch.Tensor, n: int) -> tuple[SparsePattern, torch.Tensor]:
    """The CSR pattern of COO ``indices`` and the values in its order (duplicates summed):
    an O(nnz) index_add, differentiable to any order in ``values``."""
    key = indices[0].to(torch.int64) * n + indices[1].to(torch.int64)
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
    row, col = uniq // n, uniq % n
    crow = torch.zeros(n + 1, dtype=torch.int64, device=indices.device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=n), 0)
    if uniq.shape[0] == key.shape[0] and bool((inverse == torch.arange(key.shape[0], device=key.device)).all()):
        out = values  # already coalesced: the user's tensor itself
    else:
        out = values.new_zeros(uniq.shape[0]).index_add(0, inverse, values)
    return SparsePattern(crow, col, n), out


def _warn_dense_csr_gradient(A: torch.Tensor) -> None:
    if not (A.requires_grad and torch.is_grad_enabled() and A.grad_fn is not None):
        return
    if not type(A.grad_fn).__name__.startswith(_CONSTRUCTOR_NODES):
        return
    size = A.shape[0] * A.shape[1] * A.element_size()
    if size > _DENSE_GRADIENT_WARN_BYTES:
        warnings.warn(
            f"eigrad: A is a sparse CSR tensor built from values that are not a leaf tensor; torch's CSR "
            f"constructor turns their gradient into a dense {A.shape[0]}×{A.shape[1]} matrix "
            f"({size / 2**30:.1f} GiB, pytorch gh-107381). Build the CSR tensor from a leaf values tensor "
            "(eigrad then routes the gradient around the constructor), or build a COO tensor "
            "(torch.sparse_coo_tensor) from the same values.",
            UserWarning,
            stacklevel=4,
        )


def _column_chunks(nnz: int, m: int):
    step = max(1, _CHUNK_ELEMENTS // max(nnz, 1))
    return [(s, min(s + step, m)) for s in range(0, m, step)]


class SparseOperator(LinearOperator):
    """A symmetric torch sparse ``(n, n)`` matrix (COO or CSR) as an operator.

    Parameters
    ----------
    A : Tensor, layout ``torch.sparse_coo`` or ``torch.sparse_csr``, shape (n, n)
        Real symmetric (float32, float64) or complex Hermitian (complex64,
        complex128; gradients to the complex stored values). Uncoalesced COO input is coalesced
        (duplicates summed). ``A`` may require grad (a leaf sparse tensor, or
        one built from differentiable values): the gradient then flows to its
        stored values, restricted to the pattern.

    Notes
    -----
    When ``A`` was built by ``torch.sparse_csr_tensor`` / ``torch.sparse_coo_tensor``
    from a leaf ``values`` tensor that requires grad, the operator takes that
    leaf itself as its differentiable tensor, so the gradient reaches
    ``values`` without passing through the constructor's backward: torch's
    CSR constructor turns the gradient of its values into a dense ``(n, n)``
    matrix (pytorch gh-107381; 512 GiB at n = 262144), and neither constructor
    is twice differentiable. First and second derivatives then cost
    ``O(nnz)``. Values that are not a leaf (``values = f(θ)``) go through the
    constructor: O(nnz) for COO, dense ``n × n`` for CSR (a warning says so
    when that matrix would exceed 256 MiB).

    ``flatten()`` returns ``(values,)`` in CSR order; the pattern is part of
    the spec. Batched sparse tensors are not supported.
    """

    is_sparse = True

    def __init__(self, A: torch.Tensor):
        if A.layout == torch.sparse_coo:
            if A.sparse_dim() != 2 or A.dense_dim() != 0:
                raise ValueError(
                    f"a sparse COO matrix must have 2 sparse and 0 dense dimensions; received shape "
                    f"{tuple(A.shape)} with sparse_dim={A.sparse_dim()}, dense_dim={A.dense_dim()}. "
                    "Batched sparse operators are not supported: pass one (n, n) matrix."
                )
            leaf = constructor_leaf(A)
            n = A.shape[-1]
            if leaf is not None:  # values straight from the user's leaf (see constructor_leaf)
                pattern, values = _coalesce_coo(A._indices(), leaf, n)
            else:
                A = A.coalesce()
                idx = A.indices()
                crow = torch.zeros(n + 1, dtype=torch.int64, device=idx.device)
                crow[1:] = torch.cumsum(torch.bincount(idx[0], minlength=n), 0)
                pattern = SparsePattern(crow, idx[1], n)
                values = A.values()
        elif A.layout == torch.sparse_csr:
            if A.dim() != 2:
                raise ValueError(
                    f"a sparse CSR matrix must be 2-D (n, n); received shape {tuple(A.shape)}. "
                    "Batched sparse operators are not supported: pass one (n, n) matrix."
                )
            n = A.shape[-1]
            pattern = SparsePattern(A.crow_indices(), A.col_indices(), n)
            leaf = constructor_leaf(A)
            if leaf is None:
                _warn_dense_csr_gradient(A)
            values = A.values() if leaf is None else leaf
            if values.is_complex() and leaf is None:
                # torch's view of a complex CSR tensor's values fails in conj and isfinite ("Sparse CSR
                # tensors do not have strides"); a copy (O(nnz), differentiable) does not
                values = values.clone()
        else:
            raise TypeError(
                f"SparseOperator takes a torch sparse COO or CSR tensor; received layout {A.layout}. "
                "Convert with A.to_sparse_csr(), or pass a dense tensor to eigrad.as_operator."
            )
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"A sparse operator must be square (n, n); received shape {tuple(A.shape)}.")
        self._init(values, pattern)

    def _init(self, values: torch.Tensor, pattern: SparsePattern):
        self.values = values
        self.pattern = pattern
        n = pattern.n
        self.shape = (n, n)
        self.dtype = values.dtype
        self.device = values.device

    @classmethod
    def from_values(cls, values: torch.Tensor, pattern: SparsePattern) -> "SparseOperator":
        """An operator with the given stored values (CSR order) on ``pattern``."""
        op = cls.__new__(cls)
        op._init(values, pattern)
        return op

    # Products ------------------------------------------------------------
    def _use_scipy(self, *ts: torch.Tensor) -> bool:
        if self.device.type != "cpu" or _under_transform():
            return False
        if not all(_plain(t) for t in ts):
            return False
        return not (torch.is_grad_enabled() and any(t.requires_grad for t in ts))

    def matmat(self, X):  # X (*batch, n, m) -> (*batch, n, m)
        if X.dim() > 2:
            batch, m = X.shape[:-2], X.shape[-1]
            Xf = X.movedim(-2, 0).reshape(self.n, -1)  # fold the batch into columns
            Y = self.matmat(Xf)
            return Y.reshape(self.n, *batch, m).movedim(0, -2)
        if self._use_scipy(self.values, X):
            return torch.from_numpy(np.asarray(self._scipy_matrix() @ X.detach().numpy()))
        return _gather_matmat(self.values, self.pattern, X)

    def _scipy_matrix(self):
        """The scipy CSR view of the values (shared memory), rebuilt if they were modified in place."""
        cached = getattr(self, "_scipy_cache", None)
        version = self.values._version
        if cached is None or cached[0] != version:
            indices, indptr = self.pattern.scipy_index()
            S = scipy.sparse.csr_matrix((self.values.detach().resolve_conj().numpy(), indices, indptr),
                                        shape=self.shape, copy=False)
            self._scipy_cache = cached = (version, S)
        return cached[1]

    def as_scipy_csr(self):
        """The stored matrix as a ``scipy.sparse.csr_matrix`` sharing the values' memory (CPU), else ``None``."""
        if self.device.type != "cpu" or not _plain(self.values):
            return None
        return self._scipy_matrix()

    def to_dense(self):
        p = self.pattern
        out = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        return out.index_put((p.row, p.col), self.values, accumulate=True)

    def flatten(self):
        pattern = self.pattern
        return (self.values,), OperatorSpec(lambda ts: SparseOperator.from_values(ts[0], pattern))

    # Derivative hooks ----------------------------------------------------
    def bilinear_vjp(self, L, R):
        # MATH.md: the gradient of the stored values is L_A Xᵀ sampled on the pattern, symmetrized:
        # v̄_e = ½ [(L Rᵀ)_ij + (L Rᵀ)_ji] for the entry e = (i, j).  O(nnz · m), no n×n matrix.
        # Complex (MATH-complex, "Operators"): herm(L Rᴴ)_ij = ½ [Σ L_i conj(R_j) + Σ conj(L_j) R_i].
        p = self.pattern
        cplx = L.is_complex() or R.is_complex()
        out = None
        for s, e in _column_chunks(p.nnz, L.shape[-1]):
            Lc, Rc = L[..., s:e], R[..., s:e]
            if cplx:
                part = ((Lc[..., p.row, :] * Rc[..., p.col, :].conj()).sum(-1)
                        + (Lc[..., p.col, :].conj() * Rc[..., p.row, :]).sum(-1))
            else:
                part = (Lc[..., p.row, :] * Rc[..., p.col, :]).sum(-1) + (Lc[..., p.col, :] * Rc[..., p.row, :]).sum(-1)
            out = part if out is None else out + part
        return (0.5 * out,)

    def tangent_matmat(self, dtensors, X):
        (dv,) = dtensors
        if dv is None:
            return torch.zeros_like(X)
        # A' X with A' = sym(P(v')) on the same pattern: the tangent whose adjoint is bilinear_vjp's
        # symmetrized gradient (as sym(dA) for dense A), so that a tangent of the values that is
        # not symmetric gives the JVP of the symmetric problem, consistently with the VJP
        # (complex: A' = herm(P(v')), ½(v'_ij + conj(v'_ji)))
        p = self.pattern
        pos, found = p.symmetric_transpose()
        dvt = dv.conj() if dv.is_complex() else dv
        if found:  # every (j, i) stored: one product with ½(v'_ij + v'_ji)
            return SparseOperator.from_values(0.5 * (dv + dvt[pos]), p).matmat(X)
        AX = SparseOperator.from_values(dv, p).matmat(X)
        return 0.5 * (AX + _gather_matmat(dvt, TransposedPattern(p), X))  # ½ (P(v') + P(v')ᴴ) X

    def symmetry_defect(self) -> torch.Tensor:
        """``max |A - Aᵀ|`` (complex: ``max |A - Aᴴ|``, the diagonal's imaginary parts included) over the
        stored entries (a missing transpose counts as zero)."""
        if self.pattern.nnz == 0:
            return self.values.real.new_zeros(())
        pos, found = self.pattern.transpose_positions()
        v = self.values
        vt = torch.where(found, (v.conj() if v.is_complex() else v)[pos], torch.zeros_like(v))
        return (v - vt).abs().amax()


def _gather_matmat(values: torch.Tensor, pattern: SparsePattern, X: torch.Tensor) -> torch.Tensor:
    """``A X`` with index ops only (differentiable in ``values`` and ``X``, vmappable)."""
    n, m = pattern.n, X.shape[-1]
    cols = []
    for s, e in _column_chunks(pattern.nnz, m):
        contrib = values.unsqueeze(-1) * X[pattern.col, s:e]  # (nnz, chunk)
        cols.append(torch.zeros(n, e - s, dtype=contrib.dtype, device=X.device).index_add(0, pattern.row, contrib))
    return cols[0] if len(cols) == 1 else torch.cat(cols, dim=-1)
