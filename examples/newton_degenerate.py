"""Newton's method through exactly repeated eigenvalues: exact Hessians from eigrad.

The Dirichlet Laplacian of the unit square on an ``m × m`` grid plus a
potential ``v`` on the grid nodes, ``H(v) = -Δ_h + diag(v)`` (dense,
``n = m²``), has the square's symmetry whenever ``v`` has it, and then its
modes (1,2)/(2,1) and (2,3)/(3,2) have *exactly* the same eigenvalue (a
two-dimensional irreducible representation of the symmetry group). The modes
(1,3)/(3,1) are degenerate too at ``v = 0``, by accident of the separable
Laplacian; a symmetric potential splits them.

We fit the ``K = 8`` lowest levels (they end between two clusters) to target
levels ``c`` that are equal within each cluster of the start, with the least
potential: the regularized inverse eigenvalue problem

    f(v) = ½ Σ_{i<K} (λ_i(v) - c_i)² + ½ α mean(v²).

``f`` depends on each cluster through a symmetric function of its eigenvalues,
so it is twice differentiable at the repeated eigenvalues, along every
direction (also those that split a pair). eigrad computes that Hessian
exactly (docs/second_order.md, "exact degeneracy"): ``torch.func.hessian``,
``torch.func.jvp(torch.func.grad(f), ...)`` and a second ``torch.autograd.grad``
after ``create_graph=True`` all work.

1. **Hessian-vector product at the degenerate start** ``v = 0``, along a random
   (not symmetric) direction: eigrad's three compositions against central
   finite differences of an independent closed-form gradient
   (Hellmann–Feynman, ``∇f = Σ_i (λ_i - c_i) x_i² + α v / n``, from
   ``torch.linalg.eigh``), and the same HVP through ``torch.linalg.eigvalsh``,
   whose second derivative divides by differences of eigenvalues over the
   whole spectrum (several of the grid's repeated eigenvalues come out
   bitwise equal: NaN).
2. **Newton's method** with eigrad's exact Hessian (``torch.func.hessian``,
   ``n × n``) and Armijo backtracking, against gradient descent (Armijo
   backtracking from twice the previous step; it stops when the decrease of
   ``f`` falls below the rounding of ``f``) and Newton with
   ``torch.linalg.eigvalsh``'s Hessian, from the same start. The gradient of
   a symmetric loss at a symmetric point is symmetric, so every Newton
   iterate keeps the symmetry and the two pairs stay repeated; we print
   their gaps along the way.

Run ``python examples/newton_degenerate.py`` (12 × 12 grid, n = 144) or with
``--fast`` (6 × 6, for CI). The plot goes to
``examples/out/newton_degenerate.png``.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.func import grad, hessian, jvp  # noqa: E402

import eigrad  # noqa: E402
from eigrad.testing import central_difference, cluster_positions  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
DT = torch.float64
K = 8  # clusters (1,1) | (1,2)(2,1) | (2,2) | (1,3)(3,1) | (2,3)(3,2): the next level is (1,4)/(4,1)
SHIFTS = (20.0, 10.0, 5.0, 0.0, -5.0)  # target = the cluster's level at v = 0 plus this, per cluster
ALPHA = 0.1
PAIRS = ((1, 2), (6, 7))  # symmetry-protected pairs (two-dimensional representations)
ACCIDENTAL = (4, 5)  # (1,3)/(3,1): degenerate at v = 0 only


class Problem:
    """``H(v) = -Δ_h + diag(v)`` on the interior nodes of an ``m × m`` grid of the unit square."""

    def __init__(self, m: int):
        self.m, self.n = m, m * m
        h = 1.0 / (m + 1)
        T = (2 * torch.eye(m, dtype=DT) - torch.diag(torch.ones(m - 1, dtype=DT), 1)
             - torch.diag(torch.ones(m - 1, dtype=DT), -1)) / h**2
        eye = torch.eye(m, dtype=DT)
        self.lap = torch.kron(T, eye) + torch.kron(eye, T)
        lam0 = torch.linalg.eigvalsh(self.lap)
        self.clusters = cluster_positions(lam0[: K + 1] / lam0[-1], 1e-12)
        if any(K - 1 in c and K in c for c in self.clusters):
            raise ValueError(f"K = {K} cuts a cluster of the start: {self.clusters}")
        self.clusters = [c for c in self.clusters if c[0] < K]
        self.target = torch.empty(K, dtype=DT)
        for c, s in zip(self.clusters, SHIFTS, strict=True):
            self.target[c] = lam0[c].mean() + s  # equal within each cluster: a symmetric function
        self.lam0 = lam0[:K]

    def H(self, v):
        return self.lap + torch.diag(v)

    def loss(self, v, lib="eigrad"):
        if lib == "eigrad":
            lam = eigrad.eigsh(self.H(v), K, solver="dense").eigenvalues
        else:  # what one writes with torch alone
            lam = torch.linalg.eigvalsh(self.H(v))[:K]
        return 0.5 * ((lam - self.target) ** 2).sum() + 0.5 * ALPHA * (v @ v) / self.n

    def hf_gradient(self, v):
        """Closed form (Hellmann–Feynman) ``Σ_i (λ_i - c_i) x_i² + α v / n``, from ``torch.linalg.eigh``.

        Smooth across the clusters: on a cluster with one target ``c`` the sum
        is ``diag(P (H - c) P)`` with ``P`` the cluster's projector."""
        lam, X = torch.linalg.eigh(self.H(v))
        return (X[:, :K] ** 2) @ (lam[:K] - self.target) + ALPHA * v / self.n

    def levels(self, v):
        return torch.linalg.eigvalsh(self.H(v))[: K + 1]


