"""A grid Hamiltonian with degenerate levels: Hellmann–Feynman, density response, level fitting.

``H = -½∇² + V`` on a periodic cubic box (atomic units), the Laplacian applied
with FFTs, never a matrix: ``eigrad.FunctionOperator(matmat, (V,), shape)``
with ``matmat(X, V) = IFFT(½|G|² FFT(X)) + V X``. A spherical well centred in
the box has the box's cubic symmetry, so its levels are exactly degenerate:
1 (s), 3 (p), 1 (2s), 2 + 3 (d split into e_g and t_2g), ... We take the
``k = 7`` lowest states, which close every cluster.

The example checks three things against independent references:

1. **Hellmann–Feynman**: the gradient of the band energy ``E = Σ_i λ_i`` with
   respect to the potential on the grid is the density ``ρ = Σ_i |ψ_i|²``;
   and along a random ``δV`` it matches finite differences of ``E``.
2. **Density response**: the derivative of ``<w, ρ>`` (a function of the
   occupied eigenspace, gauge invariant) along a random cubic-symmetric
   ``δV`` against central finite differences; this one goes through the
   backward's shifted MINRES solves inside the degenerate clusters.
3. **Inverse problem**: fit the coefficients of ``V = Σ_m c_m g_m`` (radial
   Gaussians, so the symmetry and the degeneracies stay) to the ten target
   levels of a hidden potential, with L-BFGS on gradients from eigrad.

Run ``python examples/planewave.py`` (16³ grid, n = 4096) or ``--fast``
(8³). The plot goes to ``examples/out/planewave.png``.
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
import torch  # noqa: E402

import eigrad  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
DT = torch.float64
K = 7  # 1 + 3 + 1 + 2 (s, p, 2s, e_g): closes every cluster on both grids
#: a block eigensolver (single-vector Lanczos can miss copies of a repeated eigenvalue), with a
#: tight tolerance so that the finite-difference reference is accurate too
SOLVER = eigrad.eigensolvers.LOBPCG(rtol=1e-11)
BOX = 8.0  # bohr
WIDTHS = (0.7, 1.0, 1.5, 2.0)  # radial Gaussians g_m of the potential
C_TRUE = (-2.0, -3.0, 0.5, -1.5)  # the hidden potential whose levels we fit
C_START = (-1.0, -4.0, 0.0, -1.0)


class Grid:
    """A periodic ``N³`` grid on ``[0, BOX)³``: kinetic symbol and the radial basis."""

    def __init__(self, N: int):
        self.N, self.n = N, N**3
        h = BOX / N
        x = torch.arange(N, dtype=DT) * h
        g = 2 * math.pi * torch.fft.fftfreq(N, d=h, dtype=DT)
        self.kinetic = 0.5 * (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)  # (N, N, N)
        c = BOX / 2  # a grid point: the grid is symmetric about it
        r2 = (x[:, None, None] - c) ** 2 + (x[None, :, None] - c) ** 2 + (x[None, None, :] - c) ** 2
        self.basis = torch.stack([torch.exp(-r2 / (2 * s**2)).reshape(-1) for s in WIDTHS])  # (m, n)
        self.dv = h**3

    def matmat(self, X, V):
        """``H X`` for ``X (n, m)``: kinetic by FFT, potential pointwise."""
        m = X.shape[-1]
        P = X.reshape(self.N, self.N, self.N, m)
        T = torch.fft.ifftn(self.kinetic[..., None] * torch.fft.fftn(P, dim=(0, 1, 2)), dim=(0, 1, 2)).real
        return T.reshape(self.n, m) + V[:, None] * X

    def hamiltonian(self, V):
        return eigrad.FunctionOperator(self.matmat, (V,), (self.n, self.n))

    def preconditioner(self, X, shift=1.0):
        """``(T + shift)⁻¹ X``: the kinetic energy inverted in Fourier space (SPD)."""
        m = X.shape[-1]
        P = torch.fft.fftn(X.reshape(self.N, self.N, self.N, m), dim=(0, 1, 2))
        return torch.fft.ifftn(P / (self.kinetic[..., None] + shift), dim=(0, 1, 2)).real.reshape(self.n, m)

    def eigsh(self, V):
        return eigrad.eigsh(self.hamiltonian(V), K, solver=SOLVER, preconditioner=self.preconditioner)

    def potential(self, c):
        return c @ self.basis  # (n,)


def clusters(lam, tol=1e-8):
    """Sizes of runs of equal eigenvalues."""
    sizes, start = [], 0
    for i in range(1, len(lam) + 1):
        if i == len(lam) or abs(lam[i] - lam[i - 1]) > tol * max(1.0, abs(lam[i])):
            sizes.append(i - start)
            start = i
    return sizes


def hellmann_feynman(grid, V, seed=1, h=1e-3):
    """``dE/dV`` of the band energy against the density ``Σ|ψ_i|²`` and against finite differences.

    Returns the largest difference from the density relative to the largest
    density, the relative error of ``<dE/dV, δV>`` against a fourth-order
    central difference of ``E`` along a random ``δV``, the levels, the
    gradient and the density.
    """
    V = V.clone().requires_grad_(True)
    lam, X = grid.eigsh(V)
    lam.sum().backward()
    rho = (X.detach() ** 2).sum(1)
    g = torch.Generator().manual_seed(seed)
    dV = torch.randn(grid.n, dtype=DT, generator=g)  # breaks the symmetry: E stays smooth
    with torch.no_grad():
        E = [grid.eigsh(V + s * h * dV)[0].sum().item() for s in (-2, -1, 1, 2)]
    fd = (E[0] - 8 * E[1] + 8 * E[2] - E[3]) / (12 * h)
    err_fd = abs(float(V.grad @ dV) - fd) / abs(fd)
    return float((V.grad - rho).abs().max() / rho.abs().max()), err_fd, lam.detach(), V.grad, rho


def density_response(grid, V, seed=0, h=1e-4):
    """``d/dt <w, ρ(V + t δV)>`` from eigrad against a fourth-order central difference."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(grid.n, dtype=DT, generator=g)
    dV = torch.randn(len(WIDTHS), dtype=DT, generator=g) @ grid.basis  # cubic-symmetric direction

    def f(v):
        _, X = grid.eigsh(v)
        return w @ (X**2).sum(1)

    Vr = V.clone().requires_grad_(True)
    (gV,) = torch.autograd.grad(f(Vr), Vr)
    d = float(gV @ dV)
    with torch.no_grad():
        vals = [f(V + s * h * dV).item() for s in (-2, -1, 1, 2)]
    fd = (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * h)
    return abs(d - fd) / abs(fd), d, fd


