"""The backward's projected shifted solves, distributed: PETSc KSP MINRES per column.

For column ``j`` with shift ``σ_j = λ_j`` and a right-hand side with
``Xᵀ r_j = 0`` for all K computed eigenvectors ``X`` (MATH.md's ``G_j``, as
``autodiff._formulas.split_solve`` hands it over), MINRES solves

    Pᵀ (A − σ_j B) P y = r_j,      P = I − X (B X)ᵀ      (B = I: P = I − X Xᵀ),

a consistent symmetric singular system whose null space contains span X;
the answer is projected, ``P y``, B-orthogonal to ``X`` as MATH.md requires. The operator is a PETSc shell matrix around the AIJ
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
    """Shell-matrix context: ``y = Pᵀ (A − σ B) P x``, ``P = I − X (B X)ᵀ`` over the global rows.

    One product with A (and one with B) and **one** all-reduce of ``2K`` numbers
    per application: with ``c = (B X)ᵀ x``, ``e = (A X)ᵀ x`` and the ``K × K``
    ``G_A = Xᵀ A X``, ``G_B = Xᵀ B X`` (once), ``u = P x = x − X c``,
    ``w = (A − σ B) u = A x − σ B x − (A X − σ B X) c`` and
    ``Xᵀ w = e − σ c − (G_A − σ G_B) c``, so ``y = w − B X (Xᵀ w)``: the same
    operator as projecting before and after, with half the collectives.
    """

    def __init__(self, op, X: np.ndarray, Bop=None):
        self.op, self.Bop, self.X, self.mpi = op, Bop, X, op.mpi
        Xt = torch.from_numpy(X)
        self.AX = op.matmat(Xt).numpy()  # (m, K), K products once
        self.BX = X if Bop is None else Bop.matmat(Xt).numpy()
        self.red = np.ascontiguousarray(np.concatenate([self.BX, self.AX], axis=1).T)  # (2K, m)
        G = allsum(torch.from_numpy(np.stack([X.T @ self.AX, X.T @ self.BX])), self.mpi).numpy()
        self.GA, self.GB = 0.5 * (G[0] + G[0].T), 0.5 * (G[1] + G[1].T)
        self.Bx = None if Bop is None else op.mat.createVecRight()
        self.sigma = 0.0
        self.K = X.shape[1]

    def _reduce(self, local: np.ndarray) -> np.ndarray:
        if self.mpi.size == 1:
            return local
        out = np.empty_like(local)
        self.mpi.Allreduce(local, out)  # the hot loop: a buffer all-reduce (PETSc's own dots rely on it too)
        return out

    def project(self, v: np.ndarray) -> np.ndarray:
        """``P v``: B-orthogonal to ``X``."""
        return v - self.X @ self._reduce(self.BX.T @ v)

    def mult(self, mat, x, y):
        xa = x.getArray(readonly=True)
        ce = self._reduce(self.red @ xa)
        c, e = ce[: self.K], ce[self.K :]
        self.op.mat.mult(x, y)
        if self.Bop is None:
            Bx = xa
        else:
            self.Bop.mat.mult(x, self.Bx)
            Bx = self.Bx.getArray(readonly=True)
        s = self.sigma
        w = y.getArray(readonly=True) - s * Bx - (self.AX - s * self.BX) @ c
        y.setArray(w - self.BX @ (e - s * c - (self.GA - s * self.GB) @ c))

    def release(self):  # (not `destroy`: petsc4py calls a context's destroy(mat) itself)
        if self.Bx is not None:
            self.Bx.destroy()


def _norm(v: np.ndarray, mpi) -> float:
    return float(allsum(torch.tensor(float(v @ v), dtype=torch.float64), mpi).sqrt())


def projected_solves(op, X: torch.Tensor, R: torch.Tensor, shifts: torch.Tensor, rtol: float, maxiter: int,
                     Bop=None):
    """``Y`` (m, c) local rows: ``y_j = G_j r_j`` for the local rows ``R`` (m, c), ``Xᵀ r_j = 0`` (collective)."""
    PETSc, _, _ = import_backend()
    p, mpi = op.pattern, op.mpi
    ctx = _ProjectedShifted(op, np.ascontiguousarray(X.detach().numpy()), Bop)
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
            ctx.release()
            raise ConvergenceError(
                f"eigrad.petsc: the backward's shifted solve for column {j} (σ = {ctx.sigma:.8g}) reached a true "
                f"relative residual {rel:.2e} > linsolve_rtol={rtol:.1e} after {total} MINRES iterations "
                f"({_RESTARTS} restarts); raise "
                "BackwardOptions(linsolve_maxiter=) or loosen linsolve_rtol.")
        Y[:, j] = ctx.project(x.getArray(readonly=True).copy())
    for o in (ksp, shell, b, x, r):
        o.destroy()
    ctx.release()
    return torch.from_numpy(Y).to(R.dtype)
