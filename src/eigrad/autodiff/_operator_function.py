"""The autograd Function for operators ``A(θ)``, ``B(φ)`` (sparse, matrix-free, modules).

Like :mod:`._dense_function`, but the differentiable inputs are the
operators' flattened tensors (``op.flatten() -> (tensors, spec)``); inside,
``spec.rebuild(tensors)`` gives the operator back. The operator object itself
is never kept on ``ctx``: only its spec (no tensors) and, with
``save_for_backward``, its tensors.

Reverse mode (MATH.md, "Reverse mode (VJP)"): ``vjp_terms`` gives ``L_A``,
``L_B``; then ``θ̄ = A.bilinear_vjp(L_A, X)`` and ``φ̄ = B.bilinear_vjp(L_B, X)``,
one VJP of the matrix-free product each, never an n×n matrix. Forward mode:
``A' X = A.tangent_matmat(θ', X)`` into ``jvp_terms``. The shifted solves use
the forward solver's handle when it has one (a dense eigenbasis), else
projected block MINRES over the operators rebuilt from the saved tensors.
The outputs end, as the dense Function's, with the frame channel ``F``
(reverse-over-reverse at repeated eigenvalues, ``_degenerate.py``).
"""

from __future__ import annotations

import dataclasses

import torch

from .._info import Recorded, RecordedFactory
from .._options import BackwardOptions
from .._scaling import ldexp, pow2_exponent
from .._threads import block_columns, solver_threads
from ..linsolve._minres import MinresFactory
from ..operators import DenseOperator, OperatorSpec
from ..operators._sparse import SparseOperator
from ._clusters import cluster_mask
from ._dense_function import _pad, backward_cotangents
from ._forward import solve_with_guards
from ._formulas import jvp_terms, vjp_terms
from ._degenerate import DegenerateVJP, cluster_frames, vmapped, whole_clusters
from ._operator_second_order import (
    OperatorKernel,
    OpSolveInfo,
    operator_cluster_tangent,
    operator_differentiable_jvp,
    operator_differentiable_vjp,
)
from ._second_order import (
    degenerate_clusters,
    degenerate_guard,
    near_degenerate_mask,
    with_near_degenerate,
)
from ._solve_fn import ShiftedSolve, first_order_only

N_AUX = 6  # LE, XE, labels, cut, BXE, atol


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """The non-tensor inputs of :class:`OperatorEig` (never stored on ``ctx``)."""

    k: int
    largest: bool
    solver: object
    opts: BackwardOptions
    spec_A: OperatorSpec
    n_A: int
    spec_B: OperatorSpec | None
    X0: torch.Tensor | None = None
    preconditioner: object | None = None
    #: grad mode at the call: a tensor captured by a matmat that needs a gradient is then an error
    grad_mode: bool = False


def _probe(op, U, track_captured: bool):
    """``(op.matmat(U), captured)``; with ``track_captured`` the product runs in grad mode on the
    operator rebuilt from detached tensors, so it requires a gradient only through a tensor that
    ``matmat`` captured (not in ``params``): a gradient that could never reach it."""
    if not track_captured:
        return op.matmat(U), False
    tensors, spec = op.flatten()
    probe = spec.rebuild([t.detach() for t in tensors])
    with torch.enable_grad():
        AU = probe.matmat(U)
    if not torch.is_tensor(AU):
        return AU, False
    return AU.detach(), AU.requires_grad


