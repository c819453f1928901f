"""Shifted solves that reuse a sparse factorization of ``A - σB`` (the shift-invert forward's).

Two routes for the backward's projected systems ``(A - λ_j B) y_j = r_j``
(MATH.md, "Clusters and the mask D", the operators ``G_j``):

* ``"minres"`` (default): projected block MINRES (:class:`ProjectedMinres`)
  preconditioned by ``(A - σB)⁻¹`` from the forward's factorization. With
  ``σ`` below the spectrum ``A - σB`` is positive definite, so the
  preconditioner is SPD, and after deflating the computed pairs the
  preconditioned operator has eigenvalues ``(μ - λ_j)/(μ - σ) ∈ (0, 1)`` for
  the eigenvalues ``μ`` not computed: a few dozen iterations, one block of
  triangular solves each, no new factorization.
* ``"lu"``: one sparse LU of ``A - λ̄ B`` per distinct shift ``λ̄`` (a cluster's
  mean; every column of a cluster shares it), the answer projected
  ``y <- y - X_g (X_gᵀ B y)`` and refined on the true, projected residual
  of ``A - λ_j B`` (the matrix is nearly singular along the cluster, and its
  members' shifts differ from ``λ̄`` by rounding).

Both check the true residual ``‖P_g (r_j - (A - λ_j B) y_j)‖ <= rtol ‖r_j‖``
and raise :class:`eigrad.ConvergenceError` otherwise. Measured on FEM pencils
(``benchmarks/shift_invert.py``, docs/benchmarks_matrix_free.md): MINRES is the
faster route (one factorization per distinct eigenvalue costs more than the
whole forward).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg as spla
import torch

from .._errors import ConvergenceError
from ..operators._scipy import ScipyLinearOperator
from ._minres import MinresInfo, ProjectedMinres


def _to_numpy(X: torch.Tensor) -> np.ndarray:
    return np.asfortranarray(X.detach().cpu().numpy())


class Factorization:
    """A sparse factorization of ``K = A - σB`` and the matrices it came from (numpy, no tensors).

    Parameters
    ----------
    lu : scipy.sparse.linalg.SuperLU
    sigma : float
    A, B : scipy.sparse matrices (``B`` None for the standard problem)
    sign : float
        ``+1`` when ``K`` is positive definite, ``-1`` when negative definite:
        ``sign · K⁻¹`` is then the SPD preconditioner.
    """

    def __init__(self, lu, sigma: float, A, B, sign: float = 1.0):
        self.lu, self.sigma, self.A, self.B, self.sign = lu, float(sigma), A, B, float(sign)
        self.n = A.shape[0]
        self.n_solves = 0

    def solve_numpy(self, x: np.ndarray) -> np.ndarray:
        self.n_solves += 1 if x.ndim == 1 else x.shape[-1]
        return self.lu.solve(np.asarray(x, dtype=self.A.dtype))

    def solve(self, R: torch.Tensor) -> torch.Tensor:  # K⁻¹ R, R (n, c)
        Y = self.solve_numpy(_to_numpy(R))
        return torch.from_numpy(np.ascontiguousarray(Y)).to(R.device, R.dtype)

    def preconditioner(self, R: torch.Tensor) -> torch.Tensor:  # sign · K⁻¹ R (SPD)
        if R.dim() > 2:
            batch, c = R.shape[:-2], R.shape[-1]
            Y = self.preconditioner(R.movedim(-2, 0).reshape(self.n, -1))
            return Y.reshape(self.n, *batch, c).movedim(0, -2)
        Y = self.solve(R)
        return Y if self.sign > 0 else -Y

    def operators(self, dtype):
        if np.iscomplexobj(self.A):  # the eigenvalues are real; the operators keep the matrix's dtype
            dtype = torch.complex128 if self.A.dtype == np.complex128 else torch.complex64
        A = ScipyLinearOperator(spla.aslinearoperator(self.A), dtype=dtype)
        B = None if self.B is None else ScipyLinearOperator(spla.aslinearoperator(self.B), dtype=dtype)
        return A, B


class FactorPreconditionedMinres:
    """``"minres"`` route: :class:`ProjectedMinres` with ``M = ±(A - σB)⁻¹`` (see the module docstring)."""

    name = "minres (shift-invert preconditioned)"

    def __init__(self, fact: Factorization, evals: torch.Tensor, *, rtol: float, maxiter: int | None = None):
        A, B = fact.operators(evals.dtype)
        self.fact = fact
        self.inner = ProjectedMinres(A, B, evals, rtol=rtol, maxiter=maxiter, preconditioner=fact.preconditioner)

    def __call__(self, R, shifts, X, M):
        start = self.fact.n_solves
        try:
            return self.inner(R, shifts, X, M)
        finally:
            self.n_solves = self.fact.n_solves - start

    @property
    def n_iter(self):
        return self.inner.n_iter

    @property
    def n_matvec(self):
        return self.inner.n_matvec

    @property
    def relative_residuals(self):
        return self.inner.relative_residuals


class ShiftedLU:
    """``"lu"`` route: one sparse LU of ``A - λ̄ B`` per distinct shift, projected and refined.

    Shifts within ``atol + rtol·|λ|`` of each other (a cluster) share one
    factorization at their mean. Each column is solved, B-projected against
    its set ``X_g`` (the mask ``M``), and refined on the true projected
    residual ``P_g (r_j - (A - λ_j B) y_j)`` until it is below ``rtol ‖r_j‖``
    (at most ``max_refine`` steps).
    """

    name = "shifted lu"

    def __init__(self, fact: Factorization, *, rtol: float, degen_atol, degen_rtol: float, max_refine: int = 4):
        self.fact = fact
        self.rtol = float(rtol)
        self.atol = float(degen_atol.max()) if torch.is_tensor(degen_atol) else float(degen_atol)
        self.degen_rtol = float(degen_rtol)
        self.max_refine = max_refine
        self.n_iter = 0
        self.n_matvec = 0
        self.relative_residuals = None

    def _groups(self, shifts: np.ndarray) -> list[np.ndarray]:
        order = np.argsort(shifts, kind="stable")
        groups, cur = [], [order[0]]
        for a, b in zip(order[:-1], order[1:]):
            if shifts[b] - shifts[a] <= self.atol + self.degen_rtol * max(abs(shifts[a]), abs(shifts[b])):
                cur.append(b)
            else:
                groups.append(np.array(cur))
                cur = [b]
        groups.append(np.array(cur))
        return groups

    def __call__(self, R, shifts, X, M):  # R (n, c), shifts (c,), X (n, K), M (K, c)
        if R.dim() != 2:
            raise ValueError(
                "the shifted-LU backward solves one problem at a time; use the default "
                "ShiftInvert(backward='minres') under torch.func.vmap over problems."
            )
        f = self.fact
        A, B = f.A, f.B
        dtype = R.dtype
        BX = X if B is None else torch.from_numpy(np.ascontiguousarray(B @ _to_numpy(X))).to(R.device, dtype)
        Mg = M.to(dtype)
        R = R - BX @ (Mg * (X.mH @ R))  # P_g r (the caller's X_gᵀ r = 0, to rounding)
        rnorm = torch.linalg.vector_norm(R, dim=-2)
        Y = torch.zeros_like(R)
        rel = torch.zeros_like(rnorm)
        s_np = shifts.detach().cpu().numpy().astype(np.float64)
        steps = 0
        for cols in self._groups(s_np):
            lam = float(s_np[cols].mean())
            K = A - lam * (B if B is not None else _identity(A))
            lu = spla.splu(K.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1,
                           options={"SymmetricMode": True})
            idx = torch.from_numpy(cols).to(R.device)
            Rc, Mc, sc = R[:, idx], Mg[:, idx], shifts[idx]
            Yc = torch.zeros_like(Rc)
            res = Rc
            target = self.rtol * rnorm[idx]
            for _ in range(self.max_refine + 1):
                steps += 1
                dY = torch.from_numpy(np.ascontiguousarray(lu.solve(_to_numpy(res)))).to(R.device, dtype)
                Yc = Yc + dY
                Yc = Yc - X @ (Mc * (BX.mH @ Yc))  # MATH.md: the answer must be projected
                KY = A @ _to_numpy(Yc) - (B @ _to_numpy(Yc) if B is not None else _to_numpy(Yc)) * sc.cpu().numpy()
                self.n_matvec += Yc.shape[-1]
                res = Rc - torch.from_numpy(np.ascontiguousarray(KY)).to(R.device, dtype)
                res = res - BX @ (Mc * (X.mH @ res))  # P_g (r - K y)
                rn = torch.linalg.vector_norm(res, dim=-2)
                if bool((rn <= target).all()):
                    break
            Y[:, idx] = Yc
            rel[idx] = rn / rnorm[idx].clamp_min(torch.finfo(dtype).tiny)
        self.n_iter = steps
        self.relative_residuals = rel
        done = rel <= self.rtol
        if not bool(done.all()):
            raise ConvergenceError(
                f"eigrad: the backward's shifted-LU solves of (A - λ_j B) y_j = r_j did not reach "
                f"rtol={self.rtol:.1e} after {self.max_refine} refinement steps (worst true relative residual "
                f"{float(rel.max()):.2e}). The gradient was not computed. Use ShiftInvert(backward='minres'), "
                "or loosen BackwardOptions(linsolve_rtol=...).",
                MinresInfo(Y, rel, steps),
            )
        return Y


def _identity(A):
    import scipy.sparse

    return scipy.sparse.identity(A.shape[0], dtype=A.dtype, format="csr")
