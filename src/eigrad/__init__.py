"""eigrad: exact derivatives of symmetric and generalized eigendecompositions."""

from . import solvers as solvers
from ._api import EigResult as EigResult
from ._api import EigshExResult as EigshExResult
from ._api import eigh as eigh
from ._api import eigsh as eigsh
from ._api import eigsh_ex as eigsh_ex
from ._errors import ConvergenceError as ConvergenceError
from ._errors import ConvergenceWarning as ConvergenceWarning
from ._errors import GaugeError as GaugeError
from ._errors import GaugeWarning as GaugeWarning
from ._info import BackwardSolveInfo as BackwardSolveInfo
from ._info import EigshInfo as EigshInfo
from ._options import BackwardOptions as BackwardOptions
from .operators import FunctionOperator as FunctionOperator
from .operators import LinearOperator as LinearOperator
from .operators import ModuleOperator as ModuleOperator
from .operators import as_operator as as_operator
from .spectral import expm as expm
from .spectral import funm as funm
from .spectral import logm as logm
from .spectral import powm as powm
from .spectral import projector as projector
from .spectral import spectral_norm as spectral_norm
from .spectral import sqrtm as sqrtm

__version__ = "0.1.0"