def check_operator_values(name: str, op, *, track_captured: bool = False) -> None:
    """Finite and symmetric, on plain tensors: exactly for stored matrices, by a probe otherwise.

    The probe applies the operator once to two fixed pseudo-random vectors
    (a private generator; the global RNG is untouched) and compares
    ``u₀ᵀ A u₁`` with ``u₁ᵀ A u₀`` to ``sqrt(eps)`` of their size. With
    ``track_captured`` (grad mode on at the call) it also finds a tensor that
    ``matmat`` captured and that requires a gradient (:func:`_probe`).
    """
    eps = torch.finfo(op.dtype).eps
    if isinstance(op, (DenseOperator, SparseOperator)):
        # detached: isfinite on the values of a complex leaf CSR tensor that requires grad fails in torch
        vals = (op.A if isinstance(op, DenseOperator) else op.values).detach()
        if not bool(torch.isfinite(vals).all()):
            raise ValueError(f"{name} contains NaN or inf; pass a finite matrix.")
        if isinstance(op, DenseOperator):
            asym = (vals - vals.mH).abs().amax()  # complex: Hermitian, the diagonal's Im included
        else:
            asym = op.symmetry_defect()
        tol = 16 * op.n * eps * vals.abs().amax() if vals.numel() else 0.0
        if bool(asym > tol):
            raise ValueError(
                f"{name} is not {'Hermitian' if op.dtype.is_complex else 'symmetric'}: max |{name} - "
                f"{name}{'ᴴ' if op.dtype.is_complex else 'ᵀ'}| = {float(asym):.3e} exceeds {float(tol):.3e} "
                f"(16·n·eps·max|{name}|). eigrad solves real symmetric and complex Hermitian problems; "
                f"symmetrize {name} (for a sparse matrix: (S + S.t()) / 2, complex: (S + S.t().conj()) / 2)."
            )
        return
    gen = torch.Generator(device=op.device).manual_seed(20240531)
    U = torch.randn(op.n, 2, dtype=op.dtype, device=op.device, generator=gen)
    U = U.expand(*op.batch_shape, op.n, 2)
    AU, captured = _probe(op, U, track_captured)
    if not torch.is_tensor(AU):
        raise TypeError(
            f"{name}.matmat returned a {type(AU).__module__}.{type(AU).__name__}, not a torch.Tensor; matmat "
            "must compute A X in torch ops (gradients and devices need them): replace numpy/scipy calls by "
            "their torch equivalents."
        )
    if captured:
        raise ValueError(
            f"{name}.matmat uses a tensor that requires a gradient but is not among the operator's parameters "
            "(captured from the enclosing scope): no gradient can reach it. Pass it in params, "
            "eigrad.FunctionOperator(matmat, (..., t), shape) with matmat(X, ..., t), or use t.detach() "
            "in matmat if it is a constant."
        )
    if tuple(AU.shape) != tuple(U.shape):
        raise ValueError(
            f"{name}.matmat(X) returned shape {tuple(AU.shape)} for X of shape {tuple(U.shape)}; an operator "
            f"of shape {tuple(op.shape)} must return A X with the shape of X."
        )
    if AU.dtype != op.dtype:
        raise TypeError(f"{name}.matmat returned dtype {AU.dtype}; the operator declares {op.dtype}.")
    if not bool(torch.isfinite(AU).all()):
        raise ValueError(f"{name}.matmat returned NaN or inf; pass a finite operator.")
    # the test is scale invariant: at max|A U| ≈ 1e-164 the norms' squares underflowed to 0 ("relative
    # inf"), and sums of products overflow near 1e306, so AU is brought to max 1 first (exactly)
    AU = ldexp(AU, -pow2_exponent(AU))
    # complex: u₀ᴴ A u₁ against conj(u₁ᴴ A u₀) (Hermitian)
    a01 = (U[..., 0].conj() * AU[..., 1]).sum(-1)
    a10 = (U[..., 1].conj() * AU[..., 0]).sum(-1).conj()
    size = torch.linalg.vector_norm(AU, dim=(-2, -1)) * torch.linalg.vector_norm(U, dim=(-2, -1))
    if bool(((a01 - a10).abs() > eps**0.5 * size).any()):
        raise ValueError(
            f"{name} is not {'Hermitian' if op.dtype.is_complex else 'symmetric'}: for probe vectors u, v, "
            f"|uᴴ({name} v) - conj(vᴴ({name} u))| = "
            f"{float((a01 - a10).abs().max()):.3e}, relative {float(((a01 - a10).abs() / size).max()):.1e}. "
            "eigrad solves real symmetric and complex Hermitian problems; check that matmat(X) applies a "
            "symmetric (complex: Hermitian) matrix."
        )


