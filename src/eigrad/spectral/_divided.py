"""Scalar functions on the spectrum and their divided differences ``f[a, b]``.

The Daleckii–Krein derivative of ``X f(Λ) Xᵀ`` needs the matrix of first
divided differences ``F_ij = f[λ_i, λ_j] = (f(λ_i) - f(λ_j)) / (λ_i - λ_j)``,
with ``f'(λ_i)`` on the diagonal. Formed naively it loses all accuracy when
``λ_i`` and ``λ_j`` are close (cancellation), and it is 0/0 when they are
equal. Each :class:`SpectralFn` forms it without cancellation:

* ``exp``: ``exp(max(a, b)) · (1 - exp(-d)) / d`` with ``d = |a - b|``
  (``expm1``), bounded by ``exp(max)``, exact at ``d = 0``;
* ``log``: ``log1p(t) / (hi - lo)`` with ``t = (hi - lo) / lo``;
* ``sqrt``: ``1 / (√a + √b)``;
* ``x**p``: ``lo**(p-1) · expm1(p · log1p(t)) / t`` for same-sign pairs;
* a user function ``f``: the quotient where its rounding error
  ``2 eps (|f(a)| + |f(b)|) / |a - b|`` is small, else the integral
  ``f[a, b] = ∫₀¹ f'(b + t (a - b)) dt`` by 5-point Gauss–Legendre, chosen per
  pair by comparing the quotient's error estimate with the quadrature's
  (5-point minus 3-point rule). The switch is thereby scaled to the
  function and to the eigenvalues' size; ``f'`` comes from forward-mode
  autograd (``torch.func.jvp``) unless the user passes it.

``g[a, b]`` for ``g(λ) = λ f(λ)`` (the generalized problem's ``B``-derivative)
is ``(f(a) + f(b)) / 2 + (a + b) / 2 · f[a, b]``.
"""

from __future__ import annotations

import math

import torch

# Gauss–Legendre abscissae on [-1, 1]: the 3-point rule's nodes (0, ±s3) and the
# 5-point rule's (0, ±s5a, ±s5b), evaluated together (7 distinct points).
_S3 = math.sqrt(3.0 / 5.0)
_S5A = math.sqrt(5.0 - 2.0 * math.sqrt(10.0 / 7.0)) / 3.0
_S5B = math.sqrt(5.0 + 2.0 * math.sqrt(10.0 / 7.0)) / 3.0
_NODES = (0.0, -_S3, _S3, -_S5A, _S5A, -_S5B, _S5B)
_W3 = (8.0 / 9.0, 5.0 / 9.0, 5.0 / 9.0, 0.0, 0.0, 0.0, 0.0)
_W5A = (322.0 + 13.0 * math.sqrt(70.0)) / 900.0
_W5B = (322.0 - 13.0 * math.sqrt(70.0)) / 900.0
_W5 = (128.0 / 225.0, 0.0, 0.0, _W5A, _W5A, _W5B, _W5B)
#: a quotient whose estimated relative rounding error is below this many eps is used as is
_QUOTIENT_OK = 64.0


def _pairs(v):
    """``(v_i, v_j)`` broadcast as (*, K, 1) and (*, 1, K)."""
    return v.unsqueeze(-1), v.unsqueeze(-2)


def _set_diagonal(F, d):
    F = F.clone()
    F.diagonal(dim1=-2, dim2=-1).copy_(d)
    return F


def _safe_div(num, den):
    """``num / den`` with 0 where ``den == 0`` (callers overwrite those entries)."""
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, torch.ones_like(den), den))


def _describe(L, bad, what):
    """ValueError text naming the first offending eigenvalue(s)."""
    idx = bad.nonzero().tolist()
    shown = []
    for row in idx[:3]:
        *b, i = row
        where = f" (batch element {tuple(b)})" if b else ""
        shown.append(f"λ[{i}] = {float(L[tuple(row)]):.6g}{where}")
    more = f" and {len(idx) - 3} more" if len(idx) > 3 else ""
    return f"{what}; eigenvalue(s) out of the domain: {', '.join(shown)}{more}."


