"""Public spectral functions: ``funm``, ``sqrtm``, ``logm``, ``expm``, ``powm``, ``projector``.

Each returns ``F = X f(Λ) Xᵀ`` over all eigenpairs of ``A X = B X Λ``,
``Xᵀ B X = I`` (or the ``k`` smallest/largest) with exact derivatives at
repeated eigenvalues (Daleckii–Krein; docs/spectral.md). Dense complex
Hermitian input reads ``ᵀ`` as ``ᴴ``. No numerics here.
"""

from __future__ import annotations

import torch

from .._api import _backward_options, _check_progress, _dense_solver, _operator_config
from .._options import BackwardOptions
from .._validation import check_dense_matrix, check_k, check_pair, promote_pair
from ..eigensolvers import DenseEigh
from ._divided import ExpFn, LogFn, OnesFn, PowerFn, SpectralFn, SqrtFn, as_spectral_fn
from ..operators import as_operator
from ._function import SpectralFunction
from ._operator import operator_spectral

_B_MEANING = """
    With ``B``, the result is ``X f(Λ) Xᵀ`` for the B-orthonormal eigenvectors
    (``A X = B X Λ``, ``Xᵀ B X = I``), which equals ``f(B⁻¹A) B⁻¹``: so
    ``F @ B = f(B⁻¹A)`` and ``B @ F = f(A B⁻¹)``."""


def _check_inputs(A, B):
    """Checked dense ``(A, B)`` in one dtype: real symmetric or complex Hermitian (a real ``B`` with a
    complex ``A``, or the reverse, of the same precision is promoted to complex, as in eigrad.eigh)."""
    for name, M in (("A", A), ("B", B)):
        if M is None:
            continue
        check_dense_matrix(name, M, allow_complex=True)
        if M.layout != torch.strided:
            raise TypeError(
                f"{name} has layout {M.layout}; the spectral functions take dense matrices. "
                f"Pass {name}.to_dense()."
            )
    if B is not None:
        check_pair(A, B)
    return promote_pair(A, B)


#: above this size ``k=None`` on an operator (all n eigenpairs of the materialized matrix) is refused
_FULL_OPERATOR_MAX_N = 2048


def _is_dense(M) -> bool:
    return torch.is_tensor(M) and M.layout == torch.strided


def _apply_operator(A, fn, k, B, largest, solver, backward, progress=False) -> torch.Tensor:
    """Sparse / matrix-free ``A`` or ``B``: gradients to the operators' tensors (docs/spectral.md)."""
    if not isinstance(largest, bool):
        raise TypeError(f"largest must be a bool, received {type(largest).__name__} {largest!r}.")
    opts = _backward_options(backward)
    Aop = as_operator(A, name="A")
    n = Aop.n
    for name, op in (("A", Aop), ("B", None if B is None else as_operator(B, name="B"))):
        if op is not None and op.dtype.is_complex:
            raise TypeError(
                f"{name} is a complex operator ({op.dtype}); the spectral functions support real symmetric "
                "operators only for now. Pass the dense matrix (A.to_dense()): eigrad.funm takes dense "
                "complex Hermitian tensors."
            )
    if k is None and n > _FULL_OPERATOR_MAX_N:
        raise ValueError(
            f"k=None asks for f of the whole {n}×{n} operator: all n eigenpairs of its materialized matrix "
            f"(eigrad does this only for n <= {_FULL_OPERATOR_MAX_N}). Pass k, the number of smallest (or "
            "largest=True) eigenpairs that f should act on (F = X_k f(Λ_k) X_kᵀ, exact derivatives by "
            "projected MINRES), or pass A.to_dense() if you do want the full matrix function."
        )
    cfg, tensors = _operator_config(A, k, B, largest, solver, None, None, opts, progress=progress)
    return operator_spectral(cfg, fn, tensors, n)


def _apply(A, fn: SpectralFn, k, B, largest, solver, backward, progress=False) -> torch.Tensor:
    if not _is_dense(A) or (B is not None and not _is_dense(B)):
        return _apply_operator(A, fn, k, B, largest, solver, backward, progress)
    A, B = _check_inputs(A, B)
    if not isinstance(largest, bool):
        raise TypeError(f"largest must be a bool, received {type(largest).__name__} {largest!r}.")
    n = A.shape[-1]
    opts = _backward_options(backward)
    if k is None:
        k = n
        s = DenseEigh() if solver == "auto" else _dense_solver(solver, A, n, k)
    else:
        k = check_k(k, n)
        s = _dense_solver(solver, A, n, k)
    if opts.broadening is not None and k < n and solver == "auto":
        s = DenseEigh()  # the tridiagonal backward cannot apply a broadening
    return SpectralFunction.apply(A, B, fn, k, largest, s, opts)[0]


