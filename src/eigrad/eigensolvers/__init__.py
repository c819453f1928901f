"""Forward eigensolvers (no autograd)."""

from ._base import EigSolution as EigSolution
from ._base import SolveHandle as SolveHandle
from ._dense import DenseEigh as DenseEigh
from ._dense import LapackSubset as LapackSubset
