"""Hofstadter model: exact derivatives at the q-fold degenerate Landau levels of a magnetic torus.

Electrons hopping on an ``L × L`` square lattice (a torus, ``n = L²`` sites,
hopping ``t = 1``) in a uniform magnetic field with flux ``φ = p/q`` flux
quanta per plaquette pick up Peierls phases ``e^{iA_ij}`` (Landau gauge:
``e^{2πiφx}`` on the vertical bonds, ``e^{-2πiφLy}`` on the horizontal bonds
that cross the seam ``x = L-1 → 0``). Twisting the boundary conditions by
angles ``θ = (θ_x, θ_y)`` (a Bloch k-point of the supercell) multiplies the
bonds that cross the seams by ``e^{iθ_x}``, ``e^{iθ_y}``, and an on-site
potential ``v`` enters the diagonal::

    H(v, θ) = -Σ_<ij> e^{iA_ij(θ)} c_i† c_j + Σ_i v_i c_i† c_i      (complex Hermitian, dense).

At ``φ = 1/3`` the field breaks time reversal: ``H`` is complex and not real
in any gauge. The magnetic translations ``T_x``, ``T_y`` commute with ``H``
but ``T_x T_y = e^{2πiφ} T_y T_x``, so every level is *exactly* ``q``-fold
degenerate, for every twist ``θ`` and every potential with the magnetic
translations' symmetry. We take a random potential on a ``2 × 2`` superlattice
(``T_x² T_y²`` still fails to commute by ``e^{8πi/3}``: the degeneracy stays 3)
and fill the lowest Hofstadter band, ``N = L²/q`` electrons, below a gap.

1. **Gradients against central finite differences** (complex128), at a twist
   ``θ₀`` inside the torus of k-points, through ``eigrad.eigsh(H, N, solver="dense")``, which
   keeps every 3-fold cluster whole:

   - the band energy ``E = Σ_{n<N} λ_n``: ``∂E/∂v_i`` is the density
     ``ρ_i = Σ_{n<N} |ψ_n(i)|²`` (Hellmann–Feynman), and ``∂E/∂θ`` is the
     persistent current;
   - a projector quantity, the weighted density ``Q = Σ_i w_i ρ_i =
     Re tr(W P)`` of the occupied projector ``P = X Xᴴ``, wrt ``v`` and ``θ``;
   - the tangent ``∂P/∂θ_x`` itself (forward mode, ``torch.func.jvp``).

   The same with ``solver="lapack"`` (``hetrd``, MRRR), and through
   ``torch.linalg.eigh``, whose backward divides by the in-cluster gaps
   (rounding, or exactly zero).
2. **The Chern number** of the filled band from the exact projector
   derivatives: the Berry curvature ``Ω(θ) = i tr(P [∂_θx P, ∂_θy P])``
   integrated over the torus of twists, ``C = (1/2π) ∫ Ω d²θ`` (the Hall
   conductance ``σ_xy = C e²/h``, Niu–Thouless–Wu), against the lattice
   formula of Fukui, Hatsugai and Suzuki (which needs no derivatives and is an
   integer by construction) on the same grid of twists.
3. **The phase gauge**: a loss that depends on the phase of an eigenvector
   (``Re ψ_0(0)``) has no derivative; eigrad says so with a ``GaugeWarning``.

The plot shows the Hofstadter butterfly (the spectrum against the flux on a
torus, ``φ = m/L²``, ``v = 0``) with the 3-fold levels of this problem at
``φ = 1/3``, the density ``ρ = ∂E/∂v``, and the Berry curvature over the
twists. Run ``python examples/hofstadter.py`` (``L = 12``, ``n = 144``) or
with ``--fast`` (``L = 6``, for CI); the plot goes to
``examples/out/hofstadter.png``.
"""

from __future__ import annotations

import argparse
import cmath
import math
import textwrap
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.func import jvp  # noqa: E402

import eigrad  # noqa: E402
from eigrad.testing import central_difference, cluster_positions  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
DT, CT = torch.float64, torch.complex128
P_FLUX, Q_FLUX = 1, 3  # φ = p/q flux quanta per plaquette
V_AMPLITUDE = 0.5  # scale of the random 2 × 2 superlattice potential
THETA0 = (0.7, 1.3)  # the twist (k-point) of the gradient checks


