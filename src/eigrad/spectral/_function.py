"""The autograd Function of ``F = X f(Λ) Xᴴ`` (Daleckii–Krein), full or partial.

Real symmetric and complex Hermitian ``A`` share the code: ``ᵀ`` below reads
``ᴴ`` for complex input (``Λ``, ``f(Λ)``, ``F1``, ``F2`` are real; the cotangent
convention is PyTorch's, ``dL = Re tr(F̄ᴴ dF)``, docs/spectral.md).

``A X = B X Λ``, ``Xᵀ B X = I`` over the ``k`` computed eigenpairs ``S`` (all
of them when ``k = n``). With ``P = Xᵀ A' X``, ``Q = Xᵀ B' X`` (k, k),
``F1_ij = f[λ_i, λ_j]`` and ``F2_ij = g[λ_i, λ_j]`` for ``g(λ) = λ f(λ)``
(divided differences, ``eigrad.spectral._divided``), the derivative is
(docs/spectral.md, "Derivation"):

    F' = X [F1 ∘ P - F2 ∘ Q] Xᵀ - (X f(Λ) Y'ᵀ + Y' f(Λ) Xᵀ),
    y'_i = G_i (A' - λ_i B') x_i                                  (partial only)

with ``G_i`` the solution operator of ``(A - λ_i B) y = r`` on the
complement of ``S`` (right-hand side with ``Xᵀ r = 0``, answer with
``Xᵀ B y = 0``: MATH.md's ``G_j`` with the whole computed block in place of
the cluster). Reverse mode, with ``W = sym(F̄)``:

    Ā = sym(X [F1 ∘ (Xᵀ W X)] Xᵀ) - sym(Z Xᵀ)
    B̄ = -sym(X [F2 ∘ (Xᵀ W X)] Xᵀ) + sym(Z Λ Xᵀ),   z_i = 2 f(λ_i) G_i W x_i.

Nothing inside ``S`` is masked: the divided differences are bounded at
coincident eigenvalues, so clusters inside ``S`` are exact. Only a cluster
cut by ``k`` (the value itself is then not unique) is reported.
"""

from __future__ import annotations

import functools
import warnings

import torch

from .._errors import GaugeError, GaugeWarning
from ..autodiff._checks import distinct_atol
from ..autodiff._clusters import split_labels
from ..autodiff._dense_function import check_broadening
from ..autodiff._forward import checked_symmetric, solve_with_guards
from ..autodiff._formulas import sym
from ..autodiff._solve_fn import ShiftedSolve, first_order_only, guard_second_order
from ._divided import divided_product

N_AUX = 7  # L, X, BX, atol, fL, F1, F2


def _mH(t):
    """``tᴴ`` (``tᵀ`` for a real ``t``): one implementation for real symmetric and complex Hermitian ``A``."""
    return t.mH


def _report_cut(LE, labels, cut, k, largest, opts, atol, XE_is_complex=False):
    """A cluster cut by ``k``: ``X_k f(Λ_k) X_kᵀ`` is not unique (value and derivative); or, for eigenvalues
    distinct to working accuracy but merged by the tolerance (``_checks.distinct_atol``), unique with a
    derivative that grows like 1/gap, which the merged backward drops."""
    gauge = opts.gauge
    if gauge == "ignore" or not bool(cut.any()):
        return
    t = "ᴴ" if XE_is_complex else "ᵀ"
    row = cut.nonzero()[0].tolist()
    b = tuple(row[:-1])
    members = cut[b].nonzero().flatten().tolist()
    shown = [i for i in members if i < k]
    guards = [i for i in members if i >= k]
    q = len(guards)
    k_low = k - len(shown) if largest else min(shown)
    k_high = k + q
    alt = f"k={k_high}" if k_low <= 0 else f"k={k_low} or k={k_high}"
    vals = ", ".join(f"{v:.8g}" for v in LE[b][members].tolist())
    where = f" in batch element {b}" if b else ""
    fine = split_labels(LE, labels, distinct_atol(LE, atol, opts))[b]
    if set(fine[shown].tolist()) & set(fine[guards].tolist()):
        what = (f"degenerate with {q} eigenvalue(s) beyond the k computed (cluster λ = {vals}), so the k-dimensional "
                f"eigenspace is not unique: X_k f(Λ_k) X_k{t} depends on which eigenvectors of the cluster were "
                f"returned and has no derivative.")
    else:
        what = (f"nearly equal to {q} eigenvalue(s) beyond the k computed (cluster λ = {vals}, merged by the "
                f"degeneracy tolerance): X_k f(Λ_k) X_k{t} is unique, but its derivative grows like 1/gap and the "
                f"merged backward drops it.")
    msg = (
        f"eigrad: k={k} cuts a degenerate cluster{where}: the computed eigenvalue(s) at positions {shown} are "
        f"{what} Pass {alt} to keep the cluster whole. BackwardOptions(gauge='raise') makes "
        f"this an error, gauge='ignore' silences it."
    )
    if gauge == "raise":
        raise GaugeError(msg)
    warnings.warn(msg, GaugeWarning, stacklevel=4)


