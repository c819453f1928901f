"""Input checks shared by the public functions. Errors say what was received and what to pass."""

from __future__ import annotations

import operator

import torch


#: complex dtypes eigrad accepts where complex Hermitian input is supported, and their real precision
_COMPLEX = {torch.complex64: torch.float32, torch.complex128: torch.float64}

#: the end of the TypeError for an iterative solver without complex support
COMPLEX_OPERATORS_UNSUPPORTED = (
    "yet; pass solver='dense' or 'lapack' (the operator is materialized), or a solver that does"
)


def check_dense_matrix(name: str, M, *, allow_batch: bool = True, allow_complex: bool = False,
                       allow_empty: bool = False) -> None:
    """Type, dtype, rank and squareness of a dense matrix argument (no value checks).

    Real float32/float64; with ``allow_complex`` also complex64/complex128
    (Hermitian problems: ``eigrad.eigh``, ``eigrad.eigsh`` on dense tensors).
    ``allow_empty``: accept ``n = 0`` (``eigh``/``eigsh`` return empty results, as torch does).
    """
    if not torch.is_tensor(M):
        raise TypeError(
            f"{name} must be a torch.Tensor (dense or sparse) or an eigrad.LinearOperator; "
            f"received {type(M).__name__}. Convert arrays with torch.as_tensor({name}, dtype=torch.float64)."
        )
    if M.is_complex():
        if not allow_complex:
            raise TypeError(
                f"{name} has complex dtype {M.dtype}; this function supports real symmetric problems only "
                f"for now. Pass a real tensor (float32 or float64); eigrad.eigh and eigrad.eigsh accept "
                f"dense complex Hermitian matrices."
            )
        if M.dtype not in _COMPLEX:
            raise TypeError(
                f"{name} has dtype {M.dtype}; eigrad supports complex64 and complex128. "
                f"Use {name}.to(torch.complex128)."
            )
    elif not M.is_floating_point():
        raise TypeError(
            f"{name} has dtype {M.dtype}; pass a floating-point tensor, e.g. {name}.to(torch.float64)."
        )
    elif M.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} has dtype {M.dtype}; eigrad supports float32 and float64. Use {name}.double().")
    if M.dim() < 2:
        raise ValueError(
            f"{name} must be a matrix of shape (..., n, n); received a tensor of shape {tuple(M.shape)}."
        )
    if M.shape[-1] != M.shape[-2]:
        raise ValueError(f"{name} must be square (..., n, n); received shape {tuple(M.shape)}.")
    if M.shape[-1] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {tuple(M.shape)}); pass a matrix with n >= 1.")


def check_pair(A, B) -> None:
    """``B`` matches ``A`` in size, batch shape, precision and device.

    A real ``B`` with a complex ``A`` (or the reverse) of the same precision is
    accepted; :func:`promote_pair` converts it."""
    if B.shape[-1] != A.shape[-1]:
        raise ValueError(
            f"B has shape {tuple(B.shape)} but A has shape {tuple(A.shape)}; B must be (..., n, n) "
            f"with the same n = {A.shape[-1]} as A."
        )
    try:
        torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the batch shapes of A {tuple(A.shape[:-2])} and B {tuple(B.shape[:-2])} do not broadcast; "
            "pass B with the batch shape of A, or a single (n, n) B for the whole batch."
        ) from None
    if _precision(A.dtype) != _precision(B.dtype):
        mixed = (
            " (a real matrix is promoted to complex only at the same precision: float64 with complex128, "
            "float32 with complex64)" if A.is_complex() or B.is_complex() else ""
        )
        raise TypeError(
            f"A has dtype {A.dtype} but B has dtype {B.dtype}{mixed}; convert one, e.g. B.to(A.dtype)."
        )
    if B.device != A.device:
        raise ValueError(f"A is on {A.device} but B is on {B.device}; move them to one device, e.g. B.to(A.device).")


def _precision(dtype: torch.dtype) -> torch.dtype:
    return _COMPLEX.get(dtype, dtype)


def promote_pair(A, B):
    """``(A, B)`` in one dtype: a real matrix paired with a complex one of the same precision
    (float64 with complex128, float32 with complex64) becomes complex, as ``torch.promote_types``
    does; the conversion is differentiable (a real input gets the real part of its gradient).
    Different precisions are refused by :func:`check_pair`."""
    if B is None or B.dtype == A.dtype:
        return A, B
    dtype = torch.promote_types(A.dtype, B.dtype)
    return A.to(dtype), B.to(dtype)


