"""The autograd Function for dense (batched) ``A`` and ``B``.

ctx-free ``forward``, ``setup_context``, ``backward`` (MATH.md reverse mode),
``jvp`` (MATH.md forward mode) and a ``vmap`` rule, so that
``torch.autograd`` and the whole ``torch.func`` family work.

Outputs: ``L (*b,k)``, ``X (*b,n,k)`` and, non-differentiable, what the
derivatives need: ``LE (*b,K)``, ``XE (*b,n,K)`` (wanted then guards),
``labels``, ``cut`` (*b,K), ``BXE`` (*b,n,K), ``atol`` (*b,) and the
solver's handle tensors; last, the frame channel ``F`` (*b,k,k+2), zeros,
differentiable but never used by a loss (reverse-over-reverse at repeated
eigenvalues, ``_degenerate.py``).
"""

from __future__ import annotations

import functools

import torch
import torch.autograd.forward_ad as _forward_ad
from torch._functorch.utils import unwrap_dead_wrappers

from ._checks import check_existence
from ._clusters import cluster_mask, simple_spectrum
from ._forward import checked_symmetric, solve_with_guards
from ._formulas import full_simple_vjp, jvp_terms, sym, vjp_terms
from ._degenerate import DegenerateVJP, adapted_frame, cluster_frames, vmapped, whole_clusters
from ._second_order import (
    DenseKernel,
    degenerate_clusters,
    degenerate_guard,
    dense_cluster_tangent,
    differentiable_jvp,
    differentiable_vjp,
    near_degenerate_mask,
    with_near_degenerate,
)
from ._solve_fn import ShiftedSolve, first_order_only, guard_second_order, run_solver

N_AUX = 6  # LE, XE, labels, cut, BXE, atol


def check_broadening(solver, opts):
    """``BackwardOptions(broadening=...)`` needs a backward solver that can apply it."""
    if opts.broadening is not None and not getattr(solver.handle_factory, "supports_broadening", False):
        raise ValueError(
            f"BackwardOptions(broadening={opts.broadening!r}) needs the whole eigenbasis in the backward; "
            f"solver {type(solver).__name__} cannot apply it. Pass solver='dense' or broadening=None."
        )


def _pad(t, m, dim):
    if t is None or m == 0:
        return t
    shape = list(t.shape)
    shape[dim] = m
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def backward_cotangents(ctx, gL, gX, gF, LE, XE, BXE, labels, cut, atol, simple=False):
    """The eigen-Functions' backward prelude: ``(XE, BXE, gX, Λ̄, X̄)``, cotangents padded on the guards.

    With a frame ``gF`` (reverse-over-reverse at a repeated eigenvalue) the wanted columns and ``gX``
    are rotated into it (``_degenerate.adapted_frame``, which checks what applies to such a
    cotangent); otherwise MATH.md's existence conditions are checked, unless ``simple``
    (:func:`_simple`: a real problem with no cluster, cut or near-degenerate pair, where both hold).
    """
    k = ctx.k
    m = LE.shape[-1] - k
    if gF is not None:
        XE, BXE, gX = adapted_frame(gF, XE, BXE, gL, gX, labels, ctx.opts)
    Lbar, Xbar = _pad(gL, m, -1), _pad(gX, m, -1)
    if gF is None and not simple:
        check_existence(
            L=LE, X=XE, labels=labels, cut=cut, Lbar=Lbar, Xbar=Xbar, k=k, largest=ctx.largest,
            opts=ctx.opts, atol=atol, caller=ctx.opts._caller,
        )
    return XE, BXE, gX, Lbar, Xbar


def _plain():
    """True when nothing records operations: no grad mode, no torch.func transform and no forward-AD
    level (a backward on dual tensors carries tangents, and the marks must raise there). Then the
    derivative's marks (:func:`_first_order`) and the solve's Function (``ShiftedSolve``) would be
    dropped anyway, and are skipped (each autograd.Function call costs ~20 µs of Python)."""
    return (not torch.is_grad_enabled() and not torch._C._are_functorch_transforms_active()
            and _forward_ad._current_level < 0)


def _simple(ctx, LE, XE, labels, cut, atol, gF) -> bool:
    """True when the first-order backward may skip the existence checks, the cluster mask and the
    near-degenerate mask (:func:`~eigrad.autodiff._clusters.simple_spectrum`, one host sync): a real
    problem, no frame cotangent and no torch.func transform (whose saved tensors are wrapped)."""
    if gF is not None or XE.is_complex() or torch._C._are_functorch_transforms_active():
        return False
    rtol = ctx.opts.resolved_degen(LE.dtype, 1.0)[1]
    guards = LE.shape[-1] > ctx.k
    # the dense solvers' eigenvalues are ascending, and so are the guards after them (smallest)
    ascending = ctx.ascending and not (guards and ctx.largest)
    return simple_spectrum(LE, labels, cut if guards else None, atol, rtol, ascending=ascending)


