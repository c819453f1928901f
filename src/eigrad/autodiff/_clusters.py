"""Clusters of degenerate eigenvalues and the mask D (MATH.md, "Clusters and the mask D")."""

from __future__ import annotations

import torch


def cluster_labels(vals: torch.Tensor, atol: torch.Tensor, rtol: float, ascending: bool = False) -> torch.Tensor:
    """Cluster index of each eigenvalue: maximal transitive runs within tolerance.

    ``vals`` (*batch, K) in any order; ``atol`` (*batch,). Two eigenvalues are
    linked when ``|λ_i - λ_j| <= atol + rtol * max(|λ_i|, |λ_j|)``; clusters
    are the connected runs of the sorted values. Returns int64 (*batch, K).
    ``ascending=True``: the caller knows ``vals`` sorted along the last
    dimension (the same labels, without the sort and its inverse permutation).
    """
    K = vals.shape[-1]
    if K <= 1:
        return torch.zeros(vals.shape, dtype=torch.int64, device=vals.device)
    if ascending:
        sv = vals
    else:
        order = torch.argsort(vals, dim=-1)
        sv = torch.gather(vals, -1, order)
    lo, hi = sv[..., :-1], sv[..., 1:]
    gap = hi - lo
    tol = atol.unsqueeze(-1) + rtol * torch.maximum(-lo, hi)  # max(|lo|, |hi|) of sorted neighbours
    new = (gap > tol).to(torch.int64)
    lab_sorted = torch.nn.functional.pad(torch.cumsum(new, dim=-1), (1, 0))
    if ascending:
        return lab_sorted
    labels = torch.empty_like(lab_sorted)
    labels.scatter_(-1, order, lab_sorted)
    return labels


def any_linked_pair(vals: torch.Tensor, atol: torch.Tensor, rtol: float) -> bool:
    """True when :func:`cluster_labels` would put two eigenvalues of one row in a cluster (one host sync).

    Linked runs of the sorted values are clusters, so a cluster of two or more exists exactly when
    some pair of sorted neighbours is linked; fewer operations than forming the labels."""
    if vals.shape[-1] <= 1:
        return False
    sv = torch.sort(vals, dim=-1).values
    lo, hi = sv[..., :-1], sv[..., 1:]
    tol = atol.unsqueeze(-1) + rtol * torch.maximum(hi.abs(), lo.abs())
    return not bool(((hi - lo) > tol).all())  # the negation of cluster_labels' test (NaN links)


def cluster_mask(labels: torch.Tensor) -> torch.Tensor:
    """``D`` (*batch, K, K) bool: ``D_ij`` iff ``i`` and ``j`` are in one cluster."""
    return labels.unsqueeze(-1) == labels.unsqueeze(-2)


def split_labels(vals: torch.Tensor, labels: torch.Tensor, atol: torch.Tensor) -> torch.Tensor:
    """``labels`` refined: members of one cluster further apart than ``atol`` (*batch,) are split.

    The runs of the sorted values that are both within one cluster of ``labels`` (runs of the same
    sorted order, :func:`cluster_labels`) and linked by ``|λ_i - λ_j| <= atol``. int64 (*batch, K).
    """
    K = vals.shape[-1]
    if K <= 1:
        return torch.zeros_like(labels)
    order = torch.argsort(vals, dim=-1)
    sv = torch.gather(vals, -1, order)
    sl = torch.gather(labels.expand(vals.shape), -1, order)
    new = ((sv[..., 1:] - sv[..., :-1] > atol.unsqueeze(-1)) | (sl[..., 1:] != sl[..., :-1])).to(torch.int64)
    lab_sorted = torch.cat([torch.zeros_like(new[..., :1]), torch.cumsum(new, dim=-1)], dim=-1)
    out = torch.empty_like(lab_sorted)
    out.scatter_(-1, order, lab_sorted)
    return out


#: the near-degenerate ("soft") tolerances of a differentiable backward, relative to the first-order
#: ones (``_second_order.near_degenerate_mask``): ``atol·eps^(-1/4)`` and ``rtol = eps^(1/4)``
def soft_tolerances(atol: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    eps = torch.finfo(dtype).eps
    return atol * eps ** (1 / 4 - 1 / 2), eps ** (1 / 4)


def simple_spectrum(vals: torch.Tensor, labels: torch.Tensor, cut: torch.Tensor, atol: torch.Tensor,
                    rtol: float, ascending: bool = False) -> bool:
    """True when no two eigenvalues of a row share a cluster of ``labels``, none is ``cut``, and no two
    are near-degenerate (within :func:`soft_tolerances`): one host sync.

    Then MATH.md's existence conditions hold trivially for a real problem, the mask ``D`` is ``I`` and
    the near-degenerate mask has nothing to mask, so a backward may skip all three. ``labels`` come
    from :func:`cluster_labels` with ``(atol, rtol)``; with ``rtol <= eps^(1/4)`` (the default is
    ``√eps``) every linked pair is also near-degenerate, so they are not read. ``cut`` may be ``None``
    (no guard computed: nothing can be cut). ``ascending``: the caller knows ``vals`` sorted.
    """
    K = vals.shape[-1]
    soft_atol, soft_rtol = soft_tolerances(atol, vals.dtype)
    bad = None
    if K > 1:
        sv = vals if ascending else torch.sort(vals, dim=-1).values
        lo, hi = sv[..., :-1], sv[..., 1:]
        tol = soft_atol.unsqueeze(-1) + soft_rtol * torch.maximum(-lo, hi)  # max(|lo|, |hi|), as lo <= hi
        bad = ~((hi - lo) > tol).all()  # NaN gaps count as near
        if rtol > soft_rtol:
            bad = bad | (labels.amax(dim=-1) != K - 1).any()  # ids 0..C-1 per row: all simple iff C = K
    if cut is not None:
        bad = cut.any() if bad is None else bad | cut.any()
    return bad is None or not bool(bad)
