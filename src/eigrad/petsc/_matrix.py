"""Distributed matrices: PETSc's row split, a row-block CSR with torch values, its PETSc Mat.

Every rank holds the rows ``ownership_range(n)`` of a symmetric ``n × n``
matrix, with **global** column indices. The stored values are a torch tensor
(the leaf the gradient reaches); :meth:`DistributedCSR.operator` copies them
once into a PETSc AIJ matrix (``Mat.createAIJ(csr=...)``), and
:meth:`PetscOperator.refresh` overwrites them for the same pattern
(``setValuesCSR``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ._comm import allsum, mpi_comm
from ._env import import_backend


def _petsc_comm(comm):
    PETSc, _, MPI = import_backend()
    if comm is None:
        return PETSc.COMM_WORLD
    if isinstance(comm, PETSc.Comm):
        return comm
    if isinstance(comm, MPI.Comm):
        return PETSc.Comm(comm)
    raise TypeError(
        f"comm must be None (PETSc.COMM_WORLD), a petsc4py Comm or an mpi4py communicator; "
        f"received {type(comm).__name__}."
    )


def ownership_range(n: int, comm=None) -> tuple[int, int]:
    """This rank's rows ``(start, end)`` of an ``n``-row distributed matrix, PETSc's default split.

    PETSc (``PetscSplitOwnership``) gives rank ``r`` of ``P`` the
    ``n // P + (r < n % P)`` rows that follow those of the lower ranks.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; received {n!r}.")
    c = mpi_comm(_petsc_comm(comm))
    P, r = c.size, c.rank
    q, rem = divmod(n, P)
    start = r * q + min(r, rem)
    return start, start + q + (1 if r < rem else 0)


def _raise_everywhere(message: str | None, comm) -> None:
    """Raise ``ValueError`` on every rank when any rank found a problem (the first one's message)."""
    messages = comm.allgather(message) if comm.size > 1 else [message]
    for rank, msg in enumerate(messages):
        if msg is not None:
            where = f" (rank {rank})" if comm.size > 1 else ""
            raise ValueError(f"DistributedCSR{where}: {msg}")


@dataclasses.dataclass(frozen=True, eq=False)
class Pattern:
    """The sparsity pattern of a :class:`DistributedCSR` (no values): what the backward keeps."""

    crow: np.ndarray  # (m + 1,) PETSc int, local row pointers
    col: np.ndarray  # (nnz,) PETSc int, global columns
    n: int
    start: int
    end: int
    comm: object  # petsc4py Comm

    @property
    def m(self) -> int:
        return self.end - self.start

    def rows(self) -> np.ndarray:
        """The global row of every stored entry (nnz,)."""
        return self.start + np.repeat(np.arange(self.m), np.diff(self.crow))


class DistributedCSR:
    """This rank's row block of a symmetric ``n × n`` sparse matrix (CSR, global columns).

    Parameters
    ----------
    crow_local : int Tensor (m + 1,)
        Row pointers of the local rows, ``m = end - start`` with
        ``(start, end) = ownership_range(n)`` (PETSc's default split);
        ``crow_local[0] = 0``.
    col : int Tensor (nnz,)
        Global column index of every stored entry of the local rows.
    values_local : float64 Tensor (nnz,)
        The stored values, the tensor the gradient reaches
        (``values_local.grad``): an entry ``(i, j)`` receives
        ``sym(L_A Xᵀ)_ij`` (MATH.md, "Reverse mode": ``L_A Xᵀ`` sampled on the
        pattern, symmetrized), whichever rank owns row ``j``.
    shape : (n, n)
    comm : mpi4py or petsc4py communicator, optional
        Default ``PETSc.COMM_WORLD``.

    The matrix must be symmetric (every rank's rows together); it is checked
    with a probe ``uᵀ A v = vᵀ A u`` (collective) when eigsh is called.
    Construction is collective: a malformed block on any rank raises the same
    ``ValueError`` on every rank.
    """

    def __init__(self, crow_local, col, values_local, shape, *, comm=None):
        PETSc, _, _ = import_backend()
        self.comm = _petsc_comm(comm)
        mpi = mpi_comm(self.comm)
        msg = None
        try:
            n = _check_shape(shape)
        except ValueError as err:
            msg, n = str(err), 1
        start, end = ownership_range(n, self.comm)
        if msg is None:
            msg = _check_block(crow_local, col, values_local, n, start, end)
        _raise_everywhere(msg, mpi)
        itype = PETSc.IntType
        self.pattern = Pattern(
            np.ascontiguousarray(crow_local.detach().cpu().numpy().astype(itype)),
            np.ascontiguousarray(col.detach().cpu().numpy().astype(itype)), n, start, end, self.comm)
        self.values = values_local
        self.shape = (n, n)

    @property
    def n(self) -> int:
        return self.shape[0]

    @property
    def rows(self) -> tuple[int, int]:
        """This rank's rows ``(start, end)``."""
        return self.pattern.start, self.pattern.end

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    def operator(self, values=None) -> "PetscOperator":
        """A PETSc AIJ matrix with ``values`` (default: this matrix's), for products."""
        return PetscOperator.create(self.pattern, self.values if values is None else values)

    def __repr__(self):
        return (f"DistributedCSR(shape={self.shape}, rows={self.rows}, nnz_local={self.pattern.col.size}, "
                f"ranks={self.comm.getSize()})")


