"""Vibrating square membrane: optimize a density field through a degenerate eigenproblem.

The membrane ``-Δu = λ ρ u`` on the unit square with clamped edges is
discretized by finite elements (scikit-fem): ``K x = λ M(ρ) x`` with ``K`` the
stiffness matrix and ``M(ρ) = Σ_e ρ_e M_e`` the mass matrix of an
element-wise density ``ρ``. On the symmetric (criss-cross) mesh the square's
symmetry survives discretization, so the second and third frequencies are
*exactly* equal (the modes (1,2) and (2,1)), at the uniform start and, as
long as the density keeps the square's symmetry, during the whole
optimization.

We redistribute a fixed total mass to

* open the band gap above the lowest three modes: maximize
  ``softmin(λ_4..λ_6) / mean(λ_2, λ_3)``, symmetric functions of whole
  clusters, and
* keep those three modes still in a central patch ``R`` (a sensor): minimize
  the fraction of their kinetic energy in ``R``,
  ``e_R = tr(X_{1:3}ᵀ M_R X_{1:3}) / 3``, a function of the projector onto
  their span (gauge invariant).

Both terms satisfy MATH.md's two conditions, so ``eigrad.eigsh`` returns the
exact gradient at the degenerate pair. ``torch.linalg.eigh`` after a Cholesky
reduction does too for the eigenvalue part, but its eigenvector backward
divides by ``λ_3 - λ_2 = 0``: at the start we compare both with central finite
differences.

Run ``python examples/fem_membrane.py`` (about half a minute) or with
``--fast`` (a coarse mesh and a few steps, for CI). The plot goes to
``examples/out/fem_membrane.png``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import skfem  # noqa: E402
import torch  # noqa: E402
from skfem.helpers import dot, grad  # noqa: E402

import eigrad  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
DT = torch.float64
K_MODES = 6  # λ_1, (λ_2 = λ_3), λ_4, λ_5, λ_6: ends in the gap below the (2,3)/(3,2) pair
SENSOR_RADIUS = 0.2


class Membrane:
    """Stiffness ``K`` and density-dependent mass ``M(ρ)`` on the interior dofs."""

    def __init__(self, refine: int, order: int):
        self.mesh = skfem.MeshTri.init_symmetric().refined(refine)
        element = skfem.ElementTriP1() if order == 1 else skfem.ElementTriP2()
        basis = skfem.Basis(self.mesh, element)

        @skfem.BilinearForm
        def stiffness(u, v, w):
            return dot(grad(u), grad(v))

        @skfem.BilinearForm
        def mass(u, v, w):
            return u * v

        interior = basis.complement_dofs(basis.get_dofs())  # clamped edges
        self.K = torch.tensor(stiffness.assemble(basis)[interior][:, interior].toarray(), dtype=DT)
        self.n = len(interior)
        # element mass matrices M_e and their global (interior) indices
        local = torch.tensor(mass.coo_data(basis).tolocal(), dtype=DT)  # (n_el, nb, nb)
        glob2int = -np.ones(basis.N, dtype=np.int64)
        glob2int[interior] = np.arange(self.n)
        dofs = torch.tensor(glob2int[basis.element_dofs.T])  # (n_el, nb)
        keep = (dofs[:, :, None] >= 0) & (dofs[:, None, :] >= 0)
        el, a, b = torch.nonzero(keep, as_tuple=True)
        self._el, self._vals = el, local[el, a, b]
        self._flat = dofs[el, a] * self.n + dofs[el, b]
        self.n_el = local.shape[0]
        p, t = self.mesh.p, self.mesh.t
        x1, x2, x3 = (p[:, t[i]] for i in range(3))
        area = 0.5 * np.abs((x2[0] - x1[0]) * (x3[1] - x1[1]) - (x3[0] - x1[0]) * (x2[1] - x1[1]))
        self.area = torch.tensor(area, dtype=DT)
        centroid = (x1 + x2 + x3) / 3
        self.in_sensor = torch.tensor(np.hypot(centroid[0] - 0.5, centroid[1] - 0.5) < SENSOR_RADIUS)

    def mass(self, rho: torch.Tensor) -> torch.Tensor:
        """``M(ρ) = Σ_e ρ_e M_e`` restricted to the interior dofs, (n, n)."""
        flat = torch.zeros(self.n * self.n, dtype=DT).index_add(0, self._flat, self._vals * rho[self._el])
        return flat.reshape(self.n, self.n)

    def density(self, z: torch.Tensor) -> torch.Tensor:
        """Bounded density with the total mass of the uniform membrane (mean 1)."""
        r = 0.2 + 1.8 * torch.sigmoid(z)
        return r * self.area.sum() / (r * self.area).sum()


def eig_eigrad(K, M, k):
    return eigrad.eigsh(K, k, B=M)


def eig_torch(K, M, k):
    """What one writes with torch alone: Cholesky reduction + ``torch.linalg.eigh``."""
    L = torch.linalg.cholesky(M)
    C = torch.linalg.solve_triangular(L, K, upper=False)
    C = torch.linalg.solve_triangular(L, C.mT, upper=False).mT
    w, V = torch.linalg.eigh(0.5 * (C + C.mT))
    X = torch.linalg.solve_triangular(L.mT, V, upper=True)
    return w[:k], X[:, :k]


def terms(mem: Membrane, z, eig=eig_eigrad):
    """Gap ratio (eigenvalues only) and sensor energy (projector) of the design ``z``."""
    rho = mem.density(z)
    lam, X = eig(mem.K, mem.mass(rho), K_MODES)
    upper = -0.05 * torch.logsumexp(-lam[3:] / 0.05, 0)  # smooth min of λ_4..λ_6 (symmetric)
    gap = upper / lam[1:3].mean()  # the pair enters by its mean: uniform cotangent
    MR = mem.mass(rho * mem.in_sensor)  # mass matrix of the sensor patch
    X3 = X[:, :3]
    energy = torch.trace(X3.mT @ MR @ X3) / 3  # tr(P M_R)/3 with P the projector on span X_{1:3}
    return gap, energy, lam


def objective(mem, z, eig=eig_eigrad, weight=2.0):
    gap, energy, _ = terms(mem, z, eig)
    return -torch.log(gap) + weight * energy


def gradient_check(mem: Membrane, z0, h=1e-2, seed=0):
    """Directional derivatives at ``z0`` (along a random unit vector) against finite differences."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(mem.n_el, dtype=DT, generator=g)
    v /= v.norm()
    rows = {}
    for name, fn in [
        ("objective", lambda z, e: objective(mem, z, e)),
        ("eigenvalue part", lambda z, e: -torch.log(terms(mem, z, e)[0])),
        ("projector part", lambda z, e: terms(mem, z, e)[1]),
    ]:
        with torch.no_grad():  # fourth-order central difference
            f = [fn(z0 + s * h * v, eig_eigrad).item() for s in (-2, -1, 1, 2)]
            fd = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h)
        row = {}
        for label, eig in [("eigrad", eig_eigrad), ("torch", eig_torch)]:
            z = z0.clone().requires_grad_(True)
            (gz,) = torch.autograd.grad(fn(z, eig), z)
            d = float(gz @ v)
            row[label] = abs(d - fd) / abs(fd) if math.isfinite(d) else float("nan")
            row[label + "_value"] = d
        row["fd"] = fd
        rows[name] = row
    return rows