class Lattice:
    """The ``L × L`` magnetic torus; site ``(x, y)`` is index ``x L + y``."""

    def __init__(self, L: int, phi: float):
        self.L, self.n, self.phi = L, L * L, phi
        x = torch.arange(L).repeat_interleave(L)
        y = torch.arange(L).repeat(L)
        self.x, self.y = x, y
        self.site = x * L + y
        self.right = ((x + 1) % L) * L + y  # (x+1, y)
        self.up = x * L + (y + 1) % L  # (x, y+1)
        self.seam_x = (x == L - 1).to(DT)
        self.seam_y = (y == L - 1).to(DT)
        # Landau gauge: every plaquette carries 2πφ (the seam plaquettes too when φ L² is an integer)
        self.ax = -2 * math.pi * phi * L * y.to(DT) * self.seam_x
        self.ay = 2 * math.pi * phi * x.to(DT)

    def H(self, v, theta):
        """Dense complex Hermitian ``H(v, θ)``; differentiable in the real ``v`` (n,) and ``θ`` (2,)."""
        phase_x = self.ax + theta[0] * self.seam_x
        phase_y = self.ay + theta[1] * self.seam_y
        T = torch.zeros(self.n, self.n, dtype=CT)
        T = T.index_put((self.right, self.site), -torch.exp(1j * phase_x.to(CT)), accumulate=True)
        T = T.index_put((self.up, self.site), -torch.exp(1j * phase_y.to(CT)), accumulate=True)
        return T + T.mH + torch.diag(v.to(CT))

    def superlattice(self, values):
        """The potential ``v_i = values[x mod 2, y mod 2]``."""
        return values[self.x % 2, self.y % 2]


class Observables:
    """Band energy and projector quantities of the ``N`` lowest states, through eigrad or torch."""

    def __init__(self, lat: Lattice, N: int, w, solver: str = "dense"):
        self.lat, self.N, self.w, self.solver = lat, N, w, solver

    def states(self, v, theta, lib="eigrad"):
        H = self.lat.H(v, theta)
        if lib == "eigrad":
            res = eigrad.eigsh(H, self.N, solver=self.solver)
            return res.eigenvalues, res.eigenvectors
        lam, X = torch.linalg.eigh(H)
        return lam[: self.N], X[:, : self.N]

    def energy(self, v, theta, lib="eigrad"):
        return self.states(v, theta, lib)[0].sum()

    def density(self, v, theta, lib="eigrad"):
        X = self.states(v, theta, lib)[1]
        return (X.abs() ** 2).sum(-1)  # diag(P): a function of the projector of whole clusters

    def weighted_density(self, v, theta, lib="eigrad"):
        return self.density(v, theta, lib) @ self.w  # Re tr(W P), W = diag(w)

    def projector(self, v, theta, lib="eigrad"):
        X = self.states(v, theta, lib)[1]
        return X @ X.mH


def rel(x, ref):
    e = float(torch.as_tensor(x - ref).abs().max() / torch.as_tensor(ref).abs().max())
    return e if math.isfinite(e) else float("nan")


def gradient_checks(obs: Observables, v0, theta0, dv):
    """Rows ``(name, eigrad, finite differences, torch.linalg.eigh)`` of directional derivatives."""
    rows = []
    for qname, f in (("E", obs.energy), ("Q", obs.weighted_density)):
        v = v0.clone().requires_grad_(True)
        th = theta0.clone().requires_grad_(True)
        gv, gth = torch.autograd.grad(f(v, th), (v, th))
        vt = v0.clone().requires_grad_(True)
        tt = theta0.clone().requires_grad_(True)
        try:
            tv, tth = torch.autograd.grad(f(vt, tt, "torch"), (vt, tt))
            torch_vals = [float(tv @ dv), float(tth[0]), float(tth[1])]
        except RuntimeError as exc:  # torch refuses some complex backward passes
            torch_vals = [f"RuntimeError: {str(exc).splitlines()[0][:60]}"] * 3
        fd_v = float(central_difference(lambda s: f(v0 + s * dv, theta0), (torch.zeros((), dtype=DT),),
                                        (torch.ones((), dtype=DT),), h=1e-3))
        fd_th = [float(central_difference(lambda s, j=j: f(v0, theta0 + s * torch.eye(2, dtype=DT)[j]),
                                          (torch.zeros((), dtype=DT),), (torch.ones((), dtype=DT),), h=1e-3))
                 for j in range(2)]
        rows.append((f"d{qname}/dv · δv", float(gv @ dv), fd_v, torch_vals[0]))
        rows.append((f"d{qname}/dθx", float(gth[0]), fd_th[0], torch_vals[1]))
        rows.append((f"d{qname}/dθy", float(gth[1]), fd_th[1], torch_vals[2]))
    return rows


