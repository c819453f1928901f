"""Private: the benchmark suite behind ``eigrad bench`` (not public API).

Lives inside the package so that an installed eigrad can run it; the scripts
in the repository's ``benchmarks/`` directory are the long-form versions.

* :mod:`._common`: timing, problems, peer detection, tables.
* :mod:`._dense`: partial dense eigendecomposition, forward + backward.
* :mod:`._matrix_free`: matrix-free forward solvers and forward+backward setups on a 3D grid operator.
* :mod:`._runner`: runs the suites in child processes (thread count, caps).
* :mod:`._report`: the markdown report and the plot.
"""

from ._runner import BenchConfig as BenchConfig
from ._runner import run_bench as run_bench
