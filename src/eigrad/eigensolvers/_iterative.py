"""Pieces shared by the iterative eigensolvers (ARPACK, PRIMME, LOBPCG).

B-orthonormalization that survives rank loss (SVQB), Rayleigh–Ritz, the
convergence test of ``_options``, the failure policy, a dense fallback for
tiny problems, and the torch <-> numpy bridge that counts matrix-vector
products for the scipy-based solvers.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .. import _monitor
from .._errors import ConvergenceError, ConvergenceWarning
from ..linsolve._minres import preconditioner_apply
from ._base import EigSolution
from ._definite import negative_norm_error
from ._reduce import back_transform, scaled_standard_form, unscale_eigenvalues


def sym(H: torch.Tensor) -> torch.Tensor:
    """The symmetric part (complex: the Hermitian part)."""
    return 0.5 * (H + H.mH)


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of eigenvalues and norms: ``dtype`` itself, or the component dtype of a complex one."""
    return {torch.complex128: torch.float64, torch.complex64: torch.float32}.get(dtype, dtype)


def apply_B(B, X):
    return X if B is None else B.matmat(X)


def svqb(V: torch.Tensor, BV: torch.Tensor, tau: float | None = None, *, with_ratio: bool = False):
    """B-orthonormalize the columns of ``V`` (SVQB, Stathopoulos & Wu 2002), dropping dependent ones.

    ``G = Vᵀ B V`` is scaled to unit diagonal, ``D G D = U Θ Uᵀ``, and
    ``V ← V D U Θ^{-1/2}``; directions with ``θ <= tau · max θ`` are dropped
    (their columns set to zero) so the shape stays fixed across a batch.

    Returns ``(V, BV, valid)``: ``(*b, n, q)``, ``(*b, n, q)``, ``(*b, q)`` bool
    (and, with ``with_ratio``, the smallest kept ``θ / max θ`` over the batch,
    a measure of how much accuracy the step lost). ``BV`` is updated by the
    same combination (no operator application); pass ``BV is V`` for ``B = I``.

    With a mass matrix (``BV is not V``) ``G`` must be positive semidefinite
    to rounding: a diagonal entry ``vᵀBv`` or an eigenvalue of the scaled
    ``G`` below minus its rounding bound (``n·eps`` times the sizes of the
    products it came from, tenfold) proves that ``B`` is indefinite and raises
    a ``ValueError`` naming ``B`` (those directions were dropped silently).
    """
    q = V.shape[-1]
    finfo = torch.finfo(real_dtype(V.dtype))
    if tau is None:
        tau = 10.0 * max(q, 1) * finfo.eps
    G = sym(V.mH @ BV)  # (*b, q, q), Hermitian for complex V
    d = G.diagonal(dim1=-2, dim2=-1)
    d = d.real if d.is_complex() else d
    dinv = torch.where(d > 0, d.clamp_min(finfo.tiny).rsqrt(), torch.zeros_like(d))
    Gs = dinv.unsqueeze(-1) * G * dinv.unsqueeze(-2)
    theta, U = torch.linalg.eigh(Gs)
    if BV is not V:
        _check_gram_signs(V, BV, d, dinv, theta)
    tmax = theta.amax(dim=-1, keepdim=True).clamp_min(0)
    keep = theta > tau * tmax
    scale = torch.where(keep, theta.clamp_min(finfo.tiny).rsqrt(), torch.zeros_like(theta))
    coef = dinv.unsqueeze(-1) * U * scale.unsqueeze(-2)  # (*b, q, q)
    Vn = V @ coef
    BVn = Vn if BV is V else BV @ coef
    if not with_ratio:
        return Vn, BVn, keep
    ratio = torch.where(keep, theta / tmax.clamp_min(finfo.tiny), torch.ones_like(theta))
    return Vn, BVn, keep, float(ratio.min()) if ratio.numel() else 1.0


def _check_gram_signs(V, BV, d, dinv, theta):
    """``ValueError`` when ``G = Vᵀ B V`` is indefinite beyond rounding (see :func:`svqb`)."""
    n = V.shape[-2]
    eps = torch.finfo(real_dtype(V.dtype)).eps
    vn, bn = torch.linalg.vector_norm(V, dim=-2), torch.linalg.vector_norm(BV, dim=-2)  # (*b, q)
    tol_d = 10 * n * eps * vn * bn
    if bool((d < -tol_d).any()):
        i = int((d < -tol_d).flatten().nonzero()[0])
        raise negative_norm_error(float(d.flatten()[i]), float(tol_d.flatten()[i]))
    # |ΔGs_ij| <= n eps a_i b_j with a = ‖v‖/√d, b = ‖Bv‖/√d (directions with d <= 0 are zeroed)
    tol_t = 10 * n * eps * (torch.linalg.vector_norm(vn * dinv, dim=-1) * torch.linalg.vector_norm(bn * dinv, dim=-1))
    tmin = theta[..., 0] if theta.shape[-1] else torch.zeros_like(tol_t)
    if bool((tmin < -tol_t).any()):
        i = int((tmin < -tol_t).flatten().nonzero()[0])
        raise negative_norm_error(float(tmin.flatten()[i]), float(tol_t.flatten()[i]))


