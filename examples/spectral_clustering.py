"""Learning a feature metric for spectral clustering through the eigenspace projector.

Points carry four features: two informative ones with three blobs (the
target partition) and two distractors with two well separated blobs. A
Gaussian-kernel graph ``W_ij = exp(-Σ_f s_f (x_if - x_jf)²)`` with equal
feature scales ``s_f`` follows the distractors: its normalized Laplacian
``L = I - D^{-1/2} W D^{-1/2}`` has three near-zero eigenvalues (weakly
connected components), but the wrong ones.

We learn the scales ``s = exp(a)`` (Bach & Jordan, "Learning spectral
clustering") with two losses on the ``k = 3`` smallest eigenvectors ``X``
from ``eigrad.eigsh``:

* the **projector** loss ``‖X Xᵀ - P*‖²_F / 2k``, with ``P*`` the projector on
  the degree-weighted cluster indicators ``D^{1/2} 1_c``: it depends on the
  eigenspace only (gauge invariant), so its derivative exists even where the
  eigenvalues are (near-)degenerate;
* a **raw-eigenvector** loss ``‖X - T‖²_F / 2k`` matching each eigenvector to
  one indicator: it depends on the basis eigsh happens to return inside the
  near-null space. Its gradient carries ``1/(λ_i - λ_j)`` factors that blow
  up as the components separate, and at degeneracy eigrad reports it with a
  :class:`eigrad.GaugeWarning` (counted here).

Run ``python examples/spectral_clustering.py`` or with ``--fast`` (CI). The
plot goes to ``examples/out/spectral_clustering.png``.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import eigrad  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
DT = torch.float64
K = 3


def make_data(n_per: int, seed: int = 0):
    """Features ``(n, 4)`` and target labels ``(n,)``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(K), n_per)
    angles = 2 * np.pi * np.arange(K) / K
    centers = 2.5 * np.stack([np.cos(angles), np.sin(angles)], 1)
    informative = centers[labels] + 0.5 * rng.standard_normal((K * n_per, 2))
    side = rng.integers(0, 2, K * n_per)  # distractor partition, independent of the labels
    distractor = np.stack([6.0 * side - 3.0, np.zeros(K * n_per)], 1) + 0.5 * rng.standard_normal((K * n_per, 2))
    feats = np.concatenate([informative, distractor], 1)
    return torch.tensor(feats, dtype=DT), torch.tensor(labels)


def laplacian(feats, a):
    """Normalized Laplacian ``(n, n)`` and degrees ``(n,)`` for feature scales ``exp(a)``."""
    d2 = ((feats[:, None, :] - feats[None, :, :]) ** 2 * torch.exp(a)).sum(-1)  # (n, n)
    W = torch.exp(-d2) * (1 - torch.eye(len(feats), dtype=DT))
    deg = W.sum(1)
    s = deg.rsqrt()
    return torch.eye(len(feats), dtype=DT) - s[:, None] * W * s[None, :], deg


def indicators(deg, labels):
    """Orthonormal degree-weighted cluster indicators ``T = D^{1/2} 1_c / ‖·‖``, (n, k)."""
    T = torch.zeros(len(deg), K, dtype=DT)
    T[torch.arange(len(deg)), labels] = deg.sqrt()
    return T / T.norm(dim=0)


def spectrum(feats, a):
    L, deg = laplacian(feats, a)
    lam, X = eigrad.eigsh(L, K)
    return lam, X, deg


def projector_loss(feats, labels, a):
    lam, X, deg = spectrum(feats, a)
    T = indicators(deg, labels)
    return ((X @ X.mT - T @ T.mT) ** 2).sum() / (2 * K), lam


def raw_loss(feats, labels, a):
    lam, X, deg = spectrum(feats, a)
    T = indicators(deg, labels)
    return ((X - T) ** 2).sum() / (2 * K), lam


def train(loss_fn, feats, labels, steps, lr=0.1):
    """Adam on the log-scales; records the loss, the projector distance and GaugeWarnings."""
    a = torch.full((feats.shape[1],), float(np.log(0.5)), dtype=DT, requires_grad=True)
    opt = torch.optim.Adam([a], lr=lr)
    hist, warned = [], []  # hist rows: loss, projector distance, gradient norm
    for _ in range(steps):
        opt.zero_grad()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", eigrad.GaugeWarning)
            loss, _ = loss_fn(feats, labels, a)
            loss.backward()
        warned.append(sum(issubclass(w.category, eigrad.GaugeWarning) for w in caught))
        with torch.no_grad():
            dist = projector_loss(feats, labels, a)[0] if loss_fn is not projector_loss else loss
        hist.append((loss.item(), dist.item(), a.grad.norm().item()))
        opt.step()
    return a.detach(), np.array(hist), np.array(warned)