def _check_shape(shape) -> int:
    try:
        n0, n1 = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (n, n); received {shape!r}.") from None
    if n0 != n1 or n0 < 1:
        raise ValueError(f"shape must be a square (n, n) with n >= 1; received {tuple(shape)!r}.")
    return n0


def _check_block(crow, col, values, n, start, end) -> str | None:
    m = end - start
    for name, t in (("crow_local", crow), ("col", col), ("values_local", values)):
        if not isinstance(t, torch.Tensor) or t.dim() != 1:
            return f"{name} must be a 1-D torch tensor; received {type(t).__name__}."
    if crow.dtype not in (torch.int32, torch.int64) or col.dtype not in (torch.int32, torch.int64):
        return f"crow_local and col must be integer tensors; received {crow.dtype} and {col.dtype}."
    if values.dtype != torch.float64:
        return (f"values_local must be float64 (the PETSc build is real float64); received {values.dtype}. "
                "Pass values.to(torch.float64).")
    if crow.numel() != m + 1:
        return (f"crow_local has {crow.numel()} entries but this rank owns rows [{start}, {end}) of n={n} "
                f"(PETSc's default split, eigrad.petsc.ownership_range(n)): pass {m + 1} row pointers.")
    c = crow.detach().cpu().to(torch.int64)
    if int(c[0]) != 0 or bool((c[1:] < c[:-1]).any()) or int(c[-1]) != col.numel():
        return (f"crow_local must start at 0, be non-decreasing and end at nnz={col.numel()}; "
                f"received [{int(c[0])}, ..., {int(c[-1])}].")
    if values.numel() != col.numel():
        return f"values_local has {values.numel()} entries, col has {col.numel()}; pass one value per entry."
    if col.numel() and (int(col.min()) < 0 or int(col.max()) >= n):
        return f"col must hold global column indices in [0, {n}); received [{int(col.min())}, {int(col.max())}]."
    if not bool(torch.isfinite(values.detach()).all()):
        return "values_local contains NaN or inf; pass finite values."
    if n >= 2**31 - 1:
        return f"n={n} exceeds this PETSc build's 32-bit indices."
    return None