def relative_residuals(rnorm, evals, bxnorm, nu):
    """``‖r_i‖ / (max(|λ_i|, eps^{1/4} ν) ‖B x_i‖)`` (the criterion of ``_options``)."""
    eps = torch.finfo(evals.dtype).eps
    floor = (eps**0.25) * torch.as_tensor(nu, dtype=evals.dtype, device=evals.device)
    denom = torch.maximum(evals.abs(), floor.unsqueeze(-1) if floor.dim() else floor) * bxnorm
    tiny = torch.finfo(evals.dtype).tiny
    return rnorm / denom.clamp_min(tiny)


def true_residuals(A, B, X, L):
    """``(‖A x_i − λ_i B x_i‖, ‖B x_i‖)`` with one application of ``A`` (and ``B``)."""
    AX = A.matmat(X)
    BX = apply_B(B, X)
    R = AX - BX * L.unsqueeze(-2)
    return torch.linalg.vector_norm(R, dim=-2), torch.linalg.vector_norm(BX, dim=-2)


def split_wanted(vals, vecs, k: int, g: int, largest: bool):
    """From ``k + g`` ascending pairs: ``(L, X, Lg, Xg)``; guards lie beyond the wanted end."""
    if largest:
        return vals[..., g:], vecs[..., g:], vals[..., :g], vecs[..., :g]
    return vals[..., :k], vecs[..., :k], vals[..., k:], vecs[..., k:]


def make_solution(vals, vecs, rnorm, k, g, largest, *, n_iter, status, n_matvec, scale):
    """Assemble an :class:`EigSolution` from ``k + g`` ascending pairs and their residual norms."""
    L, X, Lg, Xg = split_wanted(vals, vecs, k, g, largest)
    r = rnorm[..., g:] if largest else rnorm[..., :k]
    return EigSolution(
        eigenvalues=L,
        eigenvectors=X,
        residual_norms=r,
        n_iter=int(n_iter),
        status=status,
        guard_eigenvalues=Lg,
        guard_eigenvectors=Xg,
        handle=None,
        n_matvec=int(n_matvec),
        scale=scale,
    )


def finish(
    solution: EigSolution, rho: torch.Tensor, rtol: float, on_failure: str, name: str, reason: str = "",
    failed: bool = False,
):
    """Apply the failure policy: return, warn, or raise with the best iterate attached.

    ``failed``: fail even if every residual passes (``reason`` says why).
    """
    worst = float(rho.max()) if rho.numel() else 0.0
    ok = bool((rho <= rtol).all()) and not failed
    if ok:
        return solution
    n_bad = int((~(rho <= rtol)).sum())
    msg = (
        f"{name} could not certify its result: {reason}. "
        "Raise maxiter, loosen rtol, or choose another solver."
    ) if n_bad == 0 else (
        f"{name} did not converge: {n_bad} of {rho.numel()} eigenpairs (wanted and guards) miss the "
        f"relative residual tolerance rtol={rtol:.1e} (worst {worst:.2e}) after {solution.n_iter} "
        f"iterations and {solution.n_matvec} operator applications"
        + (f"; {reason}" if reason else "")
        + ". Raise maxiter, loosen rtol, pass a preconditioner or a better X0, or choose another solver."
    )
    solution = EigSolution(**{**solution.__dict__, "status": msg})
    if on_failure == "warn":
        warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        return solution
    raise ConvergenceError(msg, solution=solution)


def dense_fallback(A, B, k: int, g: int, largest: bool) -> EigSolution:
    """Tiny problems: the dense matrix and ``torch.linalg.eigh`` (exact, ``n`` applications)."""
    n = A.shape[-1]
    Ad = sym(A.to_dense())
    Bd = None if B is None else sym(B.to_dense())
    for name, M in (("A", Ad), ("B", Bd)):
        if M is not None and not bool(M.isfinite().all()):
            raise ValueError(nonfinite_message(f"{name}.matmat", "when the operator was materialized (applied "
                                               "to the identity: a small problem is solved densely)"))
    C, Lc, s = scaled_standard_form(Ad, Bd)
    mu, W = torch.linalg.eigh(C)
    evals = unscale_eigenvalues(mu, s)
    evecs = W if Lc is None else back_transform(Lc, W)
    lo, hi = (n - k - g, n) if largest else (0, k + g)
    vals, vecs = evals[..., lo:hi], evecs[..., lo:hi]
    rnorm, _ = true_residuals(A, B, vecs, vals)
    return make_solution(
        vals, vecs, rnorm, k, g, largest, n_iter=1, status="converged", n_matvec=n + k + g,
        scale=evals.abs().amax(dim=-1),
    )


