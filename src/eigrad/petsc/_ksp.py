"""The backward's projected shifted solves, distributed: PETSc KSP MINRES per column.

For column ``j`` with shift ``σ_j = λ_j`` and a right-hand side with
``Xᵀ r_j = 0`` for all K computed eigenvectors ``X`` (MATH.md's ``G_j``, as
``autodiff._formulas.split_solve`` hands it over), MINRES solves

    Pᵀ (A − σ_j B) P y = r_j,      P = I − X (B X)ᵀ      (B = I: P = I − X Xᵀ),

a consistent symmetric singular system whose null space contains span X;
the answer is projected, ``P y``, B-orthogonal to ``X`` as MATH.md requires.
The operator is a PETSc shell matrix around the AIJ matrices (PETSc
exchanges the ghost entries) with one small all-reduce per product
(:class:`_ProjectedShifted`). KSP stops on its own residual estimate; the
**true** residual ``‖r_j − Pᵀ (A − σ_j B) P y‖ / ‖r_j‖`` is recomputed and,
while above ``rtol``, MINRES restarts on it (at most 4 times) before raising
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

    ``B = I`` (:meth:`mult` while iterating): ``y = P (A − σ) x``, one product
    with A, one all-reduce of ``K`` numbers and two passes over ``X``: MINRES's
    iterates lie in range P (its right-hand side and every product do), where
    this is ``P (A − σ) P``; the answer is projected and its residual checked
    with the two-sided operator (:meth:`apply_full`).

    ``B ≠ I``: ``range P ≠ range Pᵀ``, so both sides are applied, still with
    one all-reduce of ``2K`` numbers: with ``c = (B X)ᵀ x``, ``e = (A X)ᵀ x`` and
    ``G_A = Xᵀ A X``, ``G_B = Xᵀ B X`` (once), ``u = P x = x − X c``,
    ``w = (A − σ B) u = A x − σ B x − (A X − σ B X) c`` and
    ``Xᵀ w = e − σ c − (G_A − σ G_B) c``, so ``y = w − B X (Xᵀ w)``.

    In-place torch operations on the PETSc arrays (no temporaries of length n).
    """

    def __init__(self, op, X: np.ndarray, Bop=None):
        self.op, self.Bop, self.mpi = op, Bop, op.mpi
        self.X = torch.from_numpy(X)  # (m, K)
        self.XT = self.X.T.contiguous()
        self.K = X.shape[1]
        self._sigma = 0.0
        if Bop is None:
            self.BX = self.X
            return
        AX = op.matmat(self.X)  # (m, K), K products once
        self.BX = Bop.matmat(self.X)
        self.red = torch.cat([self.BX, AX], dim=1).T.contiguous()  # (2K, m)
        self.AX = AX
        G = allsum(torch.stack([self.X.T @ AX, self.X.T @ self.BX]), self.mpi)
        self.GA, self.GB = 0.5 * (G[0] + G[0].T), 0.5 * (G[1] + G[1].T)
        self.Bx = op.mat.createVecRight()
        self.sigma = 0.0

    @property
    def sigma(self) -> float:
        return self._sigma

    @sigma.setter
    def sigma(self, s: float) -> None:
        self._sigma = s
        if self.Bop is not None:  # per shift, not per product: A X − σ B X and G_A − σ G_B
            self.W = self.AX - s * self.BX
            self.Gs = self.GA - s * self.GB

    def _reduce(self, local: torch.Tensor) -> torch.Tensor:
        if self.mpi.size == 1:
            return local
        out = np.empty(local.shape)
        self.mpi.Allreduce(local.numpy(), out)  # the hot loop: a buffer all-reduce (PETSc's dots rely on it too)
        return torch.from_numpy(out)

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """``P v``: B-orthogonal to ``X`` (a new tensor)."""
        return torch.addmv(v, self.X, self._reduce(self.BX.T @ v), alpha=-1.0)

    @staticmethod
    def _view(vec, readonly=False) -> torch.Tensor:
        return torch.from_numpy(vec.getArray(readonly=False))  # shares the Vec's memory

    def mult(self, mat, x, y):
        self.op.mat.mult(x, y)  # y = A x; MatMult marks y modified after this callback returns
        xt, yt, s = self._view(x), self._view(y), self.sigma
        if self.Bop is None:
            yt.add_(xt, alpha=-s)
            yt.addmv_(self.X, self._reduce(torch.mv(self.XT, yt)), alpha=-1.0)
            return
        ce = self._reduce(torch.mv(self.red, xt))
        c, e = ce[: self.K], ce[self.K :]
        self.Bop.mat.mult(x, self.Bx)
        yt.add_(self._view(self.Bx), alpha=-s)
        yt.addmv_(self.W, c, alpha=-1.0)
        yt.addmv_(self.BX, e - s * c - self.Gs @ c, alpha=-1.0)

    def apply_full(self, x: torch.Tensor) -> torch.Tensor:
        """``Pᵀ (A − σ B) P x`` with both projections explicit (the true-residual check)."""
        u = self.project(x)
        w = self.op.matmat(u.unsqueeze(-1)).squeeze(-1)
        w = w - self.sigma * (u if self.Bop is None else self.Bop.matmat(u.unsqueeze(-1)).squeeze(-1))
        return torch.addmv(w, self.BX, self._reduce(self.X.T @ w), alpha=-1.0)

    def release(self):  # (not `destroy`: petsc4py calls a context's destroy(mat) itself)
        if self.Bop is not None:
            self.Bx.destroy()


