"""PRIMME (``primme.eigsh``, optional dependency: ``pip install primme``) over any LinearOperator.

PRIMME's Davidson-type methods (GD+k, JDQMR) use a preconditioner well and
handle ``A x = λ B x`` natively (B-orthogonal bases, no solves with ``B``).
The operator is applied in torch and the vectors cross to numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ._iterative import (
    NumpyBridge,
    as_apply,
    dense_fallback,
    finish,
    make_solution,
    relative_residuals,
    true_residuals,
)
from ._arpack import verify_no_missed
from ._definite import check_B_gram, check_B_positive
from ._options import IterativeOptions, check_positive_int
from ._scaled import scale_invariant


class _CallableOperator:
    """A preconditioner callable with the attributes :class:`NumpyBridge` needs."""

    def __init__(self, apply, like):
        self.matmat = apply
        self.shape, self.dtype, self.device = like.shape, like.dtype, like.device


def _import_primme():
    try:
        import primme
    except ImportError as err:
        raise ImportError(
            "solver='primme' needs the optional package primme: pip install primme "
            "(or pip install 'eigrad[primme]'; building it needs BLAS/LAPACK headers). "
            "Without it, pass solver='lobpcg' (any preconditioner) or solver='arpack'."
        ) from err
    return primme


@dataclasses.dataclass(frozen=True)
class Primme(IterativeOptions):
    """PRIMME's ``eigsh`` (``which="SA"/"LA"``), preconditioned and generalized.

    Parameters
    ----------
    rtol, maxiter, on_failure, seed
        See :class:`IterativeOptions`; ``maxiter`` counts PRIMME's outer
        iterations (``None``: no cap besides ``max_matvecs``). PRIMME stops on
        ``rtol / 2`` of the criterion of :class:`IterativeOptions` (through
        its ``convtest`` hook), then the true residuals are checked against
        ``rtol``.
    method : str
        A PRIMME preset: ``"PRIMME_DEFAULT_MIN_MATVECS"`` (GD+k, the default:
        fewest operator applications, best with a preconditioner, and
        reproducible), ``"PRIMME_DEFAULT_MIN_TIME"`` (JDQMR),
        ``"PRIMME_DYNAMIC"`` (switches between the two on measured timings, so
        runs are not reproducible), ``"PRIMME_LOBPCG_OrthoBasis"``, ...
    ncv : int or None
        Maximum basis size (PRIMME's ``maxBasisSize``).
    block_size : int or None
        Maximum block size (``maxBlockSize``).
    max_matvecs : int or None
        Cap on operator applications.

    Notes
    -----
    ``B`` must be symmetric positive definite: a short Lanczos run on ``B``
    (:func:`eigrad.eigensolvers._definite.check_B_positive`) before PRIMME
    starts and a Cholesky factorization of ``Xᵀ B X`` of its result raise a
    ``ValueError`` naming ``B``.

    One problem at a time (no batch dimensions). ``preconditioner`` should
    approximate ``(A − σB)⁻¹`` near the wanted eigenvalues (PRIMME's
    ``OPinv``). ``X0 (n, j)`` gives up to ``k + n_guard`` initial guesses.

    Like ARPACK, PRIMME's default GD+k works with one vector at a time and can
    skip copies of an exactly repeated eigenvalue (measured: the guard of
    ``k = 3`` on a cubic-symmetric grid skipped the third copy of a triple
    level, hiding a cluster cut by ``k``). Every result is therefore checked
    on the deflated operator by :func:`eigrad.eigensolvers._arpack.verify_no_missed`,
    with PRIMME (and the same preconditioner) as the inner solver;
    ``n_verify=0`` switches that off.
    """

    method: str = "PRIMME_DEFAULT_MIN_MATVECS"
    ncv: int | None = None
    block_size: int | None = None
    max_matvecs: int | None = None
    n_verify: int = 1

    handle_factory = None

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "ncv", self.ncv, 2)
        check_positive_int(self, "block_size", self.block_size)
        check_positive_int(self, "max_matvecs", self.max_matvecs)
        check_positive_int(self, "n_verify", self.n_verify, 0)
        if not isinstance(self.method, str):
            raise TypeError(f"Primme(method={self.method!r}) must be a PRIMME preset name, e.g. 'PRIMME_DYNAMIC'.")

    @scale_invariant
    def __call__(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        primme = _import_primme()
        if len(A.shape) != 2:
            raise ValueError(
                f"solver='primme' solves one problem at a time; received an operator of shape {tuple(A.shape)}. "
                "Pass solver='lobpcg' for batched operators."
            )
        n = A.shape[-1]
        g = max(0, min(n_guard, n - k))
        m = k + g
        if 3 * m > n:
            return dense_fallback(A, B, k, g, largest)
        dtype, device = A.dtype, A.device
        rtol = self.resolved_rtol(dtype)
        eps = torch.finfo(dtype).eps
        bridge = NumpyBridge(A)
        kwargs = {}
        if B is not None:
            # B SPD (_definite.py): PRIMME's B-orthogonalization would otherwise meet xᵀBx <= 0 unannounced
            check_B_positive(B, self.seed)
            kwargs["M"] = NumpyBridge(B, what="B.matmat").linop
        T = as_apply(preconditioner, "Primme", n)
        if T is not None:
            kwargs["OPinv"] = NumpyBridge(_CallableOperator(T, A), what="the preconditioner").linop
        if X0 is not None:
            kwargs["v0"] = np.asfortranarray(X0.detach().reshape(n, -1)[:, :m].cpu().numpy())
        kwargs["method"] = self.method
        if self.ncv is not None:
            kwargs["ncv"] = self.ncv
        if self.block_size is not None:
            kwargs["maxBlockSize"] = self.block_size
        if self.max_matvecs is not None:
            kwargs["maxiter"] = self.max_matvecs  # primme.eigsh's maxiter caps matvecs
        if self.maxiter is not None:
            kwargs["maxOuterIterations"] = self.maxiter

        seen = {"nu": 0.0, "bnorm": 1.0}

        def convtest(eval_, evec, res_norm):  # the criterion of _options at rtol / 2
            if eval_ is None or res_norm is None:
                return False
            seen["nu"] = max(seen["nu"], abs(eval_))
            if B is not None and evec is not None:
                x = torch.from_numpy(np.ascontiguousarray(evec).reshape(n, 1)).to(device, dtype)
                seen["bnorm"] = float(torch.linalg.vector_norm(B.matmat(x)))
            floor = eps**0.25 * seen["nu"]
            return res_norm <= 0.5 * rtol * max(abs(eval_), floor) * seen["bnorm"]

        vals, vecs, stats = primme.eigsh(
            bridge.linop, m, which="LA" if largest else "SA", tol=0.5 * rtol, convtest=convtest,
            return_stats=True, return_unconverged=True, raise_for_unconverged=False, **kwargs,
        )
        order = np.argsort(vals)
        vals_t = torch.from_numpy(np.ascontiguousarray(vals[order])).to(device, dtype)
        X = torch.from_numpy(np.ascontiguousarray(vecs[:, order])).to(device, dtype)
        extra, unverified = 0, ""
        if self.n_verify and X.shape[-1] == m:
            base = {key: kwargs[key] for key in ("M", "OPinv", "method") if key in kwargs}

            def deflated_eigsh(op, kk, start, tol):
                br = NumpyBridge(op, what="A.matmat (verification run)")
                floor = eps**0.25 * float(vals_t.abs().max())

                def inner_test(eval_, evec, res_norm):  # the criterion of _options at ``tol``
                    if eval_ is None or res_norm is None:
                        return False
                    bnorm = 1.0
                    if B is not None and evec is not None:
                        x = torch.from_numpy(np.ascontiguousarray(evec).reshape(n, 1)).to(device, dtype)
                        bnorm = float(torch.linalg.vector_norm(B.matmat(x)))
                    return res_norm <= tol * max(abs(eval_), floor) * bnorm

                mu, Y, st = primme.eigsh(
                    br.linop, kk, which="LA" if largest else "SA", tol=tol, convtest=inner_test,
                    v0=np.asfortranarray(start.reshape(n, 1).cpu().numpy()), return_stats=True,
                    return_unconverged=True, raise_for_unconverged=False, **base,
                )
                complete = len(mu) == kk and bool(np.all(np.isfinite(mu)))
                to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device, dtype)  # noqa: E731
                return to(np.asarray(mu)), to(np.asarray(Y)).reshape(n, -1), br.count, complete

            vals_t, X, extra, unverified = verify_no_missed(
                A, B, vals_t, X, largest, rtol, min(self.n_verify, n - 2), deflated_eigsh,
                np.random.default_rng([self.seed, 1]),
            )
        rnorm, bxnorm = true_residuals(A, B, X, vals_t)
        if bool(torch.isfinite(vals_t).all()):
            check_B_gram(B, X)
        nu = max(float(vals_t.abs().max()), float(stats.get("estimateLargestSVal", 0.0) or 0.0))
        rho = relative_residuals(rnorm, vals_t, bxnorm, nu)
        sol = make_solution(
            vals_t, X, rnorm, k, g, largest, n_iter=int(stats["numOuterIterations"]), status="converged",
            n_matvec=bridge.count + extra + m, scale=vals_t.abs().amax(),
        )
        cap = []
        if self.maxiter is not None:
            cap.append(f"maxiter={self.maxiter}")
        if self.max_matvecs is not None:
            cap.append(f"max_matvecs={self.max_matvecs}")
        reason = "PRIMME stopped" + (f" at {' / '.join(cap)}" if cap else "")
        if unverified:
            return finish(sol, rho, rtol, self.on_failure, "Primme", unverified, failed=True)
        return finish(sol, rho, rtol, self.on_failure, "Primme", reason)
