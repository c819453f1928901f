"""eigrad on PETSc/SLEPc under MPI (optional; docs/scaleout.md).

Imported only when used (``import eigrad.petsc`` or ``eigsh(..., solver="slepc")``);
eigrad's core never imports it. Needs petsc4py, slepc4py and mpi4py (real
float64 builds): without them, importing this module raises ImportError with
the install recipe.

- :func:`ownership_range` — this rank's rows, PETSc's default split.
- :class:`DistributedCSR` — this rank's row block of a symmetric sparse
  matrix, global columns, gradients to its stored values.
- :class:`DistributedFunctionOperator` — a matrix-free operator (PETSc shell
  matrix, ghost rows by VecScatter) whose local product is a torch function of
  this rank's parameters, gradients to them.
- :class:`Slepc` — the forward solver's options (``eigsh(A, k, solver=Slepc(rtol=1e-10))``).
"""

from ._env import import_backend as _import_backend

_import_backend()  # ImportError with the recipe when petsc4py/slepc4py/mpi4py are missing

from ._matrix import DistributedCSR as DistributedCSR  # noqa: E402
from ._matrix import ownership_range as ownership_range  # noqa: E402
from ._shell import DistributedFunctionOperator as DistributedFunctionOperator  # noqa: E402
from ._slepc import Slepc as Slepc  # noqa: E402

__all__ = ["DistributedCSR", "DistributedFunctionOperator", "Slepc", "ownership_range"]
