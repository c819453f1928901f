"""Second derivatives for operators: the projected solve over ``A(θ)``, ``B(φ)``.

:class:`OperatorProjectedSolve` is :class:`._second_order.ProjectedSolve` with
the operators' flattened tensors ``θ``, ``φ`` as its inputs instead of dense
``A``, ``B``. From the same bordered system ``[[A - λ_j B, B X], [Xᵀ B, 0]]``
(MATH.md, "Second order"; derivation in ``_second_order.py`` and
``docs/second_order.md``), the dense ``Ā``, ``B̄`` become one VJP each of the
matrix-free product (``LinearOperator.bilinear_vjp``)::

    Ā = -sym(W Yᵀ)                       ->  θ̄ = ∂/∂θ <-W, A(θ) Y>
    B̄ = sym(W Λ Yᵀ) - sym(X N Yᵀ)        ->  φ̄ = ∂/∂φ <W Λ - X N, B(φ) Y>

and the JVP's ``dA y_j``, ``dB y_j`` are ``A.tangent_matmat(θ', Y)``,
``B.tangent_matmat(φ', Y)``. Those hooks are differentiable in ``L``, ``R``
and the operator's tensors when grad mode is on (torch ops for dense and
sparse operators; ``torch.func``/``create_graph`` for function and module
operators), so the derivative of a derivative reaches ``θ``.

Numerical core: the first-order backward's shifted solver (the forward's
eigenbasis handle, or projected block MINRES over the rebuilt operators),
called on the complement of every computed column; the guard columns
``Z`` (non-differentiable, never degenerate with a wanted eigenvalue here)
are added exactly, ``Z [(Zᵀ r)_i / (μ_i - λ_j)]``.
"""

from __future__ import annotations

import dataclasses

import torch

from ..operators import DenseOperator, OperatorSpec
from ..operators._sparse import SparseOperator
from ._formulas import jvp_terms, vjp_terms
from ._second_order import ForwardOnce, reduced_tangent
from ._solve_fn import run_solver


def _mT(t):
    """The conjugate transpose (``ᵀ`` in the formulas below is ``ᴴ`` for complex problems)."""
    return t.mH


@dataclasses.dataclass(frozen=True)
class OpSolveInfo:
    """The non-tensor inputs of :class:`OperatorProjectedSolve` (no tensors)."""

    factory: object
    rtol: float
    spec_A: OperatorSpec
    n_A: int
    spec_B: OperatorSpec | None
    n_tensors: int

    def rebuild(self, tensors):
        A = _symmetric(self.spec_A.rebuild(tensors[: self.n_A]))
        B = None if self.spec_B is None else _symmetric(self.spec_B.rebuild(tensors[self.n_A : self.n_tensors]))
        return A, B


def _symmetric(op):
    """Stored matrices as ``sym(·)`` of their tensors (the same values at the point).

    Their derivatives then see only the symmetric part of a perturbation, as
    ``bilinear_vjp`` and ``tangent_matmat`` do, and as ``sym(A)`` does for the
    dense Function; function and module operators are symmetric for every θ.
    """
    if isinstance(op, DenseOperator):
        return DenseOperator(0.5 * (op.A + _mT(op.A)))
    if isinstance(op, SparseOperator):
        pos, all_stored = op.pattern.symmetric_transpose()
        if all_stored:  # complex: the Hermitian part, ½(v_ij + conj(v_ji))
            v = op.values
            return SparseOperator.from_values(0.5 * (v + (v.conj() if v.is_complex() else v)[pos]), op.pattern)
    return op


def _apply_B(B, V):
    return V if B is None else B.matmat(V)


