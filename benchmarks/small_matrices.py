"""Per-call overhead on small dense matrices: eigrad.eigh / eigrad.eigsh against torch.linalg.eigh.

Cases (float64, random symmetric matrices with a simple spectrum):

* ``3x3 batch 20000``: one call on a (20000, 3, 3) batch;
* ``8x8 single``: one call on an (8, 8) matrix;
* ``32x32 single``: one call on a (32, 32) matrix;
* ``8x8 batch 1000``: one call on a (1000, 8, 8) batch.

For each case, ``fwd`` is the call plus a gauge-invariant loss
``sum(Λ) + sum((c ⊙ X)²)`` (squares: independent of the eigenvectors' signs)
and ``fwd+bwd`` adds ``torch.autograd.grad`` of it to ``A``. ``eigsh`` asks
for ``k = n // 2`` eigenpairs (``solver="auto"``, which is ``"dense"`` at
these sizes); torch's reference is ``torch.linalg.eigh`` with the loss on the
same columns. Every time is the median of ``--repeats`` timed runs (each of
50 (8×8) or 20 (32×32) calls for the single-matrix cases) after warm-up runs,
the methods interleaved within each repeat; ratios are eigrad / torch.

Usage::

    python benchmarks/small_matrices.py --threads 1
    python benchmarks/small_matrices.py --threads 2 --repeats 21
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import eigrad

CASES = (  # (name, batch shape, n, inner calls per timed run)
    ("3x3 batch 20000", (20000,), 3, 1),
    ("8x8 single", (), 8, 50),
    ("32x32 single", (), 32, 20),
    ("8x8 batch 1000", (1000,), 8, 1),
)


def _matrix(batch, n, gen):
    A = torch.randn(*batch, n, n, dtype=torch.float64, generator=gen)
    return (A + A.mT) / 2


def _loss(L, X, c):
    return L.sum() + (c[: X.shape[-2], : X.shape[-1]] * X).square().sum()


def _fns(k):
    """name -> eigensolver ``A -> (L, X)`` on the k (or all n) smallest pairs."""
    return {
        "torch.linalg.eigh": lambda A: torch.linalg.eigh(A),
        "eigrad.eigh": lambda A: eigrad.eigh(A),
        "torch (k cols)": lambda A: tuple(t[..., :k] if i == 0 else t[..., :, :k]
                                          for i, t in enumerate(torch.linalg.eigh(A))),
        "eigrad.eigsh": lambda A: eigrad.eigsh(A, k),
    }


def _times(fns, A, c, backward, inner, repeats, warmup):
    """name -> median seconds per call; the repeats interleave the methods, so that a load spike
    on a shared machine slows all of them rather than one."""
    def once(fn):
        t0 = time.perf_counter()
        for _ in range(inner):
            Ai = A.detach().requires_grad_(backward)
            L, X = fn(Ai)
            f = _loss(L, X, c)
            if backward:
                torch.autograd.grad(f, Ai)
        return (time.perf_counter() - t0) / inner

    for _ in range(warmup):
        for fn in fns.values():
            once(fn)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(once(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def _fmt(t):
    return f"{t * 1e3:9.2f} ms" if t >= 1e-3 else f"{t * 1e6:9.1f} µs"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float64, "
          f"median of {args.repeats} after {args.warmup} warm-up runs")
    print(f"{'case':18s} {'mode':8s} {'torch eigh':>12s} {'eigrad.eigh':>12s} {'ratio':>6s}"
          f" {'torch k col':>12s} {'eigrad.eigsh':>12s} {'ratio':>6s}")
    for name, batch, n, inner in CASES:
        A = _matrix(batch, n, gen)
        c = torch.randn(n, n, dtype=torch.float64, generator=gen)
        fns = _fns(max(n // 2, 1))
        for backward in (False, True):
            t = _times(fns, A, c, backward, inner, args.repeats, args.warmup)
            r1 = t["eigrad.eigh"] / t["torch.linalg.eigh"]
            r2 = t["eigrad.eigsh"] / t["torch (k cols)"]
            print(f"{name:18s} {'fwd+bwd' if backward else 'fwd':8s} {_fmt(t['torch.linalg.eigh'])} "
                  f"{_fmt(t['eigrad.eigh'])} {r1:6.2f} {_fmt(t['torch (k cols)'])} {_fmt(t['eigrad.eigsh'])} "
                  f"{r2:6.2f}", flush=True)


if __name__ == "__main__":
    main()
