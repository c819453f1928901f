"""Sparse factorization helpers for :mod:`._shift_invert`: SuperLU in symmetric mode, its inertia,
Gershgorin bounds of a pencil, and the graph measure ``solver="auto"`` uses to choose it."""

from __future__ import annotations

import numpy as np
import scipy.sparse


def effective_dimension(M) -> float:
    """``log(n_c) / log(e)`` for the graph of ``M``: ``e`` the eccentricity of a pseudo-peripheral node
    (two breadth-first searches), ``n_c`` the size of its connected component.

    A ``d``-dimensional grid with ``m`` points per side has ``e ≈ d·m`` and
    ``n = m^d``: below 2 for every 2-D mesh, above 2 for 3-D grids from about
    ``9³`` up. The fill of a sparse factorization follows the same split
    (``O(n log n)`` in 2-D, ``O(n^{4/3})`` in 3-D), so ``solver="auto"`` uses it
    to choose shift-invert for standard problems (docs/benchmarks_matrix_free.md).
    ``inf`` when the component holds less than half of the nodes. Cost: two
    O(nnz) searches.
    """
    from scipy.sparse.csgraph import shortest_path

    P = scipy.sparse.csr_matrix((np.ones(M.nnz), M.indices, M.indptr), shape=M.shape)
    node, dist, reached = 0, None, None
    for _ in range(2):
        dist = shortest_path(P, method="D", directed=False, unweighted=True, indices=node)
        reached = np.isfinite(dist)
        node = int(np.argmax(np.where(reached, dist, -1.0)))
    if int(reached.sum()) < 0.5 * M.shape[0]:  # most of the graph is elsewhere: no estimate
        return float("inf")
    ecc = float(dist[reached].max())
    return float(np.log(max(int(reached.sum()), 2)) / np.log(max(ecc, 2.0)))


def gershgorin(M, d_inv_sqrt):
    """Gershgorin interval ``[lo, hi]`` of ``D^{-1/2} M D^{-1/2}``."""
    S = scipy.sparse.diags(d_inv_sqrt) @ M @ scipy.sparse.diags(d_inv_sqrt)
    diag = S.diagonal().real  # Hermitian: a real diagonal
    radius = np.asarray(abs(S).sum(axis=1)).ravel() - np.abs(diag)
    return float((diag - radius).min()), float((diag + radius).max())


def factor(K):
    import scipy.sparse.linalg as spla

    return spla.splu(K.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                     options={"SymmetricMode": True})


def definite(lu) -> bool:
    """``K`` positive definite: no off-diagonal pivot, every pivot of ``L D Lᵀ`` positive (module docstring).

    Complex Hermitian ``K``: with diagonal pivots SuperLU's ``L U`` is ``L D Lᴴ``, ``D = diag(U)`` real
    in exact arithmetic (its imaginary parts are rounding); Sylvester's law holds for ``*``-congruence,
    so the signs of ``Re d_i`` give the inertia (tests/test_complex_shift_invert.py counts them against
    ``eigvalsh``)."""
    if not np.array_equal(lu.perm_r, lu.perm_c):
        return False
    return bool((lu.U.diagonal().real > 0).all())


def below_count(lu) -> int | None:
    if not np.array_equal(lu.perm_r, lu.perm_c):
        return None
    return int((lu.U.diagonal().real <= 0).sum())
