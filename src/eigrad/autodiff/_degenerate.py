"""Second derivatives at exactly repeated eigenvalues (docs/second_order.md, "Exact degeneracy").

At a cluster ``g`` (eigenvalue ``λ``, size ``m``, vectors ``X_g``) the
eigenvalues along ``A + tA'``, ``B + tB'`` leave ``λ`` with the slopes ``μ``,
the eigenvalues of the cluster's reduced tangent

    T_g = X_gᵀ (A' - λ B') X_g = Q diag(μ) Qᵀ          (μ ascending),

and the eigenvectors converge to the *adapted* basis ``X_g Q``, not to the
returned ``X_g``. Two consequences, both implemented here:

1. The eigenvalue JVP inside a cluster is ``μ`` (the one-sided directional
   derivative of the sorted eigenvalues, ``t → 0⁺``), not ``diag(T_g)`` (the
   diagonal in an arbitrary basis). :func:`cluster_frames` computes it.
2. The derivative of the gradient (forward-over-reverse HVP) is the
   derivative of the masked MATH.md backward evaluated in the adapted frame:
   ``X_g → X_g Q``, ``X̄_g → X̄_g Q`` with the tangents rotated alike, the
   eigenvalue tangent ``μ`` and the cotangent tangent ``Λ̄'`` (which the loss
   computed from ``μ``) paired with the adapted columns. For a loss that
   depends on each cluster's eigenvectors only through its subspace
   (``X_gᵀ X̄_g`` symmetric for every ``Λ``), the in-cluster couplings
   ``skew(X_gᵀ X̄_g)_ij / (λ_j - λ_i)`` of the unmasked formula vanish
   identically along the path, so the masked formula *is* the gradient along
   it, and its derivative there is the Hessian-vector product.
   :class:`DegenerateVJP` does this in its ``jvp``.

The rotation depends on the direction. Forward-over-reverse knows it when
the tangent arrives. Reverse-over-reverse knows it only in the backward of
:class:`DegenerateVJP` (the direction is the cotangent of the gradient), and
the eigen-Function's own backward, which runs later in the same pass, needs
it too: the eigen-Functions have one more output, the *frame channel* ``F``
(zeros, never used by a loss), which :class:`DegenerateVJP` takes as an
input; its cotangent is ``[Q | μ | 1]``, so autograd delivers the frame to the
eigen-Function's backward together with the cotangents of ``Λ`` and ``X``
(:func:`adapted_frame`). When ``μ`` is itself repeated, ``Q`` is not unique
inside the repeated slopes, and the result does not depend on the choice iff
``Λ̄'`` is uniform there (e.g. a symmetric function of the cluster's
eigenvalues); :func:`check_second_order` reports otherwise, and when the
loss's basis invariance changes along the direction.
"""

from __future__ import annotations

import warnings

import torch

from .._errors import GaugeError, GaugeWarning
from ._checks import concrete
from ._formulas import sym
from ._second_order import degenerate_clusters


def _mT(t):
    """The conjugate transpose (the transpose for real problems)."""
    return t.mH


def cluster_frames(T, found, k):
    """Per degenerate cluster, the eigendecomposition of ``T``'s block.

    ``T`` (*b, k, k) symmetric or Hermitian (may be vmapped), ``found`` ``[(flat batch
    index, positions), ...]`` (:func:`degenerate_clusters`). Returns ``mu``
    (*b, k): ``diag(T)`` with each cluster's entries replaced by its block's
    eigenvalues, ascending (the positions are ascending, as the returned
    eigenvalues are); and ``Q`` (*b, k, k): the identity with each cluster's
    block replaced by the block's eigenvectors.
    """
    batch = T.shape[:-2]
    Tf = T.reshape(-1, k, k)
    eye = torch.eye(k, dtype=T.dtype, device=T.device)
    mus, Qs = [], []
    for b in range(Tf.shape[0]):
        Tb = Tf[b]
        mu, Q = torch.diagonal(Tb), eye
        for bb, pos in found:
            if bb != b:
                continue
            E = eye[:, pos]  # (k, m) selects the cluster's columns
            blk = sym(_mT(E) @ Tb @ E)
            w, V = torch.linalg.eigh(blk)
            Q = Q + E @ (V - torch.eye(len(pos), dtype=T.dtype, device=T.device)) @ _mT(E)
            mu = mu + E @ (w.to(T.dtype) - torch.diagonal(blk))
        mus.append(mu.real if mu.is_complex() else mu)  # T Hermitian: real slopes
        Qs.append(Q)
    return torch.stack(mus).reshape(*batch, k), torch.stack(Qs).reshape(*batch, k, k)


def whole_clusters(found, k):
    """True when no degenerate cluster reaches past the k returned columns (a cut one has no derivative)."""
    return all(max(pos) < k for _, pos in found)


