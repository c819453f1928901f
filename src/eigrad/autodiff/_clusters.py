"""Clusters of degenerate eigenvalues and the mask D (MATH.md, "Clusters and the mask D")."""

from __future__ import annotations

import torch


def cluster_labels(vals: torch.Tensor, atol: torch.Tensor, rtol: float) -> torch.Tensor:
    """Cluster index of each eigenvalue: maximal transitive runs within tolerance.

    ``vals`` (*batch, K) in any order; ``atol`` (*batch,). Two eigenvalues are
    linked when ``|λ_i - λ_j| <= atol + rtol * max(|λ_i|, |λ_j|)``; clusters
    are the connected runs of the sorted values. Returns int64 (*batch, K).
    """
    K = vals.shape[-1]
    order = torch.argsort(vals, dim=-1)
    sv = torch.gather(vals, -1, order)
    if K <= 1:
        return torch.zeros_like(order)
    gap = sv[..., 1:] - sv[..., :-1]
    tol = atol.unsqueeze(-1) + rtol * torch.maximum(sv[..., 1:].abs(), sv[..., :-1].abs())
    new = (gap > tol).to(torch.int64)
    lab_sorted = torch.cat([torch.zeros_like(new[..., :1]), torch.cumsum(new, dim=-1)], dim=-1)
    labels = torch.empty_like(lab_sorted)
    labels.scatter_(-1, order, lab_sorted)
    return labels


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
