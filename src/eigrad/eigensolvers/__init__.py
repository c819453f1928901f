"""Forward eigensolvers (no autograd)."""

from ._base import EigSolution as EigSolution
from ._base import SolveHandle as SolveHandle
from ._dense import DenseEigh as DenseEigh
from ._dense import LapackSubset as LapackSubset
from ._arpack import Arpack as Arpack
from ._block_lanczos import BlockLanczos as BlockLanczos
from ._auto import ITERATIVE_SOLVERS as ITERATIVE_SOLVERS
from ._auto import choose_solver as choose_solver
from ._auto import run_solver as run_solver
from ._lobpcg import LOBPCG as LOBPCG
from ._options import IterativeOptions as IterativeOptions
from ._options import default_rtol as default_rtol
from ._primme import Primme as Primme
from ._shift_invert import ShiftInvert as ShiftInvert
