"""eigrad: exact derivatives of symmetric and generalized eigendecompositions."""

from ._api import EigResult as EigResult
from ._api import eigh as eigh
from ._api import eigsh as eigsh
from ._errors import ConvergenceError as ConvergenceError
from ._errors import ConvergenceWarning as ConvergenceWarning
from ._errors import GaugeError as GaugeError
from ._errors import GaugeWarning as GaugeWarning
from ._options import BackwardOptions as BackwardOptions
from .operators import LinearOperator as LinearOperator

__version__ = "0.1.0"
