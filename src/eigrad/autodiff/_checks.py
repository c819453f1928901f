"""The existence checks of MATH.md ("When the derivative exists"), always on.

Per degenerate cluster ``g`` (and per cluster cut by ``k``), in reverse mode:

1. basis invariance: ``skew(X_gᵀ X̄_g) = 0``, measured as
   ``‖skew(X_gᵀ X̄_g)‖_F / (‖X_g‖_F ‖X̄_g‖_F)``; complex (MATH-complex,
   "Existence"): ``ᵀ`` is ``ᴴ`` and the diagonal counts, so a simple
   eigenvalue is checked too (its eigenvector's phase, ``Im(x_iᴴ x̄_i) = 0``);
2. uniform eigenvalue cotangent: ``max_h Λ̄ - min_h Λ̄`` over each group ``h``
   of the cluster's eigenvalues that are equal to working accuracy (closer
   than :func:`distinct_atol`), relative to the largest ``|Λ̄|`` on ``h``;
   a spread below the rounding level ``1e3·eps·max|Λ̄|`` of the whole
   cotangent counts as none.

Each is relative to the cluster's own cotangents, so large cotangents on other
eigenpairs hide nothing. A violation above ``check_rtol`` is reported under
the gauge policy, in words that say whether the derivative exists (docs/guide.md,
"How eigrad reports it"). Vectorized over the batch; the Python loop runs only
to word the report of at most three violating clusters. O(K²).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch._C import _functorch

from .._errors import GaugeError, GaugeWarning
from ._clusters import split_labels

#: the rounding level of a cotangent, relative to its largest entry (as in near_degenerate_mask)
_ROUNDING = 1e3


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


def _safe_ratio(num, den):
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def basis_violation(X, labels, Xbar):
    """Condition 1 per cluster (*, K), indexed by cluster id: ``‖skew(X_gᵀ X̄_g)‖_F / (‖X_g‖_F ‖X̄_g‖_F)``.

    Relative to the cluster's own ``X̄_g`` (the rounding of ``X_gᵀ X̄_g`` is relative to it), so a
    large cotangent on other eigenpairs does not hide a basis-dependent term here.
    """
    D = (labels.unsqueeze(-1) == labels.unsqueeze(-2)).to(X.dtype)
    S = X.mH @ Xbar  # (*, K, K)
    # the diagonal of skew is i·Im(x_iᴴ x̄_i): zero for real X, the phase condition for complex X
    skew = 0.5 * (S - S.mH) * D
    num = _per_cluster_sum((skew.abs() ** 2).sum(-1), labels)
    xn = _per_cluster_sum((X.abs() ** 2).sum(-2), labels)
    xbn = _per_cluster_sum((Xbar.abs() ** 2).sum(-2), labels)
    return _safe_ratio(torch.sqrt(num), torch.sqrt(xn * xbn))


def eigenvalue_violation(Lbar, fine):
    """Condition 2 per cluster of ``fine`` (*, K), indexed by its id: the spread of ``Λ̄`` on it.

    Relative to the largest ``|Λ̄|`` on that cluster, so a non-uniform weight on a repeated eigenvalue
    is reported however large the cotangents of other eigenvalues are; a spread at the rounding level
    ``1e3·eps·max|Λ̄|`` of the whole cotangent counts as none (a loss converged on a repeated
    eigenvalue, ``Σ (λ_i - t)²`` at ``λ = t``, has ``Λ̄`` of pure rounding there).
    """
    hi = _per_cluster_reduce(Lbar, fine, "amax")
    lo = _per_cluster_reduce(Lbar, fine, "amin")
    finite = torch.isfinite(hi) & torch.isfinite(lo)
    spread = torch.where(finite, hi - lo, torch.zeros_like(hi))
    own = torch.where(finite, torch.maximum(hi.abs(), lo.abs()), torch.zeros_like(hi))
    floor = _ROUNDING * torch.finfo(Lbar.dtype).eps * Lbar.abs().amax(dim=-1, keepdim=True)
    return torch.where(spread > floor, _safe_ratio(spread, own), torch.zeros_like(spread))


def existence_violations(X, labels, Lbar, Xbar, fine=None):
    """Per-cluster violations ``(v1, v2, size)``, each (*, K) indexed by cluster id of ``labels``.

    ``v1``: condition 1 (:func:`basis_violation`) on the clusters of ``labels``. ``v2``: condition 2
    (:func:`eigenvalue_violation`) measured on the clusters of ``fine`` (eigenvalues that are
    distinct to working accuracy are not weighed together, :func:`distinct_atol`; default
    ``labels``) and reported on the cluster of ``labels`` that holds them (the worst of them).
    """
    ones = torch.ones(labels.shape, dtype=X.real.dtype, device=X.device)
    size = _per_cluster_sum(ones, labels)
    v1 = torch.zeros_like(size)
    v2 = torch.zeros_like(size)
    if Xbar is not None:
        v1 = basis_violation(X, labels, Xbar)
    if Lbar is not None:
        v2 = member_eigenvalue_violation(Lbar, labels if fine is None else fine)
        v2 = _per_cluster_reduce(v2, labels, "amax").clamp_min(0)  # empty ids: -inf -> 0
    return v1, v2, size


def member_eigenvalue_violation(Lbar, fine):
    """:func:`eigenvalue_violation` of each eigenvalue's cluster of ``fine``, per eigenvalue (*, K)."""
    v = eigenvalue_violation(Lbar, fine)
    return torch.gather(v, -1, fine.expand(v.shape))