def _rebuild(spec, tensors):
    return None if spec is None else spec.rebuild(tensors)


def _probe_of(A, columns: int):
    """One product of ``A`` with a fixed block of ``columns`` vectors: what :func:`solver_threads` times."""
    def probe():
        gen = torch.Generator(device=A.device).manual_seed(0)
        A.matmat(torch.randn(*A.shape[:-1], columns, dtype=A.dtype, device=A.device, generator=gen))

    return probe


def operator_solve(cfg: OperatorConfig, tensors):
    """Rebuild and check the operators, solve with guards (no grad).

    Returns ``(sol, LE, XE, labels, cut, atol, BXE)`` as :func:`solve_with_guards`
    with ``BXE = B XE``. Shared by :class:`OperatorEig` and the spectral functions.
    """
    with torch.no_grad():
        A = cfg.spec_A.rebuild(tensors[: cfg.n_A])
        B = _rebuild(cfg.spec_B, tensors[cfg.n_A :])
        columns = cfg.k + cfg.opts.n_guard
        with solver_threads(A.n, block_columns(A.shape, columns), probe=_probe_of(A, columns)):  # eigrad/_threads.py
            check_operator_values("A", A, track_captured=cfg.grad_mode)
            if B is not None:
                check_operator_values("B", B, track_captured=cfg.grad_mode)
            if isinstance(A, DenseOperator):
                A = DenseOperator(0.5 * (A.A + A.A.mH))
            if isinstance(B, DenseOperator):
                B = DenseOperator(0.5 * (B.A + B.A.mH))
            sol, LE, XE, labels, cut, atol, _ = solve_with_guards(
                cfg.solver, A, B, cfg.k, A.n, cfg.largest, cfg.opts, X0=cfg.X0, preconditioner=cfg.preconditioner
            )
            BXE = XE if B is None else B.matmat(XE)
    return sol, LE, XE, labels, cut, atol, BXE


def backward_factory(cfg: OperatorConfig, has_handle: bool, dtype):
    """The shifted-solver factory of the backward: the forward's handle (an eigenbasis, a
    reduction) when it left one, else projected block MINRES over the rebuilt operators."""
    opts = cfg.opts
    inner = cfg.solver.solver if isinstance(cfg.solver, Recorded) else cfg.solver
    make = getattr(inner, "backward_factory", None) if has_handle else None
    if make is not None:  # a solver whose handle needs the backward options (ShiftInvert's factorization)
        factory = make(opts, dtype)
        if isinstance(cfg.solver, Recorded):
            factory = RecordedFactory(factory, cfg.solver.info, cfg.solver.progress)
        return factory
    if has_handle:
        return cfg.solver.handle_factory
    factory = MinresFactory(
        cfg.spec_A, cfg.n_A, cfg.spec_B, rtol=opts.resolved_linsolve_rtol(dtype),
        maxiter=opts.linsolve_maxiter, preconditioner=opts.linsolve_preconditioner,
    )
    if isinstance(cfg.solver, Recorded):  # eigsh_ex / progress=True: the backward reports too
        factory = RecordedFactory(factory, cfg.solver.info, cfg.solver.progress)
    return factory


def backward_handle(handle, tensors, LE):
    """The tensors the factory of :func:`backward_factory` takes: the forward's handle, or
    for MINRES the operators' tensors and the eigenvalues of the deflated columns."""
    return tuple(handle) if handle else (*tensors, LE)