def check_k(k, n: int, *, allow_zero: bool = False) -> int:
    """``k`` as a Python int in ``[1, n]`` (``[0, n]`` with ``allow_zero``).

    Any integral type is accepted, as ``operator.index`` accepts it (``int``,
    ``numpy.int64``, a 0-d integer tensor, ...); ``bool``, floats and tensors
    with dimensions are not.
    """
    bad_tensor = torch.is_tensor(k) and (k.dim() != 0 or k.dtype == torch.bool)
    try:
        if isinstance(k, bool) or bad_tensor:
            raise TypeError
        k = operator.index(k)
    except TypeError:
        what = f"a tensor of shape {tuple(k.shape)} and dtype {k.dtype}" if torch.is_tensor(k) else f"{type(k).__name__} {k!r}"
        raise TypeError(
            f"k must be an integer (int, numpy integer or 0-d integer tensor); received {what}. "
            "Pass int(k)."
        ) from None
    lo = 0 if allow_zero else 1
    if not lo <= k <= n:
        raise ValueError(f"k={k} is out of range for a matrix of size n={n}; pass {lo} <= k <= {n}.")
    return k


def check_uplo(UPLO):
    """``None`` (read ``(A + Aᵀ)/2``, check symmetry) or the triangle ``"L"``/``"U"`` (as torch, either case)."""
    if UPLO is None:
        return None
    if isinstance(UPLO, str) and UPLO.upper() in ("L", "U"):
        return UPLO.upper()
    raise ValueError(
        f"UPLO must be 'L' (read the lower triangle), 'U' (the upper) or None (the whole symmetric "
        f"matrix, checked); received {UPLO!r}."
    )


def check_values(name: str, M: torch.Tensor) -> None:
    """Finite and symmetric (complex: Hermitian) to a dtype-scaled tolerance (called on plain tensors).

    Tolerance ``16·n·eps·max|M|``. For complex ``M`` the test is on
    ``max |M - Mᴴ|``, which includes the imaginary parts of the diagonal.
    One host synchronization when ``M`` passes (NaN and inf make ``max|M - Mᴴ|``
    non-finite, so they fail the one test); the error path measures again to word its message.
    """
    n = M.shape[-1]
    eps = torch.finfo(M.dtype).eps
    if M.is_complex():
        scale = M.abs().amax()
        asym = (M - M.mH).abs().amax()
    else:
        lo, hi = torch.aminmax(M)  # one pass; NaN and ±inf propagate into the min or max
        scale = torch.maximum(-lo, hi)  # max |M|
        # M - Mᵀ is exactly antisymmetric in floating point, so its max is max |M - Mᵀ|
        asym = (M - M.transpose(-1, -2).contiguous()).amax()
    tol = 16 * n * eps * scale
    # a non-finite entry makes asym inf or NaN (its mirror difference is), so asym - tol is NaN or
    # +inf; for finite values the sign of asym - tol is exact (both >= 0: no overflow)
    if bool(asym - tol <= 0):
        return
    _report_values(name, M, asym, tol)


def _report_values(name: str, M: torch.Tensor, asym: torch.Tensor, tol: torch.Tensor) -> None:
    """The ``ValueError`` of :func:`check_values` for an ``M`` that failed it."""
    if not bool(torch.isfinite(M).all()):
        raise ValueError(f"{name} contains NaN or inf; pass a finite matrix.")
    if M.is_complex():
        raise ValueError(
            f"{name} is not Hermitian: max |{name} - {name}ᴴ| = {float(asym):.3e} exceeds the tolerance "
            f"{float(tol):.3e} (16·n·eps·max|{name}|; imaginary parts of the diagonal included). eigrad "
            f"solves complex Hermitian problems; pass ({name} + {name}.mH) / 2 if the asymmetry is rounding."
        )
    raise ValueError(
        f"{name} is not symmetric: max |{name} - {name}ᵀ| = {float(asym):.3e} exceeds the tolerance "
        f"{float(tol):.3e} (16·n·eps·max|{name}|). eigrad solves real symmetric problems; pass "
        f"({name} + {name}.mT) / 2 if the asymmetry is rounding."
    )
