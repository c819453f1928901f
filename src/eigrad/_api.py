"""Public functions: check inputs, choose the solver, call the autograd Function.

No numerics here.
"""

from __future__ import annotations

import contextvars
from typing import NamedTuple

import torch

from . import _compile
from ._info import EigshInfo, Recorded
from ._options import BackwardOptions
from ._validation import COMPLEX_OPERATORS_UNSUPPORTED, check_dense_matrix, check_k, check_pair, check_uplo, promote_pair
from .autodiff._dense_function import DenseEig
from .autodiff._operator_function import OperatorConfig, OperatorEig
from .autodiff._triangle import read_triangle
from .eigensolvers import DenseEigh, LapackSubset
from .eigensolvers._materialize import Materialized
from ._threads import block_columns, solver_threads
from .operators import LinearOperator, as_operator
from .operators._convert import promote_pair as promote_operator_pair
from .operators._scipy import is_scipy_linear_operator, is_scipy_sparse


class EigResult(NamedTuple):
    """``(eigenvalues (*batch, k), eigenvectors (*batch, n, k))``, eigenvalues ascending."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor


class EigshExResult(NamedTuple):
    """``(eigenvalues, eigenvectors, info)`` of :func:`eigsh_ex` (torch's ``_ex`` convention)."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    info: EigshInfo


#: below this size the full ``torch.linalg.eigh`` beats the LAPACK subset route
#: (measured by ``benchmarks/dense_partial.py --crossover``, docs/benchmarks.md)
_SUBSET_MIN_N = 192
#: above this fraction of the spectrum a full decomposition is cheaper: the
#: crossover is k/n ≈ 0.1 (n = 1000, 2 threads) to 0.25-0.3 (n = 1000-2000, 1 thread)
_SUBSET_MAX_FRACTION = 0.1

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


def _iterative_for_dense(solver) -> ValueError:
    name = solver if isinstance(solver, str) else type(solver).__name__
    return ValueError(
        f"solver={name!r} is an iterative eigensolver for operators, and A is a dense tensor; wrap it: "
        f"eigrad.eigsh(eigrad.as_operator(A), k, solver={solver!r}) (gradient to the whole matrix, "
        "symmetrized), or pass solver='dense' / 'lapack' (the direct dense solvers, usually faster for a "
        "matrix that fits in memory)."
    )


def _dense_solver(solver, A, n: int, k: int):
    if solver == "auto":
        use_subset = A.device.type == "cpu" and n >= _SUBSET_MIN_N and k <= _SUBSET_MAX_FRACTION * n
        return LapackSubset() if use_subset else DenseEigh()
    if isinstance(solver, str):
        auto = _iterative_solvers()
        if auto is not None and solver in auto.ITERATIVE_SOLVERS:
            raise _iterative_for_dense(solver)
        if solver not in _DENSE_SOLVERS:
            raise ValueError(
                f"solver={solver!r} is not a dense eigensolver; pass one of 'auto', "
                + ", ".join(repr(s) for s in _DENSE_SOLVERS)
                + "."
            )
        return _DENSE_SOLVERS[solver]()
    if callable(solver) and hasattr(solver, "handle_factory"):
        if solver.handle_factory is None:  # an iterative solver (it works on operators, leaves no handle)
            raise _iterative_for_dense(solver)
        return solver
    raise TypeError(f"solver must be a name or an eigrad eigensolver; received {type(solver).__name__}.")


#: operators up to this size are materialized by solver="auto" (a dense eigh is then
#: cheaper than an iterative solve, and the backward reuses the exact eigenbasis)
_MATERIALIZE_MAX_N = 200
_MATERIALIZED = {"dense": DenseEigh, "lapack": LapackSubset}


def _iterative_solvers():
    """``eigensolvers._auto`` (the iterative solvers and their choice table), or None in a build without it."""
    try:
        from .eigensolvers import _auto
    except ImportError:
        return None
    return _auto


def _is_dense_tensor(M) -> bool:
    return torch.is_tensor(M) and M.layout == torch.strided


def _operator_solver(solver, A: LinearOperator, B, n: int, preconditioner):
    """The eigensolver for operator inputs; dense solvers run on the materialized matrix."""
    s = _operator_solver_any(solver, A, B, n, preconditioner)
    if A.dtype.is_complex and not isinstance(s, Materialized):
        inner = s.solver if isinstance(s, Recorded) else s
        if not getattr(inner, "supports_complex", False):
            raise TypeError(
                f"A has complex dtype {A.dtype} and solver {type(inner).__name__} does not support complex "
                f"Hermitian operators {COMPLEX_OPERATORS_UNSUPPORTED}."
            )
    return s


def _operator_solver_any(solver, A: LinearOperator, B, n: int, preconditioner):
    if isinstance(solver, (DenseEigh, LapackSubset)):
        return Materialized(solver)
    if not isinstance(solver, str):
        if callable(solver) and hasattr(solver, "handle_factory"):
            return solver
        raise TypeError(f"solver must be a name or an eigrad eigensolver; received {type(solver).__name__}.")
    if solver in _MATERIALIZED:
        return Materialized(_MATERIALIZED[solver]())
    auto = _iterative_solvers()
    names = tuple(auto.ITERATIVE_SOLVERS) if auto is not None else ()
    if solver != "auto" and solver not in names:
        raise ValueError(
            f"solver={solver!r} is not an eigensolver for operators; pass one of 'auto', 'dense', 'lapack'"
            + "".join(f", {s!r}" for s in names)
            + "."
        )
    if solver == "auto" and (n <= _MATERIALIZE_MAX_N or auto is None):
        return Materialized(DenseEigh())
    return auto.resolve_solver(solver, A, B, preconditioner)


def _check_operator_pair(A: LinearOperator, B: LinearOperator | None):
    """``(A, B)`` checked and in one dtype (real with complex of one precision promotes:
    :func:`eigrad.operators._convert.promote_pair`)."""
    if B is None:
        return A, B
    if B.n != A.n:
        raise ValueError(f"B has shape {tuple(B.shape)} but A has shape {tuple(A.shape)}; B must be (n, n) with n = {A.n}.")
    if B.device != A.device:
        raise ValueError(f"A is on {A.device} but B is on {B.device}; move them to one device.")
    return promote_operator_pair(A, B)


#: the EigshInfo that eigsh_ex's call of eigsh fills (None outside eigsh_ex)
_RECORDING: contextvars.ContextVar = contextvars.ContextVar("eigrad_recording", default=None)


def _recorded(s, progress: bool):
    """The solver wrapped to fill eigsh_ex's info and show progress, else ``s`` itself (plain eigsh)."""
    info = _RECORDING.get()
    return s if info is None and not progress else Recorded(s, info, progress)


def _check_progress(progress) -> None:
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, received {type(progress).__name__} {progress!r}.")


def _operator_config(A, k, B, largest, solver, X0, preconditioner, opts, progress=False):
    """``(cfg, tensors)`` for the operator autograd Functions (``OperatorEig``, the spectral
    functions): inputs converted and checked, solver chosen, operators flattened.
    ``k=None`` asks for all n eigenpairs of the materialized matrix. ``progress``: see
    :func:`_recorded`."""
    Aop = as_operator(A, name="A")
    Bop = None if B is None else as_operator(B, name="B")
    Aop, Bop = _check_operator_pair(Aop, Bop)
    n = Aop.n
    if k is None:
        k = n
        if isinstance(solver, str) and solver in ("auto", "dense"):
            solver = "dense"
    k = check_k(k, n)
    if X0 is not None and (not torch.is_tensor(X0) or X0.dim() < 2 or X0.shape[-2] != n):
        raise ValueError(
            f"X0 must be a tensor of shape (n, m) = ({n}, m) of starting vectors; received "
            f"{tuple(X0.shape) if torch.is_tensor(X0) else type(X0).__name__}."
        )
    s = _recorded(_operator_solver(solver, Aop, Bop, n, preconditioner), progress)
    tA, spec_A = Aop.flatten()
    tB, spec_B = ((), None) if Bop is None else Bop.flatten()
    cfg = OperatorConfig(k, largest, s, opts, spec_A, len(tA), spec_B,
                         None if X0 is None else X0.detach(), preconditioner, torch.is_grad_enabled())
    return cfg, (*tA, *tB)


def _empty_operator_result(A, B) -> "EigResult":
    """``k = 0`` for operators: empty tensors attached to the operators' floating tensors (zero gradients)."""
    Aop = as_operator(A, name="A")
    Bop = None if B is None else as_operator(B, name="B")
    Aop, Bop = _check_operator_pair(Aop, Bop)
    batch = Aop.batch_shape if Bop is None else torch.broadcast_shapes(Aop.batch_shape, Bop.batch_shape)
    tensors = [t for op in (Aop, Bop) if op is not None for t in op.flatten()[0] if t.is_floating_point() or t.is_complex()]
    X = torch.zeros(*batch, Aop.n, 0, dtype=Aop.dtype, device=Aop.device)
    for t in tensors:
        X = X + t.reshape(-1)[:0].sum()  # no element is read
    return EigResult(X.sum(-2), X)


def _eigsh_operator(A, k, B, largest, solver, X0, preconditioner, opts, progress=False) -> "EigResult":
    """``eigsh`` for sparse / matrix-free ``A`` or ``B``: gradients to the operators' tensors."""
    A = as_operator(A, name="A")
    # conversions, checks and the solve with the threads of eigrad/_threads.py (small blocks: one torch thread)
    with solver_threads(A.n, block_columns(A.shape, k + opts.n_guard if isinstance(k, int) else 1)):
        if check_k(k, A.n, allow_zero=True) == 0:
            return _empty_operator_result(A, B)
        cfg, tensors = _operator_config(A, k, B, largest, solver, X0, preconditioner, opts, progress)
        out = OperatorEig.apply(cfg, *tensors)
    return EigResult(out[0], out[1])


def _check_dense_inputs(A, B):
    """Checked dense ``(A, B)`` in one dtype (a real ``B`` with a complex ``A``, or the reverse, of the
    same precision is promoted to complex, as ``torch.promote_types`` does)."""
    for name, M in (("A", A), ("B", B)):
        if M is None:
            continue
        if not _is_dense_tensor(M) and (torch.is_tensor(M) or isinstance(M, LinearOperator)
                                        or is_scipy_sparse(M) or is_scipy_linear_operator(M)):
            what = f"a tensor with layout {M.layout}" if torch.is_tensor(M) else f"a {type(M).__name__}"
            raise TypeError(
                f"{name} is {what}; eigrad.eigh takes dense tensors. For a sparse or matrix-free {name} call "
                f"eigrad.eigsh(A, k{', B=B' if name == 'B' else ''}), which accepts them (k eigenpairs), or "
                f"pass {name}.to_dense()."
            )
        check_dense_matrix(name, M, allow_complex=True, allow_empty=True)
    if B is not None:
        check_pair(A, B)
    return promote_pair(A, B)


def _empty_result(A, B, k: int) -> EigResult:
    """An empty answer (``n = 0``, a zero batch dimension, or ``k = 0``), shaped as torch's and
    attached to ``A`` (and ``B``) so that the backward and the JVP run (zero gradients)."""
    Z = A[..., :, :k]  # (*batch, n, k): no element is read
    if B is not None:
        Z = Z + B[..., :, :k]
    L = Z.sum(-2)
    if L.is_complex():  # Hermitian: real eigenvalues, as torch
        L = L.real.clone()
    return EigResult(L, Z.clone())


def eigh(
    A: torch.Tensor,
    B: torch.Tensor | None = None,
    *,
    UPLO: str | None = None,
    backward: BackwardOptions | None = None,
) -> EigResult:
    """All eigenpairs of ``A X = B X Λ``, ``Xᴴ B X = I``: a drop-in for ``torch.linalg.eigh``.

    Parameters
    ----------
    A : Tensor (*batch, n, n)
        Real symmetric (float32, float64) or complex Hermitian (complex64,
        complex128). ``n = 0`` and zero batch dimensions are allowed: the
        result is then empty, shaped as torch's.
    B : Tensor (*batch, n, n), optional
        Symmetric (complex: Hermitian) positive definite mass matrix; ``None``
        for ``B = I``. A dense tensor (for a sparse or matrix-free ``B`` use
        :func:`eigsh`). A real ``B`` with a complex ``A`` (or the reverse) of
        the same precision is promoted to complex; mixed precisions raise
        ``TypeError``.
    UPLO : {None, "L", "U"}
        ``None`` (default): ``A`` (and ``B``) must be symmetric (Hermitian) to
        rounding (checked) and are read as ``(A + Aᴴ)/2``. ``"L"``/``"U"``
        (either case): as ``torch.linalg.eigh``, only the lower/upper triangle
        is read (the other is never looked at, so it may hold anything) and no
        symmetry check is made; with ``B`` the same triangle of ``B`` is read
        (as scipy's ``lower=``). Gradients are torch's: the symmetric gradient
        of the matrix the triangle describes, ``Ā = herm(L_A Xᴴ)``, returned
        whole (not restricted to the triangle); forward-mode tangents are
        symmetrized likewise.
    backward : BackwardOptions, optional
        Degeneracy tolerances and the gauge policy for derivatives.

    Returns
    -------
    EigResult
        ``eigenvalues (*batch, n)`` ascending (real, also for complex input:
        float64 for complex128), ``eigenvectors (*batch, n, n)``.

    Notes
    -----
    Derivatives (reverse, forward, ``torch.func``) follow MATH.md with the
    whole eigenbasis: exact at repeated eigenvalues for losses that satisfy the
    two conditions (basis invariance, uniform eigenvalue cotangent), and a
    :class:`eigrad.GaugeWarning` otherwise. The gradient with respect to ``A``
    is symmetric (``A`` is read as ``(A + Aᵀ)/2``); for complex input it is
    Hermitian (``A`` read as ``(A + Aᴴ)/2``, PyTorch's convention
    ``dL = Re tr(Āᴴ dA)``), and a loss that depends on an eigenvector's phase
    ``e^{iφ}`` (e.g. ``Re(cᴴ x_i)``) has no derivative, also at a simple
    eigenvalue: it is reported like a basis-dependent loss (docs/guide.md,
    "Complex Hermitian problems").
    """
    A, B = _check_dense_inputs(A, B)
    uplo = check_uplo(UPLO)
    n = A.shape[-1]
    opts = _backward_options(backward)
    if A.numel() == 0 or (B is not None and B.numel() == 0):
        return _empty_result(A, B, n)
    if torch.compiler.is_compiling():  # custom ops Dynamo can trace (eigrad/_compile.py)
        return EigResult(*_compile.dense(A, B, n, False, opts, uplo))
    A, B = read_triangle(A, uplo), read_triangle(B, uplo)
    out = DenseEig.apply(A, B, n, False, DenseEigh(), opts)
    return EigResult(out[0], out[1])


def eigsh(
    A,
    k: int,
    *,
    B=None,
    largest: bool = False,
    solver: str = "auto",
    X0: torch.Tensor | None = None,
    preconditioner=None,
    progress: bool = False,
    backward: BackwardOptions | None = None,
) -> EigResult:
    """The k smallest (or largest) eigenpairs of ``A X = B X Λ``, ``Xᴴ B X = I``.

    Parameters
    ----------
    A : Tensor, sparse Tensor, LinearOperator, scipy.sparse matrix
        Real symmetric, float32 or float64, or complex Hermitian, complex64
        or complex128 (dense tensors: both dense solvers, a real ``B`` of the
        same precision promoted to complex as in :func:`eigrad.eigh`;
        operators: the dense solvers on the materialized matrix, ARPACK,
        block Lanczos, LOBPCG and shift-invert, a real operator paired with
        a complex one of the same precision promoted to complex; PRIMME
        raises ``TypeError``):
        a dense ``(*batch, n, n)``
        tensor, a torch sparse COO/CSR ``(n, n)`` tensor (gradient to its
        stored values), an :class:`eigrad.LinearOperator` such as
        :class:`eigrad.FunctionOperator` or :class:`eigrad.ModuleOperator`
        (gradient to its parameters), or a ``scipy.sparse`` matrix /
        ``scipy.sparse.linalg.LinearOperator`` (no gradient).
    k : int
        Number of eigenpairs, ``0 <= k <= n``: any integral type (``int``,
        ``numpy.int64``, a 0-d integer tensor). ``k = 0`` returns empty
        ``(*batch, 0)`` / ``(*batch, n, 0)`` tensors (attached to the inputs,
        zero gradients), as do a dense ``A`` with ``n = 0`` or a zero batch
        dimension.
    B : same kinds as ``A``, optional
        Symmetric (complex: Hermitian) positive definite; ``None`` for the
        standard problem.
    largest : bool
        ``False``: the k smallest; ``True``: the k largest. Eigenvalues are
        returned in ascending order in both cases.
    solver : str or eigensolver
        Dense tensors: ``"lapack"`` (LAPACK's subset route on the CPU,
        tridiagonal reduction kept for the backward), ``"dense"``
        (``torch.linalg.eigh``, any device, batched); ``"auto"`` takes
        ``"lapack"`` on the CPU for ``n >= 192`` and ``k <= 0.1 n``, else
        ``"dense"``. Operators (sparse, matrix-free): the iterative solvers
        ``"arpack"``, ``"primme"``, ``"lobpcg"`` where available,
        ``"shift-invert"`` (assembled sparse ``A`` and ``B``: one sparse LU of
        ``A - σB``), or ``"dense"``/``"lapack"`` on the materialized matrix;
        ``"auto"`` materializes for ``n <= 200`` and otherwise takes
        shift-invert for an assembled sparse pencil (``B`` given) or an
        assembled standard problem on a 1-D/2-D-like graph, ARPACK for other
        CPU problems, LOBPCG elsewhere (docs/guide.md). An eigensolver instance configures the forward
        (tolerance, iteration cap, basis or block size, seed): e.g.
        ``eigrad.solvers.Arpack(rtol=1e-10)``, ``eigrad.solvers.LOBPCG(block_size=24)``
        (the classes of :mod:`eigrad.solvers`, docs/guide.md). ``"slepc"`` (or
        an ``eigrad.petsc.Slepc`` instance) for an ``eigrad.petsc.DistributedCSR``
        under MPI: eigenvalues replicated, eigenvectors as this rank's rows
        (docs/scaleout.md).
    X0 : Tensor (n, m), optional
        Starting vectors for iterative solvers; ignored by the dense ones.
    preconditioner : callable, LinearOperator or Tensor, optional
        For iterative solvers (``X -> T X``, SPD, approximating
        ``(A - σB)⁻¹``); ignored by the dense ones. The backward's shifted
        solves take theirs from ``BackwardOptions(linsolve_preconditioner=)``.
    progress : bool
        Report the progress of iterative solves, forward and backward
        (iteration, converged pairs or columns, worst residual, operator
        applications): a tqdm bar when ``tqdm`` is installed, else a line on
        stderr at most once a second and one when each solve ends. ARPACK and
        PRIMME report their operator applications only (scipy's and PRIMME's
        loops do not expose more). A no-op for dense solvers and the direct
        backward routes (nothing iterates). Default: silent.
    backward : BackwardOptions, optional
        Degeneracy tolerances, gauge policy, number of guard eigenvalues, and
        for operators the backward's MINRES tolerance, iteration cap and
        preconditioner.

    Returns
    -------
    EigResult
        ``eigenvalues (*batch, k)`` ascending (real also for complex input),
        ``eigenvectors (*batch, n, k)``.

    Notes
    -----
    Complex Hermitian input: the same derivatives and checks as for
    :func:`eigrad.eigh`, the eigenvector phase gauge included;
    ``solver="lapack"`` reduces with ``hetrd`` to a real tridiagonal matrix.

    ``n_guard`` more eigenvalues are computed beyond the k-th to detect a
    degenerate cluster cut by ``k``; derivatives through a cut cluster do not
    exist and are reported by the gauge policy with the ``k`` values that
    would keep the cluster whole.

    For operators the backward solves the k shifted systems of MATH.md with
    projected block MINRES (unless the forward solver left an exact
    eigenbasis), checked on the true residual; a solve that does not reach
    ``linsolve_rtol`` raises :class:`eigrad.ConvergenceError`. The gradient
    reaches the operators' tensors through one VJP of ``θ ↦ A(θ) X``.
    """
    # the optional PETSc/SLEPc backend (docs/scaleout.md), imported only when asked for
    if (isinstance(solver, str) and solver == "slepc") or type(A).__module__.startswith("eigrad.petsc"):
        for name, M in (("A", A), ("B", B)):  # before the import: clear without petsc4py too
            dt = getattr(M, "dtype", None)
            if dt is not None and (getattr(dt, "is_complex", False) or getattr(dt, "kind", "") == "c"):
                raise TypeError(
                    f"solver='slepc' (eigrad.petsc) is real-only: Debian's PETSc/SLEPc are built with real "
                    f"scalars; received {name} of complex dtype {dt}. Pass a real symmetric problem, or solve the "
                    "complex Hermitian one with solver='arpack', 'lobpcg' or 'shift-invert'."
                )
        from .petsc._eigsh import eigsh_slepc

        return eigsh_slepc(A, k, B=B, largest=largest, solver=solver, X0=X0, preconditioner=preconditioner,
                           progress=progress, backward=backward)
    if not isinstance(largest, bool):
        raise TypeError(f"largest must be a bool, received {type(largest).__name__} {largest!r}.")
    _check_progress(progress)
    compiling = torch.compiler.is_compiling()
    if not _is_dense_tensor(A) or (B is not None and not _is_dense_tensor(B)):
        if compiling:
            raise _compile.unsupported("a sparse or matrix-free A or B", "pass dense tensors, or call eigrad.eigsh "
                                       "outside the compiled function.")
        return _eigsh_operator(A, k, B, largest, solver, X0, preconditioner, _backward_options(backward), progress)
    A, B = _check_dense_inputs(A, B)
    n = A.shape[-1]
    k = check_k(k, n, allow_zero=True)
    opts = _backward_options(backward)
    if compiling:  # custom ops Dynamo can trace (eigrad/_compile.py)
        if progress:
            raise _compile.unsupported("progress=True", "pass progress=False (the dense solvers do not iterate).")
        _compile.check_solver(solver)
        if k == 0 or A.numel() == 0 or (B is not None and B.numel() == 0):
            return _empty_result(A, B, k)
        return EigResult(*_compile.dense(A, B, k, largest, opts))
    s = _recorded(_dense_solver(solver, A, n, k), progress)
    if k == 0 or A.numel() == 0 or (B is not None and B.numel() == 0):
        return _empty_result(A, B, k)
    out = DenseEig.apply(A, B, k, largest, s, opts)
    return EigResult(out[0], out[1])


def eigsh_ex(
    A,
    k: int,
    *,
    B=None,
    largest: bool = False,
    solver: str = "auto",
    X0: torch.Tensor | None = None,
    preconditioner=None,
    progress: bool = False,
    backward: BackwardOptions | None = None,
) -> EigshExResult:
    """:func:`eigsh` with solve statistics: ``(eigenvalues, eigenvectors, info)``.

    Takes exactly :func:`eigsh`'s arguments and returns the same eigenpairs
    (and the same derivatives), plus an :class:`eigrad.EigshInfo` (torch's
    ``_ex`` convention, as ``torch.linalg.eigh`` / ``cholesky_ex``).

    Returns
    -------
    EigshExResult
        ``eigenvalues (*batch, k)``, ``eigenvectors (*batch, n, k)``, and
        ``info`` with ``solver``, ``converged``, ``status``, ``iterations``,
        ``matvecs``, ``residuals`` (per pair), ``guard_eigenvalues``, ``time``
        (forward seconds); ``info.backward`` is filled in by the backward:
        one :class:`eigrad.BackwardSolveInfo` per shifted solve (solver
        ``"minres"`` with iterations, operator applications and the true
        relative residual per column, or the direct routes
        ``"eigenbasis"``/``"tridiagonal"``, and the time).

    Notes
    -----
    A non-converged forward still raises :class:`eigrad.ConvergenceError`
    (its ``solution`` holds the best iterate) unless the solver instance was
    built with ``on_failure="warn"``; ``info.converged`` and ``info.status``
    then say what was missed. The statistics are plain Python numbers and
    detached tensors, recorded when the solves run: under ``torch.func.vmap``
    the entries of one call accumulate over the vmapped problems. Plain
    :func:`eigsh` records nothing.

    Examples
    --------
    >>> L, X, info = eigrad.eigsh_ex(A, 4)                 # doctest: +SKIP
    >>> info.solver, info.matvecs, info.residuals.max()    # doctest: +SKIP
    >>> (X[:, 0] ** 4).sum().backward()                    # doctest: +SKIP
    >>> info.backward[-1].iterations, info.backward[-1].residuals  # doctest: +SKIP
    """
    if torch.compiler.is_compiling():
        raise _compile.unsupported("eigrad.eigsh_ex", "call eigrad.eigsh inside the compiled function (same "
                                   "eigenpairs), or eigsh_ex outside it for the statistics.")
    info = EigshInfo()
    token = _RECORDING.set(info)  # read by _recorded inside this call only
    try:
        L, X = eigsh(A, k, B=B, largest=largest, solver=solver, X0=X0, preconditioner=preconditioner,
                     progress=progress, backward=backward)
    finally:
        _RECORDING.reset(token)
    return EigshExResult(L, X, info)