def _first_order(d, A, B):
    if _plain():
        return d
    return guard_second_order(first_order_only(d), A, B)


class DenseEig(torch.autograd.Function):
    @classmethod
    def apply(cls, A, B, k, largest, solver, opts):
        """``torch.autograd.Function.apply`` without its binding of default arguments (``forward``
        has none, so it changes nothing; ``inspect.signature`` costs ~20 µs a call). Under torch.func
        transforms, torch's own ``apply``."""
        if torch._C._are_functorch_transforms_active():
            return super().apply(A, B, k, largest, solver, opts)
        args = unwrap_dead_wrappers((A, B, k, largest, solver, opts))
        return super(torch.autograd.Function, cls).apply(*args)

    @staticmethod
    def forward(A, B, k, largest, solver, opts):
        check_broadening(solver, opts)
        with torch.no_grad():
            A, B = checked_symmetric(A, B)
            n = A.shape[-1]
            sol, LE, XE, labels, cut, atol, _ = solve_with_guards(solver, A, B, k, n, largest, opts)
            BXE = XE if B is None else B @ XE
            # fresh outputs: solvers return slices, and forward-mode AD (torch.autograd.forward_ad,
            # gradcheck(check_forward_ad=True)) rejects a view output whose tangent has another layout
            L, X = sol.eigenvalues.clone(), sol.eigenvectors.clone()
            # the frame channel: never used by a loss; in a reverse-over-reverse pass at a repeated
            # eigenvalue its cotangent carries the adapted frame [Q | μ | 1] (_degenerate.py)
            F = X.new_zeros((*L.shape, k + 2))  # X's dtype: a complex problem's frame Q is unitary
        return (L, X, LE, XE, labels, cut, BXE, atol, *sol.handle.tensors, F)

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, B, k, largest, solver, opts = inputs
        aux = output[2:-1]
        ctx.mark_non_differentiable(*aux)
        ctx.set_materialize_grads(False)
        # A and B too: the derivatives are tied to them so that a second derivative raises
        # the outputs L, X too: a differentiable backward (create_graph) re-enters this Function through them
        ctx.save_for_backward(*aux, A, B, output[0], output[1], output[-1])
        ctx.save_for_forward(*aux, A, B, output[0], output[1], output[-1])
        ctx.k, ctx.largest, ctx.opts = k, largest, opts
        ctx.factory = solver.handle_factory
        ctx.ascending = getattr(solver, "ascending", False)
        ctx.has_B = B is not None
        ctx.B_requires_grad = B is not None and B.requires_grad

    @staticmethod
    def _solve(ctx, LE, XE, D, atol, handle):
        rtol = ctx.opts.resolved_degen(LE.dtype, 1.0)[1]
        factory = ctx.factory
        if ctx.opts.broadening is not None:  # Lorentzian broadening (BackwardOptions), applied by the factory
            factory = functools.partial(factory, broadening=ctx.opts.broadening)

        if _plain():
            def solve(R, shifts):
                return run_solver(factory, handle, atol, rtol, R, shifts, XE, torch.ones_like(D))

            return solve

        def solve(R, shifts):
            return ShiftedSolve.apply(R, shifts, XE, torch.ones_like(D), atol, factory, rtol, *handle)

        return solve

    @staticmethod
    def backward(ctx, gL, gX, *rest):
        LE, XE, labels, cut, BXE, atol, *handle, A, B, L, X, F = ctx.saved_tensors
        if gL is None and gX is None:
            return None, None, None, None, None, None
        k = ctx.k
        gF = rest[-1]
        simple = _simple(ctx, LE, XE, labels, cut, atol, gF)
        XE, BXE, gX, Lbar, Xbar = backward_cotangents(ctx, gL, gX, gF, LE, XE, BXE, labels, cut, atol, simple)
        if torch.is_grad_enabled() and ctx.opts.broadening is None and gF is None:
            # create_graph=True / torch.func: a backward that is itself differentiable (MATH.md, "Second order")
            degenerate = None if simple else degenerate_clusters(labels, k)
            rtol = ctx.opts.resolved_degen(LE.dtype, 1.0)[1]
            if not degenerate:
                D = None if simple else near_degenerate_mask(L, X, gX, atol)
                gA, gB = differentiable_vjp(L, X, A, B, gL, gX, atol, ctx.factory, rtol, handle, D=D)
                return gA, gB, None, None, None, None
            if whole_clusters(degenerate, k) and not vmapped(labels):
                # exact second order at repeated eigenvalues (_degenerate.py)
                D = with_near_degenerate(cluster_mask(labels[..., :k]), L, X, gX, atol, k)
                kernel = DenseKernel(degenerate, ctx.factory, rtol, ctx.opts, LE.dtype)
                gA, *gB = DegenerateVJP.apply(kernel, L, X, gL, gX, D, atol, F, A, B, *handle)
                return gA, (gB[0] if gB else None), None, None, None, None
            mark = degenerate_guard(degenerate, LE)
        else:
            mark = _first_order
            if simple and not ctx.has_B and ctx.opts.broadening is None and _plain():
                if XE.shape[-1] == XE.shape[-2]:  # eigh: all n pairs
                    return full_simple_vjp(LE, XE, Lbar, Xbar), None, None, None, None, None
                if getattr(ctx.factory, "full_eigenbasis", False):  # k < n, the whole eigenbasis in the handle
                    Lf, Xf = handle
                    offset = Lf.shape[-1] - k if ctx.largest else 0
                    gA = full_simple_vjp(LE[..., :k], XE[..., :k], gL, gX, Lf, Xf, offset)
                    return gA, None, None, None, None, None
        D = cluster_mask(labels)  # the identity when `simple`
        if gF is None and ctx.opts.broadening is None and not simple:
            D = with_near_degenerate(D, LE, XE, Xbar, atol, k)
        solve = DenseEig._solve(ctx, LE, XE, D, atol, handle)
        LA, LB = vjp_terms(LE, XE, BXE, D, Lbar, Xbar, solve, need_B=ctx.has_B, broadening=ctx.opts.broadening)
        gA = sym(LA @ XE.mH)  # Ā = sym(L_A Xᴴ) (Hermitian part for complex, MATH-complex)
        gB = sym(LB @ XE.mH) if ctx.has_B else None  # B̄ = sym(L_B Xᴴ)
        gA = mark(gA, A, B)
        gB = mark(gB, A, B)
        return gA, gB, None, None, None, None

    @staticmethod
    def jvp(ctx, dA, dB, *_):
        LE, XE, labels, cut, BXE, atol, *handle, A, B, L, X, F = ctx.saved_tensors
        k = ctx.k
        if dA is None and dB is None:
            return (None,) * (3 + N_AUX + len(handle))
        mark = _first_order
        if ctx.opts.broadening is None:
            # a JVP that reverse mode can differentiate (jacrev(jacfwd(f))); MATH.md, "Second order"
            degenerate = degenerate_clusters(labels, k)
            if not degenerate:
                rtol = ctx.opts.resolved_degen(LE.dtype, 1.0)[1]
                Ld, Xd = differentiable_jvp(L, X, A, B, dA, dB, atol, ctx.factory, rtol, handle)
                return (Ld, Xd) + (None,) * (N_AUX + len(handle)) + (torch.zeros_like(F),)
            mark = degenerate_guard(degenerate, LE)
        D = cluster_mask(labels)
        solve = DenseEig._solve(ctx, LE, XE, D, atol, handle)
        # V' = A' X - B' X Λ on the k wanted columns only, as in the operator JVP: a guard's own system
        # is singular when its cluster's other copies were not computed (a spurious "did not reach the
        # rounding level" from the LAPACK route at a 3-fold guard, examples/hofstadter.py at twist π),
        # and zero guard columns leave every wanted tangent unchanged
        m = LE.shape[-1] - k
        AdX = _pad(sym(dA) @ XE[..., :k], m, -1) if dA is not None else torch.zeros_like(XE)
        BdX = _pad(sym(dB) @ XE[..., :k], m, -1) if dB is not None else None
        Ld, Xd = jvp_terms(LE, XE, BXE, D, AdX, BdX, solve, broadening=ctx.opts.broadening)
        Ld = Ld[..., :k]
        found = [c for c in degenerate_clusters(labels, k) if max(c[1]) < k]
        if found and not vmapped(labels):  # inside a cluster: the slopes μ (eigenvalues of X_gᵀ (A' - λ B') X_g)
            Ld, _ = cluster_frames(dense_cluster_tangent(L, X, dA, dB), found, k)
        Ld = mark(Ld, A, B)
        Xd = mark(Xd[..., :, :k], A, B)
        return (Ld, Xd) + (None,) * (N_AUX + len(handle)) + (torch.zeros_like(F),)

    @staticmethod
    def vmap(info, in_dims, A, B, k, largest, solver, opts):
        V = info.batch_size

        def front(t, d):
            if t is None:
                return None
            return t.unsqueeze(0).expand(V, *t.shape) if d is None else t.movedim(d, 0)

        out = DenseEig.apply(front(A, in_dims[0]), front(B, in_dims[1]), k, largest, solver, opts)
        return out, (0,) * len(out)