def projector_tangent(obs: Observables, v0, theta, lib="eigrad"):
    """``∂P/∂θ_x`` and ``∂P/∂θ_y`` by forward mode (``torch.func.jvp`` of ``θ ↦ P(θ)``)."""
    f = lambda th: obs.projector(v0, th, lib)  # noqa: E731
    P, dPx = jvp(f, (theta,), (torch.tensor([1.0, 0.0], dtype=DT),))
    _, dPy = jvp(f, (theta,), (torch.tensor([0.0, 1.0], dtype=DT),))
    return P, dPx, dPy


def chern(obs: Observables, v0, M: int):
    """Berry curvature on an ``M × M`` grid of twists (eigrad's exact ∂P) and the two Chern numbers."""
    grid = 2 * math.pi * torch.arange(M, dtype=DT) / M
    omega = torch.empty(M, M, dtype=DT)
    X = [[None] * M for _ in range(M)]
    for a in range(M):
        for b in range(M):
            theta = torch.stack([grid[a], grid[b]])
            P, dPx, dPy = projector_tangent(obs, v0, theta)
            omega[a, b] = (1j * torch.trace(P @ (dPx @ dPy - dPy @ dPx))).real
            with torch.no_grad():
                X[a][b] = obs.states(v0, theta)[1]
    c_kubo = float(omega.sum()) * (2 * math.pi / M) ** 2 / (2 * math.pi)  # trapezoid rule: periodic integrand

    def link(A, B):
        d = torch.linalg.det(A.mH @ B)
        return d / d.abs()

    flux = torch.empty(M, M, dtype=DT)  # Fukui–Hatsugai–Suzuki: gauge-invariant plaquette phases
    for a in range(M):
        for b in range(M):
            a1, b1 = (a + 1) % M, (b + 1) % M  # H(θ + 2π) = H(θ): the grid closes on itself
            u = link(X[a][b], X[a1][b]) * link(X[a1][b], X[a1][b1]) / link(X[a][b1], X[a1][b1]) / link(X[a][b], X[a][b1])
            flux[a, b] = torch.angle(u)
    c_fhs = -float(flux.sum()) / (2 * math.pi)  # arg ⟨u(θ)|u(θ+δ)⟩ ≈ -A·δ: the opposite sign of Ω
    return omega, c_kubo, c_fhs


