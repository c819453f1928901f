"""``torch.compile(fullgraph=True)`` for the dense path of ``eigh`` / ``eigsh`` (issue #14 item 3).

Dynamo cannot trace ``DenseEig`` (an ``autograd.Function`` with ``jvp`` and ``vmap``: "Unsupported custom
jvp"). Under compile (``torch.compiler.is_compiling()``), ``eigh``/``eigsh`` call instead three opaque
``torch.library.custom_op`` s with fake (meta) kernels and a registered autograd formula:

* ``eigrad::dense_eig``: the forward of ``DenseEig`` (symmetry check, ``torch.linalg.eigh`` through
  ``DenseEigh``, cluster labels, cut flags). Every eigenpair beyond the k-th is kept as a guard
  (``n_guard = n - k``) so that all outputs have shapes known from ``(batch, n, k)`` alone.
* ``eigrad::dense_eig_backward``: ``DenseEig.backward`` (MATH.md reverse mode, Ā = sym(L_A Xᴴ)) on those
  outputs, first order; the existence checks (``GaugeWarning`` / ``GaugeError``) run inside it, at run time.
* ``eigrad::read_triangle``: ``UPLO="L"/"U"`` (``_triangle.mirror``, identity derivatives as torch's).

Eager calls keep ``DenseEig`` (``torch.func`` transforms, forward mode, second order). Under compile only
first-order reverse mode is supported: the ops have no JVP or vmap rule, and the backward op's own
derivative raises ``ValueError`` (docs/guide.md, "torch.compile").
"""

from __future__ import annotations

import functools
import types
from typing import Optional

import torch
from torch import Tensor

from ._options import BackwardOptions
from .autodiff._dense_function import DenseEig
from .autodiff._triangle import mirror
from .eigensolvers import DenseEigh

_REAL = {torch.complex64: torch.float32, torch.complex128: torch.float64}

_UNSUPPORTED = (
    "Under torch.compile eigrad supports first-order reverse mode of the dense eigh/eigsh only; "
)


def _options(degen_atol, degen_rtol, gauge, check_rtol, broadening, caller, n_guard):
    return BackwardOptions(degen_atol=degen_atol, degen_rtol=degen_rtol, gauge=gauge, check_rtol=check_rtol,
                           broadening=broadening, n_guard=n_guard, _caller=caller)


def _option_args(opts: BackwardOptions):
    return (opts.degen_atol, opts.degen_rtol, opts.gauge, opts.check_rtol, opts.broadening, opts._caller)


def _eager_keys(fn):
    """Run an op's implementation with torch's conjugate and negative views enabled.

    aot_autograd's runtime (backends "aot_eager", "inductor") calls the compiled graph, and so these ops,
    with the ``Conjugate`` and ``Negative`` dispatch keys excluded: ``A.mH`` or ``A.conj()`` inside would
    then silently *not* conjugate (measured: ``max |A - Aᴴ|`` of a Hermitian ``A`` = 3.7). The
    implementations are ordinary eager code, so those keys are restored for their duration."""
    keys = (torch._C.DispatchKey.Conjugate, torch._C.DispatchKey.Negative)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch._C._SetExcludeDispatchKeyGuard(keys[0], False), torch._C._SetExcludeDispatchKeyGuard(keys[1], False):
            return fn(*args, **kwargs)

    return wrapper


def _fresh(tensors, inputs):
    """Outputs of a custom op may alias neither its inputs nor each other (clone the ones that do), and
    have the fake kernels' strides (contiguous; inductor checks them)."""
    seen = {t.untyped_storage().data_ptr() for t in inputs if t is not None}
    out = []
    for t in tensors:
        t = t.contiguous()
        p = t.untyped_storage().data_ptr()
        if p in seen and t.numel():
            t = t.clone()
            p = t.untyped_storage().data_ptr()
        seen.add(p)
        out.append(t)
    return out


