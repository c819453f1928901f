"""Runs the benchmark suites in child processes and writes the report.

Each suite runs in a child process (``python -m eigrad._bench._runner``)
whose environment sets the thread count before torch, numpy and scipy load
their BLAS libraries; the matrix-free suite runs one child per (method, size)
with a wall-clock cap, so a method that does not finish costs at most the cap
and is not run at larger sizes. ``in_process=True`` skips the children (no
cap, the parent's thread settings): for tiny sizes and tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

from . import _dense, _matrix_free, _pencil
from ._common import missing_peer, thread_env

SUITES = ("dense", "matrix-free", "pencil", "all")
QUICK = {"sizes": (100, 200, 400), "grid_sizes": (16, 24), "fem_sizes": (32, 64), "repeats": 2, "cap": 10.0}
FULL = {"sizes": (500, 1000, 2000, 4000), "grid_sizes": (32, 48, 64), "fem_sizes": (80, 160, 320), "repeats": 3,
        "cap": 120.0}


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What ``eigrad bench`` runs; ``None`` fields take the ``--quick``/``--full`` preset."""

    suite: str = "all"
    full: bool = False
    sizes: Sequence[int] | None = None  # dense n
    grid_sizes: Sequence[int] | None = None  # matrix-free N (n = N³)
    fem_sizes: Sequence[int] | None = None  # pencil S (n = (S-1)², P1 and P2)
    methods: Sequence[str] | None = None  # restrict to these (every suite); None: all installed
    threads: int | Sequence[int] = 2  # several: every suite runs once per thread count
    k: int = 8
    repeats: int | None = None
    cap: float | None = None  # seconds per (method, size)
    in_process: bool = False
    out: str = "bench-report"
    command: str = "eigrad bench"

    def preset(self, name: str):
        value = getattr(self, name)
        return (FULL if self.full else QUICK)[name] if value is None else value


def validate(cfg: BenchConfig) -> None:
    """Raise ValueError on a configuration that cannot run, before anything is timed."""
    if cfg.suite not in SUITES:
        raise ValueError(f"unknown suite {cfg.suite!r}; pass one of {', '.join(SUITES)}")
    if min(thread_counts(cfg)) < 1 or cfg.k < 1:
        raise ValueError(f"--threads and -k must be positive; got {cfg.threads} and {cfg.k}")
    known = set(_dense.METHODS) | set(_matrix_free.METHODS) | set(_pencil.METHODS)
    unknown = sorted(set(cfg.methods or ()) - known)
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; pass any of {', '.join(sorted(known))}")
    if cfg.suite in ("dense", "all") and min(cfg.preset("sizes")) <= 2 * cfg.k:
        raise ValueError(f"dense sizes must exceed 2·k = {2 * cfg.k}; got {list(cfg.preset('sizes'))}")
    if cfg.suite in ("matrix-free", "all") and min(cfg.preset("grid_sizes")) ** 3 <= 2 * cfg.k:
        raise ValueError(f"grid sizes N need N³ > 2·k = {2 * cfg.k}; got {list(cfg.preset('grid_sizes'))}")
    if cfg.suite in ("pencil", "all"):
        bad = [S for S in cfg.preset("fem_sizes") if S < 4 or S % 2 or (S - 1) ** 2 <= 2 * cfg.k]
        if bad:
            raise ValueError(f"FEM sizes S must be even, >= 4, with (S-1)² > 2·k = {2 * cfg.k}; got {bad}")


def thread_counts(cfg: BenchConfig) -> list[int]:
    """The thread counts of ``cfg`` as a list (``threads`` may be one count or several)."""
    return [cfg.threads] if isinstance(cfg.threads, int) else list(cfg.threads)


def _select(all_methods, cfg: BenchConfig) -> tuple[list[str], list[str]]:
    """(methods to run, notes on peers that are not installed)."""
    chosen = [m for m in all_methods if cfg.methods is None or m in cfg.methods]
    run, notes = [], []
    for m in chosen:
        mod = missing_peer(m)
        if mod:
            notes.append(f"`{m}` skipped: `{mod}` is not installed (`pip install {mod}`)")
        else:
            run.append(m)
    return run, notes