def optimize(mem: Membrane, steps: int, lr: float):
    z = torch.zeros(mem.n_el, dtype=DT, requires_grad=True)
    opt = torch.optim.Adam([z], lr=lr)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        gap, energy, lam = terms(mem, z)
        loss = -torch.log(gap) + 2.0 * energy
        loss.backward()
        history.append((gap.item(), energy.item(), (lam[2] - lam[1]).item()))
        opt.step()
    with torch.no_grad():
        gap, energy, lam = terms(mem, z)
    history.append((gap.item(), energy.item(), (lam[2] - lam[1]).item()))
    return z.detach(), np.array(history), lam


def plot(mem, z, history, lam0, lam, path):
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
    it = np.arange(len(history))
    ax[0].plot(it, history[:, 0], "C0", label="gap ratio softmin(λ4..λ6) / mean(λ2, λ3)")
    ax[0].set_xlabel("Adam step")
    ax[0].set_ylabel("gap ratio", color="C0")
    a2 = ax[0].twinx()
    a2.plot(it, history[:, 1], "C3", label="sensor energy e_R")
    a2.set_ylabel("sensor energy e_R (modes 1-3)", color="C3")
    ax[0].set_title("objective history")
    rho = mem.density(z).numpy()
    p, t = mem.mesh.p, mem.mesh.t
    tc = ax[1].tripcolor(p[0], p[1], t.T, facecolors=rho, cmap="viridis", edgecolors="none")
    ax[1].add_patch(plt.Circle((0.5, 0.5), SENSOR_RADIUS, fill=False, ec="w", ls="--"))
    fig.colorbar(tc, ax=ax[1], label="density ρ (mean 1)")
    ax[1].set_aspect("equal")
    ax[1].set_title("optimized density")
    ax[1].set_xlabel("dashed: sensor patch R")
    idx = np.arange(1, K_MODES + 1)
    ax[2].plot(idx, lam0.numpy() / math.pi**2, "o", label="uniform density")
    ax[2].plot(idx, lam.numpy() / math.pi**2, "s", label="optimized")
    ax[2].set_xlabel("mode")
    ax[2].set_ylabel("λ / π²")
    ax[2].set_title("eigenvalues (λ2 = λ3 in both)")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="coarse mesh and few steps (CI)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the plot (default: examples/out)")
    args = parser.parse_args(argv)
    refine, order, steps = (2, 2, 12) if args.fast else (3, 2, 60)
    t0 = time.perf_counter()
    mem = Membrane(refine, order)
    print(f"membrane: P{order} elements, {mem.n_el} elements, n = {mem.n} interior dofs")
    z0 = torch.zeros(mem.n_el, dtype=DT)
    with torch.no_grad():
        lam0, _ = eig_eigrad(mem.K, mem.mass(mem.density(z0)), K_MODES)
    print("uniform density: λ/π² = " + " ".join(f"{x:.4f}" for x in (lam0 / math.pi**2).tolist()))
    print(f"repeated pair: λ3 - λ2 = {(lam0[2] - lam0[1]).item():.1e}")
    print("gradient at the degenerate start, relative error vs central finite differences:")
    rows = gradient_check(mem, z0)
    print(f"  {'':18s} {'eigrad.eigsh':>14s} {'torch.linalg.eigh':>18s}")
    for name, row in rows.items():
        print(f"  {name:18s} {row['eigrad']:14.1e} {row['torch']:18.1e}")
    z, history, lam = optimize(mem, steps, lr=0.3 if args.fast else 0.15)
    rho = mem.density(z)
    mass = float((rho * mem.area).sum() / mem.area.sum())
    print(
        f"optimized ({steps} steps): gap ratio {history[0, 0]:.3f} -> {history[-1, 0]:.3f}, "
        f"sensor energy {history[0, 1]:.3f} -> {history[-1, 1]:.3f}, "
        f"max |λ3 - λ2| {np.abs(history[:, 2]).max():.1e}, mass {mass:.6f}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "fem_membrane.png"
    plot(mem, z, history, lam0, lam.detach(), path)
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    return rows, history


if __name__ == "__main__":
    main()
