"""The showcase behind ``eigrad demo``: gradients at exactly repeated eigenvalues.

The problem is the 2D isotropic harmonic oscillator
``H = -½∇² + ½ω²(x² + y²)`` on an ``N × N`` grid of ``[-L, L]²`` with
Dirichlet boundaries, in two discretizations:

* standard: uniform finite differences, ``A = T + diag(V)``, ``B = I``;
* generalized: a symmetric non-uniform (sinh-stretched) grid with lumped
  linear elements, ``A = ½(K ⊗ M + M ⊗ K) + diag(b ⊙ V)``, ``B = diag(b)``,
  ``b = diag(M ⊗ M)`` (the area of each node's cell).

Both are Kronecker sums ``H₁ ⊗ M + M ⊗ H₁`` (``M = I`` in the standard case),
so the eigenvalues are ``ε_i + ε_j`` and every level ``(i, j) ≠ (j, i)`` is an
exactly degenerate pair (the x ↔ y symmetry). The continuum's triple level
``(0, 2), (2, 0), (1, 1)`` is *not* degenerate on the grid: the pair splits
from ``(1, 1)`` by the discretization error, which :func:`run_demo` measures
and prints. ``k`` is chosen so that no cluster is cut.

The loss ``L(V, B) = Σ_{i<k} λ_i + ⟨W, X_g X_gᵀ⟩`` (band energy of closed
clusters plus a projector on the first degenerate pair ``g``, ``W`` a fixed
random symmetric matrix) is gauge invariant, so its derivative exists
(MATH.md, "When the derivative exists"). Its directional derivatives are
compared between eigrad, central finite differences (an independent
``scipy.linalg.eigh`` forward) and ``torch.linalg.eigh`` autograd.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
import time
import warnings

import numpy as np
import scipy.linalg
import torch

from ._api import eigsh
from ._errors import GaugeWarning

DTYPE = torch.float64
#: half-width of the box ``[-L, L]²`` and the oscillator's frequency
BOX, OMEGA = 5.0, 1.0
#: at least this many eigenpairs; more if the k-th level is a cluster
K_MIN = 6
#: relative gap below which two computed eigenvalues count as one level
EXACT_RTOL = 1e-10
#: step of the finite differences (directions have max-norm 1 or are relative)
FD_STEP = 1e-3
GRID_RANGE = (8, 48)


@dataclasses.dataclass(frozen=True)
class Row:
    """One derivative computed three ways; ``rel_*`` are ``|value - fd| / |fd|``."""

    label: str
    eigrad: float
    fd: float
    torch: float

    @property
    def rel_eigrad(self) -> float:
        return _relative(self.eigrad, self.fd)

    @property
    def rel_torch(self) -> float:
        return _relative(self.torch, self.fd)


def _relative(value: float, ref: float) -> float:
    if ref == 0:
        return 0.0 if value == 0 else math.inf
    return abs(value - ref) / abs(ref)


@dataclasses.dataclass(frozen=True)
class Case:
    """One discretization: its low spectrum, ``k``, the projected pair, the rows."""

    title: str
    eigenvalues: tuple[float, ...]  # the k computed and the next level
    k: int
    pair: tuple[int, int]
    rows: tuple[Row, ...]


@dataclasses.dataclass(frozen=True)
class DemoReport:
    grid: int
    cases: tuple[Case, ...]
    gauge_warning: str
    seconds: float

    def max_rel_eigrad(self) -> float:
        return max(r.rel_eigrad for c in self.cases for r in c.rows)


@dataclasses.dataclass(frozen=True)
class _Problem:
    T: torch.Tensor  # (n, n) kinetic part
    b: torch.Tensor | None  # (n,) diagonal of B; None for B = I
    V: torch.Tensor  # (n,) the potential ½ω²r²
    x: torch.Tensor  # (n,) node coordinates
    y: torch.Tensor  # (n,)


def _second_difference(h: torch.Tensor) -> torch.Tensor:
    """1D stiffness ``K`` (N, N) of linear elements with spacings ``h`` (N+1,), Dirichlet."""
    inv = 1.0 / h
    off = -inv[1:-1]
    return torch.diag(inv[:-1] + inv[1:]) + torch.diag(off, 1) + torch.diag(off, -1)


def oscillator(grid: int, generalized: bool) -> _Problem:
    """The discretized 2D oscillator (module docstring) on ``grid × grid`` nodes."""
    s = torch.linspace(-1.0, 1.0, grid + 2, dtype=DTYPE)
    nodes = BOX * torch.sinh(1.2 * s) / math.sinh(1.2) if generalized else BOX * s  # (N+2,)
    h = torch.diff(nodes)  # (N+1,)
    K = _second_difference(h)  # (N, N)
    m = 0.5 * (h[:-1] + h[1:]) if generalized else torch.ones(grid, dtype=DTYPE)  # (N,)
    if not generalized:
        K = K / h[0]  # the finite-difference -D² (K is scaled by 1/h per element)
    M = torch.diag(m)
    T = 0.5 * (torch.kron(K, M) + torch.kron(M, K))  # (n, n)
    xg, yg = torch.meshgrid(nodes[1:-1], nodes[1:-1], indexing="ij")
    x, y = xg.reshape(-1), yg.reshape(-1)
    b = torch.kron(m, m) if generalized else None
    return _Problem(T, b, 0.5 * OMEGA**2 * (x**2 + y**2), x, y)


def _matrices(p: _Problem, V: torch.Tensor, beta: torch.Tensor | None):
    """``A = T + diag(b ⊙ V)`` and ``B = diag(beta)`` (``None`` for the standard case)."""
    w = V if p.b is None else p.b * V
    return p.T + torch.diag(w), (None if beta is None else torch.diag(beta))


def _levels(vals: np.ndarray) -> list[list[int]]:
    """Group ascending eigenvalues into levels equal to ``EXACT_RTOL`` (relative)."""
    scale = float(np.abs(vals).max())
    groups = [[0]]
    for i in range(1, len(vals)):
        if vals[i] - vals[i - 1] <= EXACT_RTOL * scale:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _loss(L, X, k, pair, W):
    """Band energy of the k levels plus ``⟨W, X_g X_gᵀ⟩`` = ``tr(X_gᵀ W X_g)``."""
    Xg = X[..., list(pair)]  # (n, 2)
    return L[:k].sum() + (Xg * (W @ Xg)).sum()


def _torch_eigh(A, B):
    """``torch.linalg.eigh`` (all pairs), reduced with the Cholesky factor of ``B``."""
    if B is None:
        return torch.linalg.eigh(A)
    C = torch.linalg.cholesky(B)
    S = torch.linalg.solve_triangular(C, A, upper=False)
    S = torch.linalg.solve_triangular(C, S.mT, upper=False)  # C⁻¹ A C⁻ᵀ
    L, Y = torch.linalg.eigh(S)
    return L, torch.linalg.solve_triangular(C.mT, Y, upper=True)


def _scipy_loss(A, B, k, pair, W: np.ndarray) -> float:
    """The loss from an independent forward, all in numpy: ``scipy.linalg.eigh`` subset."""
    L, X = scipy.linalg.eigh(A.numpy(), None if B is None else B.numpy(), subset_by_index=[0, k - 1])
    Xg = X[:, list(pair)]  # (n, 2)
    return float(L.sum() + (Xg * (W @ Xg)).sum())


def _fd(f, step=FD_STEP) -> float:
    """Fourth-order central difference ``f'(0)`` (error O(step⁴))."""
    return (f(-2 * step) - 8 * f(-step) + 8 * f(step) - f(2 * step)) / (12 * step)


