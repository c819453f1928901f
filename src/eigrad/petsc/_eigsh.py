"""``eigrad.eigsh(A, k, solver="slepc")`` for a :class:`DistributedCSR`: checks, then the Function."""

from __future__ import annotations

import torch

from .._api import EigResult
from .._options import BackwardOptions
from ._function import SlepcConfig, SlepcEig
from ._matrix import DistributedCSR
from ._shell import DistributedFunctionOperator, ShellConfig, ShellEig
from ._slepc import Slepc


def eigsh_slepc(A, k, *, B=None, largest=False, solver="slepc", X0=None, preconditioner=None, progress=False,
                backward=None) -> EigResult:
    """The SLEPc route of :func:`eigrad.eigsh` (its docstring; docs/scaleout.md)."""
    kinds = (DistributedCSR, DistributedFunctionOperator)
    if not isinstance(A, kinds):
        raise TypeError(
            f"solver='slepc' takes an eigrad.petsc.DistributedCSR or DistributedFunctionOperator for A; received "
            f"{type(A).__name__}. Build one from each rank's rows with eigrad.petsc.DistributedCSR(crow_local, col, "
            "values_local, shape) or eigrad.petsc.DistributedFunctionOperator(matmat, params, shape, ghosts=...).")
    if B is not None and not isinstance(B, kinds):
        raise TypeError(f"solver='slepc' takes B as an eigrad.petsc.DistributedCSR or DistributedFunctionOperator "
                        f"(or None); received {type(B).__name__}.")
    if B is not None and (B.shape != A.shape or B.comm.getSize() != A.comm.getSize()):
        raise ValueError(f"B (shape {B.shape}, {B.comm.getSize()} ranks) must match A (shape {A.shape}, "
                         f"{A.comm.getSize()} ranks).")
    if preconditioner is not None:
        raise ValueError("solver='slepc' takes no preconditioner (Krylov–Schur on A itself); pass None.")
    if progress:
        raise ValueError("solver='slepc' has no progress reports yet; pass progress=False.")
    if not isinstance(largest, bool):
        raise TypeError(f"largest must be a bool, received {type(largest).__name__} {largest!r}.")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= A.n:
        raise ValueError(f"k must be an int with 1 <= k <= n={A.n}; received {k!r}.")
    if isinstance(solver, str):
        if solver != "slepc":
            raise ValueError(f"solver={solver!r}: a DistributedCSR is solved by solver='slepc' or an "
                             "eigrad.petsc.Slepc(...) instance.")
        solver = Slepc()
    elif not isinstance(solver, Slepc):
        raise TypeError(f"solver must be 'slepc' or an eigrad.petsc.Slepc; received {type(solver).__name__}.")
    opts = BackwardOptions() if backward is None else backward
    if not isinstance(opts, BackwardOptions):
        raise TypeError(f"backward must be an eigrad.BackwardOptions; received {type(opts).__name__}.")
    m = A.rows[1] - A.rows[0]
    if X0 is not None and (not isinstance(X0, torch.Tensor) or X0.dim() != 2 or X0.shape[0] != m):
        raise ValueError(f"X0 must be this rank's rows of the start vectors, a ({m}, q) tensor; received "
                         f"{getattr(X0, 'shape', type(X0).__name__)}.")
    if isinstance(A, DistributedFunctionOperator) or isinstance(B, DistributedFunctionOperator):
        def desc(D):
            return ("shell", D) if isinstance(D, DistributedFunctionOperator) else ("csr", D.pattern)

        def tensors(D):
            return tuple(D.params) if isinstance(D, DistributedFunctionOperator) else (D.values,)

        flatA = tensors(A)
        flatB = () if B is None else tensors(B)
        cfg = ShellConfig(k, largest, solver, opts, desc(A), len(flatA), None if B is None else desc(B), X0)
        out = ShellEig.apply(cfg, *flatA, *flatB)
        return EigResult(out[0], out[1])
    cfg = SlepcConfig(k, largest, solver, opts, A.pattern, None if B is None else B.pattern, X0)
    out = SlepcEig.apply(cfg, A.values, None if B is None else B.values)
    return EigResult(out[0], out[1])
