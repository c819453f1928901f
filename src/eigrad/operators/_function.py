"""``FunctionOperator``: a matrix-free operator ``X -> matmat(X, *params)``.

Gradients flow to ``params`` through one ``torch.func.vjp`` of
``θ ↦ matmat(X, *θ)`` (MATH.md: ``θ̄ = ∂/∂θ <L_A, A(θ) X>``, never an n×n
matrix); forward-mode tangents through one ``torch.func.jvp``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.autograd.forward_ad as fwAD
from torch._C import _functorch

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
    floats = [t for t in tensors if t.is_floating_point() or t.is_complex()]
    if dtype is None:
        if not floats:
            # torch.get_default_dtype() (float32) would be a silent guess, and a float64 matmat then
            # fails inside the solver with a dtype mismatch
            raise TypeError(
                f"{what} has no floating-point parameter to take its dtype from; pass dtype=, e.g. "
                f"{what}(..., dtype=torch.float64) (and device= for a GPU operator)."
            )
        dtype = floats[0].dtype
    if any(t.is_complex() for t in floats):
        dtype = next(t.dtype for t in floats if t.is_complex())
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    if dtype not in (torch.float32, torch.float64, torch.complex64, torch.complex128):
        raise TypeError(
            f"{what} has dtype {dtype}; eigrad supports float32, float64, complex64 and complex128 operators."
        )
    return dtype, torch.device(device)


def check_product(AX, X, op, what: str):
    """``AX = op.matmat(X)`` is a tensor of ``X``'s shape (broadcast over the operator's batch) and the
    operator's dtype. Shapes and dtypes are host metadata: the check costs no device synchronization,
    so it runs on every product, not only on the first one."""
    if not torch.is_tensor(AX):
        kind = f"{type(AX).__module__}.{type(AX).__name__}"
        raise TypeError(
            f"{what} returned a {kind}, not a torch.Tensor; matmat must compute A X in torch ops (gradients "
            "and devices need them): replace numpy/scipy calls by their torch equivalents."
        )
    if X.dim() >= 2 and AX.shape != X.shape:
        try:
            want = (*torch.broadcast_shapes(X.shape[:-2], tuple(op.shape[:-2])), *X.shape[-2:])
        except RuntimeError:
            want = tuple(X.shape)
        if tuple(AX.shape) != want:
            raise ValueError(
                f"{what} returned shape {tuple(AX.shape)} for X of shape {tuple(X.shape)}; an operator of shape "
                f"{tuple(op.shape)} must return A X with the shape of X, {want}, for every number of columns."
            )
    if AX.dtype != op.dtype:
        raise TypeError(
            f"{what} returned dtype {AX.dtype} for X of dtype {X.dtype}; the operator declares {op.dtype}. "
            "Compute in X's dtype, or pass the matching dtype= to the operator."
        )
    return AX


def differentiable_positions(tensors: Sequence[torch.Tensor]) -> list[int]:
    """Indices of the floating-point tensors (the only ones a gradient can reach)."""
    return [i for i, t in enumerate(tensors) if t.is_floating_point() or t.is_complex()]


def _under_transform() -> bool:
    """Inside a torch.func transform (grad, vjp, jvp, vmap, jacrev, ...)."""
    return _functorch.peek_interpreter_stack() is not None


def _substitute(tensors, pos, ts):
    full = list(tensors)
    for i, t in zip(pos, ts):
        full[i] = t
    return full


def func_vjp(apply: Callable[..., torch.Tensor], tensors: Sequence[torch.Tensor], L: torch.Tensor):
    """Gradient of ``<L, apply(*tensors)>`` w.r.t. each floating tensor (``None`` for the others).

    Plain autograd outside ``torch.func`` transforms (no functorch machinery to
    import or run); ``torch.func.vjp`` inside them, so that ``jacrev`` can vmap it.
    With grad mode on (``create_graph``) also ``torch.func.vjp``: the result is then
    differentiable in ``L``, the captured right-hand side and the tensors.
    """
    pos = differentiable_positions(tensors)
    out: list[torch.Tensor | None] = [None] * len(tensors)
    if not pos:
        return tuple(out)
    if _under_transform() or torch.is_grad_enabled():
        # grad mode on outside transforms is a differentiable backward (create_graph=True):
        # torch.func.vjp takes the partial derivative in the tensors only (autograd.grad would
        # follow L and R back to them) and its result stays differentiable in L, R and the tensors
        _, pullback = torch.func.vjp(lambda *ts: apply(*_substitute(tensors, pos, ts)), *[tensors[i] for i in pos])
        grads = pullback(L)
    else:
        with torch.enable_grad():
            leaves = [tensors[i].detach().requires_grad_() for i in pos]
            y = apply(*_substitute(tensors, pos, leaves))
            # <L, y> as a scalar: grad_outputs= would import torch.fx/sympy on first use (~1 s). Complex
            # y: Re Σ conj(L) y, whose gradient is the VJP with grad_outputs = L (MATH-complex, "Operators")
            inner = (y * L.conj()).real.sum() if y.is_complex() else (y * L).sum()
            grads = torch.autograd.grad(inner, leaves, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
    for i, g in zip(pos, grads):
        out[i] = g
    return tuple(out)


def func_jvp(apply: Callable[..., torch.Tensor], tensors: Sequence[torch.Tensor], dtensors, like: torch.Tensor):
    """``d/dt apply(*(tensors + t dtensors))`` at ``t = 0`` (``None`` tangents are zero).

    Forward-mode AD (dual numbers) outside ``torch.func`` transforms,
    ``torch.func.jvp`` inside them, two VJPs inside a user's forward-AD level
    (PyTorch does not nest them). With grad mode on the result stays
    differentiable in the tensors and the captured ``X`` (second derivatives).
    """
    pos = [i for i in differentiable_positions(tensors) if dtensors[i] is not None]
    if not pos:
        return torch.zeros_like(like)
    primals = tuple(tensors[i] for i in pos)
    tangents = tuple(dtensors[i] for i in pos)
    if _under_transform():
        _, out = torch.func.jvp(lambda *ts: apply(*_substitute(tensors, pos, ts)), primals, tangents)
        return out
    graph = torch.is_grad_enabled()  # keep the primals attached: A' X differentiable in θ too
    level = fwAD._current_level
    if level >= 0:
        # called inside a forward-AD level (a custom Function's jvp under gradcheck or fwAD):
        # PyTorch does not nest levels, so J θ' as the VJP of the linear map U ↦ Jᵀ U
        def pull(U):
            _, pb = torch.func.vjp(lambda *ts: apply(*_substitute(tensors, pos, ts)), *primals)
            return pb(U)

        _, pb2 = torch.func.vjp(pull, torch.zeros_like(like))
        return pb2(tangents)[0]
    with fwAD.dual_level():
        return _dual_tangent(apply, tensors, pos, primals, tangents, graph, like)


def _dual_tangent(apply, tensors, pos, primals, tangents, graph, like):
    duals = [fwAD.make_dual(p if graph else p.detach(), t) for p, t in zip(primals, tangents)]
    y = apply(*_substitute(tensors, pos, duals))
    tangent = fwAD.unpack_dual(y).tangent
    return torch.zeros_like(like) if tangent is None else tangent


class FunctionOperator(LinearOperator):
    """A symmetric operator given by a function: ``A X = matmat(X, *params)``.

    Parameters
    ----------
    matmat : callable
        ``matmat(X, *params) -> A X`` for ``X`` of shape ``(n, m)`` (or
        ``(*batch, n, m)`` for a batched ``shape``); written in torch ops so
        that ``torch.func`` can differentiate it with respect to ``params``.
        It must be linear in ``X`` and symmetric: ``uᵀ (A v) = vᵀ (A u)``
        (complex operators: Hermitian, ``uᴴ (A v) = conj(vᴴ (A u))``).
    params : Tensor or sequence of Tensor
        Every tensor ``A`` depends on and that should receive a gradient.
        Tensors captured by ``matmat`` from the enclosing scope are constants
        to eigrad: no gradient reaches them (one that requires a gradient is
        an error, see Notes).
    shape : int or tuple
        ``n``, ``(n, n)`` or ``(*batch, n, n)``.
    dtype, device : optional
        Default: those of the first floating-point parameter (the first
        complex one if any: a complex Hermitian operator). A complex operator
        with real parameters (a real potential added to a complex hopping
        matrix) needs ``dtype=torch.complex128``. Without a
        floating-point parameter ``dtype=`` is required (a TypeError says
        so); ``device`` then defaults to the CPU.

    Notes
    -----
    Every product is checked (free: host metadata only): ``matmat`` must
    return a torch tensor of ``X``'s shape and the operator's dtype. A
    tensor that ``matmat`` captures from the enclosing scope and that
    requires a gradient is reported (ValueError when grad mode is on): no
    gradient could reach it; pass it in ``params`` or ``.detach()`` it.

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
        return check_product(self.fn(X, *self.params), X, self, "FunctionOperator's matmat")

    def flatten(self):
        fn, shape, dtype, device = self.fn, self.shape, self.dtype, self.device
        return self.params, OperatorSpec(lambda ts: FunctionOperator(fn, ts, shape, dtype=dtype, device=device))

    def bilinear_vjp(self, L, R):
        # θ̄ = ∂/∂θ <L, A(θ) R> (MATH.md, "Reverse mode"): one VJP of the matrix-free product
        return func_vjp(lambda *ps: self.fn(R, *ps), self.params, L)

    def tangent_matmat(self, dtensors, X):
        # A' X as one JVP of θ ↦ A(θ) X (MATH.md, "Forward mode")
        return func_jvp(lambda *ps: self.fn(X, *ps), self.params, dtensors, X)