def _grads(loss_fn, p: _Problem):
    """Gradients of ``loss_fn(A, B)`` at ``(V, b)``: ``(∂L/∂V,)`` or ``(∂L/∂V, ∂L/∂b)``."""
    inputs = [p.V.clone().requires_grad_(True)]
    if p.b is not None:
        inputs.append(p.b.clone().requires_grad_(True))
    A, B = _matrices(p, inputs[0], inputs[1] if p.b is not None else None)
    return torch.autograd.grad(loss_fn(A, B), inputs)


def _nearest_node(p: _Problem, x: float, y: float) -> int:
    return int(torch.argmin((p.x - x) ** 2 + (p.y - y) ** 2))


def _case(title: str, p: _Problem, gen: torch.Generator) -> Case:
    n = p.V.shape[0]
    beta0 = p.b
    A0, B0 = _matrices(p, p.V, beta0)
    with torch.no_grad():
        vals = eigsh(A0, K_MIN + 8, B=B0).eigenvalues.numpy()
    levels = _levels(vals)
    closing = [sum(len(g) for g in levels[: i + 1]) for i in range(len(levels))]
    k = next(c for c in closing if c >= K_MIN and c < len(vals))  # k cuts no level
    pair = tuple(next((g for g in levels if len(g) == 2), [k]))
    if pair[-1] >= k:
        raise RuntimeError(f"no exactly degenerate pair among the {k} lowest levels: {vals[:k]}")
    shown = vals[: k + len(levels[closing.index(k) + 1])]  # the k levels and the next one

    W = torch.randn(n, n, dtype=DTYPE, generator=gen)
    W = (W + W.mT) / (2 * math.sqrt(n))  # a fixed symmetric observable, ‖W‖₂ ~ 1
    W_np = W.numpy()

    def eigrad_loss(A, B):
        L, X = eigsh(A, k, B=B)  # solver="auto"
        return _loss(L, X, k, pair, W)

    def torch_loss(A, B):
        L, X = _torch_eigh(A, B)
        return _loss(L[:k], X[:, :k], k, pair, W)

    g_ours = _grads(eigrad_loss, p)
    g_torch = _grads(torch_loss, p)

    r4 = (p.x**2 + p.y**2) ** 2
    xi = 2 * torch.rand(n, dtype=DTYPE, generator=gen) - 1
    directions = [
        ("dL/dt at V + t·r⁴/max r⁴", 0, r4 / r4.max()),
        ("dL/dt at V + t·ξ (ξ random)", 0, xi),
    ]
    for x, y in ((0.0, 0.0), (-1.0, 0.6)):
        e = torch.zeros(n, dtype=DTYPE)
        j = _nearest_node(p, x, y)
        e[j] = 1.0
        directions.append((f"∂L/∂V at ({float(p.x[j]):+.2f}, {float(p.y[j]):+.2f})", 0, e))
    if beta0 is not None:
        eta = 2 * torch.rand(n, dtype=DTYPE, generator=gen) - 1
        directions.append(("dL/dt at B + t·diag(b ⊙ η)", 1, beta0 * eta))

    rows = []
    for label, which, d in directions:
        def f(t, which=which, d=d):
            V = p.V + t * d if which == 0 else p.V
            beta = None if beta0 is None else (beta0 + t * d if which == 1 else beta0)
            return _scipy_loss(*_matrices(p, V, beta), k, pair, W_np)

        rows.append(Row(label, float(g_ours[which] @ d), _fd(f), float(g_torch[which] @ d)))
    return Case(title, tuple(float(v) for v in shown), k, pair, tuple(rows))


