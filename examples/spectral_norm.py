"""Spectral-norm regularization of a linear layer: eigrad vs an unrolled power iteration.

The spectral norm of a weight ``W (m, n)`` is ``σ_max(W) = sqrt(λ_max(WᵀW))``.
eigrad computes ``λ_max`` matrix-free, ``WᵀW`` never formed:
``eigrad.FunctionOperator(lambda X, W: Wᵀ(W X), (W,), (n, n))`` with
``eigsh(..., 1, largest=True)``, and its gradient ``∂λ_max/∂W = 2 W v vᵀ``
comes from one vector-Jacobian product of that product.

The common alternative (spectral normalization, Miyato et al. 2018) runs
``T`` power iterations and backpropagates through them. Its gradient is only
as accurate as the iteration has converged, at the rate ``(σ_2/σ_1)^{2T}``,
and it costs ``T`` products forward and backward.

1. **Gradient accuracy** at a random layer, against the closed form from an
   SVD: relative error of eigrad and of the unrolled power iteration for
   several ``T``, with their times.
2. **Training**: a regression ``min ‖A W - Y‖² / N + β σ_max(W)²`` by Adam
   (cosine-decayed step) on gradients from eigrad and from one power
   iteration per step, ``T = 1``, started either from a fresh random vector
   or from the previous step's vector (what spectral normalization does). We
   compare the objective they reach, evaluated with the exact ``σ_max``.
   At the optimum the two largest singular values meet (a kink of
   ``σ_max``, typical of this regularizer): the gradient of ``λ_max`` does
   not exist there, and Adam converges to the kink as a subgradient method
   would. Were the two to coincide within the degeneracy tolerance, eigrad
   would say so with a :class:`eigrad.GaugeWarning`.

Run ``python examples/spectral_norm.py`` or with ``--fast`` (CI). The plot
goes to ``examples/out/spectral_norm.png``.
"""

from __future__ import annotations

import argparse
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


def gram(X, W):
    """``WᵀW X`` without forming ``WᵀW``."""
    return W.mT @ (W @ X)


def lam_max_eigrad(W):
    n = W.shape[-1]
    lam, _ = eigrad.eigsh(eigrad.FunctionOperator(gram, (W,), (n, n)), 1, largest=True)
    return lam[0]


def lam_max_power(W, T, v0):
    """Unrolled power iteration on ``WᵀW`` from ``v0``: Rayleigh quotient after ``T`` steps."""
    v = v0
    for _ in range(T):
        v = gram(v, W)
        v = v / v.norm()
    return v @ gram(v, W), v.detach()


def gradient_accuracy(m, n, Ts, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, n, dtype=DT, generator=g) / np.sqrt(m)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    exact = 2 * S[0] * torch.outer(U[:, 0], Vh[0])  # ∂σ_1²/∂W = 2 σ_1 u_1 v_1ᵀ
    rows = []

    def timed(fn):
        Wr = W.clone().requires_grad_(True)
        torch.autograd.grad(fn(Wr), Wr)  # warm-up (first-call imports)
        t = time.perf_counter()
        (gW,) = torch.autograd.grad(fn(Wr), Wr)
        return float((gW - exact).norm() / exact.norm()), time.perf_counter() - t

    rows.append(("eigrad",) + timed(lam_max_eigrad))
    v0 = torch.randn(n, dtype=DT, generator=g)
    v0 /= v0.norm()
    for T in Ts:
        rows.append((f"power T={T}",) + timed(lambda Wr: lam_max_power(Wr, T, v0)[0]))
    return rows, float(S[1] / S[0])


def make_regression(m, n, N, seed=1):
    """Inputs ``A (N, m)``, targets ``Y = A W* + noise`` with ``σ(W*)`` = 3.0, 2.0, then < 1."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, m, dtype=DT, generator=g)
    U, _ = torch.linalg.qr(torch.randn(m, n, dtype=DT, generator=g))
    V, _ = torch.linalg.qr(torch.randn(n, n, dtype=DT, generator=g))
    s = torch.rand(n, dtype=DT, generator=g)
    s[:2] = torch.tensor([3.0, 2.0], dtype=DT)
    W_true = U @ torch.diag(s) @ V.mT
    Y = A @ W_true + 0.1 * torch.randn(N, n, dtype=DT, generator=g)
    return A, Y


def train(A, Y, method, steps, beta, lr=0.05, seed=2):
    g = torch.Generator().manual_seed(seed)
    m, n = A.shape[1], Y.shape[1]
    W = torch.zeros(m, n, dtype=DT).requires_grad_(True)
    with torch.no_grad():
        W += 0.01 * torch.randn(m, n, dtype=DT, generator=g)
    opt = torch.optim.Adam([W], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    v = torch.randn(n, dtype=DT, generator=g)
    hist = []
    for _ in range(steps):
        opt.zero_grad()
        fit = ((A @ W - Y) ** 2).sum() / len(A)
        if method == "eigrad":
            pen = lam_max_eigrad(W)
        else:
            v0 = v if method == "power, kept vector" else torch.randn(n, dtype=DT, generator=g)
            pen, v = lam_max_power(W, 1, v0 / v0.norm())
        (fit + beta * pen).backward()
        with torch.no_grad():
            s1, s2 = torch.linalg.svdvals(W)[:2]
            hist.append(((fit + beta * s1**2).item(), s1.item(), s2.item()))
        opt.step()
        sched.step()
    return np.array(hist)


def plot(rows, runs, path):
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    Ts = [int(name.split("=")[1]) for name, *_ in rows[1:]]
    ax[0].loglog(Ts, [max(err, 1e-17) for _, err, _ in rows[1:]], "C3o-", label="unrolled power iteration")
    ax[0].axhline(max(rows[0][1], 1e-17), color="C0", label="eigrad.eigsh (matrix-free)")
    ax[0].set_xlabel("power iterations T")
    ax[0].set_ylabel("relative error of ∂σ_max²/∂W")
    ax[0].set_title("gradient accuracy vs the SVD closed form")
    ax[0].legend()
    for i, (name, hist) in enumerate(runs.items()):
        ax[1].semilogy(hist[:, 0], f"C{i}", label=name)
    ax[1].set_xlabel("Adam step")
    ax[1].set_ylabel("objective with the exact σ_max")
    ax[1].set_title("regularized regression")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="smaller layer and fewer steps (CI)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the plot (default: examples/out)")
    args = parser.parse_args(argv)
    (m, n), steps = ((160, 120), 40) if args.fast else ((400, 300), 150)
    t0 = time.perf_counter()
    rows, ratio = gradient_accuracy(m, n, [1, 3, 10, 30, 100, 300])
    print(f"layer W: {m} x {n}, σ_2/σ_1 = {ratio:.4f}")
    print("gradient of σ_max² vs the SVD closed form 2 σ_1 u_1 v_1ᵀ:")
    for name, err, sec in rows:
        print(f"  {name:14s} relative error {err:.1e}   {1e3 * sec:7.1f} ms")
    A, Y = make_regression(m // 2, n // 2, 4 * m)
    runs = {}
    for method in ["eigrad", "power, fresh vector", "power, kept vector"]:
        runs[method] = train(A, Y, method, steps, beta=0.5)
    best = min(h[:, 0].min() for h in runs.values())
    for method, hist in runs.items():
        print(
            f"training with {method:20s}: objective {hist[-1, 0]:.5f} (best seen {best:.5f}), "
            f"σ_1 {hist[-1, 1]:.4f}, σ_2 {hist[-1, 2]:.4f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "spectral_norm.png"
    plot(rows, runs, path)
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