def distinct_atol(LE, atol, opts):
    """The gap beyond which two eigenvalues are distinct for condition 2: ``eps·scale/check_rtol`` (*b,).

    An eigenvalue-only cotangent on eigenvalues ``δ`` apart has the exact derivative
    ``Σ Λ̄_i x_i x_iᵀ`` (no coupling term), computed to a relative error of about ``eps·‖A‖/δ``
    (the rounding of the eigenvectors; measured by ``benchmarks/existence_gap.py``, docs/guide.md):
    below ``check_rtol`` beyond this gap. ``scale`` is the spectrum's magnitude behind the default
    ``degen_atol = sqrt(eps)·scale``, or ``max|λ|`` of the computed eigenvalues when ``degen_atol``
    is given.
    """
    eps = torch.finfo(LE.dtype).eps
    check_rtol = opts.resolved_check_rtol(LE.dtype)
    if check_rtol <= 0:
        return torch.full_like(atol, float("inf"))
    scale = atol / math.sqrt(eps) if opts.degen_atol is None else LE.abs().amax(dim=-1)
    return (eps / check_rtol) * scale


def _any_cluster_or_cut(labels, cut) -> bool:
    """A cluster of two or more eigenvalues, or one cut by ``k``, anywhere in the batch (one host sync)."""
    sizes = torch.zeros_like(labels).scatter_add_(-1, labels, torch.ones_like(labels))
    return bool((sizes > 1).any() | cut.any())


def _fmt_vals(vals):
    return ", ".join(f"{v:.8g}" for v in vals)


def _smallest_gap(vals, fine):
    """The smallest gap between members of different clusters of ``fine`` (lists), or None."""
    pairs = sorted(zip(vals, fine))
    gaps = [b[0] - a[0] for a, b in zip(pairs, pairs[1:]) if a[1] != b[1]]
    return min(gaps) if gaps else None


_NOT_FORMED = (
    "The eigenpairs' cotangents cannot give this derivative: either it does not exist (a function of "
    "the individual eigenvalues of a repeated eigenvalue: λ_min of a pair, λ_1 - λ_2), or it exists but "
    "needs the divided differences f[λ_i, λ_j] of a spectral function X f(Λ) Xᵀ over the cluster (linear "
    "f too: <W, X Λ Xᵀ>), which eigrad.funm(A, f) forms exactly."
)


