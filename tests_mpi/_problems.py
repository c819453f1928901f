"""Test problems: 3D grid Laplacians plus a potential, built globally, split by PETSc's rows."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from mpi4py import MPI

from eigrad.petsc import DistributedCSR, ownership_range

WORLD = MPI.COMM_WORLD


def grid_laplacian(N: int) -> sp.csr_matrix:
    """The 7-point Dirichlet Laplacian on an N³ grid (n = N³)."""
    T = sp.diags([-np.ones(N - 1), 2 * np.ones(N), -np.ones(N - 1)], [-1, 0, 1])
    I = sp.identity(N)
    return (sp.kron(sp.kron(T, I), I) + sp.kron(sp.kron(I, T), I) + sp.kron(sp.kron(I, I), T)).tocsr()


def random_potential_problem(N: int = 6, seed: int = 0) -> sp.csr_matrix:
    """Laplacian + a random potential: simple eigenvalues."""
    V = np.random.default_rng(seed).uniform(0.0, 1.0, N**3)
    return (grid_laplacian(N) + sp.diags(V)).tocsr()


def cubic_problem(N: int = 6) -> sp.csr_matrix:
    """Laplacian + a cubic-symmetric, non-separable potential: exact triple levels.

    For N = 6: λ_0 simple, λ_1 = λ_2 = λ_3 (a triple), λ_4 = λ_5, λ_6..λ_8 a triple.
    """
    x = np.arange(N) - (N - 1) / 2
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    V = 0.05 * (X**2 * Y**2 + Y**2 * Z**2 + Z**2 * X**2) + 1e-3 * (X * Y * Z) ** 2
    return (grid_laplacian(N) + sp.diags(V.ravel())).tocsr()


def mass_matrix(N: int = 6) -> sp.csr_matrix:
    """An SPD ``B = I + 0.05 L`` (eigenvalues in (1, 1.6)) with the Laplacian's pattern and cubic symmetry."""
    return (sp.identity(N**3) + 0.05 * grid_laplacian(N)).tocsr()


def distribute(A: sp.csr_matrix, comm=None, requires_grad: bool = True):
    """``(DistributedCSR, values_local, (start, end))`` of this rank's rows of ``A``."""
    A = A.tocsr()
    A.sort_indices()
    n = A.shape[0]
    s, e = ownership_range(n, comm)
    blk = A[s:e]
    vals = torch.tensor(blk.data, dtype=torch.float64, requires_grad=requires_grad)
    D = DistributedCSR(torch.tensor(blk.indptr, dtype=torch.int64), torch.tensor(blk.indices, dtype=torch.int64),
                       vals, (n, n), comm=comm)
    return D, vals, (s, e)


def local_slice(A: sp.csr_matrix, rows) -> slice:
    """The positions of this rank's stored entries in ``A.data``."""
    return slice(int(A.indptr[rows[0]]), int(A.indptr[rows[1]]))


def global_max(x: float, comm=WORLD) -> float:
    return comm.allreduce(float(x), op=MPI.MAX)


def global_sum(x: float, comm=WORLD) -> float:
    return comm.allreduce(float(x), op=MPI.SUM)


def gather_rows(X: torch.Tensor, comm=WORLD) -> torch.Tensor:
    """The full (n, c) matrix from every rank's rows (small tests only)."""
    return torch.cat([torch.as_tensor(p) for p in comm.allgather(X.detach().numpy())], dim=0)


def _dense(A: sp.csr_matrix):
    A = A.tocsr()
    A.sort_indices()
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    v = torch.tensor(A.data, dtype=torch.float64, requires_grad=True)
    M = torch.zeros(A.shape, dtype=torch.float64).index_put((torch.tensor(rows), torch.tensor(A.indices)), v,
                                                            accumulate=True)
    return v, 0.5 * (M + M.T)


def dense_values_loss(A: sp.csr_matrix, loss_of, B: sp.csr_matrix | None = None):
    """Gradient of ``loss_of(L, Q)`` w.r.t. ``A.data`` (and ``B.data``) through ``torch.linalg.eigh``
    of sym(A) (with B: of ``C⁻¹ A C⁻ᵀ``, ``B = C Cᵀ``, and ``Q = C⁻ᵀ Q̃``), every rank alike."""
    v, M = _dense(A)
    if B is None:
        L, Q = torch.linalg.eigh(M)
        loss_of(L, Q).backward()
        return v.grad
    vb, MB = _dense(B)
    C = torch.linalg.cholesky(MB)
    Ci_A = torch.linalg.solve_triangular(C, M, upper=False)
    At = torch.linalg.solve_triangular(C, Ci_A.T, upper=False)
    L, Qt = torch.linalg.eigh(0.5 * (At + At.T))
    Q = torch.linalg.solve_triangular(C.T, Qt, upper=True)
    loss_of(L, Q).backward()
    return v.grad, vb.grad


def shell_potential(K: sp.csr_matrix, theta_local: torch.Tensor, scale: float = 1.0, comm=None):
    """``DistributedFunctionOperator`` of ``A(θ) = K + scale · diag(θ)`` (θ: this rank's rows), ghosts = K's
    off-rank columns; its local product is ``K_loc X_ext + scale · θ ⊙ X_loc`` (a torch sparse product)."""
    from eigrad.petsc import DistributedFunctionOperator

    n = K.shape[0]
    s, e = ownership_range(n, comm)
    blk = K.tocsr()[s:e].tocoo()
    col = blk.col
    ghosts = np.unique(col[(col < s) | (col >= e)])
    ext = np.where((col >= s) & (col < e), col - s, 0)
    off = (col < s) | (col >= e)
    ext[off] = (e - s) + np.searchsorted(ghosts, col[off])
    Kl = torch.sparse_coo_tensor(np.vstack([blk.row, ext]), blk.data, (e - s, e - s + ghosts.size), check_invariants=True).coalesce()

    def matmat(Xext, th):
        return Kl @ Xext + scale * th.unsqueeze(-1) * Xext[: e - s]

    return DistributedFunctionOperator(matmat, [theta_local], (n, n), ghosts=torch.from_numpy(ghosts), comm=comm)


def dense_shell_reference(K: sp.csr_matrix, theta: np.ndarray, loss_of, scale: float = 1.0, KB=None, phi=None):
    """``∂ loss / ∂ θ`` (and ``∂ / ∂ φ`` for ``B = KB + diag(φ)``) by torch.linalg.eigh of the gathered dense matrices."""
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    A = torch.tensor(K.toarray()) + scale * torch.diag(th)
    if KB is None:
        import eigrad

        Ld, Q = eigrad.eigh(A)  # correct at repeated eigenvalues (torch.linalg.eigh's backward is not)
        loss_of(Ld, Q).backward()
        return th.grad, None
    ph = torch.tensor(phi, dtype=torch.float64, requires_grad=True)
    B = torch.tensor(KB.toarray()) + torch.diag(ph)
    C = torch.linalg.cholesky(B)
    Ci = torch.linalg.inv(C)
    Ld, Y = torch.linalg.eigh(Ci @ A @ Ci.T)
    loss_of(Ld, Ci.T @ Y).backward()
    return th.grad, ph.grad