def vmapped(labels):
    """True when a vmap level hides part of the batch of ``labels`` (clusters may differ per slice).

    The exact second order needs the clusters as Python data per batch element; there the
    eigen-Functions keep the lazy guard (a second derivative raises, the first is exact).
    """
    return tuple(concrete(labels).shape) != tuple(labels.shape)


def _report(gauge, msg):
    if gauge == "raise":
        raise GaugeError(msg)
    warnings.warn(msg, GaugeWarning, stacklevel=4)


def _ratio(num, den):
    """``num / den`` where ``den > 0``, else ``num``."""
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), num)


def check_second_order(found, mu, dLbar, X, dX, Xbar, dXbar, gauge, check_rtol, tie_rtol):
    """Report when the Hessian-vector product of the loss does not exist at a cluster.

    In the adapted frame (``mu``, ``dLbar`` per adapted column; ``X``, ``dX``,
    ``Xbar``, ``dXbar`` in any frame): (a) inside a run of repeated slopes
    ``μ`` the cotangent's tangent ``Λ̄'`` must be uniform (else the result
    depends on the basis chosen inside it); (b) basis invariance must persist
    along the direction: ``skew(X_gᵀ X̄'_g + X'_gᵀ X̄_g) = 0``.
    """
    if gauge == "ignore":
        return
    k = X.shape[-1]
    nb = 1
    for d in X.shape[:-2]:
        nb *= d

    def rows(t, *tail):
        """(vmapped directions, nb, *tail) from the plain values behind ``t``."""
        return None if t is None else concrete(t).reshape(-1, nb, *tail)

    mu_c, dLbar_c = rows(mu, k), rows(dLbar, k)
    n = X.shape[-2]
    X_c, dX_c, Xbar_c, dXbar_c = rows(X, n, k), rows(dX, n, k), rows(Xbar, n, k), rows(dXbar, n, k)
    problems = []
    for b, pos in found:
        where = f" (batch element {b})" if nb > 1 else ""
        m = mu_c[:, b][:, pos]  # (directions, size)
        if dLbar_c is not None:
            lb = dLbar_c[:, b][:, pos]
            m, lb = torch.broadcast_tensors(m, lb)
            scale_mu = m.abs().amax(-1, keepdim=True).unsqueeze(-1)
            ties = (m.unsqueeze(-1) - m.unsqueeze(-2)).abs() <= tie_rtol * scale_mu
            spread = ((lb.unsqueeze(-1) - lb.unsqueeze(-2)).abs() * ties).amax(dim=(-1, -2))
            scale = dLbar_c[:, b].abs().amax(-1)
            rel = _ratio(spread, scale)
            if bool((rel > check_rtol).any()):
                problems.append(
                    f"at the cluster at positions {pos}{where} the direction leaves eigenvalue slopes "
                    f"repeated (μ = {', '.join(f'{v:.6g}' for v in m[0].tolist())}) while the loss's "
                    f"eigenvalue cotangent changes unequally inside them (spread {float(rel.max()):.2e} of "
                    f"its largest change; tolerance {check_rtol:.1e})"
                )
        if Xbar_c is not None and dXbar_c is not None and dX_c is not None:
            xg, xbg = X_c[:, b][..., pos], Xbar_c[:, b][..., pos]
            dxg, dxbg = dX_c[:, b][..., pos], dXbar_c[:, b][..., pos]
            S = _mT(xg) @ dxbg + _mT(dxg) @ xbg  # (directions, size, size)
            skew = 0.5 * (S - _mT(S))
            den = xg.norm(dim=(-2, -1)) * dxbg.norm(dim=(-2, -1)) + dxg.norm(dim=(-2, -1)) * xbg.norm(dim=(-2, -1))
            rel = _ratio(skew.norm(dim=(-2, -1)), den)
            if bool((rel > check_rtol).any()):
                problems.append(
                    f"at the cluster at positions {pos}{where} the loss's basis invariance does not persist "
                    f"along the direction: ‖skew(X_gᵀ X̄'_g + X'_gᵀ X̄_g)‖ is {float(rel.max()):.2e} of its "
                    f"size (tolerance {check_rtol:.1e}), so the loss depends on the eigenvectors inside the "
                    "cluster individually"
                )
    if problems:
        _report(gauge, (
            "eigrad: the second derivative (Hessian-vector product) does not exist at a repeated "
            "eigenvalue: " + "; ".join(problems[:3]) + ". A loss has one there when it depends on each "
            "cluster only through a symmetric function of its eigenvalues and through its projector "
            "X_g X_gᵀ; for a spectral function X f(Λ) Xᵀ use eigrad.funm. BackwardOptions(gauge='raise') "
            "makes this an error, gauge='ignore' silences it."
        ))