def _cut_part(k, largest, shown, guards, vals, where, exact):
    q = len(guards)
    k_low, k_high = (k - len(shown), k + q) if largest else (min(shown), k + q)
    alt = f"k={k_high}" if k_low <= 0 else f"k={k_low} or k={k_high}"
    if exact:
        return (
            f"k={k} cuts a degenerate cluster: returned eigenvalue(s) at positions {shown} are "
            f"degenerate with {q} eigenvalue(s) beyond the k computed (cluster λ = {vals}){where}, "
            f"so the k-dimensional eigenspace is not unique and its derivative does not exist. "
            f"Pass {alt} to keep the cluster whole."
        )
    return (
        f"k={k} separates the returned eigenvalue(s) at positions {shown} from {q} nearly equal "
        f"eigenvalue(s) beyond the k computed (cluster λ = {vals}){where}: the eigenvectors' derivative "
        f"grows like 1/gap and eigrad merged the cluster. Pass {alt} to keep the cluster whole."
    )


def _set_valued_part(k, largest, size, with_xbar):
    ext, lam, vex, sub = ("largest", "λ_max", "convex", "sub") if largest else ("smallest", "λ_min", "concave", "super")
    return (
        f"The {k} {ext} eigenvalue(s) lie inside a repeated eigenvalue of multiplicity "
        f"{size}: a function of them alone ({lam} for k=1) is not differentiable "
        f"there and its derivative is set-valued ({lam} is {vex} in A, its {sub}differential is "
        "{X_g S X_gᵀ : S ⪰ 0, tr S = 1} over the cluster's eigenvectors X_g)"
        + (f", and the returned gradient λ̄ x xᵀ is one {sub}gradient" if k == 1 and not with_xbar else "")
        + f". For a differentiable objective use the sum (or mean) of the whole cluster: "
        f"eigsh(A, {size}, largest={largest}).eigenvalues.sum()."
    )


def _spectral_norm_part(vals, where, with_xbar):
    sig = sorted({f"{math.sqrt(max(v, 0.0)):.8g}" for v in vals})
    sig = f"σ = {sig[0]}" if len(sig) == 1 else f"σ = {', '.join(sig)}"
    return (
        f"eigrad.spectral_norm: σ_max(W) has no gradient here: the largest singular value of W is repeated "
        f"({sig}, multiplicity {len(vals)}){where}, so σ_max is not differentiable there and its "
        "subdifferential is set-valued, {U_g S V_gᵀ : S ⪰ 0, tr S = 1} over the top singular vectors U_g, V_g"
        + ("" if with_xbar else "; the returned gradient u vᵀ is one subgradient")
        + f". For a differentiable objective use a function of all {len(vals)} repeated singular values "
        "(such as the sum of their squares), or a smooth norm."
    )


