"""``spectral_norm``: the largest singular value through ``λ_max`` of the Gram operator."""

from __future__ import annotations

import torch

import dataclasses

from .._api import _backward_options, eigsh
from .._options import BackwardOptions
from .._scaling import ldexp, pow2_exponent
from ..operators import FunctionOperator


def _gram(X, W):  # WᵀW X without forming WᵀW
    return W.mT @ (W @ X)


def _cogram(X, W):  # W Wᵀ X
    return W @ (W.mT @ X)


def spectral_norm(W: torch.Tensor, *, solver: str = "auto", backward: BackwardOptions | None = None) -> torch.Tensor:
    """Largest singular value ``σ_max(W) = sqrt(λ_max(WᴴW))`` with its exact gradient ``u vᴴ``.

    Parameters
    ----------
    W : Tensor (*batch, m, n)
        Real (float32, float64) or complex (complex64, complex128). For
        complex ``W`` the gradient follows PyTorch's convention
        (``dσ = Re tr(Ḡᴴ dW)`` with ``Ḡ = u vᴴ``, as
        ``torch.linalg.matrix_norm(W, 2)``); ``σ`` is real.
    solver : str
        As for :func:`eigrad.eigsh` on operators (unbatched real ``W``: the
        Gram matrix of the smaller side is applied matrix-free,
        ``X -> Wᵀ(W X)``; ``"auto"`` materializes it up to ``min(m, n) = 200``
        and takes ARPACK's Lanczos above) or on dense matrices (batched or
        complex ``W``: the Gram matrix ``WᴴW`` or ``WWᴴ`` is formed, as
        eigrad's operators are real-only).
    backward : BackwardOptions, optional
        Degeneracy tolerances and gauge policy.

    Returns
    -------
    Tensor (*batch,)

    Notes
    -----
    The backward needs no linear solve: ``∂λ_max/∂W = 2 W v vᴴ``
    (Hellmann–Feynman), one vector-Jacobian product of ``W ↦ Wᴴ(W v)``.
    When the two largest singular values coincide (within the degeneracy
    tolerance) ``σ_max`` has no gradient, only a set of subgradients
    ``{U_g S V_gᴴ : S ⪰ 0, tr S = 1}``: this is reported with a
    :class:`eigrad.GaugeWarning` (``gauge="raise"``: an error) that names the
    repeated singular value, and the returned gradient ``u vᴴ`` is one
    subgradient. Singular values that are only nearly equal (distinct to
    working accuracy, docs/guide.md) have the ordinary gradient ``u vᴴ`` and
    are not reported. At ``σ_max = 0`` the gradient is infinite.

    ``W`` is scaled by an exact power of two to ``max|W| ∈ [0.5, 1)`` first
    (a constant of the computation, so the value is scaled back and the
    gradient, which is scale invariant, passes through unchanged): the Gram
    matrix ``WᵀW`` would underflow to zero below ``max|W| ≈ 1e-154`` (float64)
    or overflow above ``1e154``, and every finite ``W`` gets its norm to the
    working precision.
    """
    if not torch.is_tensor(W) or W.layout != torch.strided:
        raise TypeError(f"W must be a dense torch.Tensor (*batch, m, n); received {type(W).__name__}.")
    if W.dim() < 2 or W.shape[-1] == 0 or W.shape[-2] == 0:
        raise ValueError(f"W must have shape (*batch, m, n) with m, n >= 1; received {tuple(W.shape)}.")
    if W.dtype not in (torch.float32, torch.float64, torch.complex64, torch.complex128):
        raise TypeError(
            f"W has dtype {W.dtype}; pass a float32, float64, complex64 or complex128 tensor (W.to(torch.float64))."
        )
    m, n = W.shape[-2:]
    e = pow2_exponent(W)  # (*batch,): a constant, not differentiated
    W = ldexp(W, -e)
    if W.dim() == 2 and not W.is_complex():
        p, fn = (n, _gram) if n <= m else (m, _cogram)
        A = FunctionOperator(fn, (W,), (p, p))
    else:  # batched, or complex (eigrad's operators are real): the dense Hermitian Gram matrix
        A = W.mH @ W if n <= m else W @ W.mH
    opts = dataclasses.replace(_backward_options(backward), _caller="spectral_norm")  # the reports speak of σ, W
    lam = eigsh(A, 1, largest=True, solver=solver, backward=opts).eigenvalues[..., 0]
    return ldexp(lam.clamp_min(0).sqrt(), e, dims=0)