def funm(
    A: torch.Tensor,
    f,
    k: int | None = None,
    *,
    B: torch.Tensor | None = None,
    largest: bool = False,
    solver: str = "auto",
    progress: bool = False,
    backward: BackwardOptions | None = None,
) -> torch.Tensor:
    """``X f(Λ) Xᵀ`` over all eigenpairs of symmetric ``A`` (or the k smallest/largest); complex Hermitian: ``X f(Λ) Xᴴ``.

    Parameters
    ----------
    A : Tensor (*batch, n, n), sparse Tensor, LinearOperator, scipy matrix
        Real symmetric, float32 or float64 (dense: read as ``(A + Aᵀ)/2``);
        dense tensors may also be complex Hermitian, complex64 or complex128
        (read as ``(A + Aᴴ)/2``; ``f`` acts on the real eigenvalues, ``F`` is
        complex Hermitian, gradients follow PyTorch's convention
        ``dL = Re tr(Āᴴ dA)``; a real ``B`` of the same precision is
        promoted). Complex operators raise ``TypeError``.
        Sparse and matrix-free operators as for :func:`eigrad.eigsh`
        (gradients to their tensors); with ``k=None`` they are materialized
        (``n <= 2048``).
    f : callable or (callable, callable)
        An elementwise torch function of the eigenvalues (``torch.exp``,
        ``lambda x: torch.tanh(x / 2)``): its derivative comes from
        forward-mode autograd. Or a pair ``(f, fprime)`` with the derivative.
        ``f`` must not close over tensors that require gradients.
    k : int, optional
        ``None``: all eigenpairs, ``F = f(A)``. Else the ``k`` smallest (or
        largest) only: ``F = X_k f(Λ_k) X_kᵀ``.
    B : Tensor (*batch, n, n), optional
        Symmetric (complex: Hermitian) positive definite mass matrix.
    largest : bool
        With ``k``: the ``k`` largest eigenpairs instead of the smallest.
    solver : str or eigensolver
        Forward eigensolver, as for :func:`eigrad.eigsh` (``"auto"`` takes the
        full ``torch.linalg.eigh`` when ``k`` is ``None``; operators also
        ``"arpack"``, ``"primme"``, ``"lobpcg"``).
    progress : bool
        For operators solved iteratively: report the forward eigensolve and
        the backward's shifted solves as :func:`eigrad.eigsh` does (tqdm bar
        or stderr lines). A no-op for dense tensors. Default: silent.
    backward : BackwardOptions, optional
        Degeneracy tolerances, gauge policy (for ``k`` cutting a cluster),
        broadening.

    Returns
    -------
    Tensor (*batch, n, n)
        Symmetric (complex input: Hermitian, of ``A``'s dtype).

    Notes
    -----
    Derivatives are exact at repeated eigenvalues: the Daleckii–Krein
    divided differences ``f[λ_i, λ_j]`` are formed without cancellation, and
    with ``k`` the coupling to the uncomputed eigenpairs goes through the
    projected shifted solves of :func:`eigrad.eigsh`. A ``k`` that cuts a
    degenerate cluster makes ``F`` itself non-unique and is reported
    (:class:`eigrad.GaugeWarning`, or :class:`eigrad.GaugeError` with
    ``gauge="raise"``) with the ``k`` values that keep the cluster whole.
    Raises ValueError when ``f`` is not finite at an eigenvalue.
    """
    if _is_dense(A):
        _check_inputs(A, B)
    _check_progress(progress)
    dtype = A.dtype if _is_dense(A) else as_operator(A, name="A").dtype
    real = torch.empty((), dtype=dtype).real.dtype  # f acts on the (real) eigenvalues, also of a complex A
    return _apply(A, as_spectral_fn(f, real), k, B, largest, solver, backward, progress)


funm.__doc__ += _B_MEANING


