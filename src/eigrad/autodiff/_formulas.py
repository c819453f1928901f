"""Reverse- and forward-mode formulas of MATH.md, written once for every operator.

Real symmetric and complex Hermitian problems share these functions: every
transpose is the conjugate transpose ``ᴴ`` (``.mH``, the plain transpose for
real tensors) and ``sym`` is the Hermitian part (MATH-complex: PyTorch's
convention ``dL = Re tr(Z̄ᴴ dZ)``; eigenvalues and their cotangents are real).

Shapes: ``L`` (*b, K) eigenvalues, ``X`` (*b, n, K) B-orthonormal eigenvectors,
``BX = B X`` (``X`` when ``B = I``), ``D`` (*b, K, K) the cluster mask.
``solve(R, shifts)`` returns shifted solutions projected against **all** K
columns of ``X``; :func:`split_solve` adds the part inside the computed set.
"""

from __future__ import annotations

from typing import Callable

import torch

Solve = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``inner(U, V) = Uᴴ V`` over all rows; a distributed caller (eigrad.petsc: local row blocks)
#: passes one that sums the ranks' partial products, so that the formulas are the same code
Inner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mH(t):
    """The conjugate transpose of the last two dims (the transpose for real ``t``)."""
    return t.mH


def _local_inner(U, V):
    return _mH(U) @ V  # Uᴴ V (Uᵀ V for real U)


def inverse_gaps(L, D, broadening=None):
    """``E_ij = 1/(λ_i - λ_j)`` outside clusters, ``0`` inside (D); (*b, K, K).

    With a Lorentzian broadening ``ε``: ``(λ_i - λ_j)/((λ_i - λ_j)² + ε²)``.
    """
    diff = L.unsqueeze(-1) - L.unsqueeze(-2)
    safe = torch.where(D, torch.ones_like(diff), diff)
    inv = 1.0 / safe if broadening is None else safe / (safe**2 + broadening**2)
    return torch.where(D, torch.zeros_like(diff), inv)


def split_solve(R, L, X, BX, D, solve: Solve, broadening=None, inner: Inner = _local_inner):
    """``G_j r_j`` for every column (MATH.md's projected shifted solves), split in two.

    With ``r_j = B X c_j + r_j^⊥`` (``c_j = Xᴴ r_j``, ``Xᴴ r_j^⊥ = 0``), the
    solution is ``X [E ∘ C]_j + G^⊥_j r_j^⊥``: the computed eigenpairs enter
    exactly through ``E_ij = 1/(λ_i - λ_j)`` (zero inside the cluster of ``j``,
    as in MATH.md's "Full decomposition"), and the solver only sees the
    complement of all K computed vectors. Mathematically the same ``G_j``; but
    two close, unmerged eigenvalues now meet through one exact ``1/gap`` instead
    of two independent nearly singular solves whose rounding does not cancel,
    and the complement system is deflated of every computed pair.
    """
    C = inner(X, R)  # (*b, K, c)
    if inner is _local_inner and X.shape[-1] == X.shape[-2]:
        # all n eigenpairs computed (eigh): the complement is empty, G^⊥_j r_j^⊥ = 0 (its computed
        # value is rounding, B-projected away below), so the solver is not called
        return X @ (inverse_gaps(L, D, broadening) * C)
    Rperp = R - BX @ C
    Yperp = solve(Rperp, L)
    Yperp = Yperp - X @ inner(BX, Yperp)  # B-orthogonal to all computed columns
    return X @ (inverse_gaps(L, D, broadening) * C) + Yperp


def vjp_terms(L, X, BX, D, Lbar, Xbar, solve: Solve, need_B: bool, broadening=None, inner: Inner = _local_inner):
    """Reverse mode (MATH.md, "Reverse mode (VJP)"). Returns ``(L_A, L_B)``, each (*b, n, K).

    ``L_B`` is ``None`` when ``need_B`` is false. Then ``Ā = sym(L_A Xᴴ)`` and
    ``B̄ = sym(L_B Xᴴ)`` (or one VJP of the operator's product). Complex: the
    same with ``M = Xᴴ X̄`` (MATH-complex, "Reverse mode"); ``Λ̄`` is real.
    """
    Dm = D.to(X.dtype)
    LA = torch.zeros_like(X) if Lbar is None else X * Lbar.unsqueeze(-2)  # X Λ̄
    LB = None
    if need_B:
        LB = torch.zeros_like(X) if Lbar is None else -X * (L * Lbar).unsqueeze(-2)  # -X Λ Λ̄
    if Xbar is not None:
        DXtXbar = Dm * inner(X, Xbar)  # D ∘ (Xᴴ X̄)  (D ∘ M, MATH-complex)
        Rbar = Xbar - BX @ DXtXbar  # R̄ = X̄ - B X [D ∘ (Xᵀ X̄)]
        Ybar = split_solve(Rbar, L, X, BX, D, solve, broadening, inner)  # ȳ_j = G_j r̄_j
        Vbar = Ybar - X @ (Dm * inner(BX, Ybar))  # V̄ = Ȳ - X [D ∘ (Xᵀ B Ȳ)]
        LA = LA - Vbar  # L_A = X Λ̄ - V̄
        if need_B:
            LB = LB - 0.5 * (X @ DXtXbar) + Vbar * L.unsqueeze(-2)  # L_B = ... - ½ X [D∘(XᵀX̄)] + V̄ Λ
    return LA, LB