def _child(argv: list[str], cfg: BenchConfig, step_timeout: float, log, startup: float = 60.0):
    """Records streamed by a child process, and an error line if it failed or exceeded a step's time.

    The child prints ``LOG <text>`` (relayed to ``log``), ``BEGIN`` (a timed
    step starts) and ``RESULT <json>`` lines. A step is allowed
    ``step_timeout`` seconds from the last BEGIN or RESULT line (``startup``
    more before the first: imports); past that the child is killed, keeping
    the records it had finished. Returns ``(records, error line or None)``.
    """
    cmd = [sys.executable, "-m", "eigrad._bench._runner", *argv]
    with tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, env=thread_env(cfg.threads))
        try:
            recs, err = _read_child(proc, step_timeout, startup, log)
        finally:  # also on KeyboardInterrupt: leave no child behind
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
        if proc.wait() != 0 and err is None:
            errf.seek(0)
            err = (errf.read().strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:160]
    return recs, err


def _read_child(proc, step_timeout: float, startup: float, log) -> tuple[list[dict], str | None]:
    recs: list[dict] = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf, deadline, err = b"", time.monotonic() + startup + step_timeout, None
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(timeout=left):
                proc.kill()
                err = f"> {step_timeout:.0f} s (cap)"
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:  # the child closed stdout: it has finished
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                if text.startswith("RESULT "):
                    recs.append(json.loads(text[7:]))
                if text.startswith(("RESULT ", "BEGIN")):
                    deadline = time.monotonic() + step_timeout
                elif text.startswith("LOG "):
                    log(text[4:])
    return recs, err


def run_dense(cfg: BenchConfig, log) -> tuple[list[dict], list[str]]:
    methods, notes = _select(_dense.METHODS if cfg.methods else _dense.DEFAULT_METHODS, cfg)
    sizes, repeats, cap = list(cfg.preset("sizes")), cfg.preset("repeats"), cfg.preset("cap")
    if not methods:
        return [], notes
    if cfg.in_process:
        return _dense.run_suite(sizes, methods, k=cfg.k, repeats=repeats, max_seconds=cap, log=log), notes
    argv = ["dense", "--sizes", *map(str, sizes), "--methods", *methods, "-k", str(cfg.k),
            "--repeats", str(repeats), "--cap", str(cap)]
    # a size's records arrive together: allow every method its cap (plus start-up and warm-up)
    recs, err = _child(argv, cfg, step_timeout=cap * len(methods), log=log)
    if err:
        notes.append(f"the dense suite stopped after n = {recs[-1]['n'] if recs else '-'}: {err}")
    return recs, notes


def run_matrix_free(cfg: BenchConfig, log) -> tuple[list[dict], list[str]]:
    """One child per method running the sizes in increasing order; a size over the cap ends the method."""
    methods, notes = _select(_matrix_free.METHODS, cfg)
    cap, sizes = cfg.preset("cap"), list(cfg.preset("grid_sizes"))
    recs: list[dict] = []
    for m in methods:
        if cfg.in_process:
            got, err = [], None
            for N in sizes:
                try:
                    got.append(_matrix_free.run_method(m, N, cfg.k, cfg.threads))
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    err = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                    break
                log(_matrix_free.log_line(got[-1]))
        else:
            got, err = _child(["matrix-free", "--method", m, "--sizes", *map(str, sizes), "-k", str(cfg.k),
                               "--threads", str(cfg.threads)], cfg, step_timeout=cap, log=log)
        recs += got
        for i, N in enumerate(sizes[len(got):]):
            reason = err if i == 0 else f"skipped (stopped at N = {sizes[len(got)]})"
            recs.append({"suite": "matrix-free", "method": m, "N": N, "n": N**3, "k": cfg.k, "error": reason})
            if i == 0:
                log(f"matrix-free N={N:3d} {m:18s} {reason}")
    recs.sort(key=lambda r: (r["N"], _matrix_free.METHODS.index(r["method"])))
    return recs, notes


