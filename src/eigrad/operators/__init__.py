"""Linear operators: the protocol and its adapters. Imports nothing else of eigrad."""

from ._base import DenseOperator as DenseOperator
from ._base import LinearOperator as LinearOperator
from ._base import OperatorSpec as OperatorSpec
from ._base import is_operator as is_operator
from ._convert import as_operator as as_operator
from ._function import FunctionOperator as FunctionOperator
from ._module import ModuleOperator as ModuleOperator
from ._scipy import ScipyLinearOperator as ScipyLinearOperator
from ._scipy import from_scipy_sparse as from_scipy_sparse
from ._sparse import SparseOperator as SparseOperator
from ._sparse import SparsePattern as SparsePattern
