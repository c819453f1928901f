"""Thick-restart block Lanczos (block Krylov–Schur) in torch, for one standard problem on an operator.

Single-vector Lanczos sees one direction per eigenspace and can skip copies of
a repeated eigenvalue (ARPACK therefore runs a second, deflated Lanczos run,
:func:`eigrad.eigensolvers._arpack.verify_no_missed`). A block Krylov space
built from ``b`` random start vectors holds, in exact arithmetic, a
``min(b, c)``-dimensional part of every eigenspace of multiplicity ``c``: with
``b > c`` every copy is found by construction. When a converged cluster has
``c >= b`` copies the block is widened to ``c + 1`` columns (fresh random
columns orthogonal to the basis) and the iteration continues for at least as
many steps again as it took so far (the new columns start from random, like
the first ones), so a result is returned only once every converged cluster is
smaller than the block.

The iteration keeps an orthonormal basis ``V`` with its products ``AV`` (from
real operator applications) and an orthonormal frontier block ``Q ⟂ V``
(``A V ⊂ span [V, Q]``). One step applies ``A`` to ``Q`` (one block product),
appends it, and orthogonalizes ``A Q`` against the basis by block classical
Gram–Schmidt, twice (the second pass corrects the first's rounding), then QR;
dependent columns are replaced by random ones. The Ritz pairs come from
``H = Vᴴ A V`` (``θ, C = eigh(H)``) and their residual norms from the
Krylov relation, ``‖A V c − θ V c‖ = ‖(Qᴴ A Q_last) c_last‖`` (``b × b`` coefficients,
no extra application). When the basis is full it is restarted on its
``keep`` best Ritz vectors (thick restart; ``Q`` is kept, so the relation
holds exactly as in Krylov–Schur). Convergence uses eigrad's criterion
(``_options``) and is confirmed on fresh products ``A X`` before returning.

Complex Hermitian operators run the same code with ``ᴴ``. ``largest=True``
runs on ``−A``. Refused with a clear error: ``B ≠ I``, a preconditioner,
batched operators (use :class:`~eigrad.eigensolvers.LOBPCG` or
:class:`~eigrad.eigensolvers.Primme`).
"""

from __future__ import annotations

import dataclasses

import torch

from .. import _monitor
from ._iterative import dense_fallback, finish, make_solution, nonfinite_message, relative_residuals, sym
from ._lobpcg import _Negated
from ._options import IterativeOptions, check_positive_int
from ._scaled import scale_invariant

#: default cap on restart cycles
DEFAULT_MAXITER = 500


