"""``solver="auto"`` for operators, and :func:`run_solver`, the entry point the API calls.

Choice table (first matching row wins), from ``benchmarks/matrix_free.py`` and
``benchmarks/shift_invert.py``:

=====================================================  ======================
operator                                               solver
=====================================================  ======================
batched (leading dimensions) or not on the CPU         ``LOBPCG``
assembled sparse ``A`` and ``B``, no preconditioner    ``ShiftInvert``
assembled sparse 2-D-like ``A`` (below), ``B = I``     ``ShiftInvert``
a ``preconditioner`` or a mass matrix ``B`` is given   ``Primme`` if installed, else ``LOBPCG``
CPU, one standard problem, no preconditioner, n ≥ 8000 ``BlockLanczos``
CPU, one standard problem, no preconditioner, smaller  ``Arpack``
=====================================================  ======================

Complex Hermitian operators (on the CPU, unbatched) follow the same table
(the real crossovers: no complex timing has been measured; the
factorization's fill depends on the graph, not the dtype), except that
PRIMME's row falls to ``LOBPCG`` (eigrad's PRIMME adapter is real only).

``BlockLanczos`` (block 4, every copy of a repeated eigenvalue by
construction, no second verification run) beat eigrad's ARPACK on the 3-D
Laplacian with levels 1, 3, 3 (k = 7, ``benchmarks/block_lanczos.py``, load
about 2 on 2 cores): forward 0.71 vs 0.98 s at 20³, 4.0 vs 7.1 s at 30³ (1
thread); forward + backward at 40³ 19.4 vs 25.1 s at 1 thread and 13.5 vs
21.3 s at 2 threads. Below ``n = 8000`` (unmeasured) ARPACK stays. Before it,
ARPACK was the fastest CPU solver without a preconditioner at every size
measured (LOBPCG needs several times more dense work per operator
application); ARPACK cannot use a preconditioner, and PRIMME uses it best.
For ``A x = λ B x`` ARPACK needs a solve with ``B`` per Lanczos step (inner
CG), which PRIMME and LOBPCG avoid. For an
assembled pencil (torch or scipy sparse ``A`` and ``B``: FEM stiffness and
mass) one sparse factorization of ``A - σB`` serves the whole forward and the
backward (:class:`ShiftInvert`), which was many times faster than LOBPCG
without a preconditioner on FEM pencils (docs/benchmarks_matrix_free.md). For
``B = I`` it pays only where the factorization's fill is small: the matrix
graph's effective dimension ``log n / log(eccentricity)`` below 2 (2-D meshes:
8-14x faster than ARPACK fwd+bwd on a 160² Laplacian; 3-D grids from 20³ to 40³:
ARPACK 1.7-2.5x faster). On
a GPU, or for a batch of problems, the torch-native LOBPCG keeps everything
on the device in batched kernels. Tiny problems (``k + n_guard`` close to
``n``) are solved densely by every solver.
"""

from __future__ import annotations

import importlib.util

from ._arpack import Arpack
from ._block_lanczos import BlockLanczos
from ._lobpcg import LOBPCG
from ._primme import Primme
from ._shift_invert import ShiftInvert
from ._sparse_factor import effective_dimension

#: standard problems (``B = I``) go to shift-invert when the matrix graph's effective dimension
#: (:func:`effective_dimension`) is below this: 2-D meshes (1.7-1.8 measured) but not 3-D grids
#: (2.1-2.3 at 10³-40³), where ARPACK on the operator was 1.7-2.5x faster fwd+bwd
_SHIFT_INVERT_MAX_DIMENSION = 2.0

#: standard CPU problems without a preconditioner of at least this size go to BlockLanczos (measured
#: faster than ARPACK from 20³ = 8000 up, module docstring), smaller ones to ARPACK
_BLOCK_LANCZOS_MIN_N = 8000

#: solver names accepted by :func:`run_solver` (besides ``"auto"``)
ITERATIVE_SOLVERS = {"arpack": Arpack, "primme": Primme, "lobpcg": LOBPCG, "shift-invert": ShiftInvert,
                     "block-lanczos": BlockLanczos}


def primme_available() -> bool:
    return importlib.util.find_spec("primme") is not None


def is_assembled(op) -> bool:
    """Whether ``op`` exposes its sparse matrix (``as_scipy_csr()``), as sparse direct solvers need."""
    get = getattr(op, "as_scipy_csr", None)
    return callable(get) and get() is not None


def choose_solver(A, B=None, preconditioner=None):
    """The solver ``solver="auto"`` picks for operator ``A`` (see the module's table)."""
    batched = len(A.shape) > 2 or (B is not None and len(B.shape) > 2)
    if batched or A.device.type != "cpu":
        return LOBPCG()
    standard = preconditioner is None and B is None
    block = standard and A.shape[-1] >= _BLOCK_LANCZOS_MIN_N
    if preconditioner is None and is_assembled(A):
        if B is not None and is_assembled(B):
            return ShiftInvert()
        if B is None and effective_dimension(A.as_scipy_csr()) < _SHIFT_INVERT_MAX_DIMENSION:
            return ShiftInvert()
    if preconditioner is not None or B is not None:  # complex: LOBPCG (the PRIMME adapter is real only)
        return Primme() if primme_available() and not A.dtype.is_complex else LOBPCG()
    return BlockLanczos() if block else Arpack()


def resolve_solver(solver, A, B=None, preconditioner=None):
    """A solver instance from a name (``"auto"``, ``"arpack"``, ``"primme"``, ``"lobpcg"``) or an instance."""
    if isinstance(solver, str):
        if solver == "auto":
            return choose_solver(A, B, preconditioner)
        if solver in ITERATIVE_SOLVERS:
            return ITERATIVE_SOLVERS[solver]()
        raise ValueError(
            f"solver={solver!r} is not an iterative eigensolver; pass one of 'auto', "
            + ", ".join(repr(s) for s in ITERATIVE_SOLVERS)
            + ", or a solver instance such as eigrad.eigensolvers.LOBPCG(rtol=1e-10)."
        )
    if callable(solver) and hasattr(solver, "handle_factory"):
        return solver
    raise TypeError(
        f"solver must be a name or an eigrad eigensolver instance; received {type(solver).__name__}."
    )


def run_solver(solver, A, k: int, *, B=None, largest: bool = False, X0=None, preconditioner=None, n_guard: int = 0):
    """Run an eigensolver on operators and return its :class:`EigSolution`.

    Parameters
    ----------
    solver : str or eigensolver instance
        ``"auto"`` (module table), ``"arpack"``, ``"primme"``, ``"lobpcg"``,
        or an instance (e.g. ``LOBPCG(rtol=1e-10, block_size=24)``).
    A, B : LinearOperator
        ``B`` symmetric positive definite, or None.
    k, largest, X0, preconditioner, n_guard
        As in the eigensolver protocol (``eigensolvers/_base.py``).

    Raises
    ------
    eigrad.ConvergenceError
        When the solver misses its tolerance under ``on_failure="raise"``
        (the default); ``error.solution`` holds the best iterate.
    """
    s = resolve_solver(solver, A, B, preconditioner)
    return s(A, k, B=B, largest=largest, X0=X0, preconditioner=preconditioner, n_guard=n_guard)
