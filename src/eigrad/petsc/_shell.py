"""A distributed matrix-free operator: a PETSc shell matrix whose local product is a torch function.

``DistributedFunctionOperator(matmat, params, shape, ghosts=...)``: rank ``r``
owns the rows ``ownership_range(n)`` and computes the local rows of ``A X`` as
``matmat(X_ext, *params)``, a torch function of *this rank's* parameters, with
``X_ext = [X_local; X[ghosts]]`` (the local rows followed by the ghost rows, in
the order of ``ghosts``; without ghosts ``X_ext = X_local``). The ghost rows are
exchanged by one PETSc VecScatter per product (blocked Vec, one block per row).

Gradients (MATH.md, "Reverse mode", ``Ā = sym(L_A Xᵀ)``): for a symmetric
``A(θ)``, ``θ̄_r = ½ ∂/∂θ_r Σ_c (l_cᵀ A x_c + x_cᵀ A l_c)`` — one vector-Jacobian
product of the local product at ``[X, L_A]`` with the cotangent ``½ [L_A, X]``
(:meth:`vjp_params`). Forward mode: ``A' X`` is the JVP of the local product
(:meth:`tangent_matmat`), which equals ``sym(A') X`` when ``A(θ)`` is symmetric
for every ``θ`` (the operator's contract).
"""

from __future__ import annotations

import numpy as np
import torch

from ._comm import allsum, mpi_comm
from ._env import import_backend
from ._matrix import _check_shape, _petsc_comm, _raise_everywhere, ownership_range


class _Layout:
    """What the SLEPc route needs of a layout (``Pattern``'s m, n, start, end, comm)."""

    def __init__(self, n, start, end, comm):
        self.n, self.start, self.end, self.comm = n, start, end, comm

    @property
    def m(self):
        return self.end - self.start


class _Ghosts:
    """One blocked VecScatter per column count: ``X[ghosts]`` from the distributed ``X``."""

    def __init__(self, layout, ghosts: np.ndarray):
        self.layout, self.ghosts, self._cache = layout, ghosts, {}

    def gather(self, X: torch.Tensor) -> torch.Tensor:
        if self.ghosts.size == 0:
            return X.new_zeros(0, X.shape[-1])
        PETSc, _, _ = import_backend()
        p, c = self.layout, X.shape[-1]
        if c not in self._cache:
            src = PETSc.Vec().createMPI((p.m * c, p.n * c), bsize=c, comm=p.comm)
            dst = PETSc.Vec().createSeq(self.ghosts.size * c, bsize=c, comm=PETSc.COMM_SELF)
            is_from = PETSc.IS().createBlock(c, self.ghosts.astype(PETSc.IntType), comm=PETSc.COMM_SELF)
            self._cache[c] = (src, dst, PETSc.Scatter().create(src, is_from, dst, None), is_from)
        src, dst, sc, _ = self._cache[c]
        src.getArray()[:] = X.detach().to(torch.float64).cpu().numpy().reshape(-1)
        sc.scatter(src, dst, addv=PETSc.InsertMode.INSERT_VALUES, mode=PETSc.ScatterMode.FORWARD)
        return torch.from_numpy(dst.getArray(readonly=True).copy().reshape(self.ghosts.size, c))

    def destroy(self):
        for objs in self._cache.values():
            for o in objs:
                o.destroy()
        self._cache = {}


