"""ARPACK (implicitly restarted Lanczos) through ``scipy.sparse.linalg.eigsh``, over any LinearOperator.

The operator is applied in torch (on its device) and the vectors cross to
numpy for ARPACK. The standard problem runs in ARPACK's mode 1; ``A x = λ B x``
runs in mode 2 (``OP = B⁻¹ A`` with B-inner products), ``B⁻¹`` applied by
conjugate gradients on ``B`` to near machine precision (Jacobi-preconditioned
when ``B`` exposes its diagonal). Mode 2 costs one CG solve per Lanczos step:
for a generalized problem with a cheap preconditioner, LOBPCG or PRIMME are
usually the better choice.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import torch

from ._iterative import (
    NumpyBridge,
    dense_fallback,
    finish,
    make_solution,
    rayleigh_ritz,
    relative_residuals,
    true_residuals,
)
from ._options import IterativeOptions, check_positive_int


def _diagonal_of(B):
    """The diagonal of ``B`` when it is cheap to get, else None."""
    diag = getattr(B, "diagonal", None)
    if callable(diag):
        try:
            return diag()
        except (NotImplementedError, TypeError):
            return None
    if getattr(B, "is_dense", False):
        return B.to_dense().diagonal(dim1=-2, dim2=-1)
    return None


def cg_solve(B, b: torch.Tensor, rtol: float, maxiter: int, diag=None) -> tuple[torch.Tensor, int]:
    """Solve ``B y = b`` (``b`` of shape ``(n, q)``) by (Jacobi-preconditioned) conjugate gradients.

    Stops when every column satisfies ``‖b − B y‖ <= rtol ‖b‖`` (true residual
    recurrence). Returns ``(y, iterations)``; raises ``RuntimeError`` if it
    does not reach ``rtol`` within ``maxiter`` (B not SPD, or ill-conditioned).
    """
    minv = None if diag is None else 1.0 / diag.unsqueeze(-1)
    y = torch.zeros_like(b)
    r = b.clone()
    z = r if minv is None else minv * r
    p = z.clone()
    rz = (r * z).sum(0)
    bnorm = torch.linalg.vector_norm(b, dim=0)
    target = rtol * bnorm
    for it in range(1, maxiter + 1):
        Bp = B.matmat(p)
        pBp = (p * Bp).sum(0)
        if bool(((pBp <= 0) & (torch.linalg.vector_norm(r, dim=0) > target)).any()):
            raise RuntimeError("B is not positive definite: CG met a direction with pᵀ B p <= 0.")
        alpha = torch.where(pBp > 0, rz / pBp, torch.zeros_like(rz))
        y = y + alpha * p
        r = r - alpha * Bp
        if bool((torch.linalg.vector_norm(r, dim=0) <= target).all()):
            return y, it
        z = r if minv is None else minv * r
        rz_new = (r * z).sum(0)
        p = z + torch.where(rz > 0, rz_new / rz, torch.zeros_like(rz)) * p
        rz = rz_new
    raise RuntimeError(
        f"CG on B did not reach rtol={rtol:.1e} in {maxiter} iterations; B is ill-conditioned or not SPD."
    )


@dataclasses.dataclass(frozen=True)
class Arpack(IterativeOptions):
    """ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``, ``which="SA"/"LA"``).

    The fastest CPU solver measured for a few extreme eigenpairs of a large
    operator without a preconditioner (``benchmarks/matrix_free.py``).

    Parameters
    ----------
    rtol, maxiter, on_failure, seed
        See :class:`IterativeOptions`; ``maxiter`` counts ARPACK's restart
        cycles (``None``: scipy's default ``10 n``). ARPACK is run at
        ``rtol / 2`` on its own Ritz estimates, then the true residuals are
        checked against ``rtol``.
    ncv : int or None
        Lanczos basis size, ``> k + n_guard``. ``None``: scipy's default
        ``max(2 (k + n_guard) + 1, 20)`` (capped at ``n``); larger bases did
        not reduce the operator applications for the smallest eigenvalues of
        a 3D Laplacian and cost more orthogonalization.
    cg_rtol, cg_maxiter : float or None, int
        Inner CG solves with ``B`` (generalized problems only); ``None``:
        ``1e-3 · rtol`` (the true residuals are checked afterwards).

    Notes
    -----
    One problem at a time (no batch dimensions; use :class:`LOBPCG`), no
    preconditioner (use :class:`Primme` or :class:`LOBPCG`). ``X0``: ARPACK
    takes one start vector, the sum of the columns of ``X0``. Problems with
    ``k + n_guard >= n - 1`` are solved densely.
    """

    ncv: int | None = None
    cg_rtol: float | None = None
    cg_maxiter: int = 1000

    handle_factory = None

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "ncv", self.ncv, 2)
        check_positive_int(self, "cg_maxiter", self.cg_maxiter)

    def __call__(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        import scipy.sparse.linalg as spla

        name = "Arpack"
        if len(A.shape) != 2:
            raise ValueError(
                f"solver='arpack' solves one problem at a time; received an operator of shape {tuple(A.shape)}. "
                "Pass solver='lobpcg' for batched operators."
            )
        if preconditioner is not None:
            raise ValueError(
                "solver='arpack' cannot use a preconditioner; pass solver='primme' (pip install primme) or "
                "solver='lobpcg', or preconditioner=None."
            )
        n = A.shape[-1]
        g = max(0, min(n_guard, n - k))
        m = k + g
        if m >= n - 1:
            return dense_fallback(A, B, k, g, largest)
        dtype, device = A.dtype, A.device
        rtol = self.resolved_rtol(dtype)
        ncv = self.ncv if self.ncv is not None else max(2 * m + 1, 20)
        ncv = min(max(ncv, m + 1), n)
        bridge = NumpyBridge(A, keep=2 * ncv)
        np_dtype = np.float64 if dtype == torch.float64 else np.float32

        if X0 is not None:
            v0 = X0.detach().reshape(n, -1).sum(-1).cpu().numpy().astype(np_dtype)
        else:
            v0 = np.random.default_rng(self.seed).uniform(-1.0, 1.0, n).astype(np_dtype)

        kwargs = {}
        if B is not None:
            diag = _diagonal_of(B)
            cg_tol = self.cg_rtol if self.cg_rtol is not None else 1e-3 * rtol
            Mop = NumpyBridge(B).linop

            def minv(x):
                b = torch.from_numpy(np.ascontiguousarray(x).reshape(n, -1)).to(device, dtype)
                y, _ = cg_solve(B, b, cg_tol, self.cg_maxiter, diag)
                return y.cpu().numpy().reshape(x.shape)

            kwargs = {"M": Mop, "Minv": spla.LinearOperator((n, n), matvec=minv, matmat=minv, dtype=np_dtype)}

        if "rng" in inspect.signature(spla.eigsh).parameters:  # scipy >= 1.15: ARPACK's restarts
            kwargs["rng"] = np.random.default_rng(self.seed)
        reason = ""
        try:
            vals, vecs = spla.eigsh(
                bridge.linop, k=m, which="LA" if largest else "SA", v0=v0, ncv=ncv,
                maxiter=self.maxiter, tol=0.5 * rtol, **kwargs,
            )
        except spla.ArpackNoConvergence as err:
            # best iterate: Rayleigh–Ritz over the converged vectors and the last Lanczos vectors
            reason = (
                f"ARPACK stopped at maxiter={self.maxiter} restart cycles "
                f"({len(err.eigenvalues)}/{m} pairs converged)"
            )
            V = [bridge.recent(), torch.from_numpy(np.asarray(err.eigenvectors)).to(device, dtype).reshape(n, -1)]
            if X0 is not None:
                V.append(X0.detach().reshape(n, -1).to(device, dtype))
            vals_t, X, used = rayleigh_ritz(A, B, torch.cat(V, dim=-1), m, largest)
            bridge.count += used
            vals = None
        if vals is not None:
            order = np.argsort(vals)
            vals_t = torch.from_numpy(np.ascontiguousarray(vals[order])).to(device, dtype)
            X = torch.from_numpy(np.ascontiguousarray(vecs[:, order])).to(device, dtype)
        if X.shape[-1] < m:  # the Krylov space held fewer directions than pairs wanted
            pad = m - X.shape[-1]
            X = torch.cat([X, torch.zeros(n, pad, dtype=dtype, device=device)], dim=-1)
            vals_t = torch.cat([vals_t, torch.full((pad,), float("nan"), dtype=dtype, device=device)])
        rnorm, bxnorm = true_residuals(A, B, X, vals_t)
        n_matvec = bridge.count + m
        scale = vals_t.abs().nan_to_num(0.0).amax()
        rho = relative_residuals(rnorm, vals_t, bxnorm, scale).nan_to_num(float("inf"))
        sol = make_solution(
            vals_t, X, rnorm, k, g, largest,
            n_iter=bridge.count, status="converged",
            n_matvec=n_matvec, scale=scale,
        )
        return finish(sol, rho, rtol, self.on_failure, name, reason)