class SpectralFn:
    """A scalar function applied to the spectrum, with ``f'`` and ``f[a, b]``.

    Subclasses implement :meth:`__call__`, :meth:`deriv`, :meth:`divided` and
    may restrict the domain in :meth:`check_domain`.
    """

    name = "f"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # f(x), elementwise
        raise NotImplementedError

    def deriv(self, x: torch.Tensor) -> torch.Tensor:  # f'(x), elementwise
        raise NotImplementedError

    def divided(self, L: torch.Tensor, fL: torch.Tensor) -> torch.Tensor:
        """``F_ij = f[λ_i, λ_j]`` (*, K, K) for eigenvalues ``L`` (*, K) with ``fL = f(L)``."""
        raise NotImplementedError

    #: ``f`` is defined for ``λ >= 0`` only (``√λ``, ``λ^p`` with non-integer ``p > 0``): eigenvalues within
    #: rounding of 0 are clamped to 0 by :meth:`admit`; for ``0 < p < 1`` the slope is infinite at 0 and
    #: ``f[0, 0] = ∞`` (:func:`divided_product`)
    semidefinite_domain = False

    def check_domain(self, L: torch.Tensor) -> None:
        """Raise ValueError when an eigenvalue is outside the domain of ``f``."""

    def admit(self, L: torch.Tensor, n: int) -> torch.Tensor:
        """The eigenvalues ``f`` is applied to: checked against the domain, after (for a function with a
        branch point at 0) clamping those within the rounding level of zero,
        ``|λ| <= 16 n eps max|λ|``, to exactly 0 (a positive semidefinite matrix of lower rank has
        computed eigenvalues of either sign at that level)."""
        if self.semidefinite_domain and L.numel():
            tol = 16 * n * torch.finfo(L.dtype).eps * L.abs().amax(dim=-1, keepdim=True)
            L = torch.where(L.abs() <= tol, torch.zeros_like(L), L)
        self.check_domain(L)
        return L

    def divided_lambda_f(self, L, fL, F):
        """``g[λ_i, λ_j]`` for ``g(λ) = λ f(λ)``: ``(f_i + f_j)/2 + (λ_i + λ_j)/2 · F_ij``.

        At ``λ_i = λ_j = 0`` with ``F_ij = ∞`` (infinite slope of ``f``) ``g'(0) = f(0)``: ``(f_i + f_j)/2``."""
        a, b = _pairs(L)
        fa, fb = _pairs(fL)
        g = 0.5 * (fa + fb) + 0.5 * (a + b) * F
        if self.semidefinite_domain:
            g = torch.where(torch.isinf(F), 0.5 * (fa + fb), g)
        return g


