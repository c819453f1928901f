"""Shift-invert Lanczos with a sparse direct factorization, for assembled sparse ``A`` and ``B``.

``K = A - σB`` is factored once (SuperLU through ``scipy.sparse.linalg.splu``,
symmetric mode: a fill-reducing ordering of ``A + Aᵀ`` and diagonal pivots),
and ARPACK runs in its shift-invert mode 3 on ``K⁻¹ B`` with B-inner products
(``scipy.sparse.linalg.eigsh(A, k, M=B, sigma=σ, OPinv=K⁻¹)``): the
eigenvalues nearest ``σ`` converge in a few dozen solves. This is what FEM
codes do (``eigsh(K, k, M, sigma=0)``); the backward reuses the same
factorization (``linsolve/_factored.py``).

The shift ``σ`` (``ShiftInvert(shift=None)``, the smallest end) must lie
below the spectrum, so that "nearest σ" means "smallest". The factorization
itself certifies it: with symmetric permutations and no off-diagonal pivots,
``Pᵀ K P = L D Lᵀ`` and by Sylvester's law of inertia ``K`` is positive
definite iff every pivot ``d_i > 0`` (the ``L D Lᵀ`` of an SPD matrix needs
no pivoting). The automatic rule, first candidate that passes:

1. ``ℓ - τ`` where ``ℓ >= 0`` is a Gershgorin lower bound of the pencil
   (``ℓ = a_lo / b_hi`` with ``[a_lo, a_hi]``, ``[b_lo, b_hi]`` the Gershgorin
   intervals of ``D^{-1/2} A D^{-1/2}`` and ``D^{-1/2} B D^{-1/2}``,
   ``D = diag(B)``), or ``-τ`` when ``a_lo < 0`` (a positive semidefinite
   ``A`` that is not diagonally dominant: P2 elements). ``σ ≈ 0`` is what FEM
   users pass for an SPD stiffness matrix; ``τ = eps^{1/2} ν`` (``ν`` the
   largest ``|a_ii| / b_ii``) keeps an exactly singular ``A`` (a Neumann
   problem's zero eigenvalue) off the shift;
2. ``a_lo / b_lo - τ`` (a true lower bound when ``b_lo > 0``), then
   ``4^j · a_lo / b_hi`` for ``j = 1..4``.

If none is positive definite a ``ValueError`` asks for ``shift=``. A given
``shift`` is used as is, except that an exactly singular ``A - σB`` (σ at an
eigenvalue) is moved down by ``τ``, ``10 τ``, ``100 τ``; a shift above an
eigenvalue (``K`` not positive definite) raises ``ValueError``: around such a
shift the nearest eigenvalues are not the smallest ones.

Single-vector Lanczos can skip copies of an exactly repeated eigenvalue, as
ARPACK's mode 1 does; the result is checked by the same
:func:`eigrad.eigensolvers._arpack.verify_no_missed`, its deflated runs also
in shift-invert mode (the deflated operator's inverse by the Woodbury
identity on the same factorization, no new one).

``largest=True``: shift-invert has no advantage at the large end of a FEM or
Laplacian spectrum (it is not clustered relative to its size), so the solve
is handed to :class:`Arpack` with the same ``rtol``, ``maxiter``,
``on_failure`` and ``seed``.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import threading
from typing import ClassVar

import numpy as np
import scipy.sparse
import torch

from .. import _monitor
from ..linsolve._factored import FactorPreconditionedMinres, Factorization, ShiftedLU
from ._arpack import Arpack, _start, verify_no_missed
from ._base import SolveHandle
from ._definite import NOT_SPD, PASS_SPD, check_B_gram, check_B_positive
from ._iterative import dense_fallback, finish, make_solution, rayleigh_ritz, relative_residuals, true_residuals
from ._options import IterativeOptions, check_positive_int
from ._sparse_factor import below_count, definite, factor, gershgorin

_BACKWARDS = ("minres", "lu")
_TOKENS = itertools.count(1)


def assembled(op, name: str):
    """The scipy CSR matrix of an assembled operator, else ``TypeError`` naming what was received."""
    get = getattr(op, "as_scipy_csr", None)
    M = get() if callable(get) else None
    if M is None:
        raise TypeError(
            f"solver='shift-invert' needs assembled sparse A and B (torch sparse COO/CSR tensors or scipy.sparse "
            f"matrices); received {type(op).__name__} for {name}. Pass the matrix itself, or use solver='arpack', "
            "'lobpcg' or 'primme' for matrix-free operators."
        )
    return M


@dataclasses.dataclass(frozen=True)
class ShiftInvert(IterativeOptions):
    """Shift-invert Lanczos on a sparse factorization of ``A - σB`` (assembled sparse ``A``, ``B``).

    Factors ``A - σB`` once (SuperLU) and runs ARPACK's shift-invert mode;
    the backward's shifted systems reuse the factorization. The fastest route
    for FEM pencils and 2-D grids (``benchmarks/shift_invert.py``); on 3-D
    grids the factorization's fill grows as ``n^{4/3}`` and ARPACK on the
    operator can be cheaper (the table in docs/benchmarks_matrix_free.md).

    Parameters
    ----------
    rtol, maxiter, on_failure, seed
        See :class:`IterativeOptions`; ``maxiter`` counts ARPACK's restart
        cycles (``None``: scipy's ``10 n``). ARPACK runs at ``rtol / 2`` on
        the inverted operator; the true residuals ``‖A x - λ B x‖`` are then
        checked against ``rtol`` and, if missed, the run is repeated at
        ``0.01 · rtol · eps^{1/4}`` before failing.
    shift : float or None
        ``σ``; ``None``: the automatic rule of the module docstring (below
        the spectrum). A given shift must lie below the smallest eigenvalue
        (checked by the factorization's inertia); one exactly at an
        eigenvalue is moved down slightly.
    ncv : int or None
        Lanczos basis size; ``None``: ``max(2 (k + n_guard) + 1, 20)``.
    n_verify : int
        Eigenvalues sought by each verification run for skipped copies of a
        repeated eigenvalue (``0``: off, copies can then be missed silently).
    backward : {"minres", "lu"}
        The backward's shifted solves: MINRES preconditioned by the
        forward's factorization (default, measured faster), or one sparse LU
        of ``A - λ B`` per distinct eigenvalue.

    Notes
    -----
    ``A`` and ``B`` must be assembled (torch sparse COO/CSR or
    ``scipy.sparse``); matrix-free operators raise ``TypeError``. One problem
    at a time; no ``preconditioner`` (the factorization is one). ``X0``:
    ARPACK takes one start vector, the sum of the columns. ``largest=True``
    is solved by :class:`Arpack`. The factorization stays alive as long as
    the autograd graph of the result does (it serves the backward).
    """

    shift: float | None = None
    ncv: int | None = None
    n_verify: int = 1
    backward: str = "minres"

    name: ClassVar[str] = "shift-invert"
    #: complex Hermitian ``A`` (``B`` real or complex HPD): SuperLU in complex arithmetic, ARPACK's
    #: complex shift-invert mode, inertia from the real parts of the pivots (module docstring)
    supports_complex = True

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "ncv", self.ncv, 2)
        check_positive_int(self, "n_verify", self.n_verify, 0)
        if self.shift is not None and (isinstance(self.shift, bool) or not isinstance(self.shift, (int, float))
                                       or not np.isfinite(self.shift)):
            raise ValueError(f"ShiftInvert(shift={self.shift!r}) must be a finite float, or None for the automatic rule.")
        if self.backward not in _BACKWARDS:
            raise ValueError(f"ShiftInvert(backward={self.backward!r}) is not a route; pass 'minres' or 'lu'.")
        object.__setattr__(self, "_pending", threading.local())

    # The backward ----------------------------------------------------------
    handle_factory = None  # the backward asks backward_factory (it needs the backward options)

    def backward_factory(self, opts, dtype):
        """The shifted-solver factory for the solve just made (called right after it, by the autograd Function)."""
        # not cleared here: torch.func transforms may set up the autograd context more than once per
        # solve; the entry is replaced by the next solve (and freed with a temporary solver instance)
        entry = getattr(self._pending, "entry", None)
        return _BoundFactory(entry, self.backward, opts.resolved_linsolve_rtol(dtype), opts.linsolve_maxiter,
                             opts.linsolve_preconditioner)

    # The forward -----------------------------------------------------------
    def __call__(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        name = "ShiftInvert"
        if len(A.shape) != 2:
            raise ValueError(
                f"solver='shift-invert' solves one problem at a time; received an operator of shape {tuple(A.shape)}."
            )
        if preconditioner is not None:
            raise ValueError(
                "solver='shift-invert' makes its own preconditioner (the factorization of A - σB); pass "
                "preconditioner=None, or solver='lobpcg'/'primme' to use yours."
            )
        Acsr = assembled(A, "A")
        Bcsr = None if B is None else assembled(B, "B")
        if B is not None:  # the same check as the other iterative solvers (_definite.py)
            check_B_positive(B, self.seed)
        if largest:
            return Arpack(rtol=self.rtol, maxiter=self.maxiter, on_failure=self.on_failure, seed=self.seed)(
                A, k, B=B, largest=True, X0=X0, n_guard=n_guard)
        n = A.shape[-1]
        g = max(0, min(n_guard, n - k))
        m = k + g
        if m >= n - 1:
            return dense_fallback(A, B, k, g, largest)
        dtype, device = A.dtype, A.device
        np_dtype = {torch.float64: np.float64, torch.float32: np.float32, torch.complex128: np.complex128,
                    torch.complex64: np.complex64}[dtype]
        Acsr = Acsr.astype(np_dtype, copy=False)
        Bcsr = None if Bcsr is None else Bcsr.astype(np_dtype, copy=False)
        rtol = self.resolved_rtol(dtype)
        fact = self._factorize(Acsr, Bcsr, dtype)
        ncv = self.ncv if self.ncv is not None else max(2 * m + 1, 20)
        ncv = min(max(ncv, m + 1), n)
        if X0 is not None:
            v0 = X0.detach().reshape(n, -1).sum(-1).cpu().numpy().astype(np_dtype)
        else:
            v0 = _start(np.random.default_rng(self.seed), n, dtype).astype(np_dtype)
        start = torch.from_numpy(np.ascontiguousarray(v0)).to(device, dtype).reshape(n, 1)
        Bstart = start if B is None else B.matmat(start)
        nu0 = float(torch.linalg.vector_norm(A.matmat(start)) / torch.linalg.vector_norm(Bstart))
        arpack = _ShiftInvertArpack(fact, np_dtype, self.maxiter, self.seed)
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device, dtype)  # noqa: E731
        real_dtype = dtype.to_real()
        to_real = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device, real_dtype)  # noqa: E731

        eps = torch.finfo(dtype).eps
        reason, unverified, extra = "", "", 0
        for tol in (0.5 * rtol, 0.01 * rtol * eps**0.25):
            try:
                vals, vecs = arpack.run(m, v0, ncv, tol)
                vals_t, X = to_real(vals), to(vecs)
                vals_t, X, used = rayleigh_ritz(A, B, X, m, False)  # exactly B-orthonormal, A-orthogonal
                extra += 2 * used
                reason = ""
            except _NoConvergence as err:
                reason = (f"ARPACK (shift-invert) stopped at maxiter={self.maxiter} restart cycles "
                          f"({err.n_conv}/{m} pairs converged)")
                vals_t, X = to_real(err.vals), to(err.vecs).reshape(n, -1)
                if X.shape[-1]:
                    vals_t, X, used = rayleigh_ritz(A, B, X, m, False)
                    extra += 2 * used
            if X.shape[-1] == m and not reason and self.n_verify:

                def deflated_eigsh(op, kk, v, tol_d):
                    mu, Y, complete = arpack.run_deflated(op.BX, op.s, kk, v.cpu().numpy().astype(np_dtype), tol_d)
                    return to_real(mu), to(Y).reshape(n, -1), 0, complete

                vals_t, X, used, unverified = verify_no_missed(
                    A, B, vals_t, X, False, rtol, min(self.n_verify, n - 2), deflated_eigsh,
                    np.random.default_rng([self.seed, 1]),
                )
                extra += used
            if X.shape[-1] < m:
                pad = m - X.shape[-1]
                X = torch.cat([X, torch.zeros(n, pad, dtype=dtype, device=device)], dim=-1)
                vals_t = torch.cat([vals_t, torch.full((pad,), float("nan"), dtype=real_dtype, device=device)])
            rnorm, bxnorm = true_residuals(A, B, X, vals_t)
            scale = torch.clamp_min(vals_t.abs().nan_to_num(0.0).amax(), nu0 if np.isfinite(nu0) else 0.0)
            rho = relative_residuals(rnorm, vals_t, bxnorm, scale).nan_to_num(float("inf"))
            if reason or bool((rho <= rtol).all()):
                break
        sol = make_solution(
            vals_t, X, rnorm, k, g, False, n_iter=fact.n_solves, status="converged",
            n_matvec=fact.n_solves + extra + m + 1, scale=scale,
        )
        check_B_gram(B, sol.eigenvectors)
        sol = finish(sol, rho, rtol, self.on_failure, name, reason or unverified, failed=bool(unverified))
        token = next(_TOKENS)
        LE = torch.cat([sol.eigenvalues, sol.guard_eigenvalues], dim=-1)
        self._pending.entry = (token, fact)
        handle = SolveHandle((LE, torch.tensor([token], dtype=torch.int64, device=device)), _unbound_factory)
        return dataclasses.replace(sol, handle=handle)

    def _factorize(self, Acsr, Bcsr, dtype) -> Factorization:
        n = Acsr.shape[0]
        Bm = Bcsr if Bcsr is not None else scipy.sparse.identity(n, dtype=Acsr.dtype, format="csr")
        d = Bm.diagonal().real.astype(np.float64)  # a Hermitian B's diagonal is real
        if not bool((d > 0).all()):
            raise ValueError(NOT_SPD + "it has a diagonal entry <= 0 (solver='shift-invert')." + PASS_SPD)
        s = 1.0 / np.sqrt(d)
        a_lo, _ = gershgorin(Acsr, s)
        b_lo, b_hi = gershgorin(Bm, s) if Bcsr is not None else (1.0, 1.0)
        nu = float(np.abs(Acsr.diagonal().real / d).max()) or 1.0
        tau = float(torch.finfo(dtype).eps) ** 0.5 * nu

        def attempt(sigma):
            try:
                return factor(Acsr - sigma * Bm)
            except RuntimeError as err:  # "Factor is exactly singular"
                if "singular" not in str(err):
                    raise
                return None

        if self.shift is not None:
            for nudge in (0.0, tau, 10 * tau, 100 * tau):
                sigma = float(self.shift) - nudge
                lu = attempt(sigma)
                if lu is not None:
                    break
            else:
                raise ValueError(
                    f"ShiftInvert(shift={self.shift!r}): A - σB is singular at σ and at σ moved down by up to "
                    f"{100 * tau:.1e}; pass another shift or shift=None."
                )
            if not definite(lu):
                c = below_count(lu)
                what = f"{c} eigenvalue(s) lie below it" if c else "A - σB is not positive definite"
                raise ValueError(
                    f"ShiftInvert(shift={self.shift!r}): {what}, so the eigenvalues nearest the shift are not "
                    "the smallest ones. Pass a shift below the smallest eigenvalue (for a positive definite A, "
                    "shift=0), or shift=None for the automatic rule."
                )
            return Factorization(lu, sigma, Acsr, Bcsr)
        lower = a_lo / b_hi if a_lo >= 0 else 0.0
        candidates = [lower - tau]
        if a_lo < 0:
            if b_lo > 0:
                candidates.append(a_lo / b_lo - tau)
            candidates += [4.0**j * a_lo / b_hi - tau for j in range(1, 5)]
        for sigma in candidates:
            for nudge in (0.0, tau, 10 * tau):
                lu = attempt(sigma - nudge)
                if lu is not None:
                    break
            if lu is not None and definite(lu):
                return Factorization(lu, sigma - nudge, Acsr, Bcsr)
        raise ValueError(
            f"solver='shift-invert' found no shift below the spectrum (tried σ = "
            + ", ".join(f"{c:.3e}" for c in candidates)
            + "): A - σB was never positive definite. Pass ShiftInvert(shift=σ) with σ below the smallest "
            "eigenvalue, or another solver."
        )


class _NoConvergence(Exception):
    def __init__(self, vals, vecs, n_conv):
        self.vals, self.vecs, self.n_conv = vals, vecs, n_conv


class _ShiftInvertArpack:
    """ARPACK mode 3 through ``scipy.sparse.linalg.eigsh(..., sigma=σ, OPinv=K⁻¹)``, counting solves."""

    def __init__(self, fact: Factorization, np_dtype, maxiter, seed):
        import scipy.sparse.linalg as spla

        self.fact, self.np_dtype, self.maxiter, self.seed = fact, np_dtype, maxiter, seed
        self.kwargs = {}
        if "rng" in inspect.signature(spla.eigsh).parameters:
            self.kwargs["rng"] = np.random.default_rng(seed)

    def _opinv(self, solve):
        import scipy.sparse.linalg as spla

        n = self.fact.n

        def mm(x):
            mon = _monitor.active()
            x2 = np.asarray(x).reshape(n, -1)
            if mon is not None:
                mon.add_matvecs(x2.shape[-1])
            return solve(x2).reshape(np.shape(x))

        return spla.LinearOperator((n, n), matvec=mm, matmat=mm, dtype=self.np_dtype)

    def _eigsh(self, opinv, kk, v0, ncv, tol):
        import scipy.sparse.linalg as spla

        f = self.fact
        try:
            return spla.eigsh(f.A, k=kk, M=f.B, sigma=f.sigma, which="LM", v0=v0, ncv=ncv, maxiter=self.maxiter,
                              tol=tol, OPinv=opinv, **self.kwargs)
        except spla.ArpackNoConvergence as err:
            vals = np.asarray(err.eigenvalues).real
            vecs = np.asarray(err.eigenvectors).reshape(f.n, -1)
            order = np.argsort(vals)
            raise _NoConvergence(vals[order], vecs[:, order], len(vals)) from None

    def run(self, kk, v0, ncv, tol):
        vals, vecs = self._eigsh(self._opinv(self.fact.solve_numpy), kk, v0, ncv, tol)
        vals = vals.real  # complex: eigs' Ritz values of a Hermitian pencil, real up to rounding
        order = np.argsort(vals)
        return vals[order], vecs[:, order]

    def run_deflated(self, BX: torch.Tensor, s: float, kk, v0, tol):
        """The ``kk`` eigenvalues nearest ``σ`` of ``A + s (BX)(BX)ᵀ``: its inverse shifted by ``σ`` is
        ``K⁻¹ - W (I/s + BXᴴ W)⁻¹ Wᴴ`` with ``W = K⁻¹ BX`` (Woodbury), on the same factorization."""
        f = self.fact
        BXn = np.asfortranarray(BX.detach().cpu().numpy())
        W = f.solve_numpy(BXn)
        C = np.eye(BXn.shape[1]) / s + BXn.conj().T @ W  # complex: (BX)(BX)ᴴ
        Cinv_Wt = np.linalg.solve(C, W.conj().T)

        def solve(x):
            return f.solve_numpy(x) - W @ (Cinv_Wt @ x)

        n = f.n
        nv = min(max(2 * kk + 1, 10), n)  # 10: fewest solves measured for kk = 1 (8-20 tried)
        try:
            mu, Y = self._eigsh(self._opinv(solve), kk, v0, nv, tol)
            order = np.argsort(mu.real)
            return mu.real[order], Y[:, order], True
        except _NoConvergence as err:
            return err.vals, err.vecs, False


def _unbound_factory(tensors, atol=None, rtol=None):
    raise RuntimeError(
        "eigrad: a ShiftInvert handle needs the factorization its solver kept; the autograd Function asks "
        "ShiftInvert.backward_factory for it."
    )


class _BoundFactory:
    """The backward's factory for one shift-invert solve: holds its factorization (numpy, no tensors)."""

    def __init__(self, entry, route, linsolve_rtol, linsolve_maxiter, user_preconditioner):
        self.entry, self.route = entry, route
        self.linsolve_rtol, self.linsolve_maxiter = linsolve_rtol, linsolve_maxiter
        self.user_preconditioner = user_preconditioner

    def __call__(self, tensors, atol=None, rtol=None):
        LE, token = tensors[0], tensors[1]
        if self.entry is None or token.numel() != 1 or int(token.reshape(-1)[0]) != self.entry[0]:
            raise RuntimeError(
                "eigrad: the backward of a shift-invert solve lost its factorization (the solver instance was "
                "called again before this result's graph was built, or the solve ran under torch.func.vmap over "
                "problems); call eigsh once per result, or use solver='arpack'."
            )
        fact = self.entry[1]
        if self.route == "lu":
            return ShiftedLU(fact, rtol=self.linsolve_rtol, degen_atol=atol, degen_rtol=rtol)
        solver = FactorPreconditionedMinres(fact, LE, rtol=self.linsolve_rtol, maxiter=self.linsolve_maxiter)
        if self.user_preconditioner is not None:  # BackwardOptions(linsolve_preconditioner=) wins
            from ..linsolve._minres import preconditioner_apply

            solver.inner.precond = preconditioner_apply(self.user_preconditioner)
        return solver
