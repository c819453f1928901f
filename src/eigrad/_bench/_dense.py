"""Dense suite: the k smallest eigenpairs of a random symmetric matrix, forward and backward.

The loss ``f(Λ, X) = Σλ + tr(Xᵀ W X)`` (``W`` a fixed random symmetric
matrix) is gauge invariant and uses only the k smallest pairs. "forward" is
the eigensolver call plus the loss, "backward" is ``torch.autograd.grad(f, A)``;
each time is the median of ``repeats`` runs after a warm-up. Gradients (their
symmetric parts) are compared with ``torch.linalg.eigh``'s, a valid reference
on a simple spectrum. Same problem and methods as ``benchmarks/dense_partial.py``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Sequence

from ._common import median, quiet_stdio, symmetric_problem, timed

#: methods in report order; "torch" is the reference of the ratios
METHODS = ("eigrad", "eigrad-dense", "torch", "xitorch", "xitorch-davidson")
DEFAULT_METHODS = ("eigrad", "torch", "xitorch", "xitorch-davidson")
REFERENCE = "torch"
DESCRIPTION = {
    "eigrad": "`eigrad.eigsh(A, k)` (solver='auto': LAPACK subset on the CPU), eigrad backward",
    "eigrad-dense": "`eigrad.eigsh(A, k, solver='dense')`: torch.linalg.eigh forward, eigrad backward",
    "torch": "`torch.linalg.eigh(A)`, loss on the first k pairs (reference)",
    "xitorch": "`xitorch.linalg.symeig(neig=k)`, method='exacteig'",
    "xitorch-davidson": "`xitorch.linalg.symeig(neig=k, method='davidson', min_eps=1e-9)`",
}


def loss(L, X, W):
    return L.sum() + (X * (W @ X)).sum()  # Σλ + tr(Xᵀ W X): gauge invariant


def make_method(name: str, k: int, clock: Callable[[], float] = time.perf_counter):
    """``run(A, W) -> (t_forward, t_backward, grad_A)`` for one method, timed by ``clock``."""
    import torch

    if name.startswith("eigrad"):
        import eigrad

        solver = "dense" if name == "eigrad-dense" else "auto"

        def forward(A, W):
            L, X = eigrad.eigsh(A, k, solver=solver)
            return loss(L, X, W)

    elif name == "torch":

        def forward(A, W):
            L, X = torch.linalg.eigh(A)
            return loss(L[..., :k], X[..., :k], W)

    elif name.startswith("xitorch"):
        import xitorch
        import xitorch.linalg

        opts = {"method": "davidson", "min_eps": 1e-9} if name == "xitorch-davidson" else {}

        def forward(A, W):
            with torch.random.fork_rng(devices=[]):  # davidson reseeds the global RNG
                L, X = xitorch.linalg.symeig(xitorch.LinearOperator.m(A, True), neig=k, mode="lowest", **opts)
            return loss(L, X, W)

    else:
        raise ValueError(f"unknown dense method {name!r}; pass one of {', '.join(METHODS)}")

    # xitorch's LU solves print MKL errors from C on singular shifts: keep them off the output
    silence = quiet_stdio if name.startswith("xitorch") else contextlib.nullcontext

    def run(A, W):
        A = A.detach().clone().requires_grad_(True)
        with silence():
            t_f, loss = timed(lambda: forward(A, W), clock)
            t_b, (g,) = timed(lambda: torch.autograd.grad(loss, A), clock)
        return t_f, t_b, g

    return run


def run_suite(
    sizes: Sequence[int], methods: Sequence[str], *, k: int = 8, repeats: int = 2, max_seconds: float = 120.0,
    seed: int = 0, log=None, emit=None,
) -> list[dict]:
    """Time ``methods`` at every size; one record per (method, n).

    A record has ``forward``, ``backward`` (seconds) and ``grad_err`` (relative
    difference of the symmetric gradient from torch's), or ``error``. A method
    whose n³-extrapolated time exceeds ``max_seconds`` is skipped at larger sizes.
    ``emit(records)``, if given, receives each size's records as soon as they are complete.
    """
    import torch

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    runners = {m: make_method(m, k) for m in methods}
    A0, W0 = symmetric_problem(max(64, 4 * k), seed, torch.float64)
    for m, run in runners.items():  # warm-up: imports, lazy initialisation, first-call costs
        try:
            run(A0, W0)
        except Exception as exc:  # noqa: BLE001 - the timed runs report it
            log(f"dense: warm-up of {m} failed: {type(exc).__name__}: {exc}")

    records: list[dict] = []
    last: dict[str, tuple[int, float]] = {}  # method -> (n, seconds) at the last completed size
    for n in sizes:
        if not 2 * k < n:
            raise ValueError(f"dense sizes must exceed 2·k = {2 * k}; got n = {n} (pass larger --sizes)")
        A, W = symmetric_problem(n, seed, torch.float64)
        grads = {}
        for m, run in runners.items():
            rec = {"suite": "dense", "method": m, "n": n, "k": k}
            records.append(rec)
            if m in last and last[m][1] * (n / last[m][0]) ** 3 > max_seconds:
                rec["error"] = f"skipped (predicted > {max_seconds:.0f} s)"
                continue
            fwd, bwd = [], []
            try:
                for _ in range(repeats):
                    t_f, t_b, g = run(A, W)
                    fwd.append(t_f)
                    bwd.append(t_b)
                    if t_f + t_b > max_seconds:
                        break
            except Exception as exc:  # noqa: BLE001 - reported in the table
                rec["error"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                continue
            rec.update(forward=median(fwd), backward=median(bwd), runs=len(fwd))
            grads[m] = g
            last[m] = (n, rec["forward"] + rec["backward"])
            log(f"dense n={n:5d} {m:18s} forward {rec['forward']:.4f} s, backward {rec['backward']:.4f} s")
        # a gradient with respect to a symmetric A is defined up to its antisymmetric part
        ref = grads.get(REFERENCE)
        for rec in records:
            if rec["n"] == n and rec["method"] in grads and ref is not None:
                g, r = grads[rec["method"]], (ref + ref.mT) / 2
                rec["grad_err"] = float(((g + g.mT) / 2 - r).norm() / r.norm())
        if emit is not None:
            emit([rec for rec in records if rec["n"] == n])
    return records