@dataclasses.dataclass(frozen=True)
class BlockLanczos(IterativeOptions):
    """Thick-restart block Lanczos (module docstring); finds every copy of a repeated eigenvalue.

    Parameters
    ----------
    rtol, maxiter, on_failure, seed
        See :class:`IterativeOptions`; ``maxiter`` counts restart cycles
        (default 500).
    block_size : int
        Columns of the start block (at least 2); widened automatically when
        a converged cluster has as many copies. Default 4.
    ncv : int or None
        Basis size before a restart. ``None``: ``max(60, 3 (k + n_guard) + 2 b)``; at least
        ``⌈3 (k + n_guard) / 2⌉ + 4 b`` (a restart keeps ``k + n_guard + ⌈(k + n_guard)/2⌉ + b``
        Ritz vectors, or ``ncv / 2`` if more).

    Notes
    -----
    Standard problems only (``B = None``), no preconditioner, one problem at
    a time. ``X0``: its columns start the block (the rest random from ``seed``).
    Problems with ``ncv + 2 b >= n`` are solved densely.
    """

    block_size: int = 4
    ncv: int | None = None

    handle_factory = None
    supports_complex = True

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "block_size", self.block_size, 2)
        check_positive_int(self, "ncv", self.ncv, 4)

    @scale_invariant
    def __call__(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        if len(A.shape) != 2:
            raise ValueError(
                f"solver='block-lanczos' solves one problem at a time; received an operator of shape "
                f"{tuple(A.shape)}. Pass solver='lobpcg' for batched operators."
            )
        if B is not None:
            raise ValueError(
                "solver='block-lanczos' solves standard problems A x = λ x only; received a mass matrix B. "
                "Pass solver='arpack', 'lobpcg' or 'primme' (or 'shift-invert' for assembled sparse pencils)."
            )
        if preconditioner is not None:
            raise ValueError(
                "solver='block-lanczos' cannot use a preconditioner; pass solver='primme' (pip install primme) "
                "or solver='lobpcg', or preconditioner=None."
            )
        n = A.shape[-1]
        g = max(0, min(n_guard, n - k))
        m = k + g
        b = self.block_size
        ncv = self.ncv if self.ncv is not None else max(60, 3 * m + 2 * b)
        ncv = max(ncv, m + (m + 1) // 2 + 4 * b)  # room to grow past the vectors kept at a restart
        if ncv + 2 * b >= n:
            return dense_fallback(A, B, k, g, largest)
        rtol = self.resolved_rtol(A.dtype)
        maxiter = self.maxiter if self.maxiter is not None else DEFAULT_MAXITER
        Aop = _Negated(A) if largest else A
        gen = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            theta, X, rnorm, rho, nu, n_iter, n_mv, reason = _iterate(Aop, X0, m, b, ncv, rtol, maxiter, gen)
        if largest:
            theta, X, rnorm, rho = -theta.flip(-1), X.flip(-1), rnorm.flip(-1), rho.flip(-1)
        sol = make_solution(
            theta, X, rnorm, k, g, largest, n_iter=n_iter, status="converged", n_matvec=n_mv,
            scale=torch.maximum(theta.abs().amax(), nu),
        )
        return finish(sol, rho, rtol, self.on_failure, "BlockLanczos", reason)


def _random(gen, n, q, dtype, device):
    return torch.randn(n, q, generator=gen, dtype=dtype).to(device)


def _orthonormalize(W, V, gen, projected=False):
    """``W`` orthogonalized against orthonormal ``V`` (may be None) twice (once more if ``projected``: the
    caller did the first pass) and orthonormalized (QR); dependent columns are replaced by random ones."""
    n, q = W.shape
    eps = torch.finfo(W.real.dtype).eps
    passes = 1 if projected else 2
    for _ in range(4):
        norms = torch.linalg.vector_norm(W, dim=0)
        if V is not None and V.shape[-1]:
            for _ in range(passes):
                W = W - V @ (V.mH @ W)
        Qw, R = torch.linalg.qr(W)
        d = R.diagonal().abs()
        bad = ~(d > 1e3 * eps * norms.clamp_min(torch.finfo(d.dtype).tiny) * max(1, q) ** 0.5)
        if not bool(bad.any()):
            return Qw
        W = torch.where(bad.unsqueeze(0), _random(gen, n, q, W.dtype, W.device), Qw)
        passes = 2
    raise RuntimeError("BlockLanczos could not extend its orthonormal basis with random vectors.")


def _clusters_at_least(theta, size, tol):
    """The largest number of consecutive (sorted) values within ``tol`` of their neighbours, if >= size."""
    if theta.numel() < 2:
        return 1
    close = (theta[1:] - theta[:-1]) <= tol
    best = run = 1
    for c in close.tolist():
        run = run + 1 if c else 1
        best = max(best, run)
    return best


def _iterate(A, X0, m, b, ncv, rtol, maxiter, gen):
    n = A.shape[-1]
    dtype, device = A.dtype, A.device
    Q = _random(gen, n, b, dtype, device)
    if X0 is not None:
        X0 = X0.detach().reshape(n, -1).to(device, dtype)
        if X0.shape[-1] > b:
            b = X0.shape[-1]
            Q = _random(gen, n, b, dtype, device)
        Q = torch.cat([X0, Q[:, X0.shape[-1]:]], dim=-1)
    Q = _orthonormalize(Q, None, gen)
    cap = ncv + 2 * b + 2 * m + 8  # room for widened blocks
    # the basis, in place (no copies per step) and by rows: V = Vt[:d]ᵀ; the skinny products with a
    # row-major Vt ran 1.6-1.8x faster than with a column slice of an (n, cap) buffer (n = 64000, d = 60)
    Vt = torch.empty(cap, n, dtype=dtype, device=device)
    d = 0
    H = torch.empty(0, 0, dtype=dtype, device=device)
    nu = torch.zeros((), dtype=Vt.real.dtype, device=device)
    n_mv, steps, settle = 0, 0, 0
    eps = torch.finfo(nu.dtype).eps
    for cycle in range(1, maxiter + 1):
        while True:
            AQ = A.matmat(Q)
            q = Q.shape[-1]
            n_mv += q
            steps += 1
            if not bool(torch.isfinite(AQ).all()):
                raise ValueError(nonfinite_message("A.matmat", f"at BlockLanczos step {steps}"))
            if d + 2 * q > Vt.shape[0]:
                Vt = torch.cat([Vt, torch.empty(2 * q, n, dtype=dtype, device=device)], dim=0)
            Vt[d:d + q] = Q.mT
            d0, d = d, d + q
            V = Vt[:d].mT
            coef = V.mH @ AQ  # (d, q): the new columns of H (first Gram–Schmidt pass)
            Hn = torch.zeros(d, d, dtype=dtype, device=device)
            Hn[:d0, :d0] = H
            Hn[:, d0:] = coef
            Hn[d0:, :d0] = coef[:d0].mH
            H = sym(Hn)
            Q = _orthonormalize(AQ - V @ coef, V, gen, projected=True)
            # A V = V H + Q G with G = [0, Qᴴ A Q_last]: the older columns' products lie in span V
            G_last = Q.mH @ AQ  # (q', q)
            theta, C = torch.linalg.eigh(H)
            nu = torch.maximum(nu, theta.abs().amax())
            mm = min(m, theta.numel())
            res = torch.linalg.vector_norm(G_last @ C[d0:, :mm], dim=0)
            rho = relative_residuals(res, theta[:mm], torch.ones_like(res), nu)
            mon = _monitor.active()
            if mon is not None:
                mon.report(iteration=steps, converged=int((rho <= rtol).sum()), total=m,
                           residual=float(rho.max()) if rho.numel() else 0.0, matvecs=n_mv)
            if mm == m and steps >= settle and bool((rho <= 0.5 * rtol).all()):
                X = V @ C[:, :m]
                # every copy: a converged cluster as wide as the block may have more copies unseen
                tol = rtol**0.5 * torch.maximum(theta[:m].abs().amax(), eps**0.25 * nu)
                conv = theta[: m + 1] if theta.numel() > m else theta[:m]
                c = _clusters_at_least(conv, b, float(tol))
                if c >= b:
                    Vq = torch.cat([V, Q], -1)
                    extra = _orthonormalize(_random(gen, n, c + 2 - b, dtype, device), Vq, gen)
                    Q = torch.cat([Q, extra], dim=-1)
                    b = Q.shape[-1]
                    ncv = max(ncv, m + (m + 1) // 2 + 4 * b)  # room to grow past the kept vectors
                    settle = 2 * steps  # the new random columns need about as many steps as the first ones
                    continue
                AX = A.matmat(X)
                n_mv += m
                rnorm = torch.linalg.vector_norm(AX - X * theta[:m], dim=0)
                rho_t = relative_residuals(rnorm, theta[:m], torch.linalg.vector_norm(X, dim=0), nu)
                if bool((rho_t <= rtol).all()):
                    return theta[:m], X, rnorm, rho_t, nu, steps, n_mv, ""
            if d + Q.shape[-1] > ncv:
                break
        # thick restart on the best Ritz vectors (Krylov–Schur: Q kept, A Y = Y Θ + Q (G C))
        keep = min(max(m + (m + 1) // 2 + b, ncv // 2), d - Q.shape[-1])
        Vt[:keep] = (V @ C[:, :keep]).mT
        d = keep
        V = Vt[:d].mT
        H = torch.diag(theta[:keep]).to(dtype)
    X = V[:, :m] if V.shape[-1] >= m else torch.cat([V, Q], -1)[:, :m]
    AX = A.matmat(X)
    n_mv += m
    th = (X.mH @ AX).diagonal().real
    rnorm = torch.linalg.vector_norm(AX - X * th, dim=0)
    rho_t = relative_residuals(rnorm, th, torch.linalg.vector_norm(X, dim=0), nu)
    order = torch.argsort(th)
    return (th[order], X[:, order], rnorm[order], rho_t[order], nu, steps, n_mv,
            f"stopped at maxiter={maxiter} restart cycles")