@torch.library.custom_op("eigrad::dense_eig", mutates_args=())
@_eager_keys
def dense_eig(A: Tensor, B: Optional[Tensor], k: int, largest: bool, degen_atol: Optional[float],
              degen_rtol: Optional[float], gauge: str, check_rtol: Optional[float], broadening: Optional[float],
              caller: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(L, X, LE, XE, labels, cut, BXE, atol, W, V)``: DenseEig's forward with all n - k guards."""
    n = A.shape[-1]
    opts = _options(degen_atol, degen_rtol, gauge, check_rtol, broadening, caller, n - k)
    L, X, LE, XE, labels, cut, BXE, atol, W, V, _F = DenseEig.forward(A, B, k, largest, DenseEigh(), opts)
    return tuple(_fresh((L, X, LE, XE, labels, cut, BXE, atol, W, V), (A, B)))


@dense_eig.register_fake
def _(A, B, k, largest, degen_atol, degen_rtol, gauge, check_rtol, broadening, caller):
    batch = A.shape[:-2] if B is None else torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    n = A.shape[-1]
    real = _REAL.get(A.dtype, A.dtype)
    new = A.new_empty
    return (
        new((*batch, k), dtype=real), new((*batch, n, k)), new((*batch, n), dtype=real), new((*batch, n, n)),
        new((*batch, n), dtype=torch.int64), new((*batch, n), dtype=torch.bool), new((*batch, n, n)),
        new(tuple(batch), dtype=real), new((*batch, n), dtype=real), new((*batch, n, n)),
    )


@torch.library.custom_op("eigrad::dense_eig_backward", mutates_args=())
@_eager_keys
def dense_eig_backward(gL: Tensor, gX: Tensor, LE: Tensor, XE: Tensor, labels: Tensor, cut: Tensor, BXE: Tensor,
                       atol: Tensor, W: Tensor, V: Tensor, A: Tensor, B: Optional[Tensor], L: Tensor, X: Tensor,
                       k: int, largest: bool, degen_atol: Optional[float], degen_rtol: Optional[float], gauge: str,
                       check_rtol: Optional[float], broadening: Optional[float],
                       caller: str) -> tuple[Tensor, Tensor]:
    """``(Ā, B̄)`` of DenseEig.backward (first order; ``B̄`` empty when ``B`` is None), broadcast shapes."""
    n = A.shape[-1]
    opts = _options(degen_atol, degen_rtol, gauge, check_rtol, broadening, caller, n - k)
    F = X.new_zeros((*L.shape, k + 2))
    ctx = types.SimpleNamespace(
        saved_tensors=(LE, XE, labels, cut, BXE, atol, W, V, A, B, L, X, F), k=k, largest=largest, opts=opts,
        factory=DenseEigh.handle_factory, ascending=DenseEigh.ascending, has_B=B is not None,
        B_requires_grad=B is not None)
    with torch.no_grad():
        gA, gB, *_ = DenseEig.backward(ctx, gL, gX, None)
    if gB is None:
        gB = gA.new_empty(0)
    return tuple(_fresh((gA, gB), (gL, gX, LE, XE, labels, cut, BXE, atol, W, V, A, B, L, X)))


@dense_eig_backward.register_fake
def _(gL, gX, LE, XE, labels, cut, BXE, atol, W, V, A, B, L, X, k, largest, *opts):
    shape = XE.shape
    return XE.new_empty(shape), (XE.new_empty(0) if B is None else XE.new_empty(shape))


def _setup(ctx, inputs, output):
    A, B, k, largest, *opts = inputs
    ctx.save_for_backward(*output[2:], A, B, output[0], output[1])
    ctx.k, ctx.largest, ctx.opts = k, largest, opts
    ctx.shape_A = A.shape
    ctx.shape_B = None if B is None else B.shape


def _backward(ctx, gL, gX, *_):
    LE, XE, labels, cut, BXE, atol, W, V, A, B, L, X = ctx.saved_tensors
    gL = torch.zeros_like(L) if gL is None else gL
    gX = torch.zeros_like(X) if gX is None else gX
    gA, gB = torch.ops.eigrad.dense_eig_backward(gL, gX, LE, XE, labels, cut, BXE, atol, W, V, A, B, L, X,
                                                 ctx.k, ctx.largest, *ctx.opts)
    gA = gA.sum_to_size(ctx.shape_A)  # B batched against one A: the gradient sums over the batch
    gB = None if ctx.shape_B is None else gB.sum_to_size(ctx.shape_B)
    return (gA, gB) + (None,) * (2 + len(ctx.opts))


dense_eig.register_autograd(_backward, setup_context=_setup)


def _no_second_order(ctx, *grads):
    raise ValueError(
        _UNSUPPORTED + "a second derivative (create_graph=True, hessians) needs the eager eigrad.eigh/eigsh; "
        "call them outside torch.compile (torch.func.hessian / jacfwd(jacrev(f)) work eagerly)."
    )


def _setup_none(ctx, inputs, output):
    pass


dense_eig_backward.register_autograd(_no_second_order, setup_context=_setup_none)


@torch.library.custom_op("eigrad::read_triangle", mutates_args=())
@_eager_keys
def read_triangle_op(A: Tensor, uplo: str) -> Tensor:
    """The symmetric matrix one triangle of ``A`` describes (``_triangle.mirror``)."""
    return mirror(A, uplo)


@read_triangle_op.register_fake
def _(A, uplo):
    return torch.empty_like(A)


read_triangle_op.register_autograd(lambda ctx, g: (g, None), setup_context=_setup_none)


def read_triangle(M, uplo):
    if M is None or uplo is None:
        return M
    return read_triangle_op(M, uplo)


def check_solver(solver) -> None:
    """Under compile the dense path is ``torch.linalg.eigh`` (``"auto"``, ``"dense"``, a ``DenseEigh``)."""
    if (isinstance(solver, str) and solver in ("auto", "dense")) or isinstance(solver, DenseEigh):
        return
    name = solver if isinstance(solver, str) else type(solver).__name__
    raise ValueError(
        f"solver={name!r} under torch.compile: {_UNSUPPORTED}the compiled path solves with torch.linalg.eigh. "
        "Pass solver='auto' or 'dense', or call eigrad.eigsh outside torch.compile for this solver."
    )


def dense(A, B, k: int, largest: bool, opts: BackwardOptions, uplo=None):
    """``(L, X)`` of the dense problem through the custom ops (called when ``torch.compiler.is_compiling()``)."""
    if opts.linsolve_preconditioner is not None:
        raise ValueError(_UNSUPPORTED + "BackwardOptions(linsolve_preconditioner=) is for operators; pass None.")
    A, B = read_triangle(A, uplo), read_triangle(B, uplo)
    out = torch.ops.eigrad.dense_eig(A, B, k, largest, *_option_args(opts))
    return out[0], out[1]


def unsupported(what: str, instead: str) -> ValueError:
    return ValueError(f"{what} under torch.compile: {_UNSUPPORTED}{instead}")
