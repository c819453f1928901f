"""Cheap checks that a mass matrix ``B`` given as an operator is symmetric positive definite.

The dense paths learn it from the Cholesky factorization (``_reduce.cholesky_of_B``).
An iterative solver cannot afford that, and its own B-Gram matrices do not
reveal an indefinite ``B`` reliably: LOBPCG minimizes the Rayleigh quotient
over the cone ``xᵀ B x > 0`` and stays inside it (measured on a 1D problem,
n = 300, with ``B`` SPD but for one negative eigenvalue: every B-Gram matrix
it formed was positive definite, the cosine ``vᵀBv / (‖v‖ ‖Bv‖)`` of its
vectors never fell below 0.3, and it returned the smallest positive-norm
eigenvalues without a sign that the pencil's smallest, -0.86, was skipped).
So, before iterating, :func:`check_B_positive` runs a short Lanczos process on
``B`` alone; every Ritz value lies in ``[λ_min(B), λ_max(B)]``, so a Ritz value
at or below ``n·eps·θ_max`` proves that ``B`` is indefinite or singular to
working precision. ``LANCZOS_STEPS`` applications of ``B`` to one vector
(per batch element) and ``O(n · steps²)`` work: a few percent of one
iterative solve, and no ``O(n³)`` step. It finds the negative or zero
eigenvalues that stand apart from the rest of ``B``'s spectrum (a negative
outlier, a null vector next to a positive spectrum) and, for ``n <=
LANCZOS_STEPS``, all of them; a negative eigenvalue hidden among many tiny
positive ones can escape it, and the solvers' own checks stay in place
(negative ``vᵀBv`` of any vector they B-normalize, :func:`check_B_gram` on the
result, ARPACK's CG breakdown).
"""

from __future__ import annotations

import numpy as np
import torch

#: Lanczos steps of :func:`check_B_positive`
LANCZOS_STEPS = 32

NOT_SPD = "B is not symmetric positive definite: "
PASS_SPD = " Pass a symmetric positive definite mass matrix B, or B=None for the standard problem."


def check_B_positive(B, seed: int = 0) -> None:
    """``ValueError`` naming ``B`` when a short Lanczos run on ``B`` finds a Ritz value ``<= n·eps·θ_max``."""
    n = B.shape[-1]
    batch = tuple(B.shape[:-2])
    dtype, device = B.dtype, B.device
    rdtype = {torch.complex128: torch.float64, torch.complex64: torch.float32}.get(dtype, dtype)
    eps = torch.finfo(rdtype).eps  # complex Hermitian B: ᴴ below, real Lanczos coefficients
    steps = min(n, LANCZOS_STEPS)
    gen = np.random.default_rng([seed, 7])

    def fresh(j):  # a random unit vector orthogonal to the first j Lanczos vectors
        u = torch.from_numpy(gen.uniform(-1.0, 1.0, (*batch, n, 1))).to(device=device, dtype=dtype)
        for _ in range(2):
            u = u - V[..., :j] @ (V[..., :j].mH @ u)
        return u / torch.linalg.vector_norm(u, dim=-2, keepdim=True)

    V = torch.zeros(*batch, n, steps, dtype=dtype, device=device)
    alpha = torch.zeros(*batch, steps, dtype=rdtype, device=device)
    beta = torch.zeros(*batch, max(steps - 1, 0), dtype=rdtype, device=device)
    v = fresh(0)
    for j in range(steps):
        V[..., j : j + 1] = v
        w = B.matmat(v)
        if not bool(torch.isfinite(w).all()):
            raise ValueError("B returned NaN or inf for a finite vector; pass a finite symmetric positive definite B.")
        a = (v.conj() * w).sum(dim=(-2, -1))
        alpha[..., j] = a.real if a.is_complex() else a
        if j + 1 == steps:
            break
        # full reorthogonalization (twice): the Ritz values then lie in B's spectrum to rounding
        for _ in range(2):
            w = w - V[..., : j + 1] @ (V[..., : j + 1].mH @ w)
        b = torch.linalg.vector_norm(w, dim=(-2, -1))
        scale = alpha[..., : j + 1].abs().amax(dim=-1)
        if j:
            scale = torch.maximum(scale, beta[..., :j].amax(dim=-1))
        # an invariant subspace (its Ritz values are eigenvalues): continue from a fresh vector, T splits
        done = b <= eps * scale
        beta[..., j] = torch.where(done, torch.zeros_like(b), b)
        step = (w / torch.where(done, torch.ones_like(b), b).unsqueeze(-1).unsqueeze(-1))
        v = torch.where(done.unsqueeze(-1).unsqueeze(-1), fresh(j + 1), step) if bool(done.any()) else step
    m = steps
    T = torch.diag_embed(alpha[..., :m]) + torch.diag_embed(beta[..., : m - 1], 1) + torch.diag_embed(beta[..., : m - 1], -1)
    theta = torch.linalg.eigvalsh(T)  # (*batch, m)
    lo, hi = theta[..., 0], theta.abs().amax(dim=-1)
    bad = lo <= n * eps * hi
    if bool(bad.any()):
        i = int(bad.flatten().nonzero()[0])
        t_lo, t_hi = float(lo.flatten()[i]), float(hi.flatten()[i])
        where = f" (batch element {tuple(int(x) for x in np.unravel_index(i, batch))})" if batch else ""
        kind = "indefinite (it has a negative eigenvalue)" if t_lo < -n * eps * t_hi else "singular to working precision"
        raise ValueError(
            NOT_SPD + f"it is {kind}{where}: a Lanczos run on B found the Ritz value {t_lo:.3e} (largest "
            f"{t_hi:.3e}), and B's smallest eigenvalue is at most its smallest Ritz value; an SPD B needs it "
            f"above n·eps·λ_max = {n * eps * t_hi:.1e}." + PASS_SPD
        )


def check_B_gram(B, X: torch.Tensor, BX: torch.Tensor | None = None) -> None:
    """``ValueError`` naming ``B`` when the Cholesky factorization of ``Xᵀ B X`` fails (k x k)."""
    if B is None or X.shape[-1] == 0:
        return
    BX = B.matmat(X) if BX is None else BX
    G = X.mH @ BX
    G = 0.5 * (G + G.mH)
    _, info = torch.linalg.cholesky_ex(G)
    if bool((info != 0).any()):
        raise ValueError(
            NOT_SPD + "the Gram matrix Xᵀ B X of the computed eigenvectors is not positive definite "
            "(its Cholesky factorization failed), so B is indefinite or singular." + PASS_SPD
        )


def negative_norm_error(value: float, scale: float) -> ValueError:
    """The error for a vector with ``vᵀ B v < 0`` beyond rounding (a certificate that B is indefinite)."""
    return ValueError(
        NOT_SPD + f"B is indefinite: the solver met a vector v with vᵀ B v = {value:.3e} < 0 "
        f"(rounding level {scale:.1e})." + PASS_SPD
    )