class DistributedFunctionOperator:
    """A symmetric ``n × n`` operator given by each rank's torch product of its local rows.

    Parameters
    ----------
    matmat : callable ``(X_ext, *params) -> (m, c) Tensor``
        The local rows of ``A X``; ``X_ext`` is ``(m + len(ghosts), c)``
        float64: this rank's rows of ``X`` then the ghost rows. Must be a
        torch function of ``params`` (the gradient reaches them) and linear in
        ``X``; ``A`` must be symmetric over all ranks (checked by a probe).
    params : sequence of Tensors
        This rank's parameters (float64; ``params[i].grad`` after backward).
    shape : (n, n)
    ghosts : int Tensor or array, optional
        Sorted or not, the global rows (owned by other ranks, or any row) this
        rank's product reads; exchanged by a PETSc VecScatter.
    comm : mpi4py or petsc4py communicator, optional (default ``PETSc.COMM_WORLD``).

    Usable as ``A`` and ``B`` of ``eigrad.eigsh(..., solver="slepc")``
    (``B`` SPD; ``B⁻¹`` by CG, no factorization). Construction is collective.
    """

    is_shell = True

    def __init__(self, matmat, params, shape, *, ghosts=None, comm=None):
        import_backend()
        self.comm = _petsc_comm(comm)
        mpi = mpi_comm(self.comm)
        msg = None
        try:
            n = _check_shape(shape)
        except ValueError as err:
            msg, n = str(err), 1
        start, end = ownership_range(n, self.comm)
        params = tuple(params) if isinstance(params, (list, tuple)) else (params,)
        if msg is None and not callable(matmat):
            msg = f"matmat must be callable (X_ext, *params) -> local rows of A X; received {type(matmat).__name__}."
        for i, t in enumerate(params):
            if msg is None and (not isinstance(t, torch.Tensor) or t.dtype != torch.float64):
                msg = (f"params[{i}] must be a float64 torch Tensor (the PETSc build is real float64); received "
                       f"{getattr(t, 'dtype', type(t).__name__)}.")
        g = np.zeros(0, dtype=np.int64)
        if msg is None and ghosts is not None:
            g = np.asarray(ghosts.detach().cpu().numpy() if isinstance(ghosts, torch.Tensor) else ghosts)
            if g.ndim != 1 or (g.size and (not np.issubdtype(g.dtype, np.integer) or g.min() < 0 or g.max() >= n)):
                msg = f"ghosts must be a 1-D array of global row indices in [0, {n}); received {g!r:.200}."
        _raise_everywhere(msg, mpi)
        self.matmat_fn, self.params, self.shape = matmat, params, (n, n)
        self.ghosts = g.astype(np.int64)
        self.layout = _Layout(n, start, end, self.comm)

    @property
    def n(self):
        return self.shape[0]

    @property
    def rows(self):
        return self.layout.start, self.layout.end

    @property
    def dtype(self):
        return torch.float64

    def __repr__(self):
        return (f"DistributedFunctionOperator(shape={self.shape}, rows={self.rows}, ghosts={self.ghosts.size}, "
                f"params={len(self.params)}, ranks={self.comm.getSize()})")


class _ShellCtx:
    """petsc4py Python-matrix context: ``y = A x`` through the torch local product."""

    def __init__(self, sop):
        self.sop = sop

    def mult(self, mat, x, y):
        X = torch.from_numpy(x.getArray(readonly=True).copy()).unsqueeze(-1)
        y.getArray()[:] = self.sop.matmat(X).squeeze(-1).numpy()