def tknn_chern(p: int, q: int, r: int = 1) -> int:
    """Chern number sum of the ``r`` lowest bands from the Diophantine equation ``r = q s + p t``, ``|t| <= q/2``."""
    for t in range(-(q // 2), q // 2 + 1):
        if (r - p * t) % q == 0:
            return t
    raise ValueError(f"no solution for p={p}, q={q}, r={r}")


def gauge_demo(obs: Observables, v0, theta0):
    """GaugeWarnings of a valid loss (``Q``) and of ``Re ψ_0(0)``, which depends on the phase of
    ``ψ_0`` and, inside its 3-fold cluster, on the basis: the messages of the second."""
    counts, msgs = [], []
    for loss_of in (lambda X: (X.abs() ** 2).sum(-1) @ obs.w,
                    lambda X: (X[0, 0] * cmath.exp(0.3j)).real):  # e^0.3i: not LAPACK's phase (real x_0[0])
        v = v0.clone().requires_grad_(True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", eigrad.GaugeWarning)
            loss_of(obs.states(v, theta0)[1]).backward()
        msgs = [str(w.message) for w in caught if issubclass(w.category, eigrad.GaugeWarning)]
        counts.append(len(msgs))
    return counts, msgs


def butterfly(L: int):
    """Spectra of the torus at every flux ``φ = m/L²`` (v = 0, no twist), 0 <= φ <= 1/2."""
    out = []
    for m in range(L * L // 2 + 1):
        lat = Lattice(L, m / (L * L))
        with torch.no_grad():
            lam = torch.linalg.eigvalsh(lat.H(torch.zeros(lat.n, dtype=DT), torch.zeros(2, dtype=DT)))
        out.append((m / (L * L), lam.numpy()))
    return out


def plot(path, bfly, lam_phi, N, lat, rho, omega, c_kubo, c_fhs):
    fig, ax = plt.subplots(1, 3, figsize=(16, 5), layout="constrained")
    for phi, lam in bfly:
        for x in (phi, 1 - phi):
            ax[0].plot(np.full(lam.shape, x), lam, ".", ms=0.5, color="k", alpha=0.4)
    lam_phi = lam_phi.numpy()
    clusters = cluster_positions(lam_phi / max(1.0, float(np.abs(lam_phi).max())), 1e-10)
    for c in clusters:
        occ = c[0] < N
        ax[0].plot([P_FLUX / Q_FLUX], [lam_phi[c[0]]], "_", ms=14, mew=1.5, color="C0" if occ else "C3",
                   label=None)
    ax[0].plot([], [], "_", ms=14, mew=1.5, color="C0", label=f"φ = 1/3 with v: occupied (each ×{Q_FLUX})")
    ax[0].plot([], [], "_", ms=14, mew=1.5, color="C3", label=f"φ = 1/3 with v: empty (each ×{Q_FLUX})")
    ax[0].hlines((lam_phi[N - 1] + lam_phi[N]) / 2, 0.25, 0.42, color="C2", lw=1, ls="--", label="Fermi level (in the gap)")
    ax[0].set_xlabel("flux per plaquette φ")
    ax[0].set_ylabel("energy / t")
    ax[0].set_title("Hofstadter butterfly on a torus (v = 0)")
    ax[0].legend(fontsize=8, loc="lower center")

    im = ax[1].imshow(rho.reshape(lat.L, lat.L).T.numpy(), origin="lower", cmap="viridis")
    fig.colorbar(im, ax=ax[1], shrink=0.8)
    ax[1].set_xlabel("x")
    ax[1].set_ylabel("y")
    ax[1].set_title("∂E/∂v_i = density ρ_i (eigrad, at the 3-fold levels)")

    M = omega.shape[0]
    im = ax[2].imshow(omega.T.numpy(), origin="lower", cmap="magma", extent=(0, 2 * math.pi, 0, 2 * math.pi))
    fig.colorbar(im, ax=ax[2], shrink=0.8)
    ax[2].set_xlabel("twist θx")
    ax[2].set_ylabel("twist θy")
    ax[2].set_title(f"Berry curvature i tr(P[∂xP, ∂yP]), {M}×{M} twists\n"
                    f"C = {c_kubo:.6f} (eigrad), {c_fhs:.0f} (Fukui–Hatsugai–Suzuki)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="small torus and twist grid (CI)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the plot (default: examples/out)")
    args = parser.parse_args(argv)
    L, M, Lb = (6, 6, 12) if args.fast else (12, 10, 18)
    t0 = time.perf_counter()
    phi = P_FLUX / Q_FLUX
    lat = Lattice(L, phi)
    N = lat.n // Q_FLUX
    gen = torch.Generator().manual_seed(0)
    v0 = lat.superlattice(V_AMPLITUDE * torch.randn(2, 2, dtype=DT, generator=gen))
    w = torch.rand(lat.n, dtype=DT, generator=gen)
    dv = torch.randn(lat.n, dtype=DT, generator=gen)
    theta0 = torch.tensor(THETA0, dtype=DT)
    obs = Observables(lat, N, w)
    H0 = lat.H(v0, theta0)
    print(f"torus {L} x {L} (n = {lat.n}), flux φ = {P_FLUX}/{Q_FLUX}, 2x2 superlattice potential, "
          f"twist θ = ({THETA0[0]}, {THETA0[1]}); N = {N} electrons fill the lowest band")
    print(f"H is complex: max |Im H| = {float(H0.imag.abs().max()):.3f}, "
          f"max |H - Hᴴ| = {float((H0 - H0.mH).abs().max()):.1e}")
    with torch.no_grad():
        lam = torch.linalg.eigvalsh(H0)
    groups = lam[:N].reshape(-1, Q_FLUX)
    spread = float((groups[:, -1] - groups[:, 0]).max())
    between = float((groups[1:, 0] - groups[:-1, -1]).min())
    print(f"degeneracy: the {N} occupied levels form {N // Q_FLUX} clusters of {Q_FLUX}, "
          f"max in-cluster spread {spread:.1e}, min gap between clusters {between:.3f}, "
          f"gap above the band {float(lam[N] - lam[N - 1]):.3f}")

    rho_hf = obs.density(v0, theta0, "torch").detach()  # Hellmann–Feynman: Σ_occ |ψ_n(i)|²
    v = v0.clone().requires_grad_(True)
    (gE,) = torch.autograd.grad(obs.energy(v, theta0), v)
    print(f"Hellmann–Feynman: max |dE/dv - Σ_occ |ψ_n|²| = {float((gE - rho_hf).abs().max()):.1e} "
          f"(density {float(rho_hf.min()):.4f} .. {float(rho_hf.max()):.4f}, sum {float(rho_hf.sum()):.6f})")

    rows = gradient_checks(obs, v0, theta0, dv)
    print("directional derivatives (Q = Σ_i w_i ρ_i), eigrad vs central finite differences (h = 1e-3, 5 points):")
    print(f"  {'':16s} {'eigrad':>16s} {'finite diff.':>16s} {'rel. error':>10s}")
    for name, ge, fd, _ in rows:
        print(f"  {name:16s} {ge:16.9e} {fd:16.9e} {abs(ge - fd) / abs(fd):10.1e}")
    for name, ge, fd, tv in rows:
        if isinstance(tv, str):
            print(f"torch.linalg.eigh: {name} {tv}")
        else:
            err = abs(tv - fd) / abs(fd)
            print(f"torch.linalg.eigh: {name} = {tv:.6e} (relative error {err if math.isfinite(err) else float('nan'):.1e})")

    lapack = Observables(lat, N, w, solver="lapack")
    diff = 0.0
    for qname, f in (("E", lapack.energy), ("Q", lapack.weighted_density)):
        v = v0.clone().requires_grad_(True)
        th = theta0.clone().requires_grad_(True)
        gv, gth = torch.autograd.grad(f(v, th), (v, th))
        ref = {r[0]: r[1] for r in rows}
        for name, val in ((f"d{qname}/dv · δv", float(gv @ dv)), (f"d{qname}/dθx", float(gth[0])),
                          (f"d{qname}/dθy", float(gth[1]))):
            diff = max(diff, abs(val - ref[name]) / abs(ref[name]))
    print(f"solver='lapack' (hetrd, MRRR) vs solver='dense': max relative difference of the six derivatives {diff:.1e}")

    P, dPx, _ = projector_tangent(obs, v0, theta0)
    fd_P = central_difference(lambda s: obs.projector(v0, theta0 + s * torch.tensor([1.0, 0.0], dtype=DT)),
                              (torch.zeros((), dtype=DT),), (torch.ones((), dtype=DT),), h=1e-3)
    print(f"projector tangent ∂P/∂θx (torch.func.jvp through eigrad) vs finite differences: "
          f"relative error {rel(dPx, fd_P):.1e}")
    try:
        _, dPx_t, _ = projector_tangent(obs, v0, theta0, "torch")
        print(f"torch.linalg.eigh: ∂P/∂θx relative error {rel(dPx_t, fd_P):.1e}")
    except RuntimeError as exc:
        print(f"torch.linalg.eigh: ∂P/∂θx RuntimeError: {str(exc).splitlines()[0][:80]}")

    t1 = time.perf_counter()
    omega, c_kubo, c_fhs = chern(obs, v0, M)
    print(f"Chern number of the filled band on {M} x {M} twists: C = {c_kubo:.8f} from eigrad's ∂P "
          f"(|C - round(C)| = {abs(c_kubo - round(c_kubo)):.1e}; Berry curvature {float(omega.min()):.4f} .. "
          f"{float(omega.max()):.4f}), "
          f"C = {c_fhs:.8f} Fukui–Hatsugai–Suzuki, "
          f"TKNN Diophantine |C| = {abs(tknn_chern(P_FLUX, Q_FLUX))} ({time.perf_counter() - t1:.1f} s)")

    (n_valid, n_phase), msgs = gauge_demo(obs, v0, theta0)
    print(f"GaugeWarnings: valid loss Q {n_valid}; phase-dependent loss Re(e^0.3i ψ_0(0)) {n_phase}:")
    for msg in msgs[:1]:
        end = msg.find("has no derivative.")
        head = msg[: end + len("has no derivative.")] if end >= 0 else msg
        print(textwrap.fill(head, width=110, initial_indent="  ", subsequent_indent="  ") + " ...")

    bfly = butterfly(Lb)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "hofstadter.png"
    plot(path, bfly, lam, N, lat, gE.detach(), omega, c_kubo, c_fhs)
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    return rows, c_kubo, c_fhs


if __name__ == "__main__":
    main()
