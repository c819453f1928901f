"""Public functions: check inputs, choose the solver, call the autograd Function.

No numerics here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._options import BackwardOptions
from ._validation import check_dense_matrix, check_k, check_pair
from .autodiff._dense_function import DenseEig
from .eigensolvers import DenseEigh, LapackSubset


class EigResult(NamedTuple):
    """``(eigenvalues (*batch, k), eigenvectors (*batch, n, k))``, eigenvalues ascending."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor


#: below this size the full ``torch.linalg.eigh`` beats the LAPACK subset route
#: (measured by ``benchmarks/dense_partial.py --crossover``)
_SUBSET_MIN_N = 160
#: above this fraction of the spectrum a full decomposition is cheaper
_SUBSET_MAX_FRACTION = 0.2

_DENSE_SOLVERS = {"dense": DenseEigh, "lapack": LapackSubset}


def _backward_options(backward) -> BackwardOptions:
    if backward is None:
        return BackwardOptions()
    if not isinstance(backward, BackwardOptions):
        raise TypeError(
            f"backward must be an eigrad.BackwardOptions or None; received {type(backward).__name__}. "
            "Pass eigrad.BackwardOptions(gauge='raise', ...)."
        )
    return backward


def _dense_solver(solver, A, n: int, k: int):
    if solver == "auto":
        use_subset = A.device.type == "cpu" and n >= _SUBSET_MIN_N and k <= _SUBSET_MAX_FRACTION * n
        return LapackSubset() if use_subset else DenseEigh()
    if isinstance(solver, str):
        if solver not in _DENSE_SOLVERS:
            raise ValueError(
                f"solver={solver!r} is not a dense eigensolver; pass one of 'auto', "
                + ", ".join(repr(s) for s in _DENSE_SOLVERS)
                + "."
            )
        return _DENSE_SOLVERS[solver]()
    if callable(solver) and hasattr(solver, "handle_factory"):
        return solver
    raise TypeError(f"solver must be a name or an eigrad eigensolver; received {type(solver).__name__}.")


def _check_dense_inputs(A, B):
    check_dense_matrix("A", A)
    if A.is_sparse or A.layout != torch.strided:
        raise TypeError(
            f"A has layout {A.layout}; sparse matrices need the operator path (eigrad.eigsh with "
            "matrix-free solvers), not available in this build."
        )
    if B is not None:
        check_dense_matrix("B", B)
        check_pair(A, B)


def eigh(A: torch.Tensor, B: torch.Tensor | None = None, *, backward: BackwardOptions | None = None) -> EigResult:
    """All eigenpairs of ``A X = B X Λ``, ``Xᵀ B X = I``: a drop-in for ``torch.linalg.eigh``.

    Parameters
    ----------
    A : Tensor (*batch, n, n)
        Real symmetric, float32 or float64.
    B : Tensor (*batch, n, n), optional
        Symmetric positive definite mass matrix; ``None`` for ``B = I``.
    backward : BackwardOptions, optional
        Degeneracy tolerances and the gauge policy for derivatives.

    Returns
    -------
    EigResult
        ``eigenvalues (*batch, n)`` ascending, ``eigenvectors (*batch, n, n)``.

    Notes
    -----
    Derivatives (reverse, forward, ``torch.func``) follow MATH.md with the
    whole eigenbasis: exact at repeated eigenvalues for losses that satisfy the
    two conditions (basis invariance, uniform eigenvalue cotangent), and a
    :class:`eigrad.GaugeWarning` otherwise. The gradient with respect to ``A``
    is symmetric (``A`` is read as ``(A + Aᵀ)/2``).
    """
    _check_dense_inputs(A, B)
    n = A.shape[-1]
    opts = _backward_options(backward)
    out = DenseEig.apply(A, B, n, False, DenseEigh(), opts)
    return EigResult(out[0], out[1])


def eigsh(
    A: torch.Tensor,
    k: int,
    *,
    B: torch.Tensor | None = None,
    largest: bool = False,
    solver: str = "auto",
    X0: torch.Tensor | None = None,
    preconditioner=None,
    backward: BackwardOptions | None = None,
) -> EigResult:
    """The k smallest (or largest) eigenpairs of ``A X = B X Λ``, ``Xᵀ B X = I``.

    Parameters
    ----------
    A : Tensor (*batch, n, n)
        Real symmetric, float32 or float64.
    k : int
        Number of eigenpairs, ``1 <= k <= n``.
    B : Tensor (*batch, n, n), optional
        Symmetric positive definite; ``None`` for the standard problem.
    largest : bool
        ``False``: the k smallest; ``True``: the k largest. Eigenvalues are
        returned in ascending order in both cases.
    solver : {"auto", "lapack", "dense"}
        ``"lapack"``: LAPACK's subset route on the CPU (tridiagonal reduction
        kept for the backward); ``"dense"``: ``torch.linalg.eigh`` (any
        device, batched). ``"auto"`` takes ``"lapack"`` on the CPU for
        ``n >= 160`` and ``k <= 0.2 n``, else ``"dense"``.
    X0, preconditioner : ignored by the dense solvers
        Accepted for a uniform signature with iterative solvers.
    backward : BackwardOptions, optional
        Degeneracy tolerances, gauge policy, number of guard eigenvalues.

    Returns
    -------
    EigResult
        ``eigenvalues (*batch, k)`` ascending, ``eigenvectors (*batch, n, k)``.

    Notes
    -----
    ``n_guard`` more eigenvalues are computed beyond the k-th to detect a
    degenerate cluster cut by ``k``; derivatives through a cut cluster do not
    exist and are reported by the gauge policy with the ``k`` values that
    would keep the cluster whole.
    """
    _check_dense_inputs(A, B)
    if not isinstance(largest, bool):
        raise TypeError(f"largest must be a bool, received {type(largest).__name__} {largest!r}.")
    n = A.shape[-1]
    k = check_k(k, n)
    opts = _backward_options(backward)
    s = _dense_solver(solver, A, n, k)
    out = DenseEig.apply(A, B, k, largest, s, opts)
    return EigResult(out[0], out[1])