class OperatorProjectedSolve(torch.autograd.Function):
    """Differentiable projected shifted solve over operators.

    ``Y = OperatorProjectedSolve.apply(R, shifts, X, Z, Lz, atol, info, *tensors, *handle)``:
    ``R`` (n,c), ``shifts`` (c,), ``X`` (n,k) the B-orthonormal differentiable
    eigenvectors, ``Z`` (n,m), ``Lz`` (m,) the guard pairs (constants),
    ``tensors`` the flattened ``θ`` then ``φ``, ``handle`` the backward
    solver's tensors. Returns ``y_j = G_j Π r_j``, B-orthogonal to ``X``.
    """

    @staticmethod
    def forward(R, shifts, X, Z, Lz, atol, info, *rest):
        tensors, handle = rest[: info.n_tensors], rest[info.n_tensors :]
        with torch.no_grad():
            _, B = info.rebuild(tensors)
            XE = torch.cat([X, Z], dim=-1)  # (n, K): every computed column
            BXE = _apply_B(B, XE)
            C = _mT(XE) @ R  # (K, c)
            M = torch.ones(C.shape, dtype=torch.bool, device=R.device)
            Y = run_solver(info.factory, handle, atol, info.rtol, R - BXE @ C, shifts, XE, M)
            Y = Y - XE @ (_mT(BXE) @ Y)  # MATH.md: project the solver's answer
            k = X.shape[-1]
            gap = Lz.unsqueeze(-1) - shifts.unsqueeze(-2)  # μ_i - λ_j (m, c), away from 0 here
            return Y + Z @ (C[..., k:, :] / gap)  # the guards, exactly

    @staticmethod
    def setup_context(ctx, inputs, output):
        R, shifts, X, Z, Lz, atol, info, *rest = inputs
        ctx.save_for_backward(shifts, X, Z, Lz, atol, output, *rest)
        ctx.save_for_forward(shifts, X, Z, Lz, atol, output, *rest)
        ctx.info = info

    @staticmethod
    def _again(ctx, F, saved):
        """``G Π F`` through this Function (differentiable once more)."""
        shifts, X, Z, Lz, atol, Y, *rest = saved
        _, B = ctx.info.rebuild(rest[: ctx.info.n_tensors])
        F = F - _apply_B(B, X) @ (_mT(X) @ F)
        return OperatorProjectedSolve.apply(F, shifts, X, Z, Lz, atol, ctx.info, *rest)

    @staticmethod
    def backward(ctx, Ybar):
        saved = ctx.saved_tensors
        shifts, X, Z, Lz, atol, Y, *rest = saved
        info = ctx.info
        n_out = 7 + len(rest)
        if Ybar is None:
            return (None,) * n_out
        tensors = rest[: info.n_tensors]
        A, B = info.rebuild(tensors)
        W = OperatorProjectedSolve._again(ctx, Ybar, saved)  # w_j = G_j Π ȳ_j
        N = _mT(X) @ Ybar  # ν_j = Xᵀ ȳ_j (k, c)
        BY = _apply_B(B, Y)
        gs = (W.conj() * BY).sum(-2)  # λ̄_j = w_jᵀ B y_j (complex: Re(w_jᴴ B y_j), the shifts are real)
        if gs.is_complex():
            gs = gs.real
        gX = -BY @ _mT(N)  # X̄ = -B Y Nᵀ
        needs = ctx.needs_input_grad[7 : 7 + info.n_tensors]
        grads = [None] * len(rest)
        if any(needs[: info.n_A]):  # Ā = -sym(W Yᵀ): θ̄ = ∂/∂θ <-W, A(θ) Y>
            grads[: info.n_A] = A.bilinear_vjp(-W, Y)
        if B is not None and any(needs[info.n_A :]):  # B̄ = sym(W Λ Yᵀ) - sym(X N Yᵀ)
            grads[info.n_A : info.n_tensors] = B.bilinear_vjp(W * shifts.unsqueeze(-2) - X @ N, Y)
        grads = [g if (i < len(needs) and needs[i]) else None for i, g in enumerate(grads)]
        return (W, gs, gX, None, None, None, None, *grads)

    @staticmethod
    def jvp(ctx, dR, dshifts, dX, _dZ, _dLz, _datol, _dinfo, *drest):
        saved = ctx.saved_tensors
        shifts, X, Z, Lz, atol, Y, *rest = saved
        info = ctx.info
        tensors = rest[: info.n_tensors]
        dA, dB = drest[: info.n_A], drest[info.n_A : info.n_tensors]
        A, B = info.rebuild(tensors)
        BY = _apply_B(B, Y)
        F = torch.zeros_like(Y) if dR is None else dR  # f_j = dr_j - dA y_j + dλ_j B y_j + λ_j dB y_j
        if any(d is not None for d in dA):
            F = F - A.tangent_matmat(dA, Y)
        if dshifts is not None:
            F = F + BY * dshifts.unsqueeze(-2)
        H = None  # h_j = dXᵀ B y_j + Xᵀ dB y_j
        if B is not None and any(d is not None for d in dB):
            dBY = B.tangent_matmat(dB, Y)
            F = F + dBY * shifts.unsqueeze(-2)
            H = _mT(X) @ dBY
        if dX is not None:
            H = _mT(dX) @ BY if H is None else H + _mT(dX) @ BY
        dY = OperatorProjectedSolve._again(ctx, F, saved)
        return dY if H is None else dY - X @ H

    @staticmethod
    def vmap(info_v, in_dims, R, shifts, X, Z, Lz, atol, info, *rest):
        V = info_v.batch_size
        if in_dims[0] is not None and all(d is None for d in in_dims[1:]):
            # only the right-hand sides are batched: fold the vmapped dim into columns
            Rm = R.movedim(in_dims[0], -1)  # (n, c, V)
            c = Rm.shape[-2]
            Y = OperatorProjectedSolve.apply(Rm.reshape(*Rm.shape[:-2], c * V), shifts.repeat_interleave(V, dim=-1),
                                             X, Z, Lz, atol, info, *rest)
            Y = Y.reshape(*Y.shape[:-1], c, V)
            return Y, Y.dim() - 1
        # operators are generally unbatched: one solve per vmapped slice, stacked
        args = (R, shifts, X, Z, Lz, atol)
        dims = in_dims[:6] + in_dims[7:]

        def pick(ts, b):
            return [t if (d is None or t is None) else t.select(d, b) for t, d in zip(ts, dims)]

        outs = []
        for b in range(V):
            p = pick((*args, *rest), b)
            outs.append(OperatorProjectedSolve.apply(*p[:6], info, *p[6:]))
        return torch.stack(outs), 0


