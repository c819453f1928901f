"""The backward's projected shifted solves, distributed: PETSc KSP MINRES per column.

For column ``j`` with shift ``σ_j = λ_j`` and a right-hand side ``r_j`` orthogonal
to all K computed eigenvectors ``X`` (MATH.md's ``G_j``, as
``autodiff._formulas.split_solve`` hands it over), MINRES solves

    P (A − σ_j I) P y = r_j,      P = I − X Xᵀ,

a consistent symmetric singular system whose null space contains span X:
from ``y = 0`` its iterates stay in range P (the answer is projected again,
as MATH.md requires). The operator is a PETSc shell matrix around the AIJ
matrix (PETSc exchanges the ghost entries), the projection one all-reduce
of ``2K`` numbers per product (:class:`_ProjectedShifted`). KSP stops on its own residual estimate; the
**true** residual ``‖r_j − P (A − σ_j) P y‖ / ‖r_j‖`` is recomputed and, while
above ``rtol``, MINRES restarts on it (at most 4 times) before raising
:class:`eigrad.ConvergenceError` on every rank (the verdict is a collective
norm).
"""

from __future__ import annotations

import numpy as np
import torch

from .._errors import ConvergenceError
from ._comm import allsum
from ._env import import_backend

_RESTARTS = 4


class _ProjectedShifted:
    """Shell-matrix context: ``y = P (A − σ) P x`` with ``P = I − X Xᵀ`` over the global rows.

    One product with A and **one** all-reduce of ``2K`` numbers per application:
    with ``c = Xᵀ x``, ``e = (A X)ᵀ x`` and ``G = (A X)ᵀ X`` (once),
    ``u = P x = x − X c`` and ``Xᵀ (A − σ) u = e − G c`` (as ``Xᵀ u = 0``), so
    ``y = A x − (A X) c − σ u − X (e − G c)``: the same operator as projecting
    before and after, with half the collectives.
    """

    def __init__(self, op, X: np.ndarray):
        self.op, self.X, self.mpi = op, X, op.mpi
        self.AX = op.matmat(torch.from_numpy(X)).numpy()  # (m, K), K products once
        self.XAX = np.ascontiguousarray(np.concatenate([X, self.AX], axis=1).T)  # (2K, m)
        G = allsum(torch.from_numpy(self.AX.T @ X), self.mpi).numpy()
        self.G = 0.5 * (G + G.T)
        self.sigma = 0.0
        self.K = X.shape[1]

    def _reduce(self, local: np.ndarray) -> np.ndarray:
        if self.mpi.size == 1:
            return local
        out = np.empty_like(local)
        self.mpi.Allreduce(local, out)  # the hot loop: a buffer all-reduce (PETSc's own dots rely on it too)
        return out

    def project(self, v: np.ndarray) -> np.ndarray:
        return v - self.X @ self._reduce(self.X.T @ v)

    def mult(self, mat, x, y):
        xa = x.getArray(readonly=True)
        ce = self._reduce(self.XAX @ xa)
        c, e = ce[: self.K], ce[self.K :]
        self.op.mat.mult(x, y)
        u = xa - self.X @ c
        y.setArray(y.getArray(readonly=True) - self.AX @ c - self.sigma * u - self.X @ (e - self.G @ c))


def _norm(v: np.ndarray, mpi) -> float:
    return float(allsum(torch.tensor(float(v @ v), dtype=torch.float64), mpi).sqrt())


def projected_solves(op, X: torch.Tensor, R: torch.Tensor, shifts: torch.Tensor, rtol: float, maxiter: int):
    """``Y`` (m, c) local rows: ``y_j = G_j r_j`` for the local rows ``R`` (m, c), ``r_j ⟂ X`` (collective)."""
    PETSc, _, _ = import_backend()
    p, mpi = op.pattern, op.mpi
    ctx = _ProjectedShifted(op, np.ascontiguousarray(X.detach().numpy()))
    shell = PETSc.Mat().createPython([(p.m, p.n), (p.m, p.n)], context=ctx, comm=p.comm)
    shell.setUp()
    ksp = PETSc.KSP().create(comm=p.comm)
    ksp.setOperators(shell)
    ksp.setType(PETSc.KSP.Type.MINRES)
    ksp.getPC().setType(PETSc.PC.Type.NONE)
    ksp.setTolerances(rtol=0.5 * rtol, atol=0.0, max_it=maxiter)
    ksp.setInitialGuessNonzero(True)
    Rn = R.detach().numpy()
    Y = np.zeros_like(Rn)
    b, x, r = op.vec(), op.vec(), op.vec()
    for j in range(Rn.shape[1]):
        rhs = np.ascontiguousarray(Rn[:, j])
        bnorm = _norm(rhs, mpi)
        if bnorm == 0.0:
            continue  # a zero column (a guard's, or no cotangent): y = 0
        ctx.sigma = float(shifts[j])
        ksp.setOperators(shell)
        b.setArray(rhs)
        x.set(0.0)
        total, rel = 0, float("inf")
        for _ in range(_RESTARTS + 1):
            ksp.solve(b, x)
            total += ksp.getIterationNumber()
            shell.mult(x, r)
            res = rhs - r.getArray(readonly=True)
            rel = _norm(res, mpi) / bnorm
            if rel <= rtol:
                break
        if rel > rtol:
            for o in (ksp, shell, b, x, r):
                o.destroy()
            raise ConvergenceError(
                f"eigrad.petsc: the backward's shifted solve for column {j} (σ = {ctx.sigma:.8g}) reached a true "
                f"relative residual {rel:.2e} > linsolve_rtol={rtol:.1e} after {total} MINRES iterations "
                f"({_RESTARTS} restarts); raise "
                "BackwardOptions(linsolve_maxiter=) or loosen linsolve_rtol.")
        Y[:, j] = ctx.project(x.getArray(readonly=True).copy())
    for o in (ksp, shell, b, x, r):
        o.destroy()
    return torch.from_numpy(Y).to(R.dtype)