def rel(x, ref):
    e = float((x - ref).norm() / ref.norm())
    return e if math.isfinite(e) else float("nan")


def hvp_check(p: Problem, v0, seed=0):
    """Relative errors of Hessian-vector products at ``v0`` against FD of the closed-form gradient."""
    g = torch.Generator().manual_seed(seed)
    dv = torch.randn(p.n, dtype=DT, generator=g)
    ref = central_difference(p.hf_gradient, (v0,), (dv,), h=1e-2)  # h: truncation ≈ rounding here
    f = p.loss
    rows = {}
    rows["eigrad, jvp(grad(f))"] = rel(jvp(grad(f), (v0,), (dv,))[1], ref)
    x = v0.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(f(x), x, create_graph=True)
    (hv,) = torch.autograd.grad(gx @ dv, x)
    rows["eigrad, create_graph + grad"] = rel(hv, ref)
    rows["eigrad, hessian(f) @ dv"] = rel(hessian(f)(v0) @ dv, ref)
    rows["torch.linalg.eigvalsh, jvp(grad(f))"] = rel(jvp(grad(lambda v: f(v, "torch")), (v0,), (dv,))[1], ref)
    own = central_difference(grad(f), (v0,), (dv,), h=1e-2)  # second reference: FD of eigrad's own gradient
    return rows, rel(jvp(grad(f), (v0,), (dv,))[1], own)


def minimize(p: Problem, v0, method, max_iter, gtol):
    """Newton (``eigrad`` or ``torch`` Hessian) or gradient descent, Armijo backtracking on ``f``."""
    lib = "torch" if method == "Newton, torch.linalg.eigvalsh" else "eigrad"
    f = lambda v: p.loss(v, lib)  # noqa: E731
    v, step = v0.clone(), 1.0
    hist, steps = [], []  # (‖∇f‖, f, levels) per iterate; (step length, Newton direction?) per step
    status = f"stopped after {max_iter} iterations"
    for it in range(max_iter + 1):
        with torch.no_grad():
            fv = float(f(v))
        gv = grad(f)(v)
        hist.append((float(gv.norm()), fv, p.levels(v).numpy()))
        if not math.isfinite(hist[-1][0]):
            status = "gradient not finite"
            break
        if hist[-1][0] <= gtol:
            status = "converged"
            break
        if it == max_iter:
            break
        if method.startswith("Newton"):
            Hm = hessian(f)(v)
            if not torch.isfinite(Hm).all():
                status = f"Hessian not finite at iteration {it} ({int((~torch.isfinite(Hm)).sum())} NaN/inf entries)"
                break
            d = -torch.linalg.solve(Hm, gv)
            newton = bool(float(gv @ d) < 0)
            if not newton:  # not a descent direction (indefinite Hessian): steepest descent
                d = -gv
            t = 1.0
        else:
            d, t, newton = -gv, min(2 * step, 1e3), False
        slope, scale = float(gv @ d), max([t] + [s[0] for s in steps])
        with torch.no_grad():
            while t > 1e-7 * scale and not float(f(v + t * d)) <= fv + 1e-4 * t * slope:
                t /= 2
        if t <= 1e-7 * scale:  # the decrease of f along d is below the rounding of f itself
            status = f"line search stalled at iteration {it} (decrease of f below its rounding)"
            break
        v, step = v + t * d, t
        steps.append((t, newton))
    return v, hist, status, steps