def fit_levels(grid, target, max_iter):
    c = torch.tensor(C_START, dtype=DT, requires_grad=True)
    opt = torch.optim.LBFGS([c], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)
    history = []

    def closure():
        opt.zero_grad()
        lam, _ = grid.eigsh(grid.potential(c))
        # the levels of a cluster are matched to equal targets: a uniform cotangent (MATH.md condition 2)
        loss = ((lam - target) ** 2).mean()
        loss.backward()
        history.append(loss.item())
        return loss

    opt.step(closure)
    with torch.no_grad():
        lam, _ = grid.eigsh(grid.potential(c))
    return c.detach(), lam, np.array(history)


def plot(grid, grad, rho, lam0, lam1, target, history, path):
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
    N = grid.N
    sl = (grad.reshape(N, N, N)[:, :, N // 2]).numpy()
    h = BOX / N
    im = ax[0].imshow(sl.T, origin="lower", extent=(-h / 2, BOX - h / 2, -h / 2, BOX - h / 2), cmap="magma")
    fig.colorbar(im, ax=ax[0], label="∂E/∂V(r) = Σ|ψ_i(r)|²")
    err = float((grad - rho).abs().max() / rho.abs().max())
    ax[0].set_title(f"band-energy gradient on the slice z = L/2\nmax |∂E/∂V - Σ|ψ|²| / max ρ = {err:.0e}")
    ax[0].set_xlabel("x (bohr)")
    ax[0].set_ylabel("y (bohr)")
    for col, (vals, label) in enumerate([(lam0, "start"), (lam1, "fitted"), (target, "target")]):
        for v in vals.tolist():
            ax[1].hlines(v, col - 0.3, col + 0.3, color=f"C{col}")
        start = 0
        for size in clusters(vals.tolist(), 1e-6):
            ax[1].text(col + 0.32, vals[start].item(), f"×{size}", va="center", fontsize=7)
            start += size
    ax[1].set_xticks([0, 1, 2], ["start", "fitted", "target"])
    ax[1].set_ylabel("level (hartree)")
    ax[1].set_title(f"the {K} lowest levels (×: degeneracy)")
    ax[2].semilogy(history, "C0.-")
    ax[2].set_xlabel("L-BFGS function evaluation")
    ax[2].set_ylabel("mean squared level error")
    ax[2].set_title("fitting V to the target levels")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="8³ grid and a short fit (CI)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the plot (default: examples/out)")
    args = parser.parse_args(argv)
    N, max_iter = (8, 10) if args.fast else (16, 25)
    t0 = time.perf_counter()
    grid = Grid(N)
    V0 = grid.potential(torch.tensor(C_START, dtype=DT))
    err, err_fd, lam0, grad, rho = hellmann_feynman(grid, V0)
    print(f"grid: {N}³ periodic, n = {grid.n}, matrix-free H = -½∇² + V (FFT), k = {K}")
    print("levels: " + " ".join(f"{x:.5f}" for x in lam0.tolist()))
    print("degeneracies: " + " ".join(str(s) for s in clusters(lam0.tolist())))
    print(
        f"Hellmann–Feynman: max |dE/dV - Σ|ψ_i|²| / max ρ = {err:.1e}; "
        f"<dE/dV, δV> vs finite differences of E: relative error {err_fd:.1e}"
    )
    rel, d, fd = density_response(grid, V0)
    print(f"density response d<w, ρ>/dt: eigrad {d:.8e}, finite differences {fd:.8e}, relative error {rel:.1e}")
    with torch.no_grad():
        target, _ = grid.eigsh(grid.potential(torch.tensor(C_TRUE, dtype=DT)))
    c, lam1, history = fit_levels(grid, target, max_iter)
    rms0 = float(((lam0 - target) ** 2).mean().sqrt())
    rms1 = float(((lam1 - target) ** 2).mean().sqrt())
    print(
        f"fit: rms level error {rms0:.2e} -> {rms1:.2e} hartree in {len(history)} evaluations; "
        "c = " + ", ".join(f"{x:.3f}" for x in c.tolist())
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "planewave.png"
    plot(grid, grad, rho, lam0, lam1, target, history, path)
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
