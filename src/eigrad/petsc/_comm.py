"""Collective reductions over local row blocks, identical on every rank.

``allsum`` gathers every rank's partial result and sums them in rank order on
every rank, so that replicated quantities (Gram matrices ``Xᵀ Y``, norms,
eigenvalues of projected problems) are bitwise identical everywhere and every
rank takes the same branch (cluster labels, checks, convergence verdicts). The
gather moves ``P`` partials of ``K × c`` numbers per call: fine for the ranks of
a node or a few nodes; for thousands of ranks an ``MPI_Allreduce`` followed by
a broadcast from rank 0 would keep the guarantee at ``O(K c log P)``.
"""

from __future__ import annotations

import numpy as np
import torch


def mpi_comm(petsc_comm):
    """The mpi4py communicator behind a PETSc communicator."""
    return petsc_comm.tompi4py()


def allsum(t: torch.Tensor, comm) -> torch.Tensor:
    """``Σ_ranks t`` (any shape), identical on every rank; ``comm`` an mpi4py communicator."""
    if comm.size == 1:
        return t
    parts = comm.allgather(t.detach().cpu().numpy())
    return torch.from_numpy(np.asarray(np.sum(np.stack(parts), axis=0))).to(t.dtype)


def inner(comm):
    """``(U, V) -> Uᵀ V`` over the global rows, for local row blocks ``U`` (m, a), ``V`` (m, b)."""

    def ip(U, V):
        return allsum(U.transpose(-1, -2) @ V, comm)

    return ip


def same_everywhere(obj, comm):
    """Rank 0's ``obj`` on every rank (a Python object: a verdict, a message)."""
    return obj if comm.size == 1 else comm.bcast(obj, root=0)
