"""Block LOBPCG in torch: batched, any device, with B, a preconditioner, soft locking and guards.

Knyazev's locally optimal block preconditioned conjugate gradient with the
robustness measures of Hetmaniuk & Lehoucq (2006) and Duersch, Shao, Yang &
Gu (2018):

* the search basis ``S = [X, W, P]`` is kept B-orthonormal: ``W`` (the
  preconditioned residuals) is B-orthogonalized against ``[X, P]`` and
  orthonormalized by SVQB, twice, dropping dependent directions instead of
  failing (a Cholesky QR breaks down exactly when LOBPCG converges);
* ``P`` is built in the small coefficient space, orthogonal to the new Ritz
  vectors there, so ``[X, P]`` stays B-orthonormal without any operator
  application;
* dropped directions keep their slot (a zero column) so every problem of a
  batch has the same shapes; their diagonal entry in the projected matrix is
  a sentinel above the spectrum so they are never selected;
* soft locking: converged columns stay in the Rayleigh–Ritz basis but get no
  new search directions (and no operator applications) until their residual
  grows again;
* convergence is declared only after the residuals are recomputed from fresh
  products ``A X``, ``B X`` (the recurrences drift).

The block holds ``k + n_guard`` wanted columns plus buffer columns that speed
up convergence; ``largest=True`` runs on ``−A``.

Complex Hermitian operators run the same iteration with ``ᴴ`` for ``ᵀ``: the
Gram and projected matrices are Hermitian, the Ritz values real, the start
block complex Gaussian.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .. import _monitor
from ._iterative import (
    apply_B,
    as_apply,
    dense_fallback,
    finish,
    make_solution,
    nonfinite_message,
    relative_residuals,
    svqb,
    sym,
)
from ._definite import NOT_SPD, PASS_SPD, check_B_gram, check_B_positive
from ._options import IterativeOptions, check_positive_int
from ._scaled import scale_invariant

#: default iteration cap of LOBPCG
DEFAULT_MAXITER = 1000


class _Negated:
    """``−A`` (for the largest eigenvalues)."""

    def __init__(self, A):
        self.A = A
        self.shape, self.dtype, self.device = A.shape, A.dtype, A.device

    def matmat(self, X):
        return -self.A.matmat(X)


def default_block_size(n_wanted: int) -> int:
    """``k + n_guard`` wanted columns plus ``max(4, ⌈(k + n_guard)/2⌉)`` buffer columns."""
    return n_wanted + max(4, math.ceil(n_wanted / 2))


@dataclasses.dataclass(frozen=True)
class LOBPCG(IterativeOptions):
    """Block LOBPCG (module docstring) on any device, batched over the operator's leading dimensions.

    Parameters
    ----------
    rtol, maxiter, on_failure, seed
        See :class:`IterativeOptions`; ``maxiter`` counts iterations
        (default 1000).
    block_size : int or None
        Columns of the block, at least ``k + n_guard``; ``None``:
        ``k + n_guard + max(4, ⌈(k + n_guard)/2⌉)`` (or the columns of
        ``X0`` if more). Capped at ``n // 3``; smaller problems
        (``n < 3 (k + n_guard)``) are solved densely.

    Notes
    -----
    ``preconditioner`` (a callable ``X -> T X``, an operator or a matrix)
    should be symmetric positive definite and approximate ``(A − σB)⁻¹`` for
    a ``σ`` below the wanted eigenvalues (for ``largest=True``: ``(σB − A)⁻¹``
    with ``σ`` above them). It is applied to the residuals every iteration.
    ``X0 (*batch, n, j)`` (or ``(n, j)``) fills the first ``j`` columns of the
    start block, the rest is random from ``seed``.

    ``B`` must be symmetric positive definite: a short Lanczos run on ``B``
    before iterating (:func:`eigrad.eigensolvers._definite.check_B_positive`,
    32 applications of ``B`` to one vector), the signs of every B-Gram matrix
    formed (:func:`~eigrad.eigensolvers._iterative.svqb`) and a Cholesky
    factorization of ``Xᵀ B X`` at the end raise a ``ValueError`` naming
    ``B`` when it is indefinite or singular. Without them an indefinite
    ``B`` was accepted and the smallest eigenvalue skipped silently: LOBPCG
    minimizes the Rayleigh quotient over ``xᵀ B x > 0``.
    """

    block_size: int | None = None

    handle_factory = None
    #: complex Hermitian operators (module docstring)
    supports_complex = True

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "block_size", self.block_size)

    @scale_invariant
    def __call__(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        n = A.shape[-1]
        g = max(0, min(n_guard, n - k))
        nw = k + g
        m = self.block_size if self.block_size is not None else default_block_size(nw)
        if X0 is not None:
            m = max(m, X0.shape[-1])
        m = max(min(m, n // 3), nw)
        if 3 * m > n:
            return dense_fallback(A, B, k, g, largest)
        if B is not None:  # B SPD (_definite.py): LOBPCG alone would stay in xᵀBx > 0 and skip the rest
            check_B_positive(B, self.seed)
        dtype, device = A.dtype, A.device
        batch = tuple(A.shape[:-2]) if B is None else torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        rtol = self.resolved_rtol(dtype)
        maxiter = self.maxiter if self.maxiter is not None else DEFAULT_MAXITER
        T = as_apply(preconditioner, "LOBPCG", n)
        Aop = _Negated(A) if largest else A
        with torch.no_grad():
            X = self._start_block(X0, batch, n, m, dtype, device)
            theta, X, AX, n_iter, n_mv, nu, reason = _iterate(Aop, B, T, X, nw, rtol, maxiter)
            # the wanted and guard columns, with residuals from fresh products
            theta, X, AX = theta[..., :nw], X[..., :nw], AX[..., :nw]
            BX = apply_B(B, X)
            rnorm = torch.linalg.vector_norm(AX - BX * theta.unsqueeze(-2), dim=-2)
            rho = relative_residuals(rnorm, theta, torch.linalg.vector_norm(BX, dim=-2), nu)
            check_B_gram(B, X, BX)
        if largest:  # eigenpairs of −A, ascending → of A, ascending
            theta, X, rnorm, rho = -theta.flip(-1), X.flip(-1), rnorm.flip(-1), rho.flip(-1)
        sol = make_solution(
            theta, X, rnorm, k, g, largest, n_iter=n_iter, status="converged", n_matvec=n_mv,
            # the spectrum's scale seen by the iteration: the computed values alone say nothing
            # when they are all (near) zero, and the cut check then missed a zero triple at k=1
            scale=torch.maximum(theta.abs().amax(dim=-1), nu),
        )
        return finish(sol, rho, rtol, self.on_failure, "LOBPCG", reason)

    def _start_block(self, X0, batch, n, m, dtype, device):
        gen = torch.Generator().manual_seed(self.seed)
        X = torch.randn(*batch, n, m, generator=gen, dtype=dtype).to(device)
        if X0 is not None:
            X0 = X0.detach().to(device=device, dtype=dtype)
            if X0.shape[-2] != n:
                raise ValueError(f"X0 must have shape (..., {n}, j); received {tuple(X0.shape)}.")
            j = X0.shape[-1]
            X = torch.cat([X0.expand(*batch, n, j), X[..., j:]], dim=-1)
        return X


def _orthonormal_block(A, B, X, gen_seed: int):
    """B-orthonormalize ``X`` (replacing dependent columns by random ones), then Rayleigh–Ritz.

    Returns ``(theta, X, AX, BX, applications)`` with exact products.
    """
    gen = torch.Generator().manual_seed(gen_seed)
    for _ in range(4):
        X, _, _ = svqb(X, apply_B(B, X))
        X, _, keep = svqb(X, apply_B(B, X))
        if bool(keep.all()):
            break
        noise = torch.randn(X.shape, generator=gen, dtype=X.dtype).to(X.device)
        X = torch.where(keep.unsqueeze(-2), X, noise)
    else:
        if B is not None:
            raise ValueError(
                NOT_SPD + "LOBPCG could not B-orthonormalize a random start block (its B-Gram matrix stayed "
                "singular), so B is singular to working precision." + PASS_SPD
            )
        raise RuntimeError("LOBPCG could not build an orthonormal start block from random vectors.")
    AX = A.matmat(X)
    BX = apply_B(B, X)
    theta, C = torch.linalg.eigh(sym(X.mH @ AX))
    return theta, X @ C, AX @ C, BX @ C, X.shape[-1]


def _ortho_against(B, W, Q, BQ):
    """B-orthogonalize ``W`` against B-orthonormal ``Q`` and orthonormalize it (SVQB).

    The projection is repeated when it removed most of a column (the DGKS
    criterion, ``‖w_after‖ < ‖w_before‖ / 2``, in the Euclidean norm as a
    cheap proxy); when SVQB had to amplify nearly dependent directions
    (``θ_min / θ_max < 1e-4``), one more projection and SVQB restore
    orthogonality against ``Q``.
    """
    if Q is not None:
        before = torch.linalg.vector_norm(W, dim=-2)
        W = W - Q @ (BQ.mH @ W)
        if bool((torch.linalg.vector_norm(W, dim=-2) < 0.5 * before).any()):
            W = W - Q @ (BQ.mH @ W)
    W, BW, valid, ratio = svqb(W, apply_B(B, W), with_ratio=True)
    if ratio < 1e-4:
        if Q is not None:
            W = W - Q @ (BQ.mH @ W)
        W, BW, valid = svqb(W, apply_B(B, W))
    return W, BW, valid


def _sentinel(H, valid):
    """Decouple dropped directions: zero rows/columns and a diagonal above the spectrum."""
    vf = valid.to(H.dtype)
    H = H * vf.unsqueeze(-1) * vf.unsqueeze(-2)
    big = 2.0 * H.shape[-1] * H.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(H.dtype).tiny)
    return H + torch.diag_embed((1.0 - vf)) * big


def _residual_test(AX, BX, theta, nu):
    R = AX - BX * theta.unsqueeze(-2)  # (*b, n, m)
    rho = relative_residuals(torch.linalg.vector_norm(R, dim=-2), theta, torch.linalg.vector_norm(BX, dim=-2), nu)
    return R, rho


class _Watched:
    """An operator (or preconditioner) whose latest output is kept, to name the culprit of a breakdown."""

    def __init__(self, op, what: str, log: dict):
        self.op, self.what, self.log = op, what, log
        self.shape, self.dtype, self.device = op.shape, op.dtype, op.device

    def matmat(self, X):
        Y = self.op.matmat(X)
        if not torch.is_tensor(Y) or Y.shape != X.shape:  # host metadata: free, on every product
            got = f"shape {tuple(Y.shape)}" if torch.is_tensor(Y) else f"a {type(Y).__name__}"
            raise ValueError(
                f"{self.what} returned {got} for X of shape {tuple(X.shape)}; it must return a tensor of the "
                "shape of X."
            )
        self.log[self.what] = Y
        return Y


def _nonfinite_culprit(log: dict):
    """The first product in ``log`` that holds NaN or inf (only evaluated after a breakdown)."""
    for what, Y in log.items():
        if what != "iteration" and torch.is_tensor(Y) and not bool(torch.isfinite(Y).all()):
            return what
    return None


def _iterate(A, B, T, X, nw, rtol, maxiter):
    """The LOBPCG loop (:func:`_loop`), with non-finite operator output reported as such.

    NaN or inf in a product makes a small ``eigh`` fail (``LinAlgError``) or the residuals
    non-finite; either way the latest products (kept by :class:`_Watched`, no extra
    synchronization) are searched for the culprit and a ValueError names it and the iteration.
    """
    log: dict = {"iteration": 0}
    Aw = _Watched(A, "A.matmat", log)
    Bw = None if B is None else _Watched(B, "B.matmat", log)
    Tw = None
    if T is not None:
        def Tw(W):
            log["the preconditioner"] = T(W)
            return log["the preconditioner"]
    try:
        return _loop(Aw, Bw, Tw, X, nw, rtol, maxiter, log)
    except (torch.linalg.LinAlgError, _NonFinite) as err:
        what = _nonfinite_culprit(log)
        if what is None and isinstance(err, torch.linalg.LinAlgError):
            raise
        where = f"at LOBPCG iteration {log['iteration']}"
        raise ValueError(nonfinite_message(what or "an operator", where)) from None


class _NonFinite(Exception):
    """Residuals that are NaN or inf (internal: turned into a ValueError by :func:`_iterate`)."""


def _loop(A, B, T, X, nw, rtol, maxiter, log):
    """The LOBPCG loop. Returns ``(theta, X, AX, n_iter, n_matvec, nu, reason)``."""
    m = X.shape[-1]
    theta, X, AX, BX, n_mv = _orthonormal_block(A, B, X, 1)
    nu = theta.abs().amax(dim=-1)  # (*b,) running estimate of the spectrum's magnitude
    P = AP = BP = pvalid = None
    for it in range(1, maxiter + 1):
        log["iteration"] = it
        R, rho = _residual_test(AX, BX, theta, nu)
        conv = rho <= rtol
        mon = _monitor.active()
        if mon is not None:  # eigsh_ex / progress=True
            wanted = rho[..., :nw]  # the k + n_guard pairs (the rest of the block is a buffer)
            mon.report(iteration=it, converged=int((wanted <= rtol).sum()), total=wanted.numel(),
                       residual=float(wanted.max()) if wanted.numel() else 0.0, matvecs=n_mv)
        # one synchronization for both questions: converged? finite?
        done, finite = torch.stack([conv[..., :nw].all(), torch.isfinite(rho).all()]).tolist()
        if not finite:
            raise _NonFinite
        if done:
            # confirm on fresh products (recurrences drift); this also re-orthonormalizes X
            theta, X, AX, BX, used = _orthonormal_block(A, B, X, it + 1)
            n_mv += used
            R, rho = _residual_test(AX, BX, theta, nu)
            conv = rho <= rtol
            if bool(conv[..., :nw].all()):
                return theta, X, AX, it, n_mv, nu, ""
        active = ~conv  # (*b, m)
        cols = active.reshape(-1, m).any(dim=0).nonzero().squeeze(-1)
        act = active[..., cols].to(X.dtype).unsqueeze(-2)  # (*b, 1, w)
        W = R[..., cols] * act
        if T is not None:
            W = T(W)
            if W.shape[-2:] != R[..., cols].shape[-2:]:
                raise ValueError(
                    f"the preconditioner returned shape {tuple(W.shape)} for input {tuple(R[..., cols].shape)}; "
                    "it must map (*batch, n, q) to the same shape."
                )
            W = W * act
        Q = X if P is None else torch.cat([X, P], dim=-1)
        BQ = Q if B is None else (BX if P is None else torch.cat([BX, BP], dim=-1))
        W, BW, wvalid = _ortho_against(B, W, Q, BQ)
        AW = A.matmat(W)
        n_mv += W.shape[-1]
        # basis S = [X, P, W], B-orthonormal; Z = [P, W] its new part
        S = torch.cat([Q, W], dim=-1)  # (*b, n, q)
        AS = torch.cat([AX, AW] if P is None else [AX, AP, AW], dim=-1)
        BS = S if B is None else torch.cat([BQ, BW], dim=-1)
        valid = torch.cat(
            [torch.ones_like(wvalid[..., :1]).expand(*wvalid.shape[:-1], m)]
            + ([pvalid] if P is not None else [])
            + [wvalid],
            dim=-1,
        )
        # projected matrix: Xᵀ A X = Θ (X are Ritz vectors), the rest from Sᵀ A Z
        SAZ = S.mH @ AS[..., m:]  # (*b, q, q - m)
        Th = torch.diag_embed(theta).to(SAZ.dtype)
        H = torch.cat([torch.cat([Th, SAZ[..., :m, :]], dim=-1), SAZ.mH], dim=-2)
        th, C = torch.linalg.eigh(_sentinel(sym(H), valid))
        n_valid = valid.sum(dim=-1, keepdim=True)
        in_spec = torch.arange(th.shape[-1], device=th.device) < n_valid
        nu = torch.maximum(nu, (th.abs() * in_spec).amax(dim=-1))
        Cx = C[..., :m]  # (*b, q, m)
        theta = th[..., :m]
        # new P: the non-X part of the active Ritz vectors, made orthogonal to Cx in coefficient space
        Y = Cx[..., cols].clone()
        Y[..., :m, :] = 0
        Y = Y * act
        for _ in range(2):
            Y = Y - Cx @ (Cx.mH @ Y)
        Y, _, pvalid = svqb(Y, Y)
        Cn = torch.cat([Cx, Y], dim=-1)  # (*b, q, m + p)
        XP, AXP = S @ Cn, AS @ Cn
        BXP = XP if B is None else BS @ Cn
        X, P = XP[..., :m], XP[..., m:]
        AX, AP = AXP[..., :m], AXP[..., m:]
        BX, BP = BXP[..., :m], BXP[..., m:]
    reason = f"stopped at maxiter={maxiter} iterations"
    # exact products for the best iterate
    theta, X, AX, BX, used = _orthonormal_block(A, B, X, maxiter + 1)
    return theta, X, AX, maxiter, n_mv + used, nu, reason
