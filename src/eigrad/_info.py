"""``eigsh_ex``'s info object and the wrappers that fill it.

:class:`Recorded` wraps a forward eigensolver (the solver protocol of
``eigensolvers/_base.py``): it times each call, copies the statistics of the
returned :class:`EigSolution` into an :class:`EigshInfo`, and, for iterative
solvers with ``progress=True``, activates a progress :class:`_monitor.Monitor`.
:class:`RecordedFactory` wraps the backward's shifted-solver factory in the
same way, so the backward appends one :class:`BackwardSolveInfo` per shifted
solve. Plain ``eigsh`` without ``progress`` never sees these wrappers.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from . import _monitor

#: forward solvers without iterations to report (progress is a no-op for them)
_DIRECT = ("DenseEigh", "LapackSubset", "Materialized")
_NAMES = {"DenseEigh": "dense", "LapackSubset": "lapack", "Arpack": "arpack", "LOBPCG": "lobpcg",
          "Primme": "primme", "ProjectedMinres": "minres", "EigenbasisSolve": "eigenbasis",
          "TridiagonalSolve": "tridiagonal"}


def solver_name(solver) -> str:
    """A short name: ``"arpack"``, ``"lapack"``, ``"dense (materialized)"``, ``"minres"``, ..."""
    cls = type(solver).__name__
    if cls == "Materialized":
        return f"{solver_name(solver.solver)} (materialized)"
    return getattr(solver, "name", None) or _NAMES.get(cls, cls)


@dataclasses.dataclass
class BackwardSolveInfo:
    """One shifted solve ``(A - λ_j B) y_j = r_j`` of the backward.

    Attributes
    ----------
    solver : str
        ``"minres"`` (projected block MINRES over the operator), or a direct
        route on what the forward left: ``"eigenbasis"`` (the whole
        eigenbasis, ``solver="dense"``), ``"tridiagonal"`` (the kept
        tridiagonal reduction, ``solver="lapack"``).
    columns : int
        Right-hand sides solved together.
    iterations : int
        MINRES iterations over all restarts (one block operator application
        each); 0 for the direct routes.
    matvecs : int
        Operator applications, counted in columns; 0 for the direct routes.
    residuals : Tensor (..., columns) or None
        MINRES: the true relative residual of every column,
        ``‖P_g (r_j - (A - λ_j B) y_j)‖ / ‖r_j‖``; ``None`` for the direct routes
        (exact to rounding).
    time : float
        Seconds.
    """

    solver: str
    columns: int
    iterations: int
    matvecs: int
    residuals: torch.Tensor | None
    time: float


@dataclasses.dataclass
class EigshInfo:
    """Statistics of one :func:`eigrad.eigsh_ex` call (forward), and of its backward once it ran.

    Attributes
    ----------
    solver : str
        The forward solver that ran: ``"arpack"``, ``"lobpcg"``, ``"primme"``,
        ``"lapack"``, ``"dense"``, or ``"… (materialized)"`` for an operator
        solved densely.
    converged : bool
        Whether every wanted and guard pair met the solver's tolerance (a
        non-converged solve raises :class:`eigrad.ConvergenceError` unless the
        solver was built with ``on_failure="warn"``).
    status : str
        ``"converged"`` or the failure message.
    iterations : int
        The solver's iterations (its unit: Lanczos steps for ARPACK, outer
        iterations for LOBPCG and PRIMME, 1 for dense solvers), summed over
        the calls (eigrad asks again with more guards when a cluster reaches
        the last one).
    matvecs : int
        Operator applications, in columns (0 for dense solvers on tensors).
    residuals : Tensor (*batch, k)
        ``‖A x_i - λ_i B x_i‖`` of the returned pairs.
    guard_eigenvalues : Tensor (*batch, g)
        The eigenvalues beyond the k-th that were computed to detect a cut
        cluster.
    time : float
        Seconds of the forward eigensolve(s).
    calls : int
        Forward solver calls (more than one when a cluster ran past the guards).
    backward : list of BackwardSolveInfo
        Empty until a backward (or JVP) that needed shifted solves has run;
        then one entry per solve, appended by every later backward too.
        Eigenvalue-only losses need no solve.
    """

    solver: str = ""
    converged: bool = False
    status: str = "not run"
    iterations: int = 0
    matvecs: int = 0
    residuals: torch.Tensor | None = None
    guard_eigenvalues: torch.Tensor | None = None
    time: float = 0.0
    calls: int = 0
    backward: list = dataclasses.field(default_factory=list)

    def record(self, solver, sol, seconds: float) -> None:
        self.solver = solver_name(solver)
        self.converged = bool(sol.converged)
        self.status = sol.status
        self.iterations += int(sol.n_iter)
        self.matvecs += int(sol.n_matvec)
        self.residuals = sol.residual_norms.detach()
        self.guard_eigenvalues = sol.guard_eigenvalues.detach()
        self.time += seconds
        self.calls += 1


@dataclasses.dataclass(frozen=True, eq=False)
class Recorded:
    """A forward eigensolver whose calls fill ``info`` and, with ``progress``, show progress."""

    solver: object
    info: EigshInfo | None
    progress: bool = False

    @property
    def handle_factory(self):
        inner = self.solver.handle_factory
        return None if inner is None else RecordedFactory(inner, self.info, self.progress)

    @property
    def iterative(self) -> bool:
        return type(self.solver).__name__ not in _DIRECT

    def __call__(self, A, k, B=None, largest=False, X0=None, preconditioner=None, n_guard=0):
        start = time.perf_counter()
        label = f"forward [{solver_name(self.solver)}]"
        with _monitor.monitoring(label, self.progress and self.iterative):
            sol = self.solver(A, k, B=B, largest=largest, X0=X0, preconditioner=preconditioner, n_guard=n_guard)
        if self.info is not None:
            self.info.record(self.solver, sol, time.perf_counter() - start)
        return sol


class RecordedFactory:
    """A shifted-solver factory whose solvers append a :class:`BackwardSolveInfo` to ``info``.

    Called like the factory it wraps, ``factory(tensors, atol, rtol, **options)``
    (``options``: the inner factory's keywords, e.g. ``broadening``, passed on
    unchanged). Attributes of the inner factory (``supports_broadening``) show through.
    """

    #: the dense backward's closed form for simple spectra (``full_simple_vjp``) calls no solver, so it
    #: would record nothing: a recorded eigenbasis backward takes the general path (the same numbers)
    full_eigenbasis = False

    def __init__(self, factory, info: EigshInfo | None, progress: bool = False):
        self.factory, self.info, self.progress = factory, info, progress

    def __getattr__(self, name):
        return getattr(self.__dict__["factory"], name)

    def __call__(self, tensors, atol=None, rtol=None, **options):
        return _RecordedSolve(self.factory(tensors, atol, rtol, **options), self.info, self.progress)


class _RecordedSolve:
    def __init__(self, solve, info, progress):
        self.solve, self.info, self.progress = solve, info, progress

    def __call__(self, R, shifts, X, M):
        name = solver_name(self.solve)
        iterative = name == "minres" or hasattr(self.solve, "n_iter")
        start = time.perf_counter()
        with _monitor.monitoring(f"backward [{name}]", self.progress and iterative):
            Y = self.solve(R, shifts, X, M)
        if self.info is not None:
            res = getattr(self.solve, "relative_residuals", None)
            self.info.backward.append(BackwardSolveInfo(
                solver=name, columns=int(R.shape[-1]), iterations=int(getattr(self.solve, "n_iter", 0)),
                matvecs=int(getattr(self.solve, "n_matvec", 0)),
                residuals=None if res is None else res.detach(), time=time.perf_counter() - start,
            ))
        return Y