def vmap_per_slice(apply, first, cfg_of, V, dims, tensors, le_index, what):
    """A vmap rule for the operator Functions: operators are generally unbatched (a user's matmat, a
    sparse matrix), so each vmapped problem is solved on its own and the outputs are stacked. All
    slices get as many guards as the one that needed most (``LE`` at ``out[le_index]``).

    ``apply(first, *tensors)`` is the Function; ``cfg_of(first)`` its :class:`OperatorConfig`.
    """

    def run(f, b):
        ts = [t if d is None else t.select(d, b) for t, d in zip(tensors, dims)]
        return apply(f, *ts)

    outs = [run(first, b) for b in range(V)]
    K = max(o[le_index].shape[-1] for o in outs)
    if any(o[le_index].shape[-1] != K for o in outs):
        cfg = cfg_of(first)
        wide_cfg = dataclasses.replace(cfg, opts=dataclasses.replace(cfg.opts, n_guard=K - cfg.k))
        wide = wide_cfg if first is cfg else dataclasses.replace(first, cfg=wide_cfg)
        outs = [o if o[le_index].shape[-1] == K else run(wide, b) for b, o in enumerate(outs)]
    if len({tuple(tuple(t.shape) for t in o) for o in outs}) != 1:
        raise RuntimeError(
            f"eigrad: the vmapped problems returned solver handles of different shapes; call {what} in a "
            "Python loop instead of under torch.func.vmap for this solver."
        )
    out = tuple(torch.stack(ts) for ts in zip(*outs))
    return out, (0,) * len(out)


