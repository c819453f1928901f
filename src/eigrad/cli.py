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


#: one entry per command; later: bench, check
_COMMANDS: tuple[Callable[[object], None], ...] = (_add_demo,)


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
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.run(args)
