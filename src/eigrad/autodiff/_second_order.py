"""The projected shifted solve as a differentiable operation (second derivatives).

``Y = ProjectedSolve.apply(R, shifts, X, A, B, ...)`` returns, column by
column, the solution of ``(A - λ_j B) y_j = r_j`` with ``Xᵀ B y_j = 0``
projected against **all** columns of ``X`` (the k differentiable eigenvectors),
for right-hand sides with ``Xᵀ r_j = 0`` (MATH.md, "Second order").

Derivation. With ``X`` exact eigenvectors (``A X = B X Λ``, ``Xᵀ B X = I``),
``y_j`` is the first block of the bordered system (symmetric, nonsingular
while no eigenvalue outside ``X`` equals ``λ_j``)::

    K_j [y; μ] = [r; 0],   K_j = [[A - λ_j B, B X], [Xᵀ B, 0]]

(``μ = Xᵀ r = 0``). ``K_j⁻¹ [f; h] = [G_j Π f + X h; ·]`` with
``Π f = f - B X Xᵀ f`` and ``G_j`` the projected solve, so differentiating
``K_j [y; μ] = [r; 0]``::

    JVP:  dy_j = G_j Π f_j - X (dXᵀ B y_j + Xᵀ dB y_j),
          f_j  = dr_j - dA y_j + dλ_j B y_j + λ_j dB y_j
    VJP:  w_j = G_j Π ȳ_j,  ν_j = Xᵀ ȳ_j
          r̄_j = w_j,  λ̄_j = w_jᵀ B y_j,  Ā = -sym(W Yᵀ),
          B̄ = sym(W Λ Yᵀ) - sym(X N Yᵀ),  X̄ = -B Y Nᵀ   (N = [ν_j])

Complex Hermitian problems: the same with ``ᵀ`` read as ``ᴴ`` and
``λ̄_j = Re(w_jᴴ B y_j)`` (PyTorch's convention ``dL = Re tr(Z̄ᴴ dZ)``).

Both are again projected solves with the same shifts, computed by this same
Function, so every order of derivative is available. ``A`` and ``B`` enter
only through these formulas; the forward applies the eigen-solver's handle
(an eigenbasis or a tridiagonal reduction), exactly as the first-order
backward does.
"""

from __future__ import annotations

import torch

from ._checks import concrete, existence_violations
from ._clusters import any_linked_pair, cluster_labels, cluster_mask, soft_tolerances
from ._formulas import jvp_terms, sym, vjp_terms
from ._solve_fn import first_order_only, guard_second_order, run_solver


def _mT(t):
    """The conjugate transpose (``ᵀ`` in the formulas below is ``ᴴ`` for complex problems)."""
    return t.mH


def _mm(M, Y):
    return Y if M is None else M @ Y