def _norm(v: torch.Tensor, mpi) -> float:
    return float(allsum((v @ v).reshape(1), mpi).sqrt())


def projected_solves(op, X: torch.Tensor, R: torch.Tensor, shifts: torch.Tensor, rtol: float, maxiter: int,
                     Bop=None):
    """``Y`` (m, c) local rows: ``y_j = G_j r_j`` for the local rows ``R`` (m, c), ``Xᵀ r_j = 0`` (collective)."""
    PETSc, _, _ = import_backend()
    p, mpi = op.pattern, op.mpi
    ctx = _ProjectedShifted(op, np.ascontiguousarray(X.detach().to(torch.float64).numpy()), Bop)
    shell = PETSc.Mat().createPython([(p.m, p.n), (p.m, p.n)], context=ctx, comm=p.comm)
    shell.setUp()
    ksp = PETSc.KSP().create(comm=p.comm)
    ksp.setOperators(shell)
    ksp.setType(PETSc.KSP.Type.MINRES)
    ksp.getPC().setType(PETSc.PC.Type.NONE)
    ksp.setTolerances(rtol=0.5 * rtol, atol=0.0, max_it=maxiter)
    ksp.setInitialGuessNonzero(True)
    Rt = R.detach().to(torch.float64)
    Y = torch.zeros_like(Rt)
    b, x = op.vec(), op.vec()
    for j in range(Rt.shape[1]):
        rhs = Rt[:, j].contiguous()
        bnorm = _norm(rhs, mpi)
        if bnorm == 0.0:
            continue  # a zero column (a guard's, or no cotangent): y = 0
        ctx.sigma = float(shifts[j])
        ksp.setOperators(shell)
        b.setArray(rhs.numpy())
        x.set(0.0)
        total, rel = 0, float("inf")
        for _ in range(_RESTARTS + 1):
            ksp.solve(b, x)
            total += ksp.getIterationNumber()
            xt = torch.from_numpy(x.getArray(readonly=True).copy())
            rel = _norm(rhs - ctx.apply_full(xt), mpi) / bnorm  # the true projected residual
            if rel <= rtol:
                break
        if rel > rtol:
            for o in (ksp, shell, b, x):
                o.destroy()
            ctx.release()
            raise ConvergenceError(
                f"eigrad.petsc: the backward's shifted solve for column {j} (σ = {ctx.sigma:.8g}) reached a true "
                f"relative residual {rel:.2e} > linsolve_rtol={rtol:.1e} after {total} MINRES iterations "
                f"({_RESTARTS} restarts); raise "
                "BackwardOptions(linsolve_maxiter=) or loosen linsolve_rtol.")
        Y[:, j] = ctx.project(xt)
    for o in (ksp, shell, b, x):
        o.destroy()
    ctx.release()
    return Y.to(R.dtype)
