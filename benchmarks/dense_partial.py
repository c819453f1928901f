"""Partial dense eigendecomposition: forward and backward times against torch and xitorch.

For each size n, the k smallest eigenpairs of a random symmetric (GOE) float64
matrix, differentiated through the gauge-invariant loss

    f(Λ, X) = sum(Λ) + tr(Xᵀ W X)        (W a fixed random symmetric matrix)

which uses only the k smallest pairs. "forward" is the eigensolver call plus
the loss; "backward" is ``torch.autograd.grad(f, A)``. Every time is the
median of ``--repeats`` runs after a warm-up at a small size. The last column
checks the gradients (their symmetric parts) against ``torch.linalg.eigh``'s
(simple spectrum, so torch's gradient is a valid reference).

Methods: ``eigrad`` (``eigrad.eigsh``, ``solver="auto"``: the LAPACK subset
route at these sizes on the CPU), ``eigrad-dense`` (``solver="dense"``:
``torch.linalg.eigh`` forward, eigrad backward), ``torch``
(``torch.linalg.eigh``, loss on the first k columns), ``xitorch``
(``xitorch.linalg.symeig(neig=k)``, default ``method="exacteig"``) and
``xitorch-davidson`` (``method="davidson"``, ``min_eps=1e-9``).

Usage::

    python benchmarks/dense_partial.py                   # n in 500 1000 2000 4000
    python benchmarks/dense_partial.py --quick           # n in 100 200 400, 2 repeats
    python benchmarks/dense_partial.py --sizes 2000 --markdown
    python benchmarks/dense_partial.py --crossover       # DenseEigh vs LapackSubset, small n

``--threads`` (default 2) sets torch's threads and scipy's OpenBLAS threads
(the latter through ``OPENBLAS_NUM_THREADS``, before numpy is loaded).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

METHODS = ("eigrad", "eigrad-dense", "torch", "xitorch", "xitorch-davidson")
DEFAULT_METHODS = ("eigrad", "torch", "xitorch", "xitorch-davidson")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    p.add_argument("--quick", action="store_true", help="small sizes (100 200 400), 2 repeats")
    p.add_argument("-k", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method and size (median)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="wall time (default), or process CPU time: robust to other processes on shared cores "
        "when used with --threads 1",
    )
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    p.add_argument(
        "--max-seconds", type=float, default=120.0,
        help="skip a method at a size where one forward+backward is predicted (n³ scaling) or measured "
        "to take longer than this; a measured single run over the limit is reported without repeats",
    )
    p.add_argument("--crossover", action="store_true", help="time DenseEigh vs LapackSubset for small n and k/n")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [100, 200, 400]
        args.repeats = min(args.repeats, 2)
    return args


# ----------------------------------------------------------------------------- methods
# The methods are eigrad's own benchmark definitions (eigrad._bench._dense, also run by `eigrad bench`);
# imported lazily, after set_threads, so that OpenBLAS sees the thread count.
def _loss(L, X, W):
    from eigrad._bench._dense import loss

    return loss(L, X, W)


def make_method(name: str, k: int):
    """``run(A, W) -> (t_forward, t_backward, grad_A)`` for one method, timed by ``_common``'s clock."""
    import _common
    from eigrad._bench._dense import make_method as make

    return make(name, k, clock=_common._clock)