def divided_product(fn: SpectralFn, F1: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``F1 ∘ M`` (the Daleckii–Krein product, docs/spectral.md) where ``F1`` may be infinite.

    For a function defined on ``λ >= 0`` with an infinite slope at 0 (``√λ``), ``f[0, 0] = ∞`` on the pairs of zero eigenvalues:
    the derivative exists only if ``M`` (``Xᵀ W X`` for a cotangent ``W``, ``Xᵀ A' X`` for a tangent;
    ``Xᴴ`` for complex Hermitian ``A``)
    vanishes on them, to rounding (``16 K eps max|M|``), and those entries then contribute 0; otherwise
    it is infinite and a ValueError says so. One synchronization, only for such functions.
    """
    if not fn.semidefinite_domain:
        return F1 * M
    inf = torch.isinf(F1)
    if not bool(inf.any()):
        return F1 * M
    tol = 16 * M.shape[-1] * torch.finfo(M.dtype).eps * M.abs().amax(dim=(-2, -1), keepdim=True)
    if bool((inf & (M.abs() > tol)).any()):
        t = "ᴴ" if M.is_complex() else "ᵀ"  # complex Hermitian A: X f(Λ) Xᴴ
        raise ValueError(
            f"the derivative of X {fn.name}(Λ) X{t} does not exist here: A is singular (positive semidefinite with "
            f"eigenvalue 0, including eigenvalues within rounding of 0, which are set to 0) and {fn.name} has "
            "an infinite slope at 0, and the loss's cotangent (or the tangent) has a component on the null "
            f"space (x_i{t} W x_j ≠ 0 for zero eigenvalues λ_i = λ_j = 0). Regularize, e.g. sqrtm(A + δI) with "
            "δ > 0, or use a loss that does not see the null space of A."
        )
    return torch.where(inf, torch.zeros_like(M), F1 * M)


class ExpFn(SpectralFn):
    name = "exp"

    def __call__(self, x):
        return torch.exp(x)

    def deriv(self, x):
        return torch.exp(x)

    def divided(self, L, fL):
        a, b = _pairs(L)
        d = (a - b).abs()
        # (1 - e^{-d}) / d, -> 1 at d = 0
        ratio = torch.where(d == 0, torch.ones_like(d), _safe_div(-torch.expm1(-d), d))
        return torch.exp(torch.maximum(a, b)) * ratio


class LogFn(SpectralFn):
    name = "log"

    def __call__(self, x):
        return torch.log(x)

    def deriv(self, x):
        return 1.0 / x

    def check_domain(self, L):
        bad = ~(L > 0)
        if bool(bad.any()):
            raise ValueError(_describe(L, bad, "logm needs a positive definite A (all eigenvalues > 0)"))

    def divided(self, L, fL):
        a, b = _pairs(L)
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        t = _safe_div(hi - lo, lo)
        q = _safe_div(torch.log1p(t), hi - lo)  # log(hi/lo)/(hi - lo) without cancellation
        return torch.where(hi == lo, 1.0 / lo, q)


class SqrtFn(SpectralFn):
    name = "sqrt"
    semidefinite_domain = True

    def __call__(self, x):
        return torch.sqrt(x)

    def deriv(self, x):
        return 0.5 / torch.sqrt(x)

    def check_domain(self, L):
        bad = ~(L >= 0)
        if bool(bad.any()):
            raise ValueError(_describe(L, bad, "sqrtm needs a positive semidefinite A (all eigenvalues >= 0; those within 16·n·eps·max|λ| of 0 are "
                                            "taken as 0)"))

    def divided(self, L, fL):
        fa, fb = _pairs(fL)
        return 1.0 / (fa + fb)  # infinite only at a = b = 0, where f' is


class PowerFn(SpectralFn):
    """``x**p``: any real ``x`` for integer ``p >= 0``, ``x != 0`` for integer ``p < 0``,
    ``x >= 0`` for non-integer ``p > 0`` and ``x > 0`` for non-integer ``p < 0``."""

    def __init__(self, p: float):
        self.p = float(p)
        self.integer = self.p == round(self.p)
        self.name = f"x**{self.p:g}"
        # non-integer p > 0: the domain is λ >= 0 (infinite slope at 0 for p < 1, slope 0 for p > 1)
        self.semidefinite_domain = not self.integer and self.p > 0

    def __call__(self, x):
        if self.p == 0:
            return torch.ones_like(x)
        return torch.pow(x, self.p)

    def deriv(self, x):
        if self.p == 0:
            return torch.zeros_like(x)
        if self.p == 1:
            return torch.ones_like(x)
        return self.p * torch.pow(x, self.p - 1)

    def check_domain(self, L):
        if self.integer and self.p >= 0:
            bad = ~torch.isfinite(L)
            need = "finite eigenvalues"
        elif self.integer:
            bad = ~(L != 0)
            need = "a nonsingular A (no zero eigenvalue) for a negative integer power"
        elif self.p > 0:
            bad = ~(L >= 0)
            need = (f"a positive semidefinite A (all eigenvalues >= 0; those within 16·n·eps·max|λ| of 0 are taken "
                    f"as 0) for the non-integer power p={self.p:g}")
        else:
            bad = ~(L > 0)
            need = f"a positive definite A (all eigenvalues > 0) for the non-integer power p={self.p:g}"
        if bool(bad.any()):
            raise ValueError(_describe(L, bad, f"powm needs {need}"))

    def _positive(self, lo, hi):
        """``(hi**p - lo**p) / (hi - lo)`` for ``0 < lo <= hi``.

        With ``x = p log(hi/lo)``: ``expm1(x)`` (relative error ~ eps max(1, |x|))
        for ``|x| <= 2``, else the plain quotient (relative error ~ eps coth(|x|/2)).
        """
        t = _safe_div(hi - lo, lo)
        x = self.p * torch.log1p(t)
        near = torch.pow(lo, self.p - 1) * _safe_div(torch.expm1(x), t)
        far = _safe_div(torch.pow(hi, self.p) - torch.pow(lo, self.p), hi - lo)
        q = torch.where(x.abs() <= 2, near, far)
        return torch.where(hi == lo, self.p * torch.pow(lo, self.p - 1), q)

    def divided(self, L, fL):
        a, b = _pairs(L)
        if self.p == 0:
            return torch.zeros_like(a * b)
        if self.p == 1:
            return torch.ones_like(a * b)
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        pos = lo > 0
        out = self._positive(torch.where(pos, lo, torch.ones_like(lo)), torch.where(pos, hi, torch.ones_like(hi)))
        # the plain quotient elsewhere (a zero or mixed signs: no cancellation beyond eps |f| / |a - b|)
        fa, fb = _pairs(fL)
        quot = torch.where(a == b, self.deriv(a * torch.ones_like(b)), _safe_div(fa - fb, a - b))
        if self.integer:  # (-x)**p = (-1)**p x**p: reflect negative pairs onto the positive formula
            neg = hi < 0
            sign = -1.0 if int(self.p) % 2 == 0 else 1.0  # (-1)**(p-1)
            refl = sign * self._positive(torch.where(neg, -hi, torch.ones_like(hi)), torch.where(neg, -lo, torch.ones_like(lo)))
            quot = torch.where(neg, refl, quot)
        out = torch.where(pos, out, quot)
        return _set_diagonal(out, self.deriv(L))


class OnesFn(SpectralFn):
    """``f = 1`` on the computed eigenvalues: ``X Xᵀ``, the eigenspace projector."""

    name = "1"

    def __call__(self, x):
        return torch.ones_like(x)

    def deriv(self, x):
        return torch.zeros_like(x)

    def divided(self, L, fL):
        a, b = _pairs(L)
        return torch.zeros_like(a * b)


class UserFn(SpectralFn):
    """A user's elementwise torch function ``f``, with ``f'`` by autograd or given."""

    def __init__(self, f, fprime=None):
        self.f, self.fprime = f, fprime
        self.name = getattr(f, "__name__", "f")

    def __call__(self, x):
        y = self.f(x)
        if not torch.is_tensor(y) or y.shape != x.shape:
            got = f"a tensor of shape {tuple(y.shape)}" if torch.is_tensor(y) else type(y).__name__
            raise TypeError(
                f"f must map a tensor of eigenvalues elementwise to a tensor of the same shape; for input "
                f"shape {tuple(x.shape)} it returned {got}. Pass an elementwise torch function such as torch.exp."
            )
        return y.to(x.dtype)

    def deriv(self, x):
        if self.fprime is not None:
            return self.fprime(x).to(x.dtype)
        try:  # elementwise f: its Jacobian is diagonal, so J·1 is f' at every entry
            return torch.func.jvp(self.f, (x,), (torch.ones_like(x),))[1].to(x.dtype)
        except (RuntimeError, NotImplementedError):
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self.f(xr).sum(), xr)
            return g.to(x.dtype)

    def check_domain(self, L):
        bad = ~torch.isfinite(self(L))
        if bool(bad.any()):
            raise ValueError(_describe(L, bad, f"f ({self.name}) is not finite on the spectrum of A"))

    def divided(self, L, fL):
        a, b = _pairs(L)
        fa, fb = _pairs(fL)
        d = a - b
        eps = torch.finfo(L.dtype).eps
        q = _safe_div(fa - fb, d)
        err_q = _safe_div(2 * eps * (fa.abs() + fb.abs()), d.abs())
        err_q = torch.where(d == 0, torch.full_like(err_q, math.inf), err_q)
        need = ~(err_q <= _QUOTIENT_OK * eps * q.abs())
        out = q.clone()
        if bool(need.any()):
            an, bn = a.expand_as(q)[need], b.expand_as(q)[need]
            m, h = 0.5 * (an + bn), 0.5 * (an - bn)
            s = torch.tensor(_NODES, dtype=L.dtype, device=L.device)
            nodes = m.unsqueeze(-1) + h.unsqueeze(-1) * s  # (p, 7)
            fp = self.deriv(nodes.reshape(-1)).reshape(nodes.shape)
            g3 = 0.5 * (fp @ torch.tensor(_W3, dtype=L.dtype, device=L.device))
            g5 = 0.5 * (fp @ torch.tensor(_W5, dtype=L.dtype, device=L.device))
            qn = q[need]
            use_quad = ((g5 - g3).abs() <= err_q[need]) | ~torch.isfinite(qn)
            out[need] = torch.where(use_quad, g5, qn)
        out = _set_diagonal(out, self.deriv(L))
        return 0.5 * (out + out.transpose(-1, -2))


def _captures_grad(y) -> bool:
    return torch.is_tensor(y) and y.requires_grad


def as_spectral_fn(f, dtype: torch.dtype) -> SpectralFn:
    """A :class:`SpectralFn` from ``f`` or ``(f, fprime)``; checks that ``f`` captures no
    tensor that requires a gradient (its derivative would be lost silently)."""
    if isinstance(f, SpectralFn):
        return f
    fprime = None
    if isinstance(f, tuple):
        if len(f) != 2 or not all(callable(g) for g in f):
            raise TypeError(
                f"f must be a callable or a pair (f, fprime) of callables; received a tuple of length {len(f)}."
            )
        f, fprime = f
    if not callable(f):
        raise TypeError(
            f"f must be an elementwise torch function (e.g. torch.exp) or a pair (f, fprime); "
            f"received {type(f).__name__}."
        )
    probe = torch.ones(1, dtype=dtype)
    with torch.enable_grad():
        captured = [_captures_grad(g(probe)) for g in ((f,) if fprime is None else (f, fprime))]
    if any(captured):
        raise TypeError(
            "f depends on a tensor that requires a gradient (it closes over a parameter); eigrad "
            "differentiates funm with respect to A and B only. Put the parameter into the matrix instead, "
            "e.g. eigrad.expm(-t * L) rather than funm(L, lambda x: torch.exp(-t * x))."
        )
    return UserFn(f, fprime)