class ProjectedSolve(torch.autograd.Function):
    """Differentiable projected shifted solve for dense ``A`` (*b,n,n), ``B`` (*b,n,n) or None.

    ``R`` (*b,n,c), ``shifts`` (*b,c), ``X`` (*b,n,k) B-orthonormal
    eigenvectors; returns ``Y`` (*b,n,c) B-orthogonal to every column of ``X``.
    ``A`` and ``B`` must be symmetric; they are used only by the derivatives.
    """

    @staticmethod
    def forward(R, shifts, X, A, B, atol, factory, rtol, *handle):
        with torch.no_grad():
            BX = _mm(B, X)
            Rp = R - BX @ (_mT(X) @ R)  # Π r: rounding-level cleanup of the cluster part
            M = torch.ones((*X.shape[:-2], X.shape[-1], R.shape[-1]), dtype=torch.bool, device=X.device)
            Y = run_solver(factory, handle, atol, rtol, Rp, shifts, X, M)
            return Y - X @ (_mT(BX) @ Y)  # MATH.md: project the solver's answer

    @staticmethod
    def setup_context(ctx, inputs, output):
        R, shifts, X, A, B, atol, factory, rtol, *handle = inputs
        ctx.save_for_backward(shifts, X, A, B, atol, output, *handle)
        ctx.save_for_forward(shifts, X, A, B, atol, output, *handle)
        ctx.factory, ctx.rtol = factory, rtol

    @staticmethod
    def _again(ctx, F, shifts, X, A, B, atol, handle):
        """``G Π F`` through this Function (so that it is differentiable once more)."""
        BX = _mm(B, X)
        return ProjectedSolve.apply(F - BX @ (_mT(X) @ F), shifts, X, A, B, atol, ctx.factory, ctx.rtol, *handle)

    @staticmethod
    def backward(ctx, Ybar):
        shifts, X, A, B, atol, Y, *handle = ctx.saved_tensors
        n_rest = 3 + len(handle)
        if Ybar is None:
            return (None,) * (5 + n_rest)
        W = ProjectedSolve._again(ctx, Ybar, shifts, X, A, B, atol, handle)  # w_j = G_j Π ȳ_j
        N = _mT(X) @ Ybar  # ν_j = Xᵀ ȳ_j, (*b, k, c)
        BY = _mm(B, Y)
        gR = W
        gs = (W.conj() * BY).sum(-2)  # λ̄_j = w_jᵀ B y_j (complex: Re(w_jᴴ B y_j), the shifts are real)
        if gs.is_complex():
            gs = gs.real
        gX = -BY @ _mT(N)  # X̄ = -B Y Nᵀ
        gA = -sym(W @ _mT(Y))  # Ā = -sym(W Yᵀ)
        gB = None
        if B is not None:
            gB = sym((W * shifts.unsqueeze(-2)) @ _mT(Y)) - sym(X @ N @ _mT(Y))  # B̄
        return (gR, gs, gX, gA, gB) + (None,) * n_rest

    @staticmethod
    def jvp(ctx, dR, dshifts, dX, dA, dB, *_):
        shifts, X, A, B, atol, Y, *handle = ctx.saved_tensors
        BY = _mm(B, Y)
        F = torch.zeros_like(Y) if dR is None else dR  # f_j = dr_j - dA y_j + dλ_j B y_j + λ_j dB y_j
        if dA is not None:
            F = F - sym(dA) @ Y
        if dshifts is not None:
            F = F + BY * dshifts.unsqueeze(-2)
        H = None  # h_j = dXᵀ B y_j + Xᵀ dB y_j
        if B is not None and dB is not None:
            dBY = sym(dB) @ Y
            F = F + dBY * shifts.unsqueeze(-2)
            H = _mT(X) @ dBY
        if dX is not None:
            H = _mT(dX) @ BY if H is None else H + _mT(dX) @ BY
        dY = ProjectedSolve._again(ctx, F, shifts, X, A, B, atol, handle)
        if H is not None:
            dY = dY - X @ H
        return dY

    @staticmethod
    def vmap(info, in_dims, R, shifts, X, A, B, atol, factory, rtol, *handle):
        V = info.batch_size
        R_dim = in_dims[0]
        others = [in_dims[1], in_dims[2], in_dims[3], in_dims[4], in_dims[5], *in_dims[8:]]
        if R_dim is not None and all(d is None for d in others):
            # only the right-hand sides are batched: fold the vmapped dim into columns
            Rm = R.movedim(R_dim, -1)  # (*b, n, c, V)
            c = Rm.shape[-2]
            Y = ProjectedSolve.apply(
                Rm.reshape(*Rm.shape[:-2], c * V), shifts.repeat_interleave(V, dim=-1),
                X, A, B, atol, factory, rtol, *handle,
            )
            Y = Y.reshape(*Y.shape[:-1], c, V)
            return Y, Y.dim() - 1

        def front(t, d):
            if t is None:
                return None
            return t.unsqueeze(0).expand(V, *t.shape) if d is None else t.movedim(d, 0)

        args = [front(t, d) for t, d in zip((R, shifts, X, A, B, atol), in_dims[:6])]
        hs = [front(h, d) for h, d in zip(handle, in_dims[8:])]
        return ProjectedSolve.apply(*args, factory, rtol, *hs), 0


