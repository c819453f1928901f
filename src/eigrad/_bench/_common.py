"""Shared helpers of the benchmark suite: threads, timing, problems, peers, tables."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import statistics
import time
from typing import Callable, Sequence

#: optional peers: method-name prefix -> the module it needs
_PEER_MODULES = {"xitorch": "xitorch", "primme": "primme"}


def missing_peer(method: str) -> str | None:
    """The module ``method`` needs that is not installed, or None when it can run."""
    for key, module in _PEER_MODULES.items():
        if key in method and importlib.util.find_spec(module) is None:
            return module
    return None


def thread_env(n: int) -> dict[str, str]:
    """Environment of a child process that uses ``n`` threads in torch and in the BLAS libraries."""
    return {**os.environ, **{v: str(n) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(threads) -> str:
    """One line describing where the numbers were taken (``threads``: a count, or several as text)."""
    import scipy
    import torch

    return (
        f"{cpu_name()}, {os.cpu_count()} logical cores, {threads} thread(s) per run; torch {torch.__version__}, "
        f"scipy {scipy.__version__}; load average {os.getloadavg()[0]:.1f}"
    )


def timed(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> tuple[float, object]:
    """Time of one call by ``clock`` (default: wall time) and its result."""
    t0 = clock()
    out = fn()
    return clock() - t0, out


@contextlib.contextmanager
def quiet_stdio():
    """Silence file descriptors 1 and 2 (MKL's LAPACK error handler prints from C)."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        for fd, s in zip((1, 2), saved):
            os.dup2(s, fd)
            os.close(s)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def symmetric_problem(n: int, seed: int, dtype):
    """A random symmetric (GOE: simple spectrum with probability one) matrix and an
    independent symmetric weight matrix for the loss."""
    import torch

    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, dtype=dtype, generator=g)
    A = (M + M.mT) / 2
    M = torch.randn(n, n, dtype=dtype, generator=g)
    W = (M + M.mT) / (2 * n**0.5)
    return A, W


def fmt(x: float, digits: int = 3) -> str:
    """Short number for a table cell; ``-`` for NaN."""
    if x != x:  # nan
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