def expm(A: torch.Tensor, *, B: torch.Tensor | None = None, backward: BackwardOptions | None = None) -> torch.Tensor:
    """Matrix exponential of symmetric (or complex Hermitian) ``A``: ``X exp(Λ) Xᵀ``, exact derivatives at
    repeated eigenvalues.

    Divided differences ``exp(max(a,b)) · (1 - exp(-|a-b|)) / |a-b|`` (no
    cancellation). See :func:`funm` for ``B`` and ``backward``.
    """
    return _apply(A, ExpFn(), None, B, False, "auto", backward)


def logm(A: torch.Tensor, *, B: torch.Tensor | None = None, backward: BackwardOptions | None = None) -> torch.Tensor:
    """Principal logarithm of symmetric (or complex Hermitian) positive definite ``A``: ``X log(Λ) Xᵀ``.

    Raises ValueError naming the eigenvalue(s) ``<= 0``. Divided differences
    ``log1p((hi - lo)/lo) / (hi - lo)``. See :func:`funm` for ``B``.
    """
    return _apply(A, LogFn(), None, B, False, "auto", backward)


def sqrtm(A: torch.Tensor, *, B: torch.Tensor | None = None, backward: BackwardOptions | None = None) -> torch.Tensor:
    """Principal square root of symmetric (or complex Hermitian) positive semidefinite ``A``: ``X √Λ Xᵀ``.

    Eigenvalues within the rounding level of zero, ``|λ| <= 16 n eps max|λ|``,
    are set to 0 (a rank-deficient PSD matrix computes them with either sign);
    a more negative one raises ValueError naming it. At a zero eigenvalue the
    derivative exists only for cotangents (tangents) without a component on
    the null space (``x_iᵀ W x_j = 0`` for ``λ_i = λ_j = 0``); otherwise it is
    infinite and ``backward()`` raises ValueError (docs/spectral.md, "Domains
    and errors"). Divided differences ``1/(√a + √b)``. See :func:`funm` for ``B``.
    """
    return _apply(A, SqrtFn(), None, B, False, "auto", backward)


def powm(
    A: torch.Tensor, p: float, *, B: torch.Tensor | None = None, backward: BackwardOptions | None = None
) -> torch.Tensor:
    """Real power ``X Λ^p Xᵀ`` of symmetric (or complex Hermitian) ``A``.

    Parameters
    ----------
    p : float
        Integer ``p >= 0``: any symmetric ``A``; integer ``p < 0``: ``A``
        nonsingular; non-integer ``p > 0``: positive semidefinite (eigenvalues
        within ``16 n eps max|λ|`` of zero are set to 0, as in :func:`sqrtm`;
        for ``0 < p < 1`` the derivative at a zero eigenvalue exists only as
        there); ``p < 0``: positive definite (ValueError naming the offending
        eigenvalue otherwise). A Python number; the derivative with respect to ``p`` is
        not computed.

    Notes
    -----
    Divided differences ``lo^(p-1) expm1(p log1p(t)) / t``, ``t = (hi-lo)/lo``.
    See :func:`funm` for ``B``.
    """
    if torch.is_tensor(p):
        if p.requires_grad or p.numel() != 1:
            raise TypeError(
                "powm takes the exponent p as a number; received a tensor"
                + (" that requires a gradient (the derivative in p is not computed)" if p.requires_grad else
                   f" of shape {tuple(p.shape)}")
                + ". Pass float(p)."
            )
        p = float(p)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or p != p or abs(p) == float("inf"):
        raise TypeError(f"powm needs a finite real exponent p; received {p!r}.")
    return _apply(A, PowerFn(p), None, B, False, "auto", backward)


def projector(
    A: torch.Tensor,
    k: int,
    *,
    B: torch.Tensor | None = None,
    largest: bool = False,
    solver: str = "auto",
    backward: BackwardOptions | None = None,
) -> torch.Tensor:
    """Spectral projector ``X_k X_kᵀ`` onto the k smallest (or largest) eigenvectors.

    Exact derivatives also when eigenvalues inside the k are repeated; a
    ``k`` that cuts a degenerate cluster is reported (the eigenspace is then
    not unique). With ``B``, ``X_k X_kᵀ B`` is the B-orthogonal projector
    onto the eigenspace (``Xᵀ B X = I``). Parameters as in :func:`funm`.
    """
    if k is None:
        raise TypeError("projector needs k, the dimension of the eigenspace (1 <= k <= n); received None.")
    return _apply(A, OnesFn(), k, B, largest, solver, backward)