def differentiable_vjp(L, X, A, B, Lbar, Xbar, atol, factory, rtol, handle, D=None):
    """MATH.md reverse mode from differentiable operations; returns ``(Ā, B̄)`` (``B̄`` None without B).

    ``L`` (*b,k), ``X`` (*b,n,k) are the eigen-Function's own outputs (saved
    outputs are attached to the graph), ``A``, ``B`` its inputs, so the result
    can be differentiated again. The projected solves are against all k
    columns, the pairs among them coupled exactly by ``1/(λ_i - λ_j)``
    outside the cluster mask ``D`` (default ``I``: every cluster simple; at
    repeated eigenvalues :class:`~eigrad.autodiff._degenerate.DegenerateVJP`
    differentiates it in the adapted frame).
    """
    As = sym(A)
    Bs = None if B is None else sym(B)
    BX = _mm(Bs, X)
    k = X.shape[-1]
    if D is None:
        D = torch.eye(k, dtype=torch.bool, device=X.device).expand(*L.shape[:-1], k, k)

    def solve(R, shifts):
        return ProjectedSolve.apply(R, shifts, X, As, Bs, atol, factory, rtol, *handle)

    LA, LB = vjp_terms(L, X, BX, D, Lbar, Xbar, solve, need_B=B is not None)
    gA = sym(LA @ _mT(X))  # Ā = sym(L_A Xᵀ)
    gB = None if B is None else sym(LB @ _mT(X))  # B̄ = sym(L_B Xᵀ)
    return gA, gB


def near_degenerate_mask(L, X, Xbar, atol):
    """The cluster mask ``D`` for a differentiable backward at a simple spectrum, or None (``D = I``).

    Two computed eigenvalues closer than ``eps^(1/4)·scale`` (but not merged by the first-order
    tolerance ``√eps·scale``) are coupled exactly by ``E_ij = 1/(λ_i - λ_j)``; the value is fine, but
    its derivative ``-(λ_i' - λ_j')/(λ_i - λ_j)²`` multiplies the rounding of ``skew(Xᵀ X̄)``
    (measured: 1-3% error in an HVP at gaps 1e-7-3e-7, 4e-4 at 1e-6). When the loss is basis
    invariant on such a group (``skew(X_gᵀ X̄_g)`` at the rounding level, ``1e3·eps``), the masked
    MATH.md formula is the exact gradient at any gap (the dropped couplings are ``E ∘ skew(·)``, zero
    along the whole path for such losses; docs/second_order.md), so those pairs are masked; the
    others keep the exact couplings (error ``eps/gap²``, at most ~1e-8 beyond ``eps^(1/4)``).
    """
    if Xbar is None or L.shape[-1] < 2:
        return None
    eps = torch.finfo(L.dtype).eps
    try:
        Lc, Xc, Xbarc, atolc = concrete(L), concrete(X), concrete(Xbar), concrete(atol)
    except RuntimeError:  # PyTorch's legacy batched cotangents have no values: keep the exact couplings
        return None
    if tuple(Lc.shape) != tuple(L.shape):  # vmapped over the matrices: clusters per slice, not Python data
        return None
    soft_atol, soft_rtol = soft_tolerances(atolc, L.dtype)
    if not any_linked_pair(Lc, soft_atol, soft_rtol):
        return None  # no near-degenerate pair
    soft = cluster_labels(Lc, soft_atol, soft_rtol)
    k = Lc.shape[-1]
    v1, _, size = existence_violations(Xc, soft, None, Xbarc)
    ok = (v1 <= 1e3 * eps) | (size <= 1)
    ok = ok.reshape(-1, *soft.shape).all(0)  # every vmapped cotangent must allow it
    if not bool(((size.reshape(-1, *soft.shape)[0] > 1) & ok).any()):
        return None
    keep = torch.gather(ok, -1, soft)  # per column: its soft cluster may be masked
    unique = k + torch.arange(k, device=soft.device).expand_as(soft)
    mixed = torch.where(keep, soft, unique)
    return cluster_mask(mixed)