def _gauge_warning_message(p: _Problem, pair: tuple[int, int]) -> str:
    """The GaugeWarning for a basis-dependent loss: one eigenvector of the pair at one node."""
    V = p.V.clone().requires_grad_(True)
    A, _ = _matrices(p, V, None)
    L, X = eigsh(A, pair[1] + 1)
    node = _nearest_node(p, -1.0, 0.6)
    loss = X[node, pair[0]] ** 2  # depends on which basis of the pair eigsh returned
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GaugeWarning)
        torch.autograd.grad(loss, V)
    messages = [str(w.message) for w in caught if issubclass(w.category, GaugeWarning)]
    if not messages:
        raise RuntimeError("eigrad gave no GaugeWarning for a basis-dependent loss; this is a bug.")
    return messages[0]


def run_demo(grid: int = 16, seed: int = 0) -> DemoReport:
    """Compute the demo's rows (no printing); see :func:`format_report`.

    Parameters
    ----------
    grid : int
        Nodes per axis, ``8 <= grid <= 48`` (``n = grid²``).
    seed : int
        Seed of the generator for ``W`` and the random directions.
    """
    lo, hi = GRID_RANGE
    if not isinstance(grid, int) or not lo <= grid <= hi:
        raise ValueError(f"grid must be an int in [{lo}, {hi}]; received {grid!r}.")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    std = _case("standard   A x = λ x   (uniform finite differences)", oscillator(grid, False), gen)
    gnr = _case(
        "generalized   A x = λ B x   (non-uniform grid, lumped mass B = diag(b))", oscillator(grid, True), gen
    )
    msg = _gauge_warning_message(oscillator(grid, False), std.pair)
    return DemoReport(grid, (std, gnr), msg, time.perf_counter() - start)


