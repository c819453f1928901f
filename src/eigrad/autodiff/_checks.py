"""The existence checks of MATH.md ("When the derivative exists"), always on.

Per degenerate cluster ``g`` (and per cluster cut by ``k``), in reverse mode:

1. basis invariance: ``skew(X_gᵀ X̄_g) = 0``, measured as
   ``‖skew(X_gᵀ X̄_g)‖_F / (‖X_g‖_F ‖X̄_g‖_F)``; complex (MATH-complex,
   "Existence"): ``ᵀ`` is ``ᴴ`` and the diagonal counts, so a simple
   eigenvalue is checked too (its eigenvector's phase, ``Im(x_iᴴ x̄_i) = 0``);
2. uniform eigenvalue cotangent: ``max_g Λ̄ - min_g Λ̄`` relative to
   ``max |Λ̄|`` over all eigenvalues.

A violation above ``check_rtol`` is reported under the gauge policy. O(K²).
"""

from __future__ import annotations

import warnings

import torch
from torch._C import _functorch

from .._errors import GaugeError, GaugeWarning


def concrete(t: torch.Tensor | None) -> torch.Tensor | None:
    """The plain values behind functorch wrappers (vmap levels become leading dims)."""
    if t is None:
        return None
    while _functorch.is_functorch_wrapped_tensor(t):
        if _functorch.is_batchedtensor(t):
            bdim = _functorch.maybe_get_bdim(t)
            t = _functorch.get_unwrapped(t).movedim(bdim, 0)
        else:
            t = _functorch.get_unwrapped(t)
    return t.detach()


def _broadcast_shape(a, b) -> tuple[int, ...]:
    """``torch.broadcast_shapes`` of two shapes, without its first-call import of torch.fx/sympy (~1 s)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def _per_cluster_sum(vals: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum ``vals`` (*, K) over each cluster id (*, K) -> (*, K) indexed by cluster id."""
    out = torch.zeros(_broadcast_shape(vals.shape, labels.shape), dtype=vals.dtype, device=vals.device)
    return out.scatter_add_(-1, labels.expand_as(out), vals.expand_as(out))


def _per_cluster_reduce(vals, labels, reduce):
    shape = _broadcast_shape(vals.shape, labels.shape)
    init = torch.full(shape, float("-inf") if reduce == "amax" else float("inf"), dtype=vals.dtype, device=vals.device)
    return init.scatter_reduce_(-1, labels.expand(shape), vals.expand(shape), reduce=reduce, include_self=True)


