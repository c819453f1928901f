"""Forward orchestration shared by the eigen-Functions: solve, cluster, guard.

Computes the k wanted eigenpairs and enough guard eigenpairs beyond them to
tell whether ``k`` cuts a cluster (MATH.md, "Cluster cut at the boundary"):
while every guard is still degenerate with the boundary, ask for more.
"""

from __future__ import annotations

import torch

from .._options import BackwardOptions
from .._validation import check_values
from ._clusters import cluster_labels
from ._formulas import sym


def checked_symmetric(A, B):
    """Finite, symmetric or Hermitian (to a dtype-scaled tolerance) inputs, read as ``(A + Aᴴ)/2``; broadcast."""
    check_values("A", A)
    A = sym(A)
    if B is not None:
        check_values("B", B)
        B = sym(B)
        A, B = torch.broadcast_tensors(A, B)
    return A, B


def _guard_order(Lg, Xg, largest):
    """Guards nearest the boundary first."""
    if largest:  # guards lie below; nearest is the highest
        return Lg.flip(-1), (None if Xg is None else Xg.flip(-1))
    return Lg, Xg


def solve_with_guards(solver, A, B, k: int, n: int, largest: bool, opts: BackwardOptions, **solver_kwargs):
    """Returns ``(sol, LE, XE, labels, cut, atol, rtol)`` with ``K = k + m`` columns:
    the k wanted (ascending) then ``m`` guards nearest-first."""
    g = min(opts.n_guard, n - k)
    while True:
        sol = solver(A, k, B=B, largest=largest, n_guard=g, **solver_kwargs)
        Lg, Xg = _guard_order(sol.guard_eigenvalues, sol.guard_eigenvectors, largest)
        m = Lg.shape[-1]
        LE = torch.cat([sol.eigenvalues, Lg], dim=-1)
        atol_f, rtol = opts.resolved_degen(LE.dtype, 1.0)
        if opts.degen_atol is None:
            atol = atol_f * sol.scale.to(LE.dtype)
        else:
            atol = torch.full(sol.scale.shape, atol_f, dtype=LE.dtype, device=LE.device)
        # the dense solvers return ascending eigenvalues; the guards continue them upwards (smallest)
        ascending = getattr(solver, "ascending", False) and (not largest or m == 0)
        labels = cluster_labels(LE, atol, rtol, ascending=ascending)
        if m == 0:  # no guards (k = n): nothing beyond the boundary, so no cluster is cut
            XE = sol.eigenvectors.clone()  # never an alias of the returned X (below)
            return sol, LE, XE, labels, torch.zeros(labels.shape, dtype=torch.bool, device=labels.device), atol, rtol
        # boundary eigenvalue: the largest computed (smallest mode) or the smallest (largest mode)
        b_idx = 0 if largest else k - 1
        boundary = labels[..., b_idx : b_idx + 1]
        in_cut = labels == boundary
        touches_guard = in_cut[..., k:].any(dim=-1) if m else torch.zeros_like(boundary[..., 0], dtype=torch.bool)
        if m and bool(in_cut[..., k + m - 1].any()) and k + m < n:
            g = min(max(2 * g, 1), n - k)  # the cluster runs past the last guard: ask for more
            continue
        cut = in_cut & touches_guard.unsqueeze(-1)
        # never alias the returned eigenvectors: XE is a non-differentiable output of the
        # autograd Functions, and marking an alias of X non-differentiable detaches X itself (k = n)
        XE = torch.cat([sol.eigenvectors, Xg], dim=-1) if m else sol.eigenvectors.clone()
        return sol, LE, XE, labels, cut, atol, rtol