def jvp_terms(L, X, BX, D, AdX, BdX, solve: Solve, broadening=None, inner: Inner = _local_inner):
    """Forward mode (MATH.md, "Forward mode (JVP)"). Returns ``(Λ', X')``.

    ``AdX = A' X`` (*b, n, K) and ``BdX = B' X`` or ``None``. Complex:
    ``Λ' = Re diag(Xᴴ V')`` (MATH-complex, "Forward mode"), real.
    """
    Dm = D.to(X.dtype)
    Vd = AdX if BdX is None else AdX - BdX * L.unsqueeze(-2)  # V' = A' X - B' X Λ
    XtVd = inner(X, Vd)
    # Λ' = Re diag(Xᴴ V') (the eigen-Functions replace it inside degenerate clusters by the
    # eigenvalues of the cluster's block, _degenerate.cluster_frames)
    Ld = torch.diagonal(XtVd, dim1=-2, dim2=-1)
    if Ld.is_complex():
        Ld = Ld.real
    Rd = Vd - BX @ (Dm * XtVd)  # R' = V' - B X [D ∘ (Xᵀ V')]
    Yd = split_solve(Rd, L, X, BX, D, solve, broadening, inner)  # y'_j = G_j r'_j
    Yd = Yd - X @ (Dm * inner(BX, Yd))  # B-projected against each cluster
    Xd = -Yd  # X' = -½ X [D ∘ (Xᵀ B' X)] - Y'
    if BdX is not None:
        Xd = Xd - 0.5 * (X @ (Dm * inner(X, BdX)))
    return Ld, Xd


def full_simple_vjp(L, X, Lbar, Xbar, Lf=None, Xf=None, offset=0):
    """``Ā`` of a standard problem (``B = I``) from its whole eigenbasis, every wanted eigenvalue simple
    (D = I): MATH.md, "Full decomposition", ``Ā = X [diag(Λ̄) + F ∘ skew(Xᴴ X̄)] Xᴴ`` with
    ``F_ij = 1/(λ_j - λ_i)`` off the diagonal, written ``herm(X [diag(Λ̄) + F ∘ (Xᴴ X̄)] Xᴴ)`` (``F`` is
    antisymmetric, so the Hermitian part of ``F ∘ M`` is ``F ∘ skew(M)``).

    ``L`` (*b, k), ``X`` (*b, n, k) the wanted pairs; for ``k < n`` the whole eigenbasis ``Lf``
    (*b, n), ``Xf`` (*b, n, n) with the wanted at columns ``offset .. offset + k``: the projected
    shifted solves are then diagonal in it, ``Ā = herm(Xf [F ∘ (Xfᴴ X̄) + E_Λ̄] Xᴴ)``, ``F_ij =
    1/(λ_j - λf_i)`` and ``E_Λ̄`` holding ``Λ̄_j`` at row ``offset + j``. :func:`vjp_terms` with ``D = I``
    and the eigenbasis solve computes the same up to rounding through projections that ``XᴴX = I``
    makes vanish; this is the fast path of small dense problems (about half the tensor operations).
    """
    if Lf is None:
        Lf, Xf = L, X
    k = L.shape[-1]
    if Xbar is None:
        inner = Xf.new_zeros(*Lf.shape, k)
    else:
        # F_ij = 1/(λ_j - λf_i): ±inf where i is j's own row, whose entries are overwritten by Λ̄ (or 0)
        inner = (_mH(Xf) @ Xbar) * (1.0 / (L.unsqueeze(-2) - Lf.unsqueeze(-1)))
    # out of place: the legacy batched cotangents (autograd.grad(is_grads_batched=True)) refuse copy_ into
    # an unbatched tensor
    vals = torch.zeros_like(L) if Lbar is None else Lbar
    inner = torch.diagonal_scatter(inner, vals.to(inner.dtype), offset=-offset, dim1=-2, dim2=-1)
    return sym((Xf @ inner) @ _mH(X))


def sym(G: torch.Tensor) -> torch.Tensor:
    """``sym(G) = (G + Gᴴ)/2``: the symmetric part of a real ``G``, the Hermitian part of a complex one."""
    # an explicit transposed copy, updated in place, is ~3x faster than adding a strided view
    # and allocating twice (same values bitwise)
    # halved first: G + Gᴴ overflows for entries above max/2 (the same values bitwise otherwise,
    # as halving is exact in the normal range)
    T = _mH(G).clone(memory_format=torch.contiguous_format)
    return T.mul_(0.5).add_(G, alpha=0.5)
