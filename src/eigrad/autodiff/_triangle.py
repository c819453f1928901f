"""``eigh(A, UPLO="L"|"U")``: the symmetric matrix one triangle of ``A`` describes, with torch's derivatives.

``torch.linalg.eigh(A, UPLO)`` reads one triangle and never the other (it may
hold anything, NaN included). Its gradient with respect to ``A`` is not the
derivative of the map "triangle -> symmetric matrix" (that would be supported
on the triangle, with doubled off-diagonal entries): it is the symmetric
gradient ``Ā = sym(L_A Xᵀ)`` of the matrix that was decomposed (MATH.md,
"Reverse mode"), returned whole. :class:`ReadTriangle` reproduces exactly that:
its forward mirrors the triangle, its backward and JVP pass the (symmetric)
cotangent and the tangent through unchanged. ``eigh``'s Function then
symmetrizes the tangent (``sym(Ȧ)``), as for ``UPLO=None``.

So for any ``A``, ``eigh(A, UPLO=u)`` has the derivatives of
``eigh(S)`` at ``S = tril(A) + tril(A, -1)ᵀ`` (or the upper analogue; ᴴ for complex), as torch's.
"""

from __future__ import annotations

import torch


def mirror(A: torch.Tensor, uplo: str) -> torch.Tensor:
    """``tril(A) + tril(A, -1)ᴴ`` for ``"L"``, ``triu(A) + triu(A, 1)ᴴ`` for ``"U"`` (the other triangle
    unread; for complex ``A`` the diagonal's imaginary part is dropped, as LAPACK's Hermitian drivers do)."""
    off = A.tril(-1) if uplo == "L" else A.triu(1)
    d = A.diagonal(dim1=-2, dim2=-1)
    if A.is_complex():
        d = d.real.to(A.dtype)
    return off + off.transpose(-1, -2).conj() + torch.diag_embed(d)


class ReadTriangle(torch.autograd.Function):
    """``A -> mirror(A, uplo)`` whose derivatives are the identity (torch's convention, module docstring)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(A, uplo):
        return mirror(A, uplo)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, gS):
        return gS, None

    @staticmethod
    def jvp(ctx, dA, _):
        return dA


def read_triangle(M: torch.Tensor | None, uplo: str | None) -> torch.Tensor | None:
    """``M`` as given (``uplo=None``) or the symmetric matrix its ``uplo`` triangle describes."""
    if M is None or uplo is None:
        return M
    return ReadTriangle.apply(M, uplo)
