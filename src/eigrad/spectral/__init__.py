"""Matrix functions and projectors with exact derivatives at repeated eigenvalues."""

from ._funm import expm as expm
from ._funm import funm as funm
from ._funm import logm as logm
from ._funm import powm as powm
from ._funm import projector as projector
from ._funm import sqrtm as sqrtm
from ._norm import spectral_norm as spectral_norm