def check_existence(*, L, X, labels, cut, Lbar, Xbar, k, largest, opts, atol, what="gradient", caller="eigsh"):
    """Report clusters at which the requested derivative cannot be formed from the eigenpairs.

    ``L`` (*b, K), ``X`` (*b, n, K), ``labels`` and ``cut`` (*b, K) for the
    ``K = k + m`` eigenpairs (``k`` returned, then ``m`` guards beyond the
    boundary); cotangents padded with zeros on the guards; ``atol`` (*b,) the
    degeneracy tolerance of the forward; ``caller`` the public function whose
    words the message uses (``"eigsh"`` or ``"spectral_norm"``).
    """
    gauge = opts.gauge
    if gauge == "ignore":
        return
    # under torch.func (jacrev: a vmapped backward) the saved tensors arrive wrapped as well
    L, X, labels, cut, atol = concrete(L), concrete(X), concrete(labels), concrete(cut), concrete(atol)
    # a complex eigenvector's phase is a gauge even at a simple eigenvalue (only X̄ can depend on it)
    phases = X.is_complex() and Xbar is not None
    if not phases and not _any_cluster_or_cut(labels, cut):
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
    check_rtol = opts.resolved_check_rtol(L.dtype)
    fine = split_labels(L, labels, distinct_atol(L, atol, opts))  # condition 2's clusters
    v1, v2, size = existence_violations(X, labels, Lbar, Xbar, fine=fine)
    v1, v2, size = torch.broadcast_tensors(v1, v2, size)  # a batched Λ̄ with no X̄ batches v2 only
    batch_shape = v1.shape[:-1]
    K = labels.shape[-1]
    labels_b = labels.expand(*batch_shape, K)
    fine_b = fine.expand(*batch_shape, K)
    cut_b = cut.expand(*batch_shape, K)
    L_b = L.expand(*batch_shape, K)
    has_cut = _per_cluster_sum(cut_b.to(v1.dtype), labels_b) > 0
    bad = ((v1 > check_rtol) | (v2 > check_rtol)) & ((size > 1) | has_cut | phases)
    if not bool(bad.any()):
        return
    v2m = member_eigenvalue_violation(Lbar, fine) if Lbar is not None else torch.zeros_like(L)
    v2m = v2m.expand(*batch_shape, K)
    idx = bad.nonzero().tolist()
    messages, kinds = [], set()
    all_set_valued = []  # per reported cluster: its report is a set-valued derivative (nothing else returned)
    in_sigma = []  # per reported cluster: told in spectral_norm's terms
    for row in idx[:3]:
        *b, c = row
        b = tuple(b)
        members = (labels_b[b] == c).nonzero().flatten().tolist()
        shown = [i for i in members if i < k]
        guards = [i for i in members if i >= k]
        where = f" in batch element {b}" if b else ""
        lam = L_b[b][members].tolist()
        vals = _fmt_vals(lam)
        fine_ids = fine_b[b][members].tolist()
        gap = _smallest_gap(lam, fine_ids)  # None: a repeated eigenvalue to working accuracy
        fails1 = float(v1[b][c]) > check_rtol
        fails2 = float(v2[b][c]) > check_rtol
        parts = []
        set_valued = False
        if guards:
            exact_cut = bool(set(fine_b[b][shown].tolist()) & set(fine_b[b][guards].tolist()))
            kinds.add("none" if exact_cut else "near")
            if caller == "spectral_norm" and exact_cut and fails2:
                parts.append(_spectral_norm_part(lam, where, Xbar is not None))
                set_valued = True
                in_sigma.append(True)
            else:
                in_sigma.append(False)
                parts.append(_cut_part(k, largest, shown, guards, vals, where, exact_cut))
                if exact_cut and fails2 and len(shown) == k:  # λ_max, λ_min, Ky Fan sums
                    parts.append(_set_valued_part(k, largest, len(members), Xbar is not None))
                    set_valued = True
        elif len(members) == 1:  # complex only: a simple eigenvalue's phase
            in_sigma.append(False)
            parts.append(f"Simple eigenvalue at position {shown[0]} (λ = {vals}){where}:")
        else:
            in_sigma.append(False)
            near = "" if gap is None else f", nearly equal: smallest gap {gap:.1e}, merged by the tolerance"
            parts.append(f"Degenerate cluster at positions {shown} (λ = {vals}{near}){where}:")
        H = "ᴴ" if phases else "ᵀ"
        if fails1 and len(members) == 1:
            kinds.add("phase")
            parts.append(
                f"condition 1 (phase invariance) fails: the loss depends on the phase of the complex "
                f"eigenvector x_{members[0]}, which is defined only up to a factor e^(iφ); "
                f"|Im(x_iᴴ x̄_i)| is {float(v1[b][c]):.2e} of the cotangent's size (tolerance {check_rtol:.1e})."
            )
        elif fails1:
            size1 = (f"‖skew(X_g{H} X̄_g)‖ is {float(v1[b][c]):.2e} of the cluster's cotangent, "
                     f"tolerance {check_rtol:.1e}")
            rot = " (a unitary U(m) rotation, phases included)" if phases else ""
            if gap is None:
                kinds.add("none")
                parts.append(
                    f"condition 1 (basis invariance) fails: the loss depends on the basis chosen inside the "
                    f"eigenspace{rot} ({size1}), so it is not a function of A there and has no derivative."
                )
            else:
                kinds.add("near")
                parts.append(
                    f"condition 1 (basis invariance) fails: the loss depends on the individual eigenvectors of "
                    f"these nearly equal eigenvalues ({size1}). Its derivative exists but grows like 1/gap, and "
                    f"the merged cluster drops that term; BackwardOptions(degen_atol={gap / 10:.0e}, degen_rtol=0), "
                    f"below the gap, keeps the exact coupling (relative error about 10·eps·‖A‖/gap, docs/guide.md)."
                )
        if fails2 and not set_valued:
            kinds.add("either")
            worst = [i for i in members if float(v2m[b][i]) > check_rtol]
            at = "" if gap is None else f" at positions {worst} (λ = {_fmt_vals(L_b[b][worst].tolist())})"
            parts.append(
                f"condition 2 (uniform eigenvalue cotangent) fails{at}: the loss weighs equal eigenvalues "
                f"unequally (their cotangents spread by {float(v2[b][c]):.2e} of the largest on them; "
                f"tolerance {check_rtol:.1e}). " + _NOT_FORMED
            )
        messages.append(" ".join(parts))
        all_set_valued.append(set_valued)
    more = f" ({len(idx) - 3} more cluster(s) not shown.)" if len(idx) > 3 else ""
    msg = _message(what, kinds, messages, more, all(all_set_valued), spectral=all(in_sigma), complex_=phases)
    if gauge == "raise":
        raise GaugeError(msg)
    warnings.warn(msg, GaugeWarning, stacklevel=3)