def kmeans_labels(X, seed=0, restarts=10, iters=50):
    """Lloyd's k-means on the row-normalized embedding (Ng, Jordan & Weiss)."""
    Y = X / X.norm(dim=1, keepdim=True)
    Y = Y.numpy()
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(restarts):
        C = Y[rng.choice(len(Y), K, replace=False)]
        for _ in range(iters):
            lab = ((Y[:, None] - C[None]) ** 2).sum(-1).argmin(1)
            C = np.stack([Y[lab == c].mean(0) if (lab == c).any() else C[c] for c in range(K)])
        cost = ((Y - C[lab]) ** 2).sum()
        if cost < best_cost:
            best, best_cost = lab, cost
    return best


def accuracy(pred, labels):
    labels = labels.numpy()
    return max(np.mean(np.array(p)[pred] == labels) for p in itertools.permutations(range(K)))


def plot(feats, labels, runs, pred0, pred1, path):
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
    for name, (hist, warned), c in [
        ("projector loss ‖XXᵀ - P*‖²", runs["projector"], "C0"),
        ("raw-eigenvector loss ‖X - T‖²", runs["raw"], "C3"),
    ]:
        it = np.arange(len(hist))
        ax[0].semilogy(it, hist[:, 0], c, label=name)
        ax[0].semilogy(it[warned > 0], hist[warned > 0, 0], "x", color=c, ms=5)
    ax[0].semilogy(np.arange(len(runs["raw"][0])), runs["raw"][0][:, 1], "C3--", lw=1,
                   label="projector distance of the raw run")
    ax[0].set_xlabel("Adam step")
    ax[0].set_title("training (x: step with a GaugeWarning)")
    ax[0].legend(fontsize=8)
    f = feats.numpy()
    for axis, pred, title in [(ax[1], pred0, "initial metric"), (ax[2], pred1, "learned metric (projector loss)")]:
        axis.scatter(f[:, 0], f[:, 1], c=pred, cmap="brg", s=18, vmin=0, vmax=K - 1)
        axis.set_title(f"spectral clustering, {title}\naccuracy {accuracy(pred, labels):.2f}")
        axis.set_xlabel("informative feature 1")
        axis.set_ylabel("informative feature 2")
        axis.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(lam):
    return ", ".join(f"{x:.1e}" for x in lam.tolist())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer points and steps (CI)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the plot (default: examples/out)")
    args = parser.parse_args(argv)
    n_per, steps = (20, 40) if args.fast else (40, 150)
    t0 = time.perf_counter()
    feats, labels = make_data(n_per)
    a0 = torch.full((feats.shape[1],), float(np.log(0.5)), dtype=DT)
    with torch.no_grad():
        lam0, X0, _ = spectrum(feats, a0)
        lam4 = torch.linalg.eigvalsh(laplacian(feats, a0)[0])[K]
    pred0 = kmeans_labels(X0)
    print(f"graph: {len(feats)} points, 4 features (2 informative, 2 distractors), k = {K}")
    print(f"initial metric: λ_1..3 = {fmt(lam0)} (λ_4 = {lam4:.1e}), accuracy {accuracy(pred0, labels):.2f}")
    runs, results = {}, {}
    for name, fn in [("projector", projector_loss), ("raw", raw_loss)]:
        a, hist, warned = train(fn, feats, labels, steps)
        with torch.no_grad():
            lam, X, _ = spectrum(feats, a)
        pred = kmeans_labels(X)
        runs[name] = (hist, warned)
        ups = int((np.diff(hist[:, 0]) > 1e-3 * hist[:-1, 0]).sum())
        results[name] = dict(
            a=a, pred=pred, acc=accuracy(pred, labels), warnings=int(warned.sum()), ups=ups,
            loss=hist[-1, 0], distance=hist[-1, 1],
        )
        print(
            f"{name:9s} loss: {hist[0, 0]:.2e} -> {hist[-1, 0]:.2e} in {steps} steps, "
            f"increased on {ups} steps, "
            f"{int(warned.sum())} GaugeWarnings, "
            f"projector distance {hist[-1, 1]:.2e}, accuracy {results[name]['acc']:.2f}, "
            f"λ_1..3 = {fmt(lam)}"
        )
    print("learned feature scales (projector loss): " + ", ".join(f"{x:.3f}" for x in results["projector"]["a"].exp()))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "spectral_clustering.png"
    plot(feats, labels, runs, pred0, results["projector"]["pred"], path)
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    return results


if __name__ == "__main__":
    main()
