"""``FunctionOperator``: a matrix-free operator ``X -> matmat(X, *params)``.

Gradients flow to ``params`` through one ``torch.func.vjp`` of
``θ ↦ matmat(X, *θ)`` (MATH.md: ``θ̄ = ∂/∂θ <L_A, A(θ) X>``, never an n×n
matrix); forward-mode tangents through one ``torch.func.jvp``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ._base import LinearOperator, OperatorSpec


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape, shape)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be (n, n), (*batch, n, n) or an int n; received {shape!r}.") from None
    if len(shape) < 2 or shape[-1] != shape[-2] or shape[-1] < 1 or any(s < 0 for s in shape):
        raise ValueError(f"shape must be (n, n) or (*batch, n, n) with n >= 1; received {shape}.")
    return shape


def _dtype_device(tensors, dtype, device, what: str):
    floats = [t for t in tensors if t.is_floating_point()]
    if dtype is None:
        dtype = floats[0].dtype if floats else torch.get_default_dtype()
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{what} has dtype {dtype}; eigrad supports float32 and float64 operators.")
    return dtype, torch.device(device)


def differentiable_positions(tensors: Sequence[torch.Tensor]) -> list[int]:
    """Indices of the floating-point tensors (the only ones a gradient can reach)."""
    return [i for i, t in enumerate(tensors) if t.is_floating_point()]


def func_vjp(apply: Callable[..., torch.Tensor], tensors: Sequence[torch.Tensor], L: torch.Tensor):
    """Gradient of ``<L, apply(*tensors)>`` w.r.t. each floating tensor (``None`` for the others)."""
    pos = differentiable_positions(tensors)
    out: list[torch.Tensor | None] = [None] * len(tensors)
    if not pos:
        return tuple(out)

    def f(*ts):
        full = list(tensors)
        for i, t in zip(pos, ts):
            full[i] = t
        return apply(*full)

    _, pullback = torch.func.vjp(f, *[tensors[i] for i in pos])
    for i, g in zip(pos, pullback(L)):
        out[i] = g
    return tuple(out)


def func_jvp(apply: Callable[..., torch.Tensor], tensors: Sequence[torch.Tensor], dtensors, like: torch.Tensor):
    """``d/dt apply(*(tensors + t dtensors))`` at ``t = 0`` (``None`` tangents are zero)."""
    pos = [i for i in differentiable_positions(tensors) if dtensors[i] is not None]
    if not pos:
        return torch.zeros_like(like)

    def f(*ts):
        full = list(tensors)
        for i, t in zip(pos, ts):
            full[i] = t
        return apply(*full)

    _, out = torch.func.jvp(f, tuple(tensors[i] for i in pos), tuple(dtensors[i] for i in pos))
    return out


class FunctionOperator(LinearOperator):
    """A symmetric operator given by a function: ``A X = matmat(X, *params)``.

    Parameters
    ----------
    matmat : callable
        ``matmat(X, *params) -> A X`` for ``X`` of shape ``(n, m)`` (or
        ``(*batch, n, m)`` for a batched ``shape``); written in torch ops so
        that ``torch.func`` can differentiate it with respect to ``params``.
        It must be linear in ``X`` and symmetric: ``uᵀ (A v) = vᵀ (A u)``.
    params : Tensor or sequence of Tensor
        Every tensor ``A`` depends on and that should receive a gradient.
        Tensors captured by ``matmat`` from the enclosing scope are constants
        to eigrad: no gradient reaches them.
    shape : int or tuple
        ``n``, ``(n, n)`` or ``(*batch, n, n)``.
    dtype, device : optional
        Default: those of the first floating-point parameter
        (``torch.get_default_dtype()`` on the CPU without parameters).

    Examples
    --------
    A Laplacian plus a diagonal potential ``v`` that receives the gradient:

    >>> op = eigrad.FunctionOperator(lambda X, v: lap @ X + v[:, None] * X, (v,), (n, n))
    >>> L, X = eigrad.eigsh(op, 4)
    >>> L.sum().backward()          # v.grad = Σ_i x_i² (Hellmann–Feynman)
    """

    def __init__(self, matmat: Callable[..., torch.Tensor], params=(), shape=None, *, dtype=None, device=None):
        if not callable(matmat):
            raise TypeError(f"matmat must be callable as matmat(X, *params) -> A X; received {type(matmat).__name__}.")
        if shape is None:
            raise TypeError("FunctionOperator needs shape=(n, n): the operator's size cannot be inferred.")
        if torch.is_tensor(params):
            params = (params,)
        params = tuple(params)
        for i, p in enumerate(params):
            if not torch.is_tensor(p):
                raise TypeError(
                    f"params[{i}] is a {type(p).__name__}; params must be tensors. Capture other "
                    "values in matmat (e.g. with functools.partial)."
                )
        self.fn = matmat
        self.params = params
        self.shape = _check_shape(shape)
        self.dtype, self.device = _dtype_device(params, dtype, device, "FunctionOperator")

    def matmat(self, X):
        return self.fn(X, *self.params)

    def flatten(self):
        fn, shape, dtype, device = self.fn, self.shape, self.dtype, self.device
        return self.params, OperatorSpec(lambda ts: FunctionOperator(fn, ts, shape, dtype=dtype, device=device))

    def bilinear_vjp(self, L, R):
        # θ̄ = ∂/∂θ <L, A(θ) R> (MATH.md, "Reverse mode"): one VJP of the matrix-free product
        return func_vjp(lambda *ps: self.fn(R, *ps), self.params, L)

    def tangent_matmat(self, dtensors, X):
        # A' X as one JVP of θ ↦ A(θ) X (MATH.md, "Forward mode")
        return func_jvp(lambda *ps: self.fn(X, *ps), self.params, dtensors, X)
