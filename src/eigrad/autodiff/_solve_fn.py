"""The projected shifted solve as an autograd Function with a vmap rule.

Backward and JVP of the eigen-Functions call the solvers of ``eigrad.linsolve``
through this Function, so that ``torch.func.vmap`` (and hence ``jacrev`` and
``jacfwd``) can batch cotangents and tangents through numerical code that is
not written in torch ops (LAPACK tridiagonal solves): a vmapped right-hand side
simply becomes more columns, with their shifts repeated.
"""

from __future__ import annotations

import torch

_SECOND_ORDER = (
    "eigrad does not yet differentiate its own backward (second derivatives: create_graph=True, "
    "torch.func.hessian, jacfwd(jacrev(...))). Compute first derivatives only, or differentiate "
    "eigenvalue-only losses with torch.linalg.eigvalsh where the spectrum is simple."
)


_LEGACY_BATCHED = (
    "eigrad's backward solver ({name}) cannot run under torch.autograd.grad(..., is_grads_batched=True) "
    "(used by torch.autograd.functional.jacobian/hessian with vectorize=True): PyTorch's legacy batched "
    "tensors have no values for its LAPACK/SciPy code. Use torch.func.jacrev / torch.func.hessian / "
    "torch.func.vmap (eigrad provides vmap rules), vectorize=False, or solver='dense'."
)


def run_solver(factory, handle, atol, rtol, R, shifts, X, M):
    """``factory(handle, atol, rtol)(R, shifts, X, M)``, with a clear error under legacy batched autograd."""
    solve = factory(handle, atol, rtol)
    try:
        return solve(R, shifts, X, M)
    except RuntimeError as err:
        if "Batching rule not implemented" not in str(err):
            raise
        raise RuntimeError(_LEGACY_BATCHED.format(name=type(solve).__name__)) from err


class ShiftedSolve(torch.autograd.Function):
    """``Y = solve(R, shifts)`` projected against each column's cluster (see eigrad.linsolve)."""

    @staticmethod
    def forward(R, shifts, X, M, atol, factory, rtol, *handle):
        return run_solver(factory, handle, atol, rtol, R, shifts, X, M)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, gY):
        raise RuntimeError(_SECOND_ORDER)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(_SECOND_ORDER)

    @staticmethod
    def vmap(info, in_dims, R, shifts, X, M, atol, factory, rtol, *handle):
        R_dim = in_dims[0]
        tensor_dims = [in_dims[1], in_dims[2], in_dims[3], in_dims[4], *in_dims[7:]]
        V = info.batch_size
        if R_dim is not None and all(d is None for d in tensor_dims):
            # only the right-hand sides are batched: fold the vmapped dim into columns
            Rm = R.movedim(R_dim, -1)  # (*b, n, c, V)
            c = Rm.shape[-2]
            Rf = Rm.reshape(*Rm.shape[:-2], c * V)
            sf = shifts.repeat_interleave(V, dim=-1)
            Mf = M.repeat_interleave(V, dim=-1)
            Y = ShiftedSolve.apply(Rf, sf, X, Mf, atol, factory, rtol, *handle)
            Y = Y.reshape(*Y.shape[:-1], c, V)
            return Y, Y.dim() - 1

        def front(t, d):
            return t.unsqueeze(0).expand(V, *t.shape) if d is None else t.movedim(d, 0)

        args = [front(R, R_dim), front(shifts, in_dims[1]), front(X, in_dims[2]), front(M, in_dims[3]),
                front(atol, in_dims[4])]
        hs = [front(h, d) for h, d in zip(handle, in_dims[7:])]
        Y = ShiftedSolve.apply(*args[:4], args[4], factory, rtol, *hs)
        return Y, 0


class RaisingGuard(torch.autograd.Function):
    """``x`` (``zero=False``) or a 0-dim zero tied to ``x`` (``zero=True``); differentiating it raises ``message``.

    The identity marks a derivative eigrad computed so that a second derivative
    fails loudly instead of silently treating saved eigenvectors as constants.
    The zero, added to such a derivative, ties it to the inputs ``A``, ``B``: the
    saved eigenpairs carry no derivative, so without it a second derivative
    through a cotangent or tangent that does not depend on ``A`` (``hessian`` of
    an eigenvalue, of ``logm(A).sum()``) would silently come out as zero.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, message, zero):
        # the zero is real (x.real.dtype): added to a real derivative (eigenvalues of a complex
        # Hermitian A) it must not make it complex
        return torch.zeros((), dtype=x.real.dtype, device=x.device) if zero else x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.message = inputs[1]

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError(ctx.message)

    @staticmethod
    def jvp(ctx, t, *_):
        raise RuntimeError(ctx.message)


def first_order_only(t, message=_SECOND_ORDER):
    """``t`` marked so that differentiating it raises ``message``."""
    return None if t is None else RaisingGuard.apply(t, message, False)


def guard_second_order(d, *inputs, message=_SECOND_ORDER):
    """``d`` plus a zero that depends on every input that is not None (see :class:`RaisingGuard`)."""
    if d is None:
        return None
    for x in inputs:
        if x is not None:
            d = d + RaisingGuard.apply(x, message, True)
    return d
