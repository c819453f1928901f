"""Thread count of eigrad's iterative loops: one torch thread where a parallel region costs more than its work.

An iterative eigensolver or the backward's shifted solves call thousands of
small torch kernels (a sparse product with a block of vectors, a few
``n × b`` dense products). With torch's OpenMP pool at 2 threads each kernel
is a parallel region, and on a machine that also runs other work each region
waits for the second thread to be scheduled. Measured on a 2-core AMD EPYC at
load average 5.4 (``benchmarks/threads.py``): a 3-D Laplacian product plus a
block Gram–Schmidt step took, 2 threads over 1 thread, 139x at ``n = 1000``
with one vector, 4.5x at ``n = 1000`` with 10, 3.6x at ``n = 8000`` with 10,
1.7x at ``n = 64000`` with 10, 2.3x at ``n = 262144`` with 10; the FEM pencil
``P1, n = 961``, k = 6, forward + backward took 3.1 s at 2 torch threads
against 0.039 s at 1. Below :data:`SERIAL_BELOW` elements per block (``n``
times the columns of the block) one thread is also as fast on a quiet
machine, so the loops run there with one thread and restore the caller's
count afterwards. Larger problems time one block product of the operator
with both counts before the solve (and again before the backward) and keep
the faster: at load average 6.9 the whole forward + backward of a 40³
Laplacian took 13.6x longer at 2 threads than at 1, of the P1 FEM pencil at
n = 25281 7.8x, while on a quiet machine 2 threads are faster on such blocks.

scipy's OpenBLAS (ARPACK's Lanczos basis, SuperLU's dense kernels, numpy
products) runs with one thread inside the loops at every size: its pool and
torch's both spin while waiting and do not know of each other (the ARPACK loop
over a torch operator took 26.7 s with both pools at 2 threads, 5.2 s with
OpenBLAS at 1 and 5.4 s with torch at 1; scipy's own ARPACK: 1.5 s). This
needs ``threadpoolctl`` (a dependency of eigrad; without it the BLAS keeps
its count).

``torch.set_num_threads`` is process-wide: another Python thread running
torch work during the solve runs with one thread too.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch

#: below this many elements per block (n × columns) the loops run with one torch thread (module docstring)
SERIAL_BELOW = 1 << 17
#: above it, the caller's thread count is kept only when a trial block product ran this much faster with it
#: than with one thread: the loops' small kernels lose more to a busy machine than the block product does
PARALLEL_MARGIN = 1.3

_controller = None  # threadpoolctl's view of the loaded BLAS libraries, scanned once on first use


def _blas_controller():
    global _controller
    if _controller is None:
        try:
            import threadpoolctl
        except ImportError:  # optional: without it scipy's BLAS keeps its own thread count
            _controller = False
        else:
            _controller = threadpoolctl.ThreadpoolController()
    return _controller


def block_columns(shape, columns: int) -> int:
    """Columns of an iterative solver's blocks over a whole batch of operators of ``shape`` ``(*batch, n, n)``."""
    batch = 1
    for d in tuple(shape)[:-2]:
        batch *= int(d)
    return batch * max(int(columns), 1)


def _trial(threads: int, probe) -> int:
    """1 or ``threads``: which ran ``probe()`` faster, ``threads`` only by the margin :data:`PARALLEL_MARGIN`
    (each timed once, again if the first pair is within the margin); ends at the chosen count."""
    best = {threads: math.inf, 1: math.inf}
    for rnd in range(2):
        for t in (threads, 1):
            torch.set_num_threads(t)
            t0 = time.perf_counter()
            probe()
            best[t] = min(best[t], time.perf_counter() - t0)
        if rnd == 0 and not (best[1] / PARALLEL_MARGIN <= best[threads] <= best[1] * PARALLEL_MARGIN):
            break
    chosen = threads if best[threads] * PARALLEL_MARGIN < best[1] else 1
    torch.set_num_threads(chosen)
    return chosen


@contextlib.contextmanager
def solver_threads(n: int, columns: int, probe=None):
    """The thread counts of an iterative loop (module docstring), restored afterwards; yields torch's count.

    scipy's and numpy's BLAS run at one thread (through ``threadpoolctl`` when installed). torch runs at one
    thread when ``n × columns`` is below :data:`SERIAL_BELOW`; above it, ``probe`` (a zero-argument callable
    doing one representative block product, or None to keep the caller's count) is timed at both counts
    and the faster is kept (:func:`_trial`)."""
    threads = torch.get_num_threads()
    if torch.compiler.is_compiling():
        yield threads
        return
    controller = _blas_controller()
    with contextlib.ExitStack() as stack:
        if controller:
            stack.enter_context(controller.limit(limits=1, user_api="blas"))
        chosen = threads
        if threads > 1:
            stack.callback(torch.set_num_threads, threads)  # also if the probe or the body raises
            if n * max(columns, 1) < SERIAL_BELOW:
                torch.set_num_threads(chosen := 1)
            elif probe is not None:
                chosen = _trial(threads, probe)
        yield chosen
