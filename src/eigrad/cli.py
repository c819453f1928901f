"""Command line: ``eigrad <command>`` (also ``python -m eigrad <command>``).

Each command is one entry of ``_COMMANDS``: a function that adds its
subparser and sets ``run`` to a callable ``run(args) -> int`` (the exit
status); ``bench`` and ``check`` are added the same way. A command imports
its implementation inside ``run``.

Exit status: 0 on success, 1 when a command ran but its result failed a
check, 2 for a usage error (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import format_report, run_demo

    try:
        report = run_demo(grid=args.grid, seed=args.seed)
    except ValueError as exc:
        print(f"eigrad demo: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    worst = report.max_rel_eigrad()
    if not worst < args.rtol:
        print(
            f"eigrad demo: FAILED: eigrad differs from finite differences by {worst:.1e} relative "
            f"(tolerance {args.rtol:g}).",
            file=sys.stderr,
        )
        return 1
    return 0


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="gradients at exactly repeated eigenvalues: eigrad vs finite differences vs torch.linalg.eigh",
        description=(
            "On the 2D harmonic oscillator on a grid (exactly degenerate levels), print a gauge-invariant "
            "loss's derivatives from eigrad, central finite differences and torch.linalg.eigh autograd, for "
            "A x = λ x and A x = λ B x, then the GaugeWarning eigrad gives for a basis-dependent loss. "
            "Exits with 1 if eigrad disagrees with finite differences beyond --rtol."
        ),
    )
    p.add_argument("--grid", type=int, default=16, help="nodes per axis, 8..48 (default 16: n = 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random observable and directions (default 0)")
    p.add_argument(
        "--rtol", type=float, default=1e-6, help="largest accepted relative error of eigrad vs FD (default 1e-6)"
    )
    p.set_defaults(run=_run_demo)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 100,200; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 100,200; got {text!r}")
    return values


def _run_bench(args: argparse.Namespace) -> int:
    from ._bench import BenchConfig, run_bench

    cfg = BenchConfig(
        suite=args.suite, full=args.full, sizes=args.sizes, grid_sizes=args.grid_sizes, fem_sizes=args.fem_sizes,
        methods=args.methods.split(",") if args.methods else None, threads=args.threads[0] if len(args.threads) == 1 else tuple(args.threads), k=args.k,
        repeats=args.repeats, cap=args.cap, in_process=args.in_process, out=args.out,
        command="eigrad bench " + " ".join(args.argv),
    )
    try:
        report, plot = run_bench(cfg)
    except ValueError as exc:
        print(f"eigrad bench: {exc}", file=sys.stderr)
        return 2
    print(f"eigrad bench: wrote {report} and {plot}")
    return 0


def _add_bench(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time eigrad against the installed peers; write a markdown report and a plot",
        description=(
            "Runs the benchmark suites, dense partial (k smallest pairs, forward + backward, vs "
            "torch.linalg.eigh and xitorch) and matrix-free (3D grid operator, forward vs scipy ARPACK, "
            "PRIMME, torch.lobpcg and xitorch; eigrad forward + backward vs ARPACK's forward) and pencil "
            "(P1/P2 FEM K x = λ M x from scikit-fem; eigrad's defaults forward + backward vs scipy shift-invert, "
            "ARPACK, PRIMME and torch.lobpcg forwards), against whichever peers are installed (missing ones are "
            "skipped with a note), and writes OUT/report.md (tables with ratios, matvecs, peak memory) and "
            "OUT/plot.png (time against n, log-log). Each suite runs in child processes with --threads threads "
            "(once per count when several are given); a matrix-free or pencil method that exceeds --cap seconds "
            "is not run at larger sizes."
        ),
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="small sizes, dense n = 100,200,400, grid N = 16,24, FEM S = 32,64, cap 10 s (default; ~1-2 min on 2 cores)")
    size.add_argument("--full", action="store_true",
                      help="dense n = 500,1000,2000,4000, grid N = 32,48,64, FEM S = 80,160,320, cap 120 s (tens of minutes)")
    p.add_argument("--suite", default="all", help="dense, matrix-free, pencil or all (default all)")
    p.add_argument("--out", default="bench-report", metavar="DIR",
                   help="folder for report.md and plot.png (default ./bench-report)")
    p.add_argument("--threads", type=_int_list, default=[2],
                   help="threads per run, torch and BLAS (default 2); several, e.g. 1,2: every suite once per count")
    p.add_argument("--sizes", type=_int_list, default=None, help="dense sizes n, e.g. 100,200 (overrides the preset)")
    p.add_argument("--grid-sizes", type=_int_list, default=None,
                   help="matrix-free grid sizes N (n = N³), e.g. 8,12 (overrides the preset)")
    p.add_argument("--fem-sizes", type=_int_list, default=None,
                   help="FEM pencil sizes S (P1 on S×S squares, P2 on S/2×S/2; n = (S-1)²), e.g. 32,64")
    p.add_argument("--methods", default=None, help="comma-separated methods to run (default: all installed)")
    p.add_argument("-k", type=int, default=8, help="number of eigenpairs (default 8)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per dense method and size (median)")
    p.add_argument("--cap", type=float, default=None, help="seconds allowed per method and size")
    p.add_argument("--in-process", action="store_true",
                   help="run in this process: no child processes, no cap (tiny sizes, debugging)")
    p.set_defaults(run=_run_bench)


#: one entry per command; later: check
_COMMANDS: tuple[Callable[[object], None], ...] = (_add_demo, _add_bench)


def build_parser() -> argparse.ArgumentParser:
    """The ``eigrad`` parser with one subcommand per entry of ``_COMMANDS``."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="eigrad",
        description="eigrad: exact derivatives of symmetric and generalized eigendecompositions.",
    )
    parser.add_argument("--version", action="version", version=f"eigrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eigrad`` and ``python -m eigrad``; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.run(args)
