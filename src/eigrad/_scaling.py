"""Exact power-of-two scaling (what LAPACK's drivers do before reducing a matrix).

``syevr``/``sygvd`` multiply ``A`` by a scalar when ``max|A|`` lies outside the
range where the reduction and the tridiagonal eigensolver are safe (squares
and products of entries neither underflow nor overflow). eigrad does the same
with a power of two, ``2**e``, chosen so that the scaled matrix has
``max|M| ∈ [0.5, 1)``. Multiplying by a power of two is exact in binary
floating point (unless a result falls below the smallest normal number, which
only loses entries far below ``eps · max|M|``), so the eigenvectors are
unchanged and the eigenvalues scale by exactly ``2**e``.

The powers of two are built from their bit patterns (no ``pow``/``exp2``,
whose rounding is the platform's), and a scaling by ``2**e`` is applied as two
factors ``2**(e//2)``, ``2**(e - e//2)``, each a normal number even when
``2**e`` is not (``|e|`` up to 2100 in float64).
"""

from __future__ import annotations

import math

import torch

_BITS = {
    torch.float64: (torch.int64, 52, 1023),
    torch.float32: (torch.int32, 23, 127),
}
#: a complex tensor is scaled by a real power of two of its component dtype
_REAL = {torch.complex128: torch.float64, torch.complex64: torch.float32}


def pow2_exponent(M: torch.Tensor, dims: int = 2, even: bool = False) -> torch.Tensor:
    """``e`` (int64, ``M.shape[:-dims]``) with ``max|M| · 2**-e ∈ [0.5, 1)`` over the last ``dims`` dimensions.

    ``0`` for an all-zero matrix. ``even=True`` rounds ``e`` down to an even
    number (``max|M| · 2**-e ∈ [0.5, 2)``), so that ``2**(e/2)`` is exact too
    (the Cholesky factor of ``2**-e B`` is that of ``B`` times ``2**(-e/2)``).
    """
    amax = M.detach().abs().amax(dim=tuple(range(-dims, 0))) if dims else M.detach().abs()
    e = torch.frexp(amax).exponent.to(torch.int64)
    e = torch.where(torch.isfinite(amax), e, torch.zeros_like(e))
    if even:
        e = e - torch.remainder(e, 2)
    return e


#: ``|e|`` (the frexp exponent of ``max|M|``) up to which a matrix is left unscaled: squares and
#: products of its entries, and of rounding-level residuals ``eps·max|M|``, stay normal numbers far
#: from overflow (float64: ``max|M|`` in about ``[1e-77, 1e77]``; float32: ``[2e-10, 4e9]``)
SAFE_EXPONENT = {torch.float64: 256, torch.float32: 32}


def in_safe_range(M: torch.Tensor, dims: int = 2) -> bool:
    """True when every matrix of ``M`` has ``max|M|`` in the range of :data:`SAFE_EXPONENT` (or is zero).

    One host synchronization. Where it holds, scaling by :func:`pow2_exponent` is not needed
    (the solvers are then as accurate unscaled; the scaled results differ by rounding only).
    NaN and inf fail it (the scaled route reports them).
    """
    if M.numel() == 0:
        return True
    lim = SAFE_EXPONENT[_REAL.get(M.dtype, M.dtype)]
    amax = M.detach().abs().amax(dim=tuple(range(-dims, 0))) if dims else M.detach().abs()
    if amax.dim() == 0:
        values = [float(amax)]
    else:  # the smallest exponent (0 for a zero matrix, which needs no scaling) and the largest magnitude
        amax = amax.reshape(-1)
        lo = torch.frexp(amax).exponent.amin().to(amax.dtype)
        hi = amax.amax()  # NaN and inf propagate
        e_lo, v_hi = torch.stack([lo, hi]).tolist()
        values = [2.0 ** (e_lo - 1), v_hi] if e_lo else [0.0, v_hi]
    for v in values:
        if not math.isfinite(v):
            return False
        e = math.frexp(v)[1]
        if not -lim <= e <= lim:
            return False
    return True


def _pow2(e: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``2**e`` exactly, for ``e`` in the normal exponent range of ``dtype``."""
    int_t, shift, bias = _BITS[_REAL.get(dtype, dtype)]
    return ((e + bias).to(int_t) << shift).view(_REAL.get(dtype, dtype))


def ldexp(M: torch.Tensor, e, dims: int = 2) -> torch.Tensor:
    """``M · 2**e`` exactly; ``e`` an int or an int tensor over ``M.shape[:-dims]`` (broadcast)."""
    if not torch.is_tensor(e):
        e = torch.tensor(int(e), dtype=torch.int64)
    e = e.to(device=M.device, dtype=torch.int64)
    e = e.reshape(tuple(e.shape) + (1,) * dims)
    e1 = torch.div(e, 2, rounding_mode="floor")
    return M * _pow2(e1, M.dtype) * _pow2(e - e1, M.dtype)