def with_near_degenerate(D, LE, XE, Xbar, atol, k):
    """The first-order mask ``D`` (*b, K, K) joined with :func:`near_degenerate_mask` on the k wanted
    columns: for a loss that is basis invariant on close eigenvalues this removes the ``eps/gap``
    rounding of ``E ∘ skew(Xᵀ X̄)`` from the gradient too (exact either way)."""
    # no slice when there are no guards: a full slice of a legacy batched cotangent (autograd.grad with
    # is_grads_batched=True, gradcheck's batched-gradient test) is an alias, which has no batching rule
    head = (lambda t: t) if LE.shape[-1] == k else (lambda t: t[..., :k])  # noqa: E731
    Dk = near_degenerate_mask(head(LE), head(XE), None if Xbar is None else head(Xbar), atol)
    if Dk is None:
        return D
    D = D.clone()
    D[..., :k, :k] |= Dk
    return D


def reduced_tangent(L, X, AdX, BdX):
    """``sym(Xᵀ (A' X - B' X Λ))`` (*b,k,k) from ``A' X`` and ``B' X`` (or None): inside a cluster,
    its reduced tangent ``X_gᵀ (A' - λ B') X_g``."""
    V = AdX if BdX is None else AdX - BdX * L.unsqueeze(-2)
    return sym(_mT(X) @ V)


def dense_cluster_tangent(L, X, dA, dB):
    """:func:`reduced_tangent` along dense ``(A', B')``."""
    AdX = sym(dA) @ X if dA is not None else torch.zeros_like(X)
    return reduced_tangent(L, X, AdX, None if dB is None else sym(dB) @ X)


class DenseKernel:
    """What :class:`~eigrad.autodiff._degenerate.DegenerateVJP` needs for dense ``A``, ``B``."""

    n_tensors = 2

    def __init__(self, found, factory, rtol, opts, dtype):
        self.found = found
        self.factory, self.rtol = factory, rtol
        self.gauge = opts.gauge
        self.check_rtol = opts.resolved_check_rtol(dtype)
        self.tie_rtol = opts.resolved_degen(dtype, 1.0)[1]

    def vjp(self, L, X, Lbar, Xbar, D, atol, tensors, handle):
        A, B = tensors
        gA, gB = differentiable_vjp(L, X, A, B, Lbar, Xbar, atol, self.factory, self.rtol, handle, D=D)
        return (gA,) if B is None else (gA, gB)

    def cluster_tangent(self, L, X, tensors, dtensors):
        return dense_cluster_tangent(L, X, dtensors[0], dtensors[1] if tensors[1] is not None else None)

    def directions(self, tensors, gouts):
        """The direction in ``(A, B)`` of a reverse-over-reverse pass: the cotangents of ``(Ā, B̄)``."""
        dA = gouts[0] if gouts[0] is not None else torch.zeros_like(tensors[0])
        return (dA, gouts[1] if len(gouts) > 1 else None)

    def place(self, tensors, outs):
        return (outs[0], outs[1] if tensors[1] is not None else None)

    def frame_tangent(self, L, X, D, atol, tensors, handle, dtensors):
        """``(T, X')``: :func:`reduced_tangent` and ``X'`` of MATH.md forward mode (cluster mask ``D``)
        along ``(A', B')``, from one product with each tangent."""
        A, B = tensors
        As, Bs = sym(A), None if B is None else sym(B)

        def solve(R, shifts):
            return ProjectedSolve.apply(R, shifts, X, As, Bs, atol, self.factory, self.rtol, *handle)

        dA, dB = dtensors
        AdX = sym(dA) @ X
        BdX = None if dB is None else sym(dB) @ X
        return reduced_tangent(L, X, AdX, BdX), jvp_terms(L, X, _mm(Bs, X), D, AdX, BdX, solve)[1]


def degenerate_clusters(labels, k):
    """``[(batch index, positions), ...]`` of clusters with more than one member that touch the k wanted columns."""
    lab = concrete(labels)
    flat = lab.reshape(-1, lab.shape[-1])
    sizes = torch.zeros_like(flat).scatter_add_(-1, flat, torch.ones_like(flat))
    if not bool((torch.gather(sizes, -1, flat[:, :k]) > 1).any()):
        return []  # the usual case, without a Python loop over the batch
    found = []
    for b in range(flat.shape[0]):
        row = flat[b].tolist()
        for c in sorted(set(row[:k])):
            pos = [i for i, v in enumerate(row) if v == c]
            if len(pos) > 1:
                found.append((b, pos))
    return found