def plot(p, rows, runs, path):
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.8), layout="constrained", gridspec_kw={"width_ratios": (1, 1.1, 1)})
    styles = {"Newton, eigrad": "C0o-", "gradient descent": "C1-", "Newton, torch.linalg.eigvalsh": "C3s--"}
    for name, (_, hist, status) in runs.items():
        gn = np.array([h[0] for h in hist])
        gn = np.where(np.isfinite(gn), gn, np.nan)
        label = name if status == "converged" else f"{name} ({status.split(' at ')[0].split(' (')[0]})"
        ax[0].semilogy(np.arange(len(gn)), gn, styles[name], ms=4, label=label)
    ax[0].set_xscale("symlog", linthresh=10)
    ax[0].set_xlabel("iteration")
    ax[0].set_ylabel("‖∇f‖")
    ax[0].set_title("convergence from the degenerate start")
    ax[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14))

    names = list(rows)
    errs = np.array([rows[k] for k in names])
    shown = np.where(np.isfinite(errs), errs, 1e1)
    colors = ["C0"] * 3 + ["C3"]
    ax[1].barh(range(len(names)), shown, color=colors, log=True)
    for i, e in enumerate(errs):
        ax[1].text(shown[i] * 1.5, i, "NaN" if not np.isfinite(e) else f"{e:.1e}", va="center", fontsize=8)
    ax[1].set_yticks(range(len(names)), names, fontsize=8)
    ax[1].invert_yaxis()
    ax[1].set_xlim(1e-14, 1e4)
    ax[1].set_xlabel("relative error vs FD of the closed-form gradient")
    ax[1].set_title("Hessian-vector product at v = 0")

    levels = np.array([h[2] for h in runs["Newton, eigrad"][1]])
    it = np.arange(len(levels))
    used = set()
    for c in p.clusters:
        if tuple(c) in PAIRS:
            style, label = "C0o-", "symmetry-protected pairs (2 lines each)"
        elif tuple(c) == ACCIDENTAL:
            style, label = "C1.-", "(1,3)/(3,1): accidental, splits"
        else:
            style, label = "k.-", "simple levels"
        for i in c:
            ax[2].plot(it, levels[:, i] / math.pi**2, style, ms=4, lw=1, label=None if label in used else label)
            used.add(label)
    ax[2].plot(it, levels[:, K] / math.pi**2, ".:", color="C7", lw=1, label=f"λ_{K + 1} (not fitted)")
    for c in p.clusters:
        ax[2].axhline(float(p.target[c[0]]) / math.pi**2, color="C2", lw=0.8, ls="--")
    ax[2].plot([], [], "C2--", lw=0.8, label="targets c")
    ax[2].set_xlabel("Newton iteration (eigrad)")
    ax[2].set_ylabel("λ / π²")
    ax[2].set_title("levels along the Newton iterates")
    ax[2].legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="small grid and fewer gradient steps (CI)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the plot (default: examples/out)")
    args = parser.parse_args(argv)
    m, gd_iter = (6, 300) if args.fast else (12, 1000)
    gtol = 1e-10
    t0 = time.perf_counter()
    p = Problem(m)
    print(f"grid {m} x {m} (n = {p.n}), K = {K}, α = {ALPHA}; clusters at v = 0: "
          + " ".join(str(len(c)) for c in p.clusters))
    print("levels at v = 0, λ/π²: " + " ".join(f"{x:.4f}" for x in (p.lam0 / math.pi**2).tolist()))
    gaps0 = p.levels(torch.zeros(p.n, dtype=DT))
    print("in-pair gaps at v = 0: " + ", ".join(f"λ{j + 1} - λ{i + 1} = {float(gaps0[j] - gaps0[i]):.1e}"
                                                for i, j in PAIRS + (ACCIDENTAL,)))
    v0 = torch.zeros(p.n, dtype=DT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", eigrad.GaugeWarning)
        rows, err_own = hvp_check(p, v0)
        print("Hessian-vector product at v = 0 along a random direction, relative error vs central")
        print("finite differences of the Hellmann–Feynman gradient:")
        for name, err in rows.items():
            print(f"  {name:38s} {err:.1e}")
        print(f"  (eigrad's vs finite differences of its own gradient: {err_own:.1e})")
        runs = {}
        for method, n_iter in [("Newton, eigrad", 30), ("gradient descent", gd_iter),
                               ("Newton, torch.linalg.eigvalsh", 30)]:
            t1 = time.perf_counter()
            runs[method] = minimize(p, v0, method, n_iter, gtol) + (time.perf_counter() - t1,)
    n_gauge = sum(issubclass(w.category, eigrad.GaugeWarning) for w in caught)
    for w in caught:
        if not issubclass(w.category, eigrad.GaugeWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    v, hist, status, steps, sec = runs["Newton, eigrad"]
    print(f"Newton, eigrad: {status}, ‖∇f‖ per iteration: " + " ".join(f"{h[0]:.1e}" for h in hist))
    print("  step lengths: " + " ".join(f"{t:.3g}" + ("" if nw else " (steepest descent)") for t, nw in steps))
    levels = np.array([h[2] for h in hist])
    pair_gap = max(float(np.abs(levels[:, j] - levels[:, i]).max()) for i, j in PAIRS)
    print(f"  {len(hist) - 1} iterations in {sec:.1f} s, f {hist[0][1]:.4f} -> {hist[-1][1]:.6f}; "
          f"max in-pair gap over the iterates {pair_gap:.1e}; "
          f"λ6 - λ5 = {levels[-1, ACCIDENTAL[1]] - levels[-1, ACCIDENTAL[0]]:.3f} at the end (accidental pair: split)")
    vm = v.reshape(m, m)
    asym = max(float((vm - vm.T).abs().max()), float((vm - vm.flip(0)).abs().max()))
    print(f"  optimal potential: max |v| {float(v.abs().max()):.2f}, deviation from the square's symmetry {asym:.1e}")
    print("  levels λ/π²: " + " ".join(f"{x:.4f}" for x in (levels[-1, :K] / math.pi**2).tolist())
          + "  (targets " + " ".join(f"{x:.4f}" for x in (p.target / math.pi**2).tolist()) + ")")
    _, hist_gd, status_gd, _, sec_gd = runs["gradient descent"]
    print(f"gradient descent: {status_gd}, {len(hist_gd) - 1} iterations in {sec_gd:.1f} s, "
          f"‖∇f‖ {hist_gd[0][0]:.1e} -> {hist_gd[-1][0]:.1e}, f {hist_gd[-1][1]:.6f}")
    for tol in (1e-3, 1e-6, 1e-8):
        first = {name: next((i for i, h in enumerate(runs[name][1]) if h[0] <= tol), None)
                 for name in ("Newton, eigrad", "gradient descent")}
        print(f"  ‖∇f‖ <= {tol:.0e}: " + ", ".join(
            f"{name} {'not reached' if i is None else f'after {i} iterations'}" for name, i in first.items()))
    _, hist_t, status_t, _, _ = runs["Newton, torch.linalg.eigvalsh"]
    print(f"Newton, torch.linalg.eigvalsh: {status_t}; ‖∇f‖ per iteration: "
          + " ".join(f"{h[0]:.1e}" for h in hist_t))
    print(f"GaugeWarnings: {n_gauge}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "newton_degenerate.png"
    plot(p, rows, {k: r[:3] for k, r in runs.items()}, path)
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    return rows, runs


if __name__ == "__main__":
    main()
