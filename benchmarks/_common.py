"""Shared helpers for the benchmark scripts: threads, timing, problems, tables.

Import this module (and torch, numpy, scipy) only after :func:`set_threads`:
OpenBLAS (scipy's LAPACK) reads its thread count when it is first loaded.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from typing import Callable, Sequence


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch (MKL/OpenMP) and in scipy's OpenBLAS.

    Must run before numpy/scipy are imported for the OpenBLAS part to apply.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


def machine_line(threads: int) -> str:
    """One line describing where the numbers were taken."""
    import scipy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    blas = "MKL" if torch.backends.mkl.is_available() else "torch BLAS"
    return (
        f"{cpu}, {os.cpu_count()} logical cores, {threads} thread(s); torch {torch.__version__} ({blas}), "
        f"scipy {scipy.__version__}; load average {os.getloadavg()[0]:.1f} at start"
    )


#: the clock of :func:`timed`: wall time, or this process's CPU time (all threads)
_CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = _CLOCKS["wall"]


def set_clock(name: str) -> None:
    """``"wall"`` (default) or ``"cpu"``: CPU time of this process, summed over its
    threads. With one thread, CPU time is robust to other processes sharing the
    cores (wall time is not); with several it also counts OpenMP spin-waiting."""
    global _clock
    _clock = _CLOCKS[name]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Time of one call (see :func:`set_clock`) and its result."""
    t0 = _clock()
    out = fn()
    return _clock() - t0, out


@contextlib.contextmanager
def quiet_stderr():
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
    """A random symmetric matrix (GOE: simple spectrum with probability one) and a
    second, independent symmetric weight matrix for the loss."""
    import torch

    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, dtype=dtype, generator=g)
    A = (M + M.mT) / 2
    M = torch.randn(n, n, dtype=dtype, generator=g)
    W = (M + M.mT) / (2 * n**0.5)
    return A, W


def fmt(x: float, digits: int = 3) -> str:
    if x != x:  # nan
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    """Fixed-width text table, or a GitHub markdown table."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)