_DEGENERATE = (
    "eigrad: this second derivative at a repeated eigenvalue ({where}) is not supported: "
    "reverse-over-forward compositions (jacrev(jacfwd(f))), torch.func.vmap over the matrices "
    "themselves, and clusters cut by k are not handled there (the first derivative is exact). "
    "Supported at repeated eigenvalues: torch.func.hessian(f), jacrev(jacrev(f)), "
    "torch.func.jvp(torch.func.grad(f), (x,), (v,)), torch.autograd.grad(..., create_graph=True) "
    "followed by another backward or a forward-mode derivative, with a batch as a leading dimension "
    "of A instead of vmap. See docs/second_order.md."
)


def describe(found, LE):
    vals = concrete(LE).reshape(-1, LE.shape[-1])
    parts = []
    for b, pos in found[:3]:
        v = vals[b, pos[0]].item()
        prefix = f"batch {b}, " if vals.shape[0] > 1 else ""
        parts.append(f"{prefix}eigenvalues at positions {pos} (≈ {v:.6g}) form a cluster of size {len(pos)}")
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return "; ".join(parts) + more


def degenerate_guard(found, LE):
    """``first_order_only`` then ``guard_second_order``, with a message that names the degenerate cluster(s)."""
    message = _DEGENERATE.format(where=describe(found, LE))

    def guard(d, *inputs):
        return guard_second_order(first_order_only(d, message), *inputs, message=message)

    return guard


def differentiable_jvp(L, X, A, B, dA, dB, atol, factory, rtol, handle):
    """MATH.md forward mode from differentiable operations; returns ``(Λ', X')``, (*b,k), (*b,n,k).

    As :func:`differentiable_vjp`: ``L``, ``X`` the saved outputs, ``D = I``.
    The tangents are differentiable in reverse mode (``jacrev(jacfwd(f))``);
    a forward derivative of them raises (see :class:`ForwardOnce`).
    """
    As = sym(A)
    Bs = None if B is None else sym(B)
    BX = _mm(Bs, X)
    k = X.shape[-1]
    D = torch.eye(k, dtype=torch.bool, device=X.device).expand(*L.shape[:-1], k, k)

    def solve(R, shifts):
        return ProjectedSolve.apply(R, shifts, X, As, Bs, atol, factory, rtol, *handle)

    AdX = sym(dA) @ X if dA is not None else torch.zeros_like(X)  # A' X
    BdX = sym(dB) @ X if dB is not None else None  # B' X
    Ld, Xd = jvp_terms(L, X, BX, D, AdX, BdX, solve)
    for x in (A, B):  # tie the tangents to the inputs, where a nested forward derivative arrives
        if x is not None:
            Ld, Xd = Ld + ForwardOnce.apply(x), Xd + ForwardOnce.apply(x)
    return Ld, Xd


_FWD_FWD = (
    "eigrad does not support forward-over-forward second derivatives (jacfwd(jacfwd(...)), nested "
    "forward-mode AD): PyTorch does not pass the outer tangent into a custom Function's jvp, so the "
    "result would silently be wrong. Use torch.func.hessian (forward-over-reverse), "
    "jacrev(jacrev(...)), jacrev(jacfwd(...)) or torch.autograd.grad(..., create_graph=True)."
)


class ForwardOnce(torch.autograd.Function):
    """A zero (0-dim) tied to an input: its reverse derivative is zero, a forward derivative raises.

    Added to the JVP's tangents so that ``jacfwd(jacfwd(f))`` fails loudly
    (the outer tangent reaches a custom Function's ``jvp`` only through its
    saved inputs) while ``jacrev(jacfwd(f))`` goes through.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        # real (x.real.dtype): the eigenvalue tangent of a complex Hermitian problem stays real
        return torch.zeros((), dtype=x.real.dtype, device=x.device)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.shape, ctx.dtype = inputs[0].shape, inputs[0].dtype

    @staticmethod
    def backward(ctx, g):
        return g.new_zeros(ctx.shape, dtype=ctx.dtype)

    @staticmethod
    def jvp(ctx, t):
        raise RuntimeError(_FWD_FWD)
