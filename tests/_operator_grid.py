"""The 2D grid problem shared by the operator derivative tests.

An 8×8 Dirichlet Laplacian plus a potential with the square's full symmetry
(D4), so the grid's degenerate pairs stay exact; three routes through eigsh:
the materialized dense solve, an exact forward with the MINRES backward, and
ARPACK with the MINRES backward.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
from _operator_helpers import DT, NoHandle, ScipyEigsh, laplacian_2d, scipy_to_torch_csr

import eigrad
from eigrad.testing import cluster_positions, invariant_loss

M_GRID = 8
N = M_GRID * M_GRID
ROUTES = {"dense": "dense", "minres": NoHandle(), "arpack+minres": ScipyEigsh()}


def radial_potential(m=M_GRID, strength=0.3):
    """A potential with the square's full symmetry (D4): the grid's degenerate pairs stay exact."""
    i = torch.arange(m, dtype=DT) - (m - 1) / 2
    return strength * ((i[:, None] ** 2 + i[None, :] ** 2) / m**2).reshape(-1)


LAP = laplacian_2d(M_GRID)
LAP_OP = eigrad.as_operator(LAP)
V0 = radial_potential()
A0 = torch.from_numpy(LAP.toarray()) + torch.diag(V0)
SPECTRUM = torch.linalg.eigvalsh(A0)
CLUSTERS = cluster_positions(SPECTRUM[:12], tol=1e-10)


def closing_k(n_clusters):
    return CLUSTERS[n_clusters - 1][-1] + 1


def sparse_A(values=None):
    """A0 as a torch CSR tensor whose stored values may require grad."""
    S = (LAP + sp.diags(V0.numpy())).tocsr()
    return scipy_to_torch_csr(S, values)


def grid_loss(L, X, W):
    k = L.shape[-1]
    clusters = [c for c in CLUSTERS if c[-1] < k]
    return invariant_loss(L, X, clusters, W)