class ShellPetscOperator:
    """The :class:`PetscOperator` protocol for a :class:`DistributedFunctionOperator` at fixed params."""

    is_shell = True

    def __init__(self, D: DistributedFunctionOperator, params):
        PETSc, _, _ = import_backend()
        self.D, self.params = D, tuple(p.detach() for p in params)
        self.pattern = D.layout
        self._ghosts = _Ghosts(D.layout, D.ghosts)
        p = D.layout
        self.mat = PETSc.Mat().createPython([(p.m, p.n), (p.m, p.n)], context=_ShellCtx(self), comm=p.comm)
        self.mat.setUp()
        self._norm = None

    @property
    def n(self):
        return self.pattern.n

    @property
    def mpi(self):
        return mpi_comm(self.pattern.comm)

    def vec(self, array=None):
        PETSc, _, _ = import_backend()
        p = self.pattern
        if array is None:
            return PETSc.Vec().createMPI((p.m, p.n), comm=p.comm)
        return PETSc.Vec().createWithArray(array, size=(p.m, p.n), comm=p.comm)

    def _ext(self, X):
        X = X.detach().to(torch.float64)
        return torch.cat([X, self._ghosts.gather(X)], dim=0)

    def _local(self, Xext, params):
        out = self.D.matmat_fn(Xext, *params)
        m = self.pattern.m
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (m, Xext.shape[-1]):
            raise ValueError(f"DistributedFunctionOperator: matmat returned {getattr(out, 'shape', type(out))}; "
                             f"it must return this rank's ({m}, {Xext.shape[-1]}) rows of A X.")
        return out

    def matmat(self, X: torch.Tensor) -> torch.Tensor:
        """Local rows of ``A X`` (collective: the ghost scatter)."""
        with torch.no_grad():
            return self._local(self._ext(X), self.params).to(X.dtype)

    matmat_transpose = matmat  # symmetric by contract

    def vjp_params(self, L: torch.Tensor, X: torch.Tensor):
        """``θ̄ = ½ ∂/∂θ Σ ⟨[L_A, X], A [X, L_A]⟩`` (local rows; collective): MATH.md's ``sym(L_A Xᵀ)``."""
        W = torch.cat([X, L], dim=-1)
        Wext = self._ext(W)
        ps = tuple(p.detach().requires_grad_(True) for p in self.params)
        with torch.enable_grad():
            out = self._local(Wext, ps)
            g = torch.autograd.grad(out, ps, 0.5 * torch.cat([L, X], dim=-1).to(out.dtype), allow_unused=True)
        return tuple(torch.zeros_like(p) if gi is None else gi for p, gi in zip(self.params, g))

    def tangent_matmat(self, dparams, X: torch.Tensor) -> torch.Tensor:
        """Local rows of ``A' X`` (the JVP of the local product; collective)."""
        Xext = self._ext(X)
        tang = tuple(torch.zeros_like(p) if d is None else d.detach().to(p.dtype) for p, d in zip(self.params, dparams))
        # double-vjp (no nested forward AD, which torch lacks inside a Function's jvp):
        # u ↦ J(θ)ᵀ u is linear, and ∂/∂u ⟨Jᵀ u, t⟩ = J t
        ps = tuple(p.detach().requires_grad_(True) for p in self.params)
        with torch.enable_grad():
            out = self._local(Xext, ps)
            u = torch.zeros_like(out, requires_grad=True)
            g = torch.autograd.grad(out, ps, u, create_graph=True, allow_unused=True)
            dot = sum((gi * ti).sum() for gi, ti in zip(g, tang) if gi is not None)
            if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
                return torch.zeros_like(X)
            (jt,) = torch.autograd.grad(dot, u)
        return jt.to(X.dtype)

    def norm_inf(self) -> float:
        """An estimate of ``‖A‖`` from above-ish: 30 power steps from a fixed start, times 1.05 (collective).

        (A shell has no stored entries; the SLEPc route uses this only as the spectrum's scale.)
        """
        if self._norm is None:
            p = self.pattern
            rng = np.random.default_rng(7)
            v = torch.from_numpy(rng.standard_normal(p.n)[p.start:p.end].copy()).unsqueeze(-1)
            lam = 0.0
            for _ in range(30):
                nv = float(allsum((v * v).sum().reshape(1), self.mpi).sqrt())
                v = v / nv
                w = self.matmat(v)
                lam = float(allsum((w * w).sum().reshape(1), self.mpi).sqrt())
                v = w
            self._norm = max(1.05 * lam, np.finfo(np.float64).tiny)
        return self._norm

    def destroy(self):
        self._ghosts.destroy()
        self.mat.destroy()


# --- the autograd Function for eigsh(..., solver="slepc") when A or B is a DistributedFunctionOperator ---

import dataclasses  # noqa: E402

from torch.autograd.function import once_differentiable  # noqa: E402


