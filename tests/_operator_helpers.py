"""Problems and forward solvers shared by the operator tests.

The forward solvers here are test scaffolding, independent of eigrad's
iterative eigensolvers: ``NoHandle`` runs the dense solver on the
materialized operator but drops its eigenbasis, so the backward must use
projected block MINRES over the operator; ``ScipyEigsh`` is ARPACK through
``scipy.sparse.linalg.eigsh`` on a numpy wrapper of the operator (inexact
eigenvectors, as a real iterative forward gives).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

import eigrad
from eigrad.eigensolvers import DenseEigh, EigSolution
from eigrad.eigensolvers._materialize import Materialized

DT = torch.float64


def laplacian_2d(m: int) -> sp.csr_matrix:
    """5-point Dirichlet Laplacian on an ``m × m`` grid (n = m²): exact degenerate pairs."""
    T = sp.diags([-np.ones(m - 1), 2 * np.ones(m), -np.ones(m - 1)], [-1, 0, 1])
    I = sp.identity(m)
    return (sp.kron(T, I) + sp.kron(I, T)).tocsr()


def laplacian_2d_eigenvalues(m: int) -> np.ndarray:
    """The exact spectrum, ascending: ``4 sin²(πi/2(m+1)) + 4 sin²(πj/2(m+1))``."""
    s = 4 * np.sin(np.pi * np.arange(1, m + 1) / (2 * (m + 1))) ** 2
    return np.sort((s[:, None] + s[None, :]).ravel())


def scipy_to_torch_csr(M: sp.spmatrix, values: torch.Tensor | None = None) -> torch.Tensor:
    C = sp.csr_matrix(M)
    C.sort_indices()
    v = torch.from_numpy(C.data.astype(np.float64)) if values is None else values
    return torch.sparse_csr_tensor(
        torch.from_numpy(C.indptr.astype(np.int64)), torch.from_numpy(C.indices.astype(np.int64)), v,
        C.shape, check_invariants=False,
    )


def potential_operator(lap_op, v: torch.Tensor) -> eigrad.FunctionOperator:
    """``A(v) = Lap + diag(v)`` as a FunctionOperator (gradient to the potential ``v``)."""
    return eigrad.FunctionOperator(lambda X, v: lap_op.matmat(X) + v.unsqueeze(-1) * X, (v,), (v.shape[-1],) * 2)


def _strip(sol: EigSolution) -> EigSolution:
    return dataclasses.replace(sol, handle=None)


@dataclasses.dataclass(frozen=True)
class NoHandle:
    """Exact dense forward on the materialized operator, backward forced onto block MINRES."""

    handle_factory = None

    def __call__(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        sol = Materialized(DenseEigh())(A, k, B=B, largest=largest, n_guard=n_guard)
        return _strip(sol)


@dataclasses.dataclass(frozen=True)
class ScipyEigsh:
    """ARPACK on the operator (standard problems), no handle: an inexact, iterative forward."""

    tol: float = 1e-12
    handle_factory = None

    def __call__(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        if B is not None:
            raise NotImplementedError("ScipyEigsh test solver: standard problems only")
        n = A.n

        def mv(x):
            return A.matmat(torch.from_numpy(np.ascontiguousarray(x).reshape(n, -1))).numpy()

        lin = spla.LinearOperator((n, n), matvec=lambda x: mv(x).ravel(), matmat=mv, dtype=np.float64)
        kk = k + n_guard
        v0 = np.random.default_rng(0).standard_normal(n)
        w, V = spla.eigsh(lin, kk, which="LA" if largest else "SA", tol=self.tol, v0=v0)
        order = np.argsort(w)
        w, V = torch.from_numpy(w[order].copy()), torch.from_numpy(V[:, order].copy())
        if largest:
            L, X, Lg, Xg = w[n_guard:], V[:, n_guard:], w[:n_guard], V[:, :n_guard]
        else:
            L, X, Lg, Xg = w[:k], V[:, :k], w[k:], V[:, k:]
        res = torch.linalg.vector_norm(A.matmat(X) - X * L, dim=0)
        return EigSolution(L, X, res, 1, "converged", Lg, Xg, None, 0, w.abs().max())


def sym_direction(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(n, n, dtype=DT, generator=g)
    return 0.5 * (E + E.T)
