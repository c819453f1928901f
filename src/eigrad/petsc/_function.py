"""The autograd Function of ``eigsh(DistributedCSR, k, solver="slepc")``.

Inputs: this rank's stored values of ``A`` (and ``B``). Outputs: the eigenvalues (replicated) and
this rank's rows of the eigenvectors, plus the non-differentiable guards
and cluster labels. The backward is MATH.md's reverse mode written once in
``autodiff._formulas.vjp_terms``, called with local row blocks and an inner
product that sums over the ranks (``_comm.inner``), and with the distributed
projected shifted solves of ``_ksp``; the existence checks are
``autodiff._checks.check_existence`` on a ``2K × 2K`` factor of the global Gram
matrix of ``[X, X̄]`` (the checks use ``X`` and ``X̄`` only through ``Xᵀ X̄`` and
column norms), so every rank reports the same clusters with the same numbers.

**Cotangents of replicated outputs.** Every rank holds the same eigenvalues
and typically computes the same loss of them; the eigenvalue cotangent used
is the *mean* over the ranks of their ``Λ̄`` (a loss of ``L`` computed
identically on every rank counts once), while eigenvector cotangents are
local rows and add up (the loss is ``f(L) + Σ_ranks g_r(X_r)``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .._options import BackwardOptions
from ..autodiff._checks import check_existence
from ..autodiff._clusters import cluster_mask
from ..autodiff._forward import solve_with_guards
from ..autodiff._degenerate import cluster_frames
from ..autodiff._formulas import jvp_terms, sym, vjp_terms
from ..autodiff._second_order import degenerate_clusters
from ._comm import allsum, inner
from ._ksp import projected_solves
from ._matrix import Pattern, PetscOperator, gather_rows, symmetry_probe
from ._slepc import Slepc


@dataclasses.dataclass(frozen=True, eq=False)
class SlepcConfig:
    """The non-tensor inputs of :class:`SlepcEig` (never stored on ``ctx``)."""

    k: int
    largest: bool
    solver: Slepc
    opts: BackwardOptions
    pattern: Pattern
    pattern_B: Pattern | None = None
    X0: torch.Tensor | None = None


def _gram_factor(X, Xbar, mpi):
    """``(F_X, F_X̄)`` (2K, K) each with ``[F_X, F_X̄]ᵀ [F_X, F_X̄] = [X, X̄]ᵀ [X, X̄]`` over all rows."""
    W = torch.cat([X, Xbar], dim=-1)
    G = allsum(W.T @ W, mpi)
    w, V = torch.linalg.eigh(0.5 * (G + G.T))
    F = w.clamp(min=0).sqrt().unsqueeze(-1) * V.T
    K = X.shape[-1]
    return F[:, :K], F[:, K:]


def values_vjp(LA, X, pattern: Pattern):
    """``v̄_e = ½ [(L_A Xᵀ)_ij + (L_A Xᵀ)_ji]`` for each local entry ``e = (i, j)`` (MATH.md, sparse A).

    Row ``i`` is local; row ``j`` of ``L_A`` and ``X`` may live on another rank:
    the rows at the pattern's distinct columns are gathered with one PETSc
    scatter (:func:`._matrix.gather_rows`).
    """
    k = X.shape[-1]
    cols, inv = np.unique(pattern.col, return_inverse=True)
    ghost = gather_rows(torch.cat([LA, X], dim=-1), pattern, cols)  # (len(cols), 2k)
    LAj, Xj = ghost[inv, :k], ghost[inv, k:]
    li = torch.from_numpy(pattern.rows() - pattern.start)
    return 0.5 * ((LA[li] * Xj).sum(-1) + (LAj * X[li]).sum(-1))


def tangent_matmat(pattern: Pattern, dvalues, X):
    """``A' X`` (local rows) with ``A' = sym(P(v'))`` on the pattern: the tangent whose adjoint is
    :func:`values_vjp` (as eigrad's sparse operators)."""
    dop = PetscOperator.create(pattern, dvalues)
    try:
        return 0.5 * (dop.matmat(X) + dop.matmat_transpose(X))
    finally:
        dop.destroy()


def _operators(cfg_or_ctx, values, values_B):
    op = PetscOperator.create(cfg_or_ctx.pattern, values)
    Bop = None if values_B is None else PetscOperator.create(cfg_or_ctx.pattern_B, values_B)
    return op, Bop


def _destroy(*ops):
    for o in ops:
        if o is not None:
            o.destroy()


def checked_solve(cfg, op, Bop, n):
    """The Functions' forward on PETSc operators ``op``, ``Bop`` (destroyed after): the symmetry probe
    of each, then the solve with guards; returns ``(L, X, LE, XE, labels, cut, atol)``."""
    try:
        for name, o in (("A", op), ("B", Bop)):
            msg = None if o is None else symmetry_probe(o)
            if msg is not None:
                raise ValueError(f"{name}: {msg}")
        sol, LE, XE, labels, cut, atol, _ = solve_with_guards(
            cfg.solver, op, Bop, cfg.k, n, cfg.largest, cfg.opts, X0=cfg.X0)
    finally:
        _destroy(op, Bop)
    return sol.eigenvalues.clone(), sol.eigenvectors.clone(), LE, XE, labels, cut, torch.as_tensor(atol)


class SlepcEig(torch.autograd.Function):
    @staticmethod
    def forward(cfg: SlepcConfig, values, values_B):
        op, Bop = _operators(cfg, values, values_B)
        return checked_solve(cfg, op, Bop, cfg.pattern.n)

    @staticmethod
    def setup_context(ctx, inputs, output):
        cfg, values, values_B = inputs
        LE, XE, labels, cut, atol = output[2:]
        ctx.mark_non_differentiable(LE, XE, labels, cut, atol)
        ctx.save_for_backward(values, values_B, LE, XE, labels, cut, atol)
        ctx.save_for_forward(values, values_B, LE, XE, labels, cut, atol)
        ctx.k, ctx.largest, ctx.opts, ctx.solver = cfg.k, cfg.largest, cfg.opts, cfg.solver
        ctx.pattern, ctx.pattern_B = cfg.pattern, cfg.pattern_B

    @staticmethod
    @once_differentiable
    def backward(ctx, gL, gX, *_):
        values, values_B, LE, XE, labels, cut, atol = ctx.saved_tensors
        need_A = ctx.needs_input_grad[1]
        need_B = values_B is not None and ctx.needs_input_grad[2]
        op, Bop = _operators(ctx, values, values_B)
        try:
            LA, LB = backward_terms(ctx, op, Bop, (LE, XE, labels, cut, atol), gL, gX, need_B)
            k = ctx.k
            # Ā = sym(L_A Xᵀ), B̄ = sym(L_B Xᵀ) sampled on the local patterns (MATH.md, "Reverse mode");
            # the guard columns of L_A, L_B are zero
            gA = values_vjp(LA[:, :k], XE[:, :k], ctx.pattern).to(values.dtype) if need_A else None
            gB = values_vjp(LB[:, :k], XE[:, :k], ctx.pattern_B).to(values_B.dtype) if need_B else None
        finally:
            _destroy(op, Bop)
        return None, gA, gB

    @staticmethod
    def jvp(ctx, _cfg_tangent, dvalues, dvalues_B):
        values, values_B, LE, XE, labels, cut, _atol = ctx.saved_tensors
        k = ctx.k
        if dvalues is None and dvalues_B is None:
            return (None,) * 7
        op, Bop = _operators(ctx, values, values_B)
        try:
            X_k = XE[:, :k]
            AdX = tangent_matmat(ctx.pattern, dvalues, X_k) if dvalues is not None else None
            BdX = None
            if dvalues_B is not None and values_B is not None:
                BdX = tangent_matmat(ctx.pattern_B, dvalues_B, X_k)
            Ld, Xd = jvp_core(ctx, op, Bop, (LE, XE, labels), AdX, BdX)
        finally:
            _destroy(op, Bop)
        return Ld, Xd, None, None, None, None, None


def backward_terms(ctx, op, Bop, saved, gL, gX, need_B):
    """``(L_A, L_B)`` local rows (MATH.md, "Reverse mode") for any operator of the PETSc protocol."""
    LE, XE, labels, cut, atol = saved
    k, opts = ctx.k, ctx.opts
    mpi = op.mpi
    m = LE.shape[-1] - k
    zero_L = torch.zeros(k, dtype=LE.dtype) if gL is None else gL
    zero_X = torch.zeros(XE.shape[0], k, dtype=XE.dtype) if gX is None else gX
    Lbar = torch.cat([allsum(zero_L, mpi) / mpi.size, LE.new_zeros(m)])  # replicated: the ranks' mean
    Xbar = torch.cat([zero_X, XE.new_zeros(XE.shape[0], m)], dim=-1)
    FX, FXbar = _gram_factor(XE, Xbar, mpi)
    check_existence(  # MATH.md, "When the derivative exists", on the global Gram matrix
        L=LE, X=FX, labels=labels, cut=cut, Lbar=Lbar, Xbar=FXbar, k=k, largest=ctx.largest,
        opts=opts, atol=atol)
    has_X = bool(allsum(zero_X.abs().sum().reshape(1), mpi) > 0)
    rtol = opts.resolved_linsolve_rtol(LE.dtype, ctx.solver.resolved_rtol(LE.dtype))
    maxiter = opts.linsolve_maxiter or 10 * op.n

    def solve(R, shifts):  # MATH.md's G_j on the complement of all K computed vectors
        return projected_solves(op, XE, R, shifts, rtol, maxiter, Bop)

    D = cluster_mask(labels)
    BXE = XE if Bop is None else Bop.matmat(XE)
    return vjp_terms(LE, XE, BXE, D, Lbar, Xbar if has_X else None, solve, need_B=need_B, inner=inner(mpi))


def jvp_core(ctx, op, Bop, saved, AdX_k, BdX_k):
    """``(Λ', X')`` for the tangents ``A' X``, ``B' X`` (local rows of the k wanted columns, or None)."""
    LE, XE, labels = saved
    k, opts = ctx.k, ctx.opts
    mpi = op.mpi
    K = LE.shape[-1]
    pad = XE.new_zeros(XE.shape[0], K - k)
    # V' = A' X - B' X Λ (MATH.md, "Forward mode") on the k wanted columns only: the guard
    # columns' right-hand sides are zero (as in eigrad's operator Function)
    AdX = torch.cat([AdX_k, pad], -1) if AdX_k is not None else torch.zeros_like(XE)
    BdX = None if BdX_k is None else torch.cat([BdX_k, pad], -1)
    rtol = opts.resolved_linsolve_rtol(LE.dtype, ctx.solver.resolved_rtol(LE.dtype))
    maxiter = opts.linsolve_maxiter or 10 * op.n

    def solve(R, shifts):
        return projected_solves(op, XE, R, shifts, rtol, maxiter, Bop)

    D = cluster_mask(labels)
    BXE = XE if Bop is None else Bop.matmat(XE)
    ip = inner(mpi)
    Ld, Xd = jvp_terms(LE, XE, BXE, D, AdX, BdX, solve, inner=ip)
    Ld = Ld[:k]
    found = [c for c in degenerate_clusters(labels, k) if max(c[1]) < k]
    if found:  # inside a repeated eigenvalue: the slopes, eigenvalues of X_gᵀ (A' - λ B') X_g
        V = AdX[:, :k] if BdX is None else AdX[:, :k] - BdX[:, :k] * LE[:k]
        Ld, _ = cluster_frames(sym(ip(XE[:, :k], V)), found, k)
    return Ld, Xd[:, :k]
