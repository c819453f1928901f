"""Iterative eigensolvers on operators scaled by exact powers of two (any magnitude of A and B).

The dense routes scale ``A`` and ``B`` into the safe range before reducing
them (``eigensolvers/_reduce.scaled_standard_form``). The iterative solvers
need it too, for other reasons: ARPACK's convergence test is
``‖r‖ <= tol · max(eps^{2/3}, |θ|)`` with an *absolute* floor, so below
``‖A‖ ≈ 1e-10`` it stops before eigrad's relative test can pass (measured:
relative residual 5e-4 at ``‖A‖ = 1e-12``, a ConvergenceError); ARPACK's
inner CG on ``B`` saw ``pᵀBp`` underflow to 0 at ``‖A‖ = 1e-153`` and called
an SPD ``B`` indefinite; LOBPCG's Gram matrices overflowed at ``1e192``.

:func:`scale_invariant` wraps a solver's ``__call__``: one product of ``A``
(and of ``B``) with a seeded random vector gives exponents ``a``, ``b``
(``b`` even) with ``max|2^-a A v|, max|2^-b B v| ∈ [0.5, 1)``, the solver
runs on ``A_s = 2^-a A``, ``B_s = 2^-b B``, and its answer is scaled back
exactly: ``λ = 2^(a-b) μ``, ``X = 2^(-b/2) X_s`` (B-orthonormal again), the
residual norms by ``2^(a-b/2)``. A power of two changes no rounding, so in
the normal range only ARPACK's absolute floor sees a difference. Start
vectors ``X0`` are directions and pass unchanged; so do preconditioners
(LOBPCG and PRIMME orthonormalize what they return, so its scale does not
matter).
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from .._errors import ConvergenceError
from .._scaling import ldexp, pow2_exponent
from ..operators import LinearOperator


class ScaledOperator(LinearOperator):
    """``2^-e M`` through ``matmat`` (``e`` int64, one per batch element)."""

    def __init__(self, M, e: torch.Tensor):
        self.M, self.e = M, e
        self.shape, self.dtype, self.device = M.shape, M.dtype, M.device
        # the factor once (a hot loop applies it): 2^-e itself where it is a normal number, else
        # the product of two (ldexp), both exact
        # (complex operators: a real factor of the component dtype)
        real = {torch.complex128: torch.float64, torch.complex64: torch.float32}.get(M.dtype, M.dtype)
        max_exp = {torch.float64: 1021, torch.float32: 125}.get(real, 0)  # 2^±e normal
        if bool((e.abs() <= max_exp).all()):
            ones = torch.ones(e.shape, dtype=real, device=M.device)
            self._factor = ldexp(ones, -e, dims=0).reshape(*e.shape, 1, 1)
        else:
            self._factor = None

    def matmat(self, X):
        Y = self.M.matmat(X)
        return Y * self._factor if self._factor is not None else ldexp(Y, -self.e, dims=2)

    def to_dense(self):
        return ldexp(self.M.to_dense(), -self.e, dims=2)

    def diagonal(self):  # ARPACK's Jacobi preconditioner for CG on B, when B has one
        diag = getattr(self.M, "diagonal", None)
        if not callable(diag):
            raise NotImplementedError
        return ldexp(diag(), -self.e, dims=1)

    @property
    def is_dense(self):
        return getattr(self.M, "is_dense", False)


def _exponent(M, seed: int, even: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    v = torch.rand(M.shape[-1], 1, generator=gen, dtype=torch.float64).to(device=M.device, dtype=M.dtype) + 0.5
    return pow2_exponent(M.matmat(v.expand(*M.shape[:-2], M.shape[-1], 1)), even=even)  # (*batch,)


def _unscaled(sol, a, b):
    """The :class:`EigSolution` of ``(A, B)`` from that of ``(2^-a A, 2^-b B)``."""
    if sol is None:
        return None
    vals, half = a - b, -torch.div(b, 2, rounding_mode="floor")

    def scale(t, e, dims):
        return None if t is None else ldexp(t, e, dims=dims)

    return dataclasses.replace(
        sol,
        eigenvalues=scale(sol.eigenvalues, vals, 1),
        eigenvectors=scale(sol.eigenvectors, half, 2),
        residual_norms=scale(sol.residual_norms, a + half, 1),  # r = 2^(a-b/2) (A_s x_s - μ B_s x_s)
        guard_eigenvalues=scale(sol.guard_eigenvalues, vals, 1),
        guard_eigenvectors=scale(sol.guard_eigenvectors, half, 2),
        n_matvec=sol.n_matvec + 1 + (b.numel() > 0),
        scale=None if sol.scale is None else ldexp(torch.as_tensor(sol.scale), vals, dims=0),
    )


def scale_invariant(call):
    """Decorate an iterative solver's ``__call__`` to run on the scaled problem (module docstring)."""

    @functools.wraps(call)
    def wrapper(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        a = _exponent(A, self.seed)
        b = _exponent(B, self.seed + 1, even=True) if B is not None else torch.zeros_like(a)
        As = ScaledOperator(A, a)
        Bs = None if B is None else ScaledOperator(B, b)
        try:
            sol = call(self, As, k, B=Bs, largest=largest, X0=X0, preconditioner=preconditioner, n_guard=n_guard)
        except ConvergenceError as err:
            raise ConvergenceError(str(err), solution=_unscaled(err.solution, a, b)) from None
        return _unscaled(sol, a, b)

    return wrapper