# Formatting ----------------------------------------------------------------
_HEAD = ("quantity", "eigrad", "finite diff.", "torch eigh", "err eigrad", "err torch")
_WIDTHS = (28, 16, 16, 16, 11, 11)


def _num(v: float) -> str:
    return f"{v:.10g}" if math.isfinite(v) else str(v)


def _err(v: float) -> str:
    return f"{v:.1e}" if math.isfinite(v) else str(v)


def _levels_lines(vals: tuple[float, ...], k: int) -> list[str]:
    arr = np.asarray(vals)
    groups = _levels(arr)
    parts = [f"{arr[g[0]]:.6f}" + (f" ×{len(g)}" if len(g) > 1 else "") for g in groups]  # level ×multiplicity
    n_in = sum(1 for g in groups if g[0] < k)
    spread = max((arr[g[-1]] - arr[g[0]] for g in groups if len(g) > 1), default=0.0)
    heads = [arr[g[0]] for g in groups[:n_in]]
    gaps = np.diff(heads)
    i = int(np.argmin(gaps))
    lo, hi = heads[i], heads[i + 1]
    why = f": the continuum's level {round(lo)}, split by the grid" if round(lo) == round(hi) else ""
    agree = "are bitwise equal" if spread == 0 else f"agree to {spread:.0e} (roundoff)"
    lines = [
        "  levels: " + " | ".join(parts[:n_in]) + "  ‖ next " + " | ".join(parts[n_in:]),
        f"  the ×2 levels {agree}; the closest distinct levels are {gaps[i]:.1e} apart",
        f"  ({lo:.4f} and {hi:.4f}{why})",
    ]
    return lines


def _row(cells) -> str:
    first, *rest = cells
    return "  " + first.ljust(_WIDTHS[0]) + "".join(c.rjust(w) for c, w in zip(rest, _WIDTHS[1:]))


def format_report(report: DemoReport) -> str:
    """The demo's text: one table per case, then the GaugeWarning and how to read it."""
    out = [
        f"eigrad demo: 2D harmonic oscillator H = -½∇² + ½ω²(x² + y²), ω = {OMEGA:g}, on a "
        f"{report.grid}×{report.grid} grid of [-{BOX:g}, {BOX:g}]²",
        "(Dirichlet, float64). Levels (i, j), (j, i) are exactly degenerate by the x ↔ y symmetry.",
        "Loss L = Σ_{i<k} λ_i + ⟨W, X_g X_gᵀ⟩: band energy of whole levels plus the projector on a",
        "degenerate pair g (W a fixed random symmetric matrix). L is basis invariant, so its",
        "derivative exists at the degeneracy. eigrad: eigrad.eigsh(A, k, B=B), solver='auto'.",
    ]
    for num, case in enumerate(report.cases, 1):
        out += ["", f"[{num}] {case.title}"]
        out += _levels_lines(case.eigenvalues, case.k)
        out.append(f"  k = {case.k} keeps every level whole; g = eigenpairs {case.pair} (from 0)")
        out.append(_row(_HEAD))
        out.append("  " + "-" * sum(_WIDTHS))
        for r in case.rows:
            cells = (r.label, _num(r.eigrad), _num(r.fd), _num(r.torch), _err(r.rel_eigrad), _err(r.rel_torch))
            out.append(_row(cells))
    out += [
        "",
        "[3] A basis-dependent loss, L = X[p, g₀]² (one eigenvector of the pair, at one node p).",
        "    eigrad.GaugeWarning says:",
        textwrap.fill(report.gauge_warning, width=92, initial_indent="    | ", subsequent_indent="    | "),
        "",
        "How to read: err = |value − finite diff.| / |finite diff.|, the relative error against a",
        f"fourth-order central difference (step {FD_STEP:g}) of an independent scipy.linalg.eigh forward.",
        "torch eigh: torch.linalg.eigh autograd (of C⁻¹AC⁻ᵀ, C = cholesky(B), when B ≠ I); it divides",
        "by λ_j − λ_i, which is 0 or roundoff inside a degenerate level: nan or wrong there.",
        "Docs: README.md (when derivatives exist) and docs/.",
        f"({report.seconds:.1f} s)",
    ]
    return "\n".join(out)