@dataclasses.dataclass(frozen=True, eq=False)
class ShellConfig:
    """Non-tensor inputs: each operator is ``("csr", Pattern)`` or ``("shell", DistributedFunctionOperator)``."""

    k: int
    largest: bool
    solver: object
    opts: object
    A: tuple
    nA: int  # how many flat tensor inputs belong to A
    B: tuple | None = None
    X0: torch.Tensor | None = None

    @property
    def pattern(self):
        return self.A[1].layout if self.A[0] == "shell" else self.A[1]


def _make(desc, tensors):
    from ._matrix import PetscOperator

    if desc[0] == "shell":
        return ShellPetscOperator(desc[1], tensors)
    return PetscOperator.create(desc[1], tensors[0])


def _grads(desc, op, L, X):
    if desc[0] == "shell":
        return op.vjp_params(L, X)
    from ._function import values_vjp

    return (values_vjp(L, X, desc[1]),)


def _tangent(desc, op, d, X):
    if all(t is None for t in d):
        return None
    if desc[0] == "shell":
        return op.tangent_matmat(d, X)
    from ._function import tangent_matmat

    return tangent_matmat(desc[1], d[0], X)


class ShellEig(torch.autograd.Function):
    @staticmethod
    def forward(cfg: ShellConfig, *flat):
        from ._function import checked_solve

        op = _make(cfg.A, flat[: cfg.nA])
        Bop = None if cfg.B is None else _make(cfg.B, flat[cfg.nA:])
        return checked_solve(cfg, op, Bop, op.n)

    @staticmethod
    def setup_context(ctx, inputs, output):
        cfg, flat = inputs[0], inputs[1:]
        LE, XE, labels, cut, atol = output[2:]
        ctx.mark_non_differentiable(LE, XE, labels, cut, atol)
        ctx.save_for_backward(LE, XE, labels, cut, atol, *flat)
        ctx.save_for_forward(LE, XE, labels, cut, atol, *flat)
        ctx.cfg, ctx.k, ctx.largest, ctx.opts, ctx.solver = cfg, cfg.k, cfg.largest, cfg.opts, cfg.solver

    @staticmethod
    def _ops(ctx):
        saved = ctx.saved_tensors
        flat = saved[5:]
        cfg = ctx.cfg
        op = _make(cfg.A, flat[: cfg.nA])
        Bop = None if cfg.B is None else _make(cfg.B, flat[cfg.nA:])
        return saved[:5], flat, op, Bop

    @staticmethod
    @once_differentiable
    def backward(ctx, gL, gX, *_):
        from ._function import backward_terms

        saved, flat, op, Bop = ShellEig._ops(ctx)
        cfg, k = ctx.cfg, ctx.k
        need = ctx.needs_input_grad[1:]
        need_A, need_B = any(need[: cfg.nA]), Bop is not None and any(need[cfg.nA:])
        try:
            LA, LB = backward_terms(ctx, op, Bop, saved, gL, gX, need_B)
            XE = saved[1]
            gA = _grads(cfg.A, op, LA[:, :k], XE[:, :k]) if need_A else (None,) * cfg.nA
            gB = _grads(cfg.B, Bop, LB[:, :k], XE[:, :k]) if need_B else (None,) * (len(flat) - cfg.nA)
        finally:
            for o in (op, Bop):
                if o is not None:
                    o.destroy()
        return (None, *gA, *gB)

    @staticmethod
    def jvp(ctx, _cfg_tangent, *dflat):
        from ._function import jvp_core

        saved, flat, op, Bop = ShellEig._ops(ctx)
        cfg, k = ctx.cfg, ctx.k
        try:
            X_k = saved[1][:, :k]
            AdX = _tangent(cfg.A, op, dflat[: cfg.nA], X_k)
            BdX = None if Bop is None else _tangent(cfg.B, Bop, dflat[cfg.nA:], X_k)
            if AdX is None and BdX is None:
                return (None,) * 7
            Ld, Xd = jvp_core(ctx, op, Bop, saved[:3], AdX, BdX)
        finally:
            for o in (op, Bop):
                if o is not None:
                    o.destroy()
        return Ld, Xd, None, None, None, None, None