def _float_tensors(tensors):
    return [t for t in tensors if torch.is_tensor(t) and (t.is_floating_point() or t.is_complex())]


def _setup(L, X, Z, Lz, tensors, info, atol, handle, D=None):
    A, B = info.rebuild(tensors)
    BX = _apply_B(B, X)  # differentiable in φ and X
    k = X.shape[-1]
    if D is None:
        D = torch.eye(k, dtype=torch.bool, device=X.device)

    def solve(R, shifts):
        return OperatorProjectedSolve.apply(R, shifts, X, Z, Lz, atol, info, *tensors, *handle)

    return A, B, BX, D, solve


def operator_differentiable_vjp(L, X, Z, Lz, tensors, info, Lbar, Xbar, atol, handle, need_A, need_B, D=None):
    """MATH.md reverse mode from differentiable operations, for operators.

    ``L`` (k,), ``X`` (n,k) the Function's own outputs, ``tensors`` its
    inputs (attached to the graph), ``Z``, ``Lz`` the guard pairs. Returns
    the gradients of ``tensors`` (``θ̄ = A.bilinear_vjp(L_A, X)``,
    ``φ̄ = B.bilinear_vjp(L_B, X)``), differentiable again. ``D`` the
    cluster mask (default ``I``: simple spectra; at repeated eigenvalues
    :class:`~eigrad.autodiff._degenerate.DegenerateVJP` differentiates it).
    """
    A, B, BX, D, solve = _setup(L, X, Z, Lz, tensors, info, atol, handle, D)
    LA, LB = vjp_terms(L, X, BX, D, Lbar, Xbar, solve, need_B=need_B and B is not None)
    grads = [None] * info.n_tensors
    if need_A:  # θ̄ = ∂/∂θ <L_A, A(θ) X>
        grads[: info.n_A] = A.bilinear_vjp(LA, X)
    if need_B and B is not None:  # φ̄ = ∂/∂φ <L_B, B(φ) X>
        grads[info.n_A :] = B.bilinear_vjp(LB, X)
    return grads