@dataclasses.dataclass(eq=False)
class PetscOperator:
    """A PETSc AIJ matrix over a :class:`Pattern`, with torch row-block products."""

    mat: object
    pattern: Pattern

    @staticmethod
    def create(pattern: Pattern, values: torch.Tensor) -> "PetscOperator":
        PETSc, _, _ = import_backend()
        m, n = pattern.m, pattern.n
        v = np.ascontiguousarray(values.detach().cpu().numpy())
        mat = PETSc.Mat().createAIJ(size=((m, n), (m, n)), csr=(pattern.crow, pattern.col, v), comm=pattern.comm)
        mat.assemble()
        return PetscOperator(mat, pattern)

    def refresh(self, values: torch.Tensor) -> None:
        """New values, same pattern (``MatSetValuesCSR``: no reallocation)."""
        p = self.pattern
        v = np.ascontiguousarray(values.detach().cpu().numpy())
        self.mat.zeroEntries()
        self.mat.setValuesCSR(p.crow, p.col, v)
        self.mat.assemble()

    @property
    def n(self) -> int:
        return self.pattern.n

    @property
    def mpi(self):
        return mpi_comm(self.pattern.comm)

    def vec(self, array: np.ndarray | None = None):
        """A distributed Vec of this layout (wrapping ``array``, no copy, when given)."""
        PETSc, _, _ = import_backend()
        p = self.pattern
        if array is None:
            return self.mat.createVecRight()
        return PETSc.Vec().createWithArray(array, size=(p.m, p.n), comm=p.comm)

    def matmat(self, X: torch.Tensor) -> torch.Tensor:
        """Local rows of ``A X`` for the local rows ``X`` (m, c) (collective)."""
        Xn = X.detach().cpu().numpy()
        out = np.empty_like(Xn)
        y = self.mat.createVecLeft()
        for j in range(Xn.shape[1]):
            x = self.vec(np.ascontiguousarray(Xn[:, j]))
            self.mat.mult(x, y)
            out[:, j] = y.getArray(readonly=True)
            x.destroy()
        y.destroy()
        return torch.from_numpy(out).to(X.dtype)

    def matmat_transpose(self, X: torch.Tensor) -> torch.Tensor:
        """Local rows of ``Aᵀ X`` (collective; for the tangent of a non-symmetric value perturbation)."""
        Xn = X.detach().cpu().numpy()
        out = np.empty_like(Xn)
        y = self.mat.createVecRight()
        for j in range(Xn.shape[1]):
            x = self.vec(np.ascontiguousarray(Xn[:, j]))
            self.mat.multTranspose(x, y)
            out[:, j] = y.getArray(readonly=True)
            x.destroy()
        y.destroy()
        return torch.from_numpy(out).to(X.dtype)

    def norm_inf(self) -> float:
        PETSc, _, _ = import_backend()
        return float(self.mat.norm(PETSc.NormType.INFINITY))

    def destroy(self) -> None:
        self.mat.destroy()


def gather_rows(M: torch.Tensor, pattern: Pattern, idx: np.ndarray) -> torch.Tensor:
    """Rows ``idx`` (global, sorted unique) of the distributed ``(n, c)`` matrix whose local rows are ``M``.

    One PETSc scatter of a blocked Vec (block = one row of ``c`` numbers): each
    rank receives only the rows it asks for, ``len(idx) · c`` numbers (the
    ghost rows of its pattern, as PETSc's own MatMult exchanges), so the
    communication scales with the pattern's off-rank columns, not with ``n``.
    """
    PETSc, _, _ = import_backend()
    c = M.shape[-1]
    Mn = np.ascontiguousarray(M.detach().cpu().numpy()).reshape(-1)
    src = PETSc.Vec().createWithArray(Mn, size=(pattern.m * c, pattern.n * c), bsize=c, comm=pattern.comm)
    dst = PETSc.Vec().createSeq(len(idx) * c, bsize=c, comm=PETSc.COMM_SELF)
    is_from = PETSc.IS().createBlock(c, idx.astype(PETSc.IntType), comm=PETSc.COMM_SELF)
    sc = PETSc.Scatter().create(src, is_from, dst, None)
    sc.scatter(src, dst, addv=PETSc.InsertMode.INSERT_VALUES, mode=PETSc.ScatterMode.FORWARD)
    out = torch.from_numpy(dst.getArray(readonly=True).copy().reshape(len(idx), c)).to(M.dtype)
    for o in (sc, is_from, dst, src):
        o.destroy()
    return out


def symmetry_probe(op: PetscOperator, seed: int = 20240531) -> str | None:
    """``None`` when ``uᵀ A v = vᵀ A u`` to ``sqrt(eps)`` for two fixed probes, else the message (collective)."""
    p = op.pattern
    rng = np.random.default_rng(seed)
    U = torch.from_numpy(rng.standard_normal((p.n, 2))[p.start : p.end].copy())  # the same probes on any split
    AU = op.matmat(U)
    a = allsum(torch.stack([(U[:, 0] * AU[:, 1]).sum(), (U[:, 1] * AU[:, 0]).sum(),
                            (AU**2).sum(), (U**2).sum()]), op.mpi)
    size = float(a[2].sqrt() * a[3].sqrt())
    if abs(float(a[0] - a[1])) > torch.finfo(torch.float64).eps ** 0.5 * size:
        return (f"the matrix is not symmetric: for probe vectors u, v, |uᵀ(A v) - vᵀ(A u)| = "
                f"{abs(float(a[0] - a[1])):.3e}, relative {abs(float(a[0] - a[1])) / size:.1e}. eigrad solves "
                "real symmetric problems; store both (i, j) and (j, i) with equal values.")
    return None