def as_apply(preconditioner, name: str, n: int | None = None):
    """A preconditioner as a function ``X (*b, n, q) -> T X``: None, a LinearOperator, a tensor, or a callable.

    With ``n``, a matrix or an operator of another size is refused at once; every application's output
    is checked to be a tensor of the input's shape (host metadata, no synchronization).
    """
    return preconditioner_apply(preconditioner, n, label=f"{name}: the preconditioner")


def nonfinite_message(what: str, where: str) -> str:
    """The error for NaN or inf in an operator's (or preconditioner's) output during an iteration."""
    return (
        f"{what} returned NaN or inf {where}; the eigensolver cannot continue. The probe before the solve "
        "was finite, so the product became non-finite for these vectors: check matmat (overflow, a "
        "division by zero, uninitialized memory) and the scale of the operator."
    )


def rayleigh_ritz(A, B, V: torch.Tensor, m: int, largest: bool):
    """Best ``m`` pairs of ``A`` (ascending) in ``span V`` (``(n, q)``, possibly dependent).

    Returns ``(vals (m,), vecs (n, m), n_matvec)``; fewer than ``m`` if the span is smaller.
    """
    V, BV, _ = svqb(V, apply_B(B, V))
    V, BV, keep = svqb(V, apply_B(B, V))
    V = V[..., keep]
    AV = A.matmat(V)
    theta, C = torch.linalg.eigh(sym(V.mH @ AV))
    m = min(m, V.shape[-1])
    C = C[..., -m:] if largest else C[..., :m]
    return theta[-m:] if largest else theta[:m], V @ C, V.shape[-1]


class NumpyBridge:
    """``A.matmat`` as a scipy ``LinearOperator`` on numpy arrays, counting columns.

    Keeps the last ``keep`` input vectors (ARPACK's Lanczos vectors, PRIMME's
    basis vectors) so that a best iterate can be formed by Rayleigh–Ritz
    after a failure.
    """

    def __init__(self, op, keep: int = 0, what: str = "A.matmat"):
        import scipy.sparse.linalg as spla

        self.op = op
        self.what = what
        self.n = op.shape[-1]
        self.count = 0
        self.keep = keep
        self._ring = None
        self._pos = 0
        self._filled = 0
        dtype = {torch.float64: np.float64, torch.float32: np.float32, torch.complex128: np.complex128,
                 torch.complex64: np.complex64}[op.dtype]
        self.linop = spla.LinearOperator((self.n, self.n), matvec=self._mv, matmat=self._mm, dtype=dtype)

    def _mm(self, x: np.ndarray) -> np.ndarray:
        X = torch.from_numpy(np.ascontiguousarray(x).reshape(self.n, -1)).to(self.op.device, self.op.dtype)
        self._record(X)
        self.count += X.shape[-1]
        mon = _monitor.active()
        if mon is not None:  # eigsh_ex / progress=True: scipy's solvers report nothing else mid-run
            mon.add_matvecs(X.shape[-1])
        Y = self.op.matmat(X)
        if not torch.is_tensor(Y) or Y.shape != X.shape:
            got = f"shape {tuple(Y.shape)}" if torch.is_tensor(Y) else f"a {type(Y).__name__}"
            raise ValueError(
                f"{self.what} returned {got} for X of shape {tuple(X.shape)}; it must return a tensor "
                "of the shape of X."
            )
        y = Y.cpu().numpy()
        # y is on the host already (ARPACK/PRIMME need it there): the check adds no synchronization
        if not np.isfinite(y).all():
            raise ValueError(nonfinite_message(self.what, f"at operator application {self.count} of the eigensolver"))
        return y

    def _mv(self, x: np.ndarray) -> np.ndarray:
        return self._mm(x).reshape(-1)

    def _record(self, X: torch.Tensor) -> None:
        if not self.keep:
            return
        if self._ring is None:
            self._ring = torch.zeros(self.n, self.keep, dtype=X.dtype, device=X.device)
        for j in range(X.shape[-1]):
            self._ring[:, self._pos] = X[:, j]
            self._pos = (self._pos + 1) % self.keep
            self._filled = min(self._filled + 1, self.keep)

    def recent(self) -> torch.Tensor:  # (n, <= keep)
        if self._ring is None:
            return torch.zeros(self.n, 0, dtype=self.op.dtype, device=self.op.device)
        return self._ring[:, : self._filled]


def to_numpy_block(X: torch.Tensor) -> np.ndarray:
    return np.asfortranarray(X.detach().cpu().numpy())