def existence_violations(X, labels, Lbar, Xbar):
    """Per-cluster violations ``(v1, v2, size)``, each (*, K) indexed by cluster id."""
    ones = torch.ones(labels.shape, dtype=X.real.dtype, device=X.device)
    size = _per_cluster_sum(ones, labels)
    v1 = torch.zeros_like(size)
    v2 = torch.zeros_like(size)
    if Xbar is not None:
        D = (labels.unsqueeze(-1) == labels.unsqueeze(-2)).to(X.dtype)
        S = X.mH @ Xbar  # (*, K, K)
        # the diagonal of skew is i·Im(x_iᴴ x̄_i): zero for real X, the phase condition for complex X
        skew = 0.5 * (S - S.mH) * D
        num = _per_cluster_sum((skew.abs() ** 2).sum(-1), labels)
        xn = _per_cluster_sum((X.abs() ** 2).sum(-2), labels)
        xbn = _per_cluster_sum((Xbar.abs() ** 2).sum(-2), labels)
        den = torch.sqrt(xn * xbn)
        v1 = torch.where(den > 0, torch.sqrt(num) / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
    if Lbar is not None:
        hi = _per_cluster_reduce(Lbar, labels, "amax")
        lo = _per_cluster_reduce(Lbar, labels, "amin")
        spread = torch.where(torch.isfinite(hi) & torch.isfinite(lo), hi - lo, torch.zeros_like(hi))
        scale = Lbar.abs().amax(dim=-1, keepdim=True)
        v2 = torch.where(scale > 0, spread / torch.where(scale > 0, scale, torch.ones_like(scale)), torch.zeros_like(spread))
    return v1, v2, size


def _fmt_vals(vals):
    return ", ".join(f"{v:.8g}" for v in vals)


def check_existence(*, L, X, labels, cut, Lbar, Xbar, k, largest, gauge, check_rtol, what="gradient"):
    """Report clusters at which the requested derivative does not exist.

    ``L`` (*b, K), ``X`` (*b, n, K), ``labels`` and ``cut`` (*b, K) for the
    ``K = k + m`` eigenpairs (``k`` returned, then ``m`` guards beyond the
    boundary); cotangents padded with zeros on the guards.
    """
    if gauge == "ignore":
        return
    # under torch.func (jacrev: a vmapped backward) the saved tensors arrive wrapped as well
    L, X, labels, cut = concrete(L), concrete(X), concrete(labels), concrete(cut)
    sizes = torch.zeros_like(labels).scatter_add_(-1, labels, torch.ones_like(labels))
    # a complex eigenvector's phase is a gauge even at a simple eigenvalue (only X̄ can depend on it)
    phases = X.is_complex() and Xbar is not None
    if not bool((sizes > 1).any()) and not bool(cut.any()) and not phases:
        return  # every eigenvalue simple and none cut (and real): both conditions hold trivially
    try:
        Lbar, Xbar = concrete(Lbar), concrete(Xbar)
    except RuntimeError as err:  # PyTorch's legacy batched gradients have no values to inspect
        raise RuntimeError(
            "eigrad cannot check whether the derivative exists at a repeated eigenvalue"
            + (" (or, for complex eigenvectors, whether the loss depends on their phase)" if phases else "")
            + " under "
            "torch.autograd.grad(..., is_grads_batched=True) (also used by "
            "torch.autograd.functional.jacobian/hessian with vectorize=True): its batched cotangents "
            "cannot be inspected. Use torch.func.jacrev / torch.func.vmap, or vectorize=False."
        ) from err
    v1, v2, size = existence_violations(X, labels, Lbar, Xbar)
    v1, v2, size = torch.broadcast_tensors(v1, v2, size)  # a batched Λ̄ with no X̄ batches v2 only
    batch_shape = v1.shape[:-1]
    labels_b = labels.expand(*batch_shape, labels.shape[-1])
    cut_b = cut.expand(*batch_shape, cut.shape[-1])
    L_b = L.expand(*batch_shape, L.shape[-1])
    has_cut = _per_cluster_sum(cut_b.to(v1.dtype), labels_b) > 0
    bad = ((v1 > check_rtol) | (v2 > check_rtol)) & ((size > 1) | has_cut | phases)
    if not bool(bad.any()):
        return
    idx = bad.nonzero().tolist()
    messages = []
    set_valued = False
    for row in idx[:3]:
        *b, c = row
        b = tuple(b)
        members = (labels_b[b] == c).nonzero().flatten().tolist()
        shown = [i for i in members if i < k]
        guards = [i for i in members if i >= k]
        where = f" in batch element {b}" if b else ""
        vals = _fmt_vals(L_b[b][members].tolist())
        parts = []
        if guards:
            q = len(guards)
            if largest:
                k_low, k_high = k - len(shown), k + q
            else:
                k_low, k_high = min(shown), k + q
            alt = f"k={k_high}" if k_low <= 0 else f"k={k_low} or k={k_high}"
            parts.append(
                f"k={k} cuts a degenerate cluster: returned eigenvalue(s) at positions {shown} are "
                f"degenerate with {q} eigenvalue(s) beyond the k computed (cluster λ = {vals}){where}, "
                f"so the k-dimensional eigenspace is not unique and its derivative does not exist. "
                f"Pass {alt} to keep the cluster whole."
            )
            if len(shown) == k:  # every returned eigenvalue is in the cut cluster: λ_max, λ_min, Ky Fan sums
                ext, lam, vex, sub = (("largest", "λ_max", "convex", "sub") if largest else
                                      ("smallest", "λ_min", "concave", "super"))
                parts.append(
                    f"The {k} {ext} eigenvalue(s) lie inside a repeated eigenvalue of multiplicity "
                    f"{len(members)}: a function of them alone ({lam} for k=1) is not differentiable "
                    f"there and its derivative is set-valued ({lam} is {vex} in A, its {sub}differential is "
                    "{X_g S X_gᵀ : S ⪰ 0, tr S = 1} over the cluster's eigenvectors X_g)"
                    + (f", and the returned gradient λ̄ x xᵀ is one {sub}gradient" if k == 1 and Xbar is None else "")
                    + f". For a differentiable objective use the sum (or mean) of the whole cluster: "
                    f"eigsh(A, {k + len(guards)}, largest={largest}).eigenvalues.sum()."
                )
                set_valued = True
        elif len(members) == 1:  # complex only: a simple eigenvalue's phase
            parts.append(f"Simple eigenvalue at position {shown[0]} (λ = {vals}){where}:")
        else:
            parts.append(f"Degenerate cluster at positions {shown} (λ = {vals}){where}:")
        if float(v1[b][c]) > check_rtol and len(members) == 1:
            parts.append(
                f"condition 1 (phase invariance) fails: the loss depends on the phase of the complex "
                f"eigenvector x_{shown[0] if shown else members[0]}, which is defined only up to a factor "
                f"e^(iφ); |Im(x_iᴴ x̄_i)| is {float(v1[b][c]):.2e} of the cotangent's size "
                f"(tolerance {check_rtol:.1e})."
            )
        elif float(v1[b][c]) > check_rtol:
            parts.append(
                f"condition 1 (basis invariance) fails: the loss depends on the basis chosen inside the "
                f"eigenspace{' (a unitary U(m) rotation, phases included)' if phases else ''}; "
                f"‖skew(X_g{'ᴴ' if phases else 'ᵀ'} X̄_g)‖ is {float(v1[b][c]):.2e} of the cotangent's size "
                f"(tolerance {check_rtol:.1e})."
            )
        if float(v2[b][c]) > check_rtol:
            parts.append(
                f"condition 2 (uniform eigenvalue cotangent) fails: the loss weighs the cluster's "
                f"eigenvalues unequally (their cotangents spread by {float(v2[b][c]):.2e} of the largest; "
                f"tolerance {check_rtol:.1e}); the eigenvalues of a repeated eigenvalue are not "
                f"individually differentiable (e.g. the smallest of a degenerate pair)."
            )
        messages.append(" ".join(parts))
    more = f" ({len(idx) - 3} more cluster(s) not shown.)" if len(idx) > 3 else ""
    only_phases = all(size[tuple(row[:-1])][row[-1]] <= 1 and not has_cut[tuple(row[:-1])][row[-1]] for row in idx)
    if phases:
        advice = (
            " Use a loss that depends on an eigenvector only through x_i x_iᴴ (e.g. |cᴴ x_i|²) and on a "
            "cluster only through the sum of its eigenvalues or its projector X_g X_gᴴ"
        )
    else:
        advice = (
            " Use a loss that depends on a cluster only through the sum of its "
            "eigenvalues or its projector X_g X_gᵀ"
        )
    msg = (
        f"eigrad: the {what} does not exist "
        + ("because the loss depends on the phase of a complex eigenvector. " if only_phases
           else "at a degenerate eigenvalue. ")
        + " ".join(messages)
        + more
        + ("" if set_valued else (
            " The returned value is the derivative of the loss averaged over the eigenvectors' phases, "
            "not of your loss." if only_phases else
            " The returned value is the derivative of the loss averaged over the bases of "
            "each cluster's eigenspace, not of your loss."))
        + advice
        + ("." if phases else "; for a spectral function X f(Λ) Xᵀ use eigrad.funm or "
           "eigrad.projector, which differentiate it exactly.")
        + " BackwardOptions(gauge='raise') makes this an error, gauge='ignore' silences it."
    )
    if gauge == "raise":
        raise GaugeError(msg)
    warnings.warn(msg, GaugeWarning, stacklevel=3)