def operator_differentiable_jvp(L, X, Z, Lz, tensors, info, dtensors, atol, handle):
    """MATH.md forward mode from differentiable operations, for operators; ``(Λ', X')``.

    ``A' X = A.tangent_matmat(θ', X)``; the tangents are differentiable in
    reverse mode (``jacrev(jacfwd(f))``), a forward derivative of them raises.
    """
    A, B, BX, D, solve = _setup(L, X, Z, Lz, tensors, info, atol, handle)
    AdX, BdX = _tangent_products(A, B, X, info, dtensors)  # A' X, B' X
    Ld, Xd = jvp_terms(L, X, BX, D, AdX, BdX, solve)
    for x in _float_tensors(tensors):  # where a nested forward derivative would arrive: raise there
        Ld, Xd = Ld + ForwardOnce.apply(x), Xd + ForwardOnce.apply(x)
    return Ld, Xd


def operator_cluster_tangent(L, X, tensors, info, dtensors):
    """``sym(Xᵀ (A' X - B' X Λ))`` (k,k) by one JVP of each product; inside a cluster ``X_gᵀ (A' - λ B') X_g``."""
    A, B = info.rebuild(tensors)
    return reduced_tangent(L, X, *_tangent_products(A, B, X, info, dtensors))


def _tangent_products(A, B, X, info, dtensors):
    """``(A' X, B' X)`` (``B' X`` None without a B tangent), one JVP of each product."""
    dA, dB = dtensors[: info.n_A], dtensors[info.n_A : info.n_tensors]
    AdX = A.tangent_matmat(dA, X) if any(d is not None for d in dA) else torch.zeros_like(X)
    BdX = B.tangent_matmat(dB, X) if B is not None and any(d is not None for d in dB) else None
    return AdX, BdX


class OperatorKernel:
    """What :class:`~eigrad.autodiff._degenerate.DegenerateVJP` needs for operators.

    Its tensors are the operator tensors then the guard pairs ``Z``, ``Lz``;
    its outputs the gradients of the floating tensors that need one
    (``positions``).
    """

    def __init__(self, info, found, need_A, need_B, opts, dtype, positions):
        self.info, self.found = info, found
        self.n_tensors = info.n_tensors + 2
        self.need_A, self.need_B = need_A, need_B
        self.positions = positions
        self.gauge = opts.gauge
        self.check_rtol = opts.resolved_check_rtol(dtype)
        self.tie_rtol = opts.resolved_degen(dtype, 1.0)[1]

    def vjp(self, L, X, Lbar, Xbar, D, atol, tensors, handle):
        ops, (Z, Lz) = tensors[: self.info.n_tensors], tensors[self.info.n_tensors :]
        grads = operator_differentiable_vjp(L, X, Z, Lz, ops, self.info, Lbar, Xbar, atol, handle,
                                            self.need_A, self.need_B, D=D)
        return tuple(grads[i] for i in self.positions)

    def cluster_tangent(self, L, X, tensors, dtensors):
        return operator_cluster_tangent(L, X, tensors[: self.info.n_tensors], self.info, dtensors)

    def directions(self, tensors, gouts):
        """The direction in the operator tensors of a reverse-over-reverse pass: the cotangents of their gradients."""
        d = [None] * len(tensors)
        for i, g in zip(self.positions, gouts):
            d[i] = g
        return d

    def place(self, tensors, outs):
        return tuple(outs[i] if i in self.positions else None for i in range(len(tensors)))

    def frame_tangent(self, L, X, D, atol, tensors, handle, dtensors):
        """``(T, X')`` as the dense kernel's, along the tensors' tangents."""
        ops, (Z, Lz) = tensors[: self.info.n_tensors], tensors[self.info.n_tensors :]
        A, B, BX, _, solve = _setup(L, X, Z, Lz, ops, self.info, atol, handle, D)
        AdX, BdX = _tangent_products(A, B, X, self.info, dtensors)
        return reduced_tangent(L, X, AdX, BdX), jvp_terms(L, X, BX, D, AdX, BdX, solve)[1]