class OperatorEig(torch.autograd.Function):
    @staticmethod
    def forward(cfg: OperatorConfig, *tensors):
        sol, LE, XE, labels, cut, atol, BXE = operator_solve(cfg, tensors)
        handle = sol.handle.tensors if sol.handle is not None else ()
        # fresh outputs: solvers return slices, and forward-mode AD (gradcheck(check_forward_ad=True),
        # gradgradcheck(check_fwd_over_rev=True)) rejects a view output whose tangent has another layout
        L, X = sol.eigenvalues.clone(), sol.eigenvectors.clone()
        F = X.new_zeros((*L.shape, cfg.k + 2))  # the frame channel (_degenerate.py): X's dtype (complex: Q unitary)
        return (L, X, LE, XE, labels, cut, BXE, atol, *handle, F)

    @staticmethod
    def setup_context(ctx, inputs, output):
        cfg, *tensors = inputs
        aux = output[2:-1]
        ctx.mark_non_differentiable(*aux)
        ctx.set_materialize_grads(False)
        # the outputs L, X too: a differentiable backward (create_graph) re-enters this Function through them
        ctx.save_for_backward(*aux, *tensors, output[0], output[1], output[-1])
        ctx.save_for_forward(*aux, *tensors, output[0], output[1], output[-1])
        ctx.k, ctx.largest, ctx.opts = cfg.k, cfg.largest, cfg.opts
        ctx.spec_A, ctx.n_A, ctx.spec_B = cfg.spec_A, cfg.n_A, cfg.spec_B
        ctx.n_handle = len(aux) - N_AUX
        LE = output[2]
        ctx.factory = backward_factory(cfg, bool(ctx.n_handle), LE.dtype)

    @staticmethod
    def _unpack(ctx, saved):
        LE, XE, labels, cut, BXE, atol = saved[:N_AUX]
        handle = saved[N_AUX : N_AUX + ctx.n_handle]
        tensors = [t.detach() for t in saved[N_AUX + ctx.n_handle : -3]]
        handle = backward_handle(handle, tensors, LE)
        return LE, XE, labels, cut, BXE, atol, tuple(handle), tensors

    @staticmethod
    def _second_order(ctx, saved, LE, XE, atol, handle):
        """What the differentiable backward/jvp need: ``(L, X, Z, Lz, tensors, info)``, the
        outputs and input tensors attached to the graph, the guards ``Z``, ``Lz`` constant."""
        k = ctx.k
        tensors = tuple(saved[N_AUX + ctx.n_handle : -3])
        L, X = saved[-3], saved[-2]
        rtol = ctx.opts.resolved_degen(LE.dtype, 1.0)[1]
        info = OpSolveInfo(ctx.factory, rtol, ctx.spec_A, ctx.n_A, ctx.spec_B, len(tensors))
        return L, X, XE[..., k:], LE[..., k:], tensors, info

    @staticmethod
    def _mark(ctx, labels, LE, tensors):
        """``None`` at simple spectra (the differentiable route), else the degenerate-cluster guard."""
        degenerate = degenerate_clusters(labels, ctx.k)
        if not degenerate:
            return None
        guard = degenerate_guard(degenerate, LE)
        floats = [t for t in tensors if t.is_floating_point() or t.is_complex()]
        return lambda d: guard(d, *floats)

    @staticmethod
    def _solve(ctx, LE, XE, D, atol, handle):
        rtol = ctx.opts.resolved_degen(LE.dtype, 1.0)[1]

        def solve(R, shifts):
            return ShiftedSolve.apply(R, shifts, XE, torch.ones_like(D), atol, ctx.factory, rtol, *handle)

        return solve

    @staticmethod
    def backward(ctx, gL, gX, *rest):
        saved = ctx.saved_tensors
        XE = saved[1]  # (*b, n, K): the backward's blocks have K columns per problem
        n, columns = XE.shape[-2], XE.numel() // max(XE.shape[-2], 1)
        with torch.no_grad():
            A = ctx.spec_A.rebuild([t.detach() for t in saved[N_AUX + ctx.n_handle :][: ctx.n_A]])
        # no timing probe under torch.func (vmapped cotangents): the caller's thread count, or one for small blocks
        probe = None if torch._C._functorch.is_functorch_wrapped_tensor(XE) else (lambda: A.matmat(XE.detach()))
        with solver_threads(n, columns, probe=probe):  # eigrad/_threads.py
            return OperatorEig._backward(ctx, gL, gX, *rest)

    @staticmethod
    def _backward(ctx, gL, gX, *rest):
        LE, XE, labels, cut, BXE, atol, handle, tensors = OperatorEig._unpack(ctx, ctx.saved_tensors)
        n_A = ctx.n_A
        needs = ctx.needs_input_grad[1:]
        none = (None,) * (1 + len(tensors))
        if gL is None and gX is None:
            return none
        k = ctx.k
        gF = rest[-1]
        XE, BXE, gX, Lbar, Xbar = backward_cotangents(ctx, gL, gX, gF, LE, XE, BXE, labels, cut, atol)
        need_A, need_B = any(needs[:n_A]), ctx.spec_B is not None and any(needs[n_A:])
        if not (need_A or need_B):
            return none
        mark = first_order_only
        if torch.is_grad_enabled() and gF is None:
            # create_graph=True / torch.func: a backward that is itself differentiable (MATH.md,
            # "Second order"); with grad mode off, the first-order path below is unchanged
            saved = ctx.saved_tensors
            L, X, Z, Lz, attached, info = OperatorEig._second_order(ctx, saved, LE, XE, atol, handle)
            guard = OperatorEig._mark(ctx, labels, LE, attached)
            if guard is None:
                grads = operator_differentiable_vjp(L, X, Z, Lz, attached, info, gL, gX, atol, handle,
                                                    need_A, need_B, D=near_degenerate_mask(L, X, gX, atol))
                return (None, *[g if nd else None for g, nd in zip(grads, needs)])
            degenerate = degenerate_clusters(labels, k)
            if whole_clusters(degenerate, k) and not vmapped(labels):
                # exact second order at repeated eigenvalues (_degenerate.py)
                positions = [i for i, (t, nd) in enumerate(zip(attached, needs))
                             if nd and (t.is_floating_point() or t.is_complex()) and (need_A if i < n_A else need_B)]
                kernel = OperatorKernel(info, degenerate, need_A, need_B, ctx.opts, LE.dtype, positions)
                D = with_near_degenerate(cluster_mask(labels[..., :k]), L, X, gX, atol, k)
                out = DegenerateVJP.apply(kernel, L, X, gL, gX, D, atol, saved[-1], *attached, Z, Lz, *handle)
                grads = [None] * len(attached)
                for i, g in zip(positions, out):
                    grads[i] = g
                return (None, *grads)
            mark = guard
        D = cluster_mask(labels)
        if gF is None:
            D = with_near_degenerate(D, LE, XE, Xbar, atol, k)
        solve = OperatorEig._solve(ctx, LE, XE, D, atol, handle)
        LA, LB = vjp_terms(LE, XE, BXE, D, Lbar, Xbar, solve, need_B=need_B)
        # the guard columns of L_A, L_B are zero (their cotangents are): contract the k wanted only
        X_k = XE[..., :k]
        grads = [None] * len(tensors)
        if need_A:  # θ̄ = ∂/∂θ <L_A, A(θ) X> (MATH.md, "Reverse mode")
            A = ctx.spec_A.rebuild(tensors[:n_A])
            grads[:n_A] = A.bilinear_vjp(LA[..., :k], X_k)
        if need_B:  # φ̄ = ∂/∂φ <L_B, B(φ) X>
            B = ctx.spec_B.rebuild(tensors[n_A:])
            grads[n_A:] = B.bilinear_vjp(LB[..., :k], X_k)
        out = [mark(g) if (nd and g is not None) else None for g, nd in zip(grads, needs)]
        return (None, *out)

    @staticmethod
    def jvp(ctx, _cfg_tangent, *dtensors):
        LE, XE, labels, cut, BXE, atol, handle, tensors = OperatorEig._unpack(ctx, ctx.saved_tensors)
        n_A, k = ctx.n_A, ctx.k
        dA, dB = dtensors[:n_A], dtensors[n_A:]
        has_dA = any(d is not None for d in dA)
        has_dB = ctx.spec_B is not None and any(d is not None for d in dB)
        if not (has_dA or has_dB):
            return (None, None) + (None,) * (N_AUX + ctx.n_handle + 1)
        mark = first_order_only
        if torch.is_grad_enabled():
            # a JVP that reverse mode can differentiate (jacrev(jacfwd(f))); MATH.md, "Second order"
            saved = ctx.saved_tensors
            L, X, Z, Lz, attached, info = OperatorEig._second_order(ctx, saved, LE, XE, atol, handle)
            guard = OperatorEig._mark(ctx, labels, LE, attached)
            if guard is None:
                Ld, Xd = operator_differentiable_jvp(L, X, Z, Lz, attached, info, dtensors, atol, handle)
                return (Ld, Xd) + (None,) * (N_AUX + ctx.n_handle) + (torch.zeros_like(ctx.saved_tensors[-1]),)
            mark = guard
        D = cluster_mask(labels)
        solve = OperatorEig._solve(ctx, LE, XE, D, atol, handle)
        # V' = A' X - B' X Λ (MATH.md, "Forward mode"), A' X by one JVP of θ ↦ A(θ) X. Only the k
        # wanted columns: a guard's own system may be singular (its partner was not computed), and
        # every column of the formulas depends on its own column of V' only, so zero guard columns
        # give zero right-hand sides and leave the wanted tangents unchanged.
        X_k, m = XE[..., :k], LE.shape[-1] - k
        AdX = _pad(ctx.spec_A.rebuild(tensors[:n_A]).tangent_matmat(dA, X_k), m, -1) if has_dA else torch.zeros_like(XE)
        BdX = _pad(ctx.spec_B.rebuild(tensors[n_A:]).tangent_matmat(dB, X_k), m, -1) if has_dB else None
        Ld, Xd = jvp_terms(LE, XE, BXE, D, AdX, BdX, solve)
        Ld = Ld[..., :k]
        found = [c for c in degenerate_clusters(labels, k) if max(c[1]) < k]
        if found:  # inside a cluster: the slopes μ (eigenvalues of X_gᵀ (A' - λ B') X_g), _degenerate.py
            L, X, _, _, attached, info = OperatorEig._second_order(ctx, ctx.saved_tensors, LE, XE, atol, handle)
            Ld, _ = cluster_frames(operator_cluster_tangent(L, X, attached, info, dtensors), found, k)
        return (mark(Ld), mark(Xd[..., :, :k])) + (None,) * (N_AUX + ctx.n_handle) + (
            torch.zeros_like(ctx.saved_tensors[-1]),)

    @staticmethod
    def vmap(info, in_dims, cfg, *tensors):
        return vmap_per_slice(OperatorEig.apply, cfg, lambda c: c, info.batch_size, in_dims[1:], tensors, 2,
                              "eigsh")