def _returned(H: str) -> str:
    """What the masked formulas return (``H``: ``ᵀ``, or ``ᴴ`` for complex problems)."""
    return (
        " The returned value is not the derivative of your loss: inside each reported cluster it drops the "
        f"terms that have no limit. Its eigenvalue part is Σ_i Λ̄_i x_i x_i{H} in the basis x_i that was "
        f"returned (x_0 x_0{H} for λ_0 alone); its eigenvector part leaves out the rotations inside the "
        f"cluster (skew(X_g{H} X̄_g))."
    )
_RETURNED_PHASE = (
    " The returned value is not the derivative of your loss: it leaves out the rotation of each "
    "reported eigenvector's phase (Im(x_iᴴ x̄_i))."
)
_ADVICE = (
    " Use a loss that depends on a cluster only through the sum of its eigenvalues or its projector "
    "X_g X_gᵀ; for a spectral function X f(Λ) Xᵀ use eigrad.funm or eigrad.projector, which "
    "differentiate it exactly."
)
_ADVICE_COMPLEX = (
    " Use a loss that depends on an eigenvector only through x_i x_iᴴ (e.g. |cᴴ x_i|²) and on a "
    "cluster only through the sum of its eigenvalues or its projector X_g X_gᴴ."
)
_POLICY = " BackwardOptions(gauge='raise') makes this an error, gauge='ignore' silences it."


def _message(what, kinds, messages, more, set_valued, spectral, complex_=False):
    """The report: a headline that is true of every reported cluster, the clusters, what was returned."""
    body = " ".join(messages) + more
    if spectral:  # every cluster told in spectral_norm's own terms (σ, W, subgradients)
        return body + _POLICY
    advice = _ADVICE_COMPLEX if complex_ else _ADVICE
    if kinds == {"phase"}:
        head = f"eigrad: the {what} does not exist because the loss depends on the phase of a complex eigenvector."
        return head + " " + body + _RETURNED_PHASE + advice + _POLICY
    kinds = {"none" if kd == "phase" else kd for kd in kinds}
    if kinds == {"none"}:
        head = f"eigrad: the {what} does not exist at a degenerate eigenvalue."
    else:
        at = "nearly equal eigenvalues" if kinds == {"near"} else "a repeated eigenvalue"
        head = f"eigrad: the {what} of this loss cannot be formed from the eigenpairs at {at}."
    return head + " " + body + ("" if set_valued else _returned("ᴴ" if complex_ else "ᵀ")) + advice + _POLICY
