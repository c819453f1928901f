"""``F = X_k f(Λ_k) X_kᵀ`` for operators ``A(θ)``, ``B(φ)`` (sparse, matrix-free, modules).

The formulas of :mod:`._function` (docs/spectral.md, "Derivation"), with the
differentiable inputs being the operators' flattened tensors, as in
:class:`eigrad.autodiff._operator_function.OperatorEig` (whose forward solve,
backward solver factory and handle this Function shares). In reverse mode,
with ``W = sym(F̄)`` and ``z_i = 2 f(λ_i) G_i W x_i`` (partial ``k`` only),

    Ā = sym(L_A Xᵀ),  L_A = X [F1 ∘ (Xᵀ W X)] - Z
    B̄ = sym(L_B Xᵀ),  L_B = -X [F2 ∘ (Xᵀ W X)] + Z Λ

so ``θ̄ = A.bilinear_vjp(L_A, X)`` and ``φ̄ = B.bilinear_vjp(L_B, X)``: one VJP
of the operator's product each. Forward mode takes ``A' X`` from
``A.tangent_matmat``. ``G_i`` (the complement of the k computed pairs) is the
forward's eigenbasis when the operator was materialized, else projected block
MINRES deflated of every computed pair (the guards enter exactly).
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from ..autodiff._dense_function import check_broadening
from ..autodiff._formulas import sym
from ..autodiff._operator_function import (
    OperatorConfig,
    backward_factory,
    backward_handle,
    operator_solve,
    vmap_per_slice,
)
from ..autodiff._solve_fn import ShiftedSolve, first_order_only
from ._divided import divided_product
from ._function import _report_cut

N_AUX = 7  # LE, XE, BXE, atol, fL, F1, F2 (then the forward's handle, if any)


def _mT(t):
    return t.transpose(-1, -2)


@dataclasses.dataclass(frozen=True)
class _Static:
    """The non-tensor inputs: the operator config and the spectral function."""

    cfg: OperatorConfig
    fn: object


class OperatorSpectralFunction(torch.autograd.Function):
    """``(static, *tensors) -> (F, aux...)`` with ``F = X_k f(Λ_k) X_kᵀ`` (n, n)."""

    @staticmethod
    def forward(static: _Static, *tensors):
        cfg, fn = static.cfg, static.fn
        sol, LE, XE, labels, cut, atol, BXE = operator_solve(cfg, tensors)
        with torch.no_grad():
            k, n = cfg.k, XE.shape[-2]
            L, X = sol.eigenvalues, sol.eigenvectors  # (k,), (n, k)
            L = fn.admit(L, n)  # clamps eigenvalues within rounding of 0 for √λ, λ^p
            if k < n:
                _report_cut(LE, labels, cut, k, cfg.largest, cfg.opts, atol)
            fL = fn(L)
            F = sym((X * fL.unsqueeze(-2)) @ _mT(X))  # X f(Λ) Xᵀ
            F1 = fn.divided(L, fL)  # f[λ_i, λ_j] (k, k)
            F2 = fn.divided_lambda_f(L, fL, F1) if cfg.spec_B is not None else L.new_zeros(())
        handle = sol.handle.tensors if (k < n and sol.handle is not None) else ()
        return (F, LE, XE, BXE, atol, fL, F1, F2, *handle)

    @staticmethod
    def setup_context(ctx, inputs, output):
        static, *tensors = inputs
        cfg = static.cfg
        aux = output[1:]
        ctx.mark_non_differentiable(*aux)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*aux, *tensors)
        ctx.save_for_forward(*aux, *tensors)
        ctx.n_out = len(output)
        ctx.n_handle = len(aux) - N_AUX
        ctx.k, ctx.partial = cfg.k, cfg.k < output[0].shape[-1]
        ctx.spec_A, ctx.n_A, ctx.spec_B, ctx.opts = cfg.spec_A, cfg.n_A, cfg.spec_B, cfg.opts
        ctx.fn = static.fn
        factory = backward_factory(cfg, bool(ctx.n_handle), output[0].dtype)
        if ctx.partial and cfg.opts.broadening is not None:
            factory = functools.partial(factory, broadening=cfg.opts.broadening)
        ctx.factory = factory

    @staticmethod
    def _unpack(ctx):
        saved = ctx.saved_tensors
        LE, XE, BXE, atol, fL, F1, F2 = saved[:N_AUX]
        handle = saved[N_AUX : N_AUX + ctx.n_handle]
        tensors = [t.detach() for t in saved[N_AUX + ctx.n_handle :]]
        return LE, XE, BXE, atol, fL, F1, F2, backward_handle(handle, tensors, LE), tensors

    @staticmethod
    def _complement_solve(ctx, R, LE, XE, BXE, atol, handle):
        """``G_i r_i`` on the complement of the k computed pairs, B-projected (MATH.md's G_j)."""
        k = ctx.k
        X, BX, L = XE[..., :k], BXE[..., :k], LE[..., :k]
        rtol = ctx.opts.resolved_degen(LE.dtype, 1.0)[1]
        K = LE.shape[-1]
        # column i is projected against the k computed vectors (rows < k); the guards are deflated
        M = (torch.arange(K, device=LE.device) < k).unsqueeze(-1).expand(K, k)
        R = R - BX @ (_mT(X) @ R)  # Xᵀ r = 0
        Y = ShiftedSolve.apply(R, L, XE, M, atol, ctx.factory, rtol, *handle)
        return Y - X @ (_mT(BX) @ Y)  # Xᵀ B y = 0

    @staticmethod
    def backward(ctx, gF, *_):
        LE, XE, BXE, atol, fL, F1, F2, handle, tensors = OperatorSpectralFunction._unpack(ctx)
        needs = ctx.needs_input_grad[1:]
        n_A = ctx.n_A
        need_A, need_B = any(needs[:n_A]), ctx.spec_B is not None and any(needs[n_A:])
        if gF is None or not (need_A or need_B):
            return (None,) * (1 + len(tensors))
        k = ctx.k
        X, L = XE[..., :k], LE[..., :k]
        W = sym(gF)
        XtWX = _mT(X) @ W @ X  # (k, k)
        LA = X @ divided_product(ctx.fn, F1, XtWX)  # Daleckii–Krein inside the block
        LB = -(X @ (F2 * XtWX)) if need_B else None
        if ctx.partial:  # coupling to the complement: z_i = 2 f(λ_i) G_i W x_i
            Z = OperatorSpectralFunction._complement_solve(ctx, W @ X * (2 * fL).unsqueeze(-2), LE, XE, BXE,
                                                           atol, handle)
            LA = LA - Z
            if need_B:
                LB = LB + Z * L.unsqueeze(-2)
        grads = [None] * len(tensors)
        if need_A:  # θ̄ = ∂/∂θ <L_A, A(θ) X>
            grads[:n_A] = ctx.spec_A.rebuild(tensors[:n_A]).bilinear_vjp(LA, X)
        if need_B:  # φ̄ = ∂/∂φ <L_B, B(φ) X>
            grads[n_A:] = ctx.spec_B.rebuild(tensors[n_A:]).bilinear_vjp(LB, X)
        out = [first_order_only(g) if (nd and g is not None) else None for g, nd in zip(grads, needs)]
        return (None, *out)

    @staticmethod
    def jvp(ctx, _static_tangent, *dtensors):
        LE, XE, BXE, atol, fL, F1, F2, handle, tensors = OperatorSpectralFunction._unpack(ctx)
        n_A, k = ctx.n_A, ctx.k
        dA, dB = dtensors[:n_A], dtensors[n_A:]
        has_dA = any(d is not None for d in dA)
        has_dB = ctx.spec_B is not None and any(d is not None for d in dB)
        if not (has_dA or has_dB):
            return (None,) * ctx.n_out
        X, L = XE[..., :k], LE[..., :k]
        AdX = ctx.spec_A.rebuild(tensors[:n_A]).tangent_matmat(dA, X) if has_dA else torch.zeros_like(X)
        Mk = divided_product(ctx.fn, F1, _mT(X) @ AdX)  # F1 ∘ P
        V = AdX
        if has_dB:
            BdX = ctx.spec_B.rebuild(tensors[n_A:]).tangent_matmat(dB, X)
            Mk = Mk - F2 * (_mT(X) @ BdX)  # - F2 ∘ Q
            V = AdX - BdX * L.unsqueeze(-2)  # (A' - λ_i B') x_i
        dF = X @ Mk @ _mT(X)
        if ctx.partial:
            Y = OperatorSpectralFunction._complement_solve(ctx, V, LE, XE, BXE, atol, handle)
            T = (X * fL.unsqueeze(-2)) @ _mT(Y)
            dF = dF - (T + _mT(T))
        return (first_order_only(sym(dF)),) + (None,) * (ctx.n_out - 1)

    @staticmethod
    def vmap(info, in_dims, static, *tensors):
        return vmap_per_slice(OperatorSpectralFunction.apply, static, lambda st: st.cfg, info.batch_size,
                              in_dims[1:], tensors, 1, "eigrad.funm")


def operator_spectral(cfg: OperatorConfig, fn, tensors, n: int) -> torch.Tensor:
    """``X_k f(Λ_k) X_kᵀ`` of the (n, n) operators described by ``cfg``."""
    if cfg.opts.broadening is not None and cfg.k < n:
        check_broadening(cfg.solver, cfg.opts)
    return OperatorSpectralFunction.apply(_Static(cfg, fn), *tensors)[0]
