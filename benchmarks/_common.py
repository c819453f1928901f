"""Shared helpers for the benchmark scripts: threads, timing, problems, tables.

Import this module (and torch, numpy, scipy) only after :func:`set_threads`:
OpenBLAS (scipy's LAPACK) reads its thread count when it is first loaded.
"""

from __future__ import annotations

import os
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

    from eigrad._bench._common import cpu_name

    blas = "MKL" if torch.backends.mkl.is_available() else "torch BLAS"
    return (
        f"{cpu_name()}, {os.cpu_count()} logical cores, {threads} thread(s); torch {torch.__version__} ({blas}), "
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


#: helpers defined once in ``eigrad._bench._common`` (shared with ``eigrad bench``), imported on
#: first use so that importing this module loads no BLAS before :func:`set_threads`
_SHARED = ("fmt", "median", "symmetric_problem")


def __getattr__(name: str):
    if name in _SHARED:
        from eigrad._bench import _common

        return getattr(_common, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
