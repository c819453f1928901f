"""Linear operators: the protocol and its adapters. Imports nothing else of eigrad."""

from ._base import DenseOperator as DenseOperator
from ._base import LinearOperator as LinearOperator
from ._base import OperatorSpec as OperatorSpec
from ._base import is_operator as is_operator