class SpectralFunction(torch.autograd.Function):
    """``(A, B, fn, k, largest, solver, opts) -> (F, aux...)`` with ``F = X_k f(Λ_k) X_kᵀ``."""

    @staticmethod
    def forward(A, B, fn, k, largest, solver, opts):
        if k < A.shape[-1]:  # the full case has no 1/(λ_i - λ_j) to broaden
            check_broadening(solver, opts)
        with torch.no_grad():
            A, B = checked_symmetric(A, B)
            n = A.shape[-1]
            sol, LE, XE, labels, cut, atol, _ = solve_with_guards(solver, A, B, k, n, largest, opts)
            L, X = sol.eigenvalues, sol.eigenvectors  # (*b, k), (*b, n, k)
            L = fn.admit(L, n)  # clamps eigenvalues within rounding of 0 for √λ, λ^p
            if k < n:
                _report_cut(LE, labels, cut, k, largest, opts, atol, X.is_complex())
            fL = fn(L)  # (*b, k)
            F = sym((X * fL.unsqueeze(-2)) @ _mH(X))  # X f(Λ) Xᵀ
            F1 = fn.divided(L, fL)  # f[λ_i, λ_j] (*b, k, k)
            F2 = fn.divided_lambda_f(L, fL, F1) if B is not None else L.new_zeros(())
            BX = X if B is None else B @ X
            handle = sol.handle.tensors if k < n else ()
        return (F, L, X, BX, atol, fL, F1, F2, *handle)

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, B, fn, k, largest, solver, opts = inputs
        aux = output[1:]
        ctx.mark_non_differentiable(*aux)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*aux, A, B)
        ctx.save_for_forward(*aux, A, B)
        ctx.n_out = len(output)
        ctx.partial = k < A.shape[-1]
        ctx.has_B = B is not None
        factory = solver.handle_factory
        if opts.broadening is not None:
            factory = functools.partial(factory, broadening=opts.broadening)
        ctx.factory, ctx.opts = factory, opts
        ctx.fn = fn

    @staticmethod
    def _complement_solve(ctx, R, L, X, BX, atol, handle):
        """``G_i r_i`` on the complement of the computed block, B-projected (MATH.md's G_j)."""
        rtol = ctx.opts.resolved_degen(L.dtype, 1.0)[1]
        k = L.shape[-1]
        M = torch.ones(k, k, dtype=torch.bool, device=L.device).expand(*L.shape[:-1], k, k)
        R = R - BX @ (_mH(X) @ R)  # remove the computed block's part: Xᵀ r = 0
        Y = ShiftedSolve.apply(R, L, X, M, atol, ctx.factory, rtol, *handle)
        return Y - X @ (_mH(BX) @ Y)  # Xᵀ B y = 0

    @staticmethod
    def backward(ctx, gF, *_):
        L, X, BX, atol, fL, F1, F2, *handle, A, B = ctx.saved_tensors
        if gF is None:
            return (None,) * 7
        W = sym(gF)
        XtWX = _mH(X) @ W @ X  # (*b, k, k)
        gA = X @ divided_product(ctx.fn, F1, XtWX) @ _mH(X)  # Daleckii–Krein inside the block
        gB = -(X @ (F2 * XtWX) @ _mH(X)) if ctx.has_B else None
        if ctx.partial:  # coupling to the complement: z_i = 2 f(λ_i) G_i W x_i
            Z = SpectralFunction._complement_solve(ctx, W @ X * (2 * fL).unsqueeze(-2), L, X, BX, atol, handle)
            gA = gA - (Z @ _mH(X))
            if ctx.has_B:
                gB = gB + (Z * L.unsqueeze(-2)) @ _mH(X)
        gA = guard_second_order(first_order_only(sym(gA)), A, B)
        gB = guard_second_order(first_order_only(sym(gB)), A, B) if gB is not None else None
        return gA, gB, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dA, dB, *_):
        L, X, BX, atol, fL, F1, F2, *handle, A, B = ctx.saved_tensors
        if dA is None and dB is None:
            return (None,) * ctx.n_out
        dA = sym(dA) if dA is not None else None
        dB = sym(dB) if dB is not None and ctx.has_B else None
        AdX = dA @ X if dA is not None else torch.zeros_like(X)
        M = divided_product(ctx.fn, F1, _mH(X) @ AdX)  # F1 ∘ P
        V = AdX
        if dB is not None:
            BdX = dB @ X
            M = M - F2 * (_mH(X) @ BdX)  # - F2 ∘ Q
            V = AdX - BdX * L.unsqueeze(-2)  # (A' - λ_i B') x_i
        dF = X @ M @ _mH(X)
        if ctx.partial:
            Y = SpectralFunction._complement_solve(ctx, V, L, X, BX, atol, handle)
            T = (X * fL.unsqueeze(-2)) @ _mH(Y)
            dF = dF - (T + _mH(T))
        return (guard_second_order(first_order_only(sym(dF)), A, B),) + (None,) * (ctx.n_out - 1)

    @staticmethod
    def vmap(info, in_dims, A, B, fn, k, largest, solver, opts):
        V = info.batch_size

        def front(t, d):
            if t is None:
                return None
            return t.unsqueeze(0).expand(V, *t.shape) if d is None else t.movedim(d, 0)

        out = SpectralFunction.apply(front(A, in_dims[0]), front(B, in_dims[1]), fn, k, largest, solver, opts)
        return out, tuple(0 if o.dim() > 0 else None for o in out)
