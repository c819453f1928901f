"""The forward eigensolvers, configurable: pass an instance as ``eigsh(..., solver=...)``.

Each is a frozen dataclass of options; ``solver="arpack"`` is the same as
``solver=eigrad.solvers.Arpack()``. For example, a tighter forward tolerance
(tighten the backward's with it, see :class:`eigrad.BackwardOptions`)::

    L, X = eigrad.eigsh(A, 8, solver=eigrad.solvers.Arpack(rtol=1e-12, maxiter=500),
                        backward=eigrad.BackwardOptions(linsolve_rtol=1e-14))

==========================  ============================================================
class                       options (besides ``rtol``, ``maxiter``, ``on_failure``, ``seed``)
==========================  ============================================================
:class:`Arpack`             ``ncv`` (Lanczos basis), ``n_verify``, ``cg_rtol``, ``cg_maxiter``
:class:`LOBPCG`             ``block_size``
:class:`BlockLanczos`       ``block_size``, ``ncv`` (standard problems; every copy of a repeated eigenvalue)
:class:`Primme`             ``method``, ``ncv``, ``block_size``, ``max_matvecs``, ``n_verify``
:class:`ShiftInvert`        ``shift``, ``ncv``, ``n_verify``, ``backward`` (assembled sparse ``A``, ``B``)
:class:`DenseEigh`          none (``torch.linalg.eigh``; operators are materialized)
:class:`LapackSubset`       none (LAPACK's subset route on the CPU)
==========================  ============================================================

The common options are those of :class:`IterativeOptions`: ``rtol`` (relative
residual, default ``1e-8`` in float64, ``1e-4`` in float32), ``maxiter`` (in
the solver's unit), ``on_failure`` (``"raise"`` or ``"warn"``), ``seed`` (of
the solver's own start vectors). Starting vectors are ``eigsh``'s ``X0``, a
preconditioner its ``preconditioner``.
"""

from .eigensolvers import LOBPCG as LOBPCG
from .eigensolvers import Arpack as Arpack
from .eigensolvers import BlockLanczos as BlockLanczos
from .eigensolvers import DenseEigh as DenseEigh
from .eigensolvers import IterativeOptions as IterativeOptions
from .eigensolvers import LapackSubset as LapackSubset
from .eigensolvers import Primme as Primme
from .eigensolvers import ShiftInvert as ShiftInvert

__all__ = ["Arpack", "BlockLanczos", "LOBPCG", "Primme", "ShiftInvert", "DenseEigh", "LapackSubset", "IterativeOptions"]