# ----------------------------------------------------------------------------- main table
def bench_sizes(args):
    import torch

    from _common import fmt, median, symmetric_problem, table

    runners = {m: make_method(m, args.k) for m in args.methods}
    A0, W0 = symmetric_problem(max(200, 4 * args.k), args.seed, torch.float64)
    for m, run in runners.items():  # warm-up: imports, lazy initialisation, first-call costs
        try:
            run(A0, W0)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            print(f"# warm-up of {m} failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    results = {}  # (method, n) -> (fwd, bwd, grad rel diff) or a string
    last_total = {}  # method -> (n, seconds) of the last completed size
    for n in args.sizes:
        A, W = symmetric_problem(n, args.seed, torch.float64)
        grads = {}
        for m, run in runners.items():
            if m in last_total:
                n0, t0 = last_total[m]
                predicted = t0 * (n / n0) ** 3
                if predicted > args.max_seconds:
                    results[m, n] = f"skipped (predicted {predicted:.0f} s > --max-seconds)"
                    continue
            fwd, bwd = [], []
            try:
                for _ in range(args.repeats):
                    t_f, t_b, g = run(A, W)
                    fwd.append(t_f)
                    bwd.append(t_b)
                    if t_f + t_b > args.max_seconds:
                        break
            except Exception as exc:  # noqa: BLE001 - reported in the table
                results[m, n] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                continue
            grads[m] = g
            results[m, n] = (median(fwd), median(bwd))
            last_total[m] = (n, median(fwd) + median(bwd))
            print(f"# n={n} {m}: forward {median(fwd):.3f} s, backward {median(bwd):.3f} s "
                  f"({len(fwd)} run(s))", file=sys.stderr, flush=True)
        # compare symmetric parts: a gradient with respect to a symmetric A is defined up to its
        # antisymmetric part (xitorch's solve-based backward returns the unsymmetrized one)
        ref = grads.get("torch")
        ref = None if ref is None else (ref + ref.mT) / 2
        for m, g in grads.items():
            err = float("nan") if ref is None else float(((g + g.mT) / 2 - ref).norm() / ref.norm())
            results[m, n] = (*results[m, n], err)

    notes = []
    header = ["n", "method", "forward s", "backward s", "fwd+bwd s", "bwd/fwd", "fwd / torch fwd",
              "fwd+bwd / torch fwd+bwd", "grad rel. diff vs torch"]
    rows = []
    for n in args.sizes:
        t = results.get(("torch", n))
        t_ok = isinstance(t, tuple)
        for m in args.methods:
            r = results.get((m, n))
            if not isinstance(r, tuple):
                if r:
                    notes.append(f"n={n} {m}: {r}")
                rows.append([str(n), m, f"see note {len(notes)}" if r else "-", "", "", "", "", "", ""])
                continue
            f, b, err = r
            rows.append([
                str(n), m, fmt(f), fmt(b), fmt(f + b), fmt(b / f),
                fmt(f / t[0]) if t_ok else "-", fmt((f + b) / (t[0] + t[1])) if t_ok else "-",
                f"{err:.1e}" if err == err else "-",
            ])
    print(table(header, rows, args.markdown))
    for i, note in enumerate(notes, 1):
        print(f"{'' if args.markdown else '  '}{i}. {note}")
    _print_targets(results, args)


def _print_targets(results, args):
    n = 2000
    e, t = results.get(("eigrad", n)), results.get(("torch", n))
    if not (isinstance(e, tuple) and isinstance(t, tuple)):
        return
    r1 = (e[0] + e[1]) / (t[0] + t[1])
    r2 = e[1] / e[0]
    print()
    print(f"targets at n={n}, k={args.k}, {args.threads} thread(s):")
    print(f"  eigrad fwd+bwd / torch fwd+bwd = {r1:.3f}  (target <= 0.25: {'met' if r1 <= 0.25 else 'NOT met'})")
    print(f"  eigrad bwd / eigrad fwd        = {r2:.3f}  (target <= 0.25: {'met' if r2 <= 0.25 else 'NOT met'})")


# ----------------------------------------------------------------------------- crossover
def bench_crossover(args):
    """``solver="dense"`` vs ``"lapack"`` (forward+backward) for small n, and over k/n."""
    import torch

    import eigrad
    from _common import fmt, median, symmetric_problem, table, timed

    def fwd_bwd(A, W, k, solver):
        A = A.detach().clone().requires_grad_(True)

        def f():
            L, X = eigrad.eigsh(A, k, solver=solver)
            torch.autograd.grad(_loss(L, X, W), A)

        return timed(f)[0]

    def pair(A, W, k, reps):
        """Medians for ("dense", "lapack"), runs interleaved so that load from other
        processes hits both alike."""
        td, tl = [], []
        for _ in range(reps):
            td.append(fwd_bwd(A, W, k, "dense"))
            tl.append(fwd_bwd(A, W, k, "lapack"))
        return median(td), median(tl)

    A0, W0 = symmetric_problem(64, args.seed, torch.float64)
    for s in ("dense", "lapack"):
        fwd_bwd(A0, W0, 4, s)
    reps = max(args.repeats, 5)

    sizes = [32, 64, 128, 160, 192, 256, 320, 384, 512, 768, 1024]
    rows = []
    for n in sizes:
        A, W = symmetric_problem(n, args.seed, torch.float64)
        k = min(args.k, n // 4)
        td, tl = pair(A, W, k, reps)
        rows.append([str(n), str(k), fmt(1e3 * td), fmt(1e3 * tl), fmt(tl / td)])
    print(f"forward+backward, k = min({args.k}, n/4), median of {reps} runs:")
    print(table(["n", "k", "dense ms", "lapack ms", "lapack/dense"], rows, args.markdown))

    rows = []
    for n in (256, 1000, 2000):
        A, W = symmetric_problem(n, args.seed, torch.float64)
        for frac in (0.02, 0.05, 0.1, 0.2, 0.3):
            k = max(1, int(frac * n))
            r = 3 if n >= 1000 else reps
            td, tl = pair(A, W, k, r)
            rows.append([str(n), str(k), f"{frac:.2f}", fmt(1e3 * td), fmt(1e3 * tl), fmt(tl / td)])
    print()
    print("forward+backward against the fraction k/n of the spectrum:")
    print(table(["n", "k", "k/n", "dense ms", "lapack ms", "lapack/dense"], rows, args.markdown))


def main(argv=None):
    args = parse_args(argv)
    from _common import set_threads

    set_threads(args.threads)  # before numpy/scipy load OpenBLAS
    from _common import machine_line, set_clock

    set_clock(args.clock)
    print(f"# {machine_line(args.threads)}; {args.clock} clock")
    print(f"# command: python benchmarks/dense_partial.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    if args.crossover:
        bench_crossover(args)
    else:
        print(f"# k={args.k}, float64, median of {args.repeats} runs after warm-up; times in seconds")
        bench_sizes(args)


if __name__ == "__main__":
    main()