class DegenerateVJP(torch.autograd.Function):
    """The differentiable backward at a point with repeated eigenvalues.

    ``DegenerateVJP.apply(kernel, L, X, Lbar, Xbar, D, atol, F, *tensors, *handle)``
    returns the masked MATH.md gradient of ``tensors`` (a tuple). Its ``jvp``
    and its ``backward`` are the exact derivative of the gradient (module
    docstring) in forward and in reverse mode; ``F`` is the eigen-Function's
    frame channel. Every tensor is an input (functorch levels), ``kernel``
    holds no tensor.

    ``kernel`` provides ``n_tensors``, ``vjp(L, X, Lbar, Xbar, D, atol,
    tensors, handle)`` (differentiable torch operations, cluster mask ``D``),
    ``cluster_tangent(L, X, tensors, dtensors)`` (``Xᵀ (A' X - B' X Λ)``,
    (*b, k, k)), ``frame_tangent(L, X, D, atol, tensors, handle, dtensors)``
    (that and ``X'`` of MATH.md forward mode, from the same products), ``directions(tensors, gouts)`` (the
    direction of a reverse-over-reverse pass, per tensor), ``place(tensors,
    outs)`` (the outputs as cotangents of ``tensors``), ``found``, ``gauge``,
    ``check_rtol`` and ``tie_rtol``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(kernel, L, X, Lbar, Xbar, D, atol, F, *rest):
        tensors, handle = rest[: kernel.n_tensors], rest[kernel.n_tensors :]
        with torch.no_grad():
            return tuple(kernel.vjp(L, X, Lbar, Xbar, D, atol, tensors, handle))

    @staticmethod
    def setup_context(ctx, inputs, output):
        kernel, L, X, Lbar, Xbar, D, atol, F, *rest = inputs
        ctx.kernel = kernel
        ctx.save_for_forward(L, X, Lbar, Xbar, D, atol, *rest)
        ctx.save_for_backward(L, X, Lbar, Xbar, D, atol, *rest)

    @staticmethod
    def backward(ctx, *gouts):
        # Reverse-over-reverse: the direction V is the cotangent of the gradient. The Hessian splits
        # into the loss's part Jᵀ ℓ'' J (symmetric: autograd's reverse pass through the loss is
        # right, given J V in the adapted frame and the frame for the eigen-Function's backward) and
        # the curvature of the eigendecomposition, K. The frozen-frame K is not symmetric, so K V
        # is computed here in forward mode, exactly as in jvp, and returned as the cotangent of
        # the tensors; nothing flows back through L, X directly.
        kernel = ctx.kernel
        L, X, Lbar, Xbar, D, atol, *rest = ctx.saved_tensors
        tensors, handle = rest[: kernel.n_tensors], rest[kernel.n_tensors :]
        k = X.shape[-1]
        directions = kernel.directions(tensors, gouts)
        T, dX = kernel.frame_tangent(L, X, D, atol, tensors, handle, directions)  # X' along V (MATH.md JVP)
        mu, Q = cluster_frames(T, kernel.found, k)
        KV = _adapted_jvp(kernel, Q, (L, X, Lbar, Xbar), (mu, dX, None, None), D, atol, tensors, directions, handle)
        gtensors = kernel.place(tensors, KV)
        # the frame, for the eigen-Function's backward; the last column counts the paths that sent one
        mu_c = mu.to(Q.dtype)  # the frame channel has X's dtype (complex: Q unitary)
        gF = torch.cat([Q, mu_c.unsqueeze(-1), torch.ones_like(mu_c).unsqueeze(-1)], dim=-1)
        # J V, paired with the adapted columns: the loss's reverse pass applies ℓ'' to it
        gLbar = mu if Lbar is not None else None
        gXbar = dX if Xbar is not None else None
        return (None, None, None, gLbar, gXbar, None, None, gF, *gtensors, *(None,) * len(handle))

    @staticmethod
    def jvp(ctx, _dkernel, dL, dX, dLbar, dXbar, _dD, _datol, _dF, *drest):
        kernel = ctx.kernel
        L, X, Lbar, Xbar, D, atol, *rest = ctx.saved_tensors
        tensors, handle = rest[: kernel.n_tensors], rest[kernel.n_tensors :]
        dtensors = drest[: kernel.n_tensors]
        k = X.shape[-1]
        T = kernel.cluster_tangent(L, X, tensors, dtensors)  # Xᵀ (A' - λ B') X per cluster
        mu, Q = cluster_frames(T, kernel.found, k)
        dL = mu if dL is None else dL  # μ from the eigen-Function's JVP, paired with the adapted columns
        dX = torch.zeros_like(X) if dX is None else dX
        check_second_order(kernel.found, mu, dLbar, X, dX, Xbar, dXbar, kernel.gauge, kernel.check_rtol,
                           kernel.tie_rtol)
        return _adapted_jvp(kernel, Q, (L, X, Lbar, Xbar), (dL, dX, dLbar, dXbar), D, atol, tensors, dtensors,
                            handle)


def _adapted_jvp(kernel, Q, primals, tangents, D, atol, tensors, dtensors, handle):
    """Forward derivative of the masked gradient ``kernel.vjp`` in the adapted frame.

    ``primals = (L, X, Λ̄, X̄)`` and their ``tangents`` (None: zero) in the returned
    frame: ``X``, ``X̄`` and their tangents are rotated by ``Q`` (``Λ``, ``Λ̄``
    are uniform on each cluster; ``Λ'``, ``Λ̄'`` are already paired with the
    adapted columns); ``dtensors`` the tangents of ``tensors``.
    """
    zeros = torch.zeros_like
    L, X, Lbar, Xbar = primals
    dL, dX, dLbar, dXbar = tangents
    rot = [False, True, False, True]
    P = [L, X, zeros(L) if Lbar is None else Lbar, zeros(X) if Xbar is None else Xbar]
    Tn = [zeros(p) if t is None else t for p, t in zip(P, (dL, dX, dLbar, dXbar))]
    P = [p @ Q if r else p for p, r in zip(P, rot)]
    Tn = [t @ Q if r else t for t, r in zip(Tn, rot)]
    diff = [i for i, t in enumerate(tensors) if torch.is_tensor(t) and (t.is_floating_point() or t.is_complex())]
    P += [tensors[i] for i in diff]
    Tn += [zeros(tensors[i]) if dtensors[i] is None else dtensors[i] for i in diff]

    def gradient(L_, X_, Lbar_, Xbar_, *floats):
        ts = list(tensors)
        for i, t in zip(diff, floats):
            ts[i] = t
        return tuple(kernel.vjp(L_, X_, Lbar_, Xbar_, D, atol, ts, handle))

    return _forward_derivative(gradient, tuple(P), tuple(Tn))


def _forward_derivative(fn, primals, tangents):
    """``torch.func.jvp(fn, primals, tangents)[1]``; inside ``torch.autograd.forward_ad`` (which does not
    nest forward levels) the same by the double-VJP identity ``J t = ∂/∂u <Jᵀ u, t>`` (twice the cost)."""
    try:
        return torch.func.jvp(fn, primals, tangents)[1]
    except RuntimeError as err:
        if "Nested forward mode AD is not supported" not in str(err):
            raise
    outs, pullback = torch.func.vjp(fn, *primals)
    _, pullback2 = torch.func.vjp(lambda *u: pullback(u), *[torch.zeros_like(o) for o in outs])
    return pullback2(tuple(tangents))


def adapted_frame(gF, XE, BXE, gL, gX, labels, opts):
    """The eigen-Function's columns and ``X`` cotangent in the frame ``[Q | μ] = gF`` (reverse-over-reverse).

    ``XE``, ``BXE`` (*b, n, K): the first k columns rotated by ``Q``; ``gX``
    (*b, n, k) likewise. ``gL`` stays: it is already paired with the adapted
    columns. Checks that one frame arrived (``Q`` orthogonal: two
    second-order paths through one decomposition would add two frames) and
    that ``gL`` is uniform where the slopes ``μ`` repeat.
    """
    k = gF.shape[-2]
    count = gF[..., :1, k + 1 :]  # (*b, 1, 1): equal frames from several paths add up
    Q, mu = gF[..., :k] / count, gF[..., k] / count[..., 0]
    if mu.is_complex():  # complex problems: Q unitary, the slopes μ real
        mu = mu.real
    err = concrete(_mT(Q) @ Q - torch.eye(k, dtype=Q.dtype, device=Q.device)).abs().max()
    if float(err) > 1e-6:
        raise RuntimeError(
            "eigrad: several second-order paths meet at one eigendecomposition at a repeated eigenvalue "
            "along different directions (e.g. two create_graph=True gradients through the same eigsh call "
            "differentiated together along different directions); this is not supported. Compute each second derivative from its own eigsh call, or use "
            "forward-over-reverse (torch.func.hessian, torch.func.jvp(torch.func.grad(f), ...))."
        )
    found = degenerate_clusters(labels, k)
    check_second_order(found, mu, gL, XE[..., :k], None, None, None, opts.gauge,
                       opts.resolved_check_rtol(XE.dtype), opts.resolved_degen(XE.dtype, 1.0)[1])

    def rot(Y):
        return torch.cat([Y[..., :k] @ Q, Y[..., k:]], dim=-1)

    return rot(XE), rot(BXE), (None if gX is None else gX @ Q)