def run_pencil(cfg: BenchConfig, log) -> tuple[list[dict], list[str]]:
    """One child per (element, method) running the sizes in increasing order; a size over the cap ends it."""
    import importlib.util

    if importlib.util.find_spec("skfem") is None:
        return [], ["the FEM pencil suite was skipped: `scikit-fem` is not installed (`pip install scikit-fem`)"]
    methods, notes = _select(_pencil.METHODS, cfg)
    cap, sizes = cfg.preset("cap"), list(cfg.preset("fem_sizes"))
    recs: list[dict] = []
    for element in _pencil.ELEMENTS:
        for m in methods:
            if cfg.in_process:
                got, err = [], None
                for S in sizes:
                    try:
                        got.append(_pencil.run_method(m, element, S, cfg.k))
                    except Exception as exc:  # noqa: BLE001 - reported in the table
                        err = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                        break
                    log(_pencil.log_line(got[-1]))
            else:
                got, err = _child(["pencil", "--method", m, "--element", element, "--sizes", *map(str, sizes),
                                   "-k", str(cfg.k)], cfg, step_timeout=cap, log=log)
            recs += got
            for i, S in enumerate(sizes[len(got):]):
                reason = err if i == 0 else f"skipped (stopped at S = {sizes[len(got)]})"
                recs.append({"suite": "pencil", "method": m, "element": element, "S": S, "n": (S - 1) ** 2,
                             "k": cfg.k, "error": reason})
                if i == 0:
                    log(f"pencil {element} S={S:4d} {m:15s} {reason}")
    recs.sort(key=lambda r: (_pencil.ELEMENTS.index(r["element"]), r["S"], _pencil.METHODS.index(r["method"])))
    return recs, notes


#: suite name -> its runner, in report order
RUNNERS = {"dense": run_dense, "matrix-free": run_matrix_free, "pencil": run_pencil}


def run_bench(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Run the suites of ``cfg`` (once per thread count), write ``report.md`` and ``plot.png`` under
    ``cfg.out``; return their paths."""
    from ._report import write_plot, write_report

    validate(cfg)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    results = {}  # (suite, threads) -> (records, notes)
    import torch

    saved_threads = torch.get_num_threads()
    try:
        for t in thread_counts(cfg):
            one = dataclasses.replace(cfg, threads=t)
            if cfg.in_process:  # children set their own; scipy's BLAS keeps this process's setting
                torch.set_num_threads(t)
            for suite, runner in RUNNERS.items():
                if cfg.suite in (suite, "all"):
                    results[suite, t] = runner(one, log)
    finally:
        torch.set_num_threads(saved_threads)
    os.makedirs(cfg.out, exist_ok=True)
    plot = write_plot(results, os.path.join(cfg.out, "plot.png"))
    report = write_report(results, cfg, os.path.join(cfg.out, "report.md"), plot_name=os.path.basename(plot))
    return report, plot


def _child_main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m eigrad._bench._runner")
    sub = p.add_subparsers(dest="suite", required=True)
    d = sub.add_parser("dense")
    d.add_argument("--sizes", type=int, nargs="+", required=True)
    d.add_argument("--methods", nargs="+", required=True)
    d.add_argument("-k", type=int, default=8)
    d.add_argument("--repeats", type=int, default=2)
    d.add_argument("--cap", type=float, default=120.0)
    m = sub.add_parser("matrix-free")
    m.add_argument("--method", required=True)
    m.add_argument("--sizes", type=int, nargs="+", required=True)
    m.add_argument("-k", type=int, default=8)
    m.add_argument("--threads", type=int, default=1)
    f = sub.add_parser("pencil")
    f.add_argument("--method", required=True)
    f.add_argument("--element", required=True)
    f.add_argument("--sizes", type=int, nargs="+", required=True)
    f.add_argument("-k", type=int, default=10)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    def log(text):
        print("LOG " + text, flush=True)

    def emit(recs):  # as each size completes: a parent that kills us keeps the finished sizes
        for r in recs:
            print("RESULT " + json.dumps(r), flush=True)

    if a.suite == "dense":
        _dense.run_suite(a.sizes, a.methods, k=a.k, repeats=a.repeats, max_seconds=a.cap, log=log, emit=emit)
    elif a.suite == "matrix-free":
        for N in a.sizes:
            print("BEGIN", flush=True)
            r = _matrix_free.run_method(a.method, N, a.k, a.threads)
            log(_matrix_free.log_line(r))
            emit([r])
    else:
        for S in a.sizes:
            print("BEGIN", flush=True)
            r = _pencil.run_method(a.method, a.element, S, a.k)
            log(_pencil.log_line(r))
            emit([r])


if __name__ == "__main__":
    _child_main()
