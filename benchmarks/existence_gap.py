"""Error of each backward term at a split pair, by gap (the table in docs/guide.md, "Nearly equal eigenvalues").

Decides when a non-uniform eigenvalue cotangent on a merged cluster is a real
problem. Problem: ``A = fl(Q diag(λ) Qᵀ)`` with ``λ = [0.5, 0.5 + δ, 0.6, 0.7,
0.8, 1]`` (``‖A‖ = 1``, so ``δ`` is the gap relative to the matrix), ``Q`` a
random orthogonal matrix, five seeds. Reference: the exact eigenpairs of the
rounded matrix ``A`` itself, from ``mpmath.eigsy`` at 50 digits, and the
closed-form gradients of distinct eigenvalues built from them. Printed, as
``‖G - G_ref‖_F / ‖G_ref‖_F`` (the worst seed):

* ``λ0``: the eigenvalue term, ``∂λ_0/∂A = x_0 x_0ᵀ`` (what eigrad returns
  whether or not the pair is merged: an eigenvalue-only cotangent has no
  coupling term);
* ``λ0 + 3 λ1``: the eigenvalue term with unequal weights on the pair;
* ``tr(W P)``, ``P = x_0 x_0ᵀ + x_1 x_1ᵀ``: a basis-invariant eigenvector loss
  on the pair, with the pair merged (eigrad's default) and with the exact
  ``1/(λ_i - λ_j)`` coupling (``degen_atol = degen_rtol = 0`` and the
  near-degenerate mask of ``eigrad.autodiff._second_order`` patched off);
* ``x_0ᵀ W x_0``: a basis-dependent eigenvector loss on the pair (its
  derivative exists at ``δ > 0`` and grows like ``1/δ``), merged and coupled.

    python benchmarks/existence_gap.py
"""

from __future__ import annotations

import mpmath
import torch

import eigrad
import eigrad.autodiff._dense_function as _dense_function

GAPS = [10.0 ** (-e) for e in range(4, 15)]
SEEDS = range(5)
N = 6
mpmath.mp.dps = 50
EXACT = eigrad.BackwardOptions(degen_atol=0.0, degen_rtol=0.0, gauge="ignore")
MERGED = eigrad.BackwardOptions(gauge="ignore")


def _problem(gap, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    lam = torch.tensor([0.5, 0.5 + gap, 0.6, 0.7, 0.8, 1.0], dtype=torch.float64)
    A = ((Q * lam) @ Q.T).to(dtype)
    A = (A + A.T) / 2  # exactly symmetric: the reference diagonalizes this very matrix
    W = torch.randn(N, N, generator=g, dtype=torch.float64)
    return A, (W + W.T).to(dtype)


def _reference(A, W):
    """Exact eigenpairs of the float matrix ``A`` and the closed-form gradients (float64)."""
    E, V = mpmath.eigsy(mpmath.matrix(A.double().tolist()))
    order = sorted(range(N), key=lambda i: E[i])
    lam = [E[i] for i in order]
    x = [V[:, i] for i in order]
    Wm = mpmath.matrix(W.double().tolist())

    def outer(a, b):
        return a * b.T

    def sym(M):
        return (M + M.T) / 2

    eig0 = outer(x[0], x[0])
    eig03 = eig0 + 3 * outer(x[1], x[1])
    # tr(W P), P = x0x0ᵀ + x1x1ᵀ: only the couplings to the rest of the spectrum (invariant in the pair)
    proj = mpmath.zeros(N, N)
    for i in (0, 1):
        for j in range(2, N):
            c = 2 * (x[i].T * Wm * x[j])[0] / (lam[i] - lam[j])
            proj += c * sym(outer(x[j], x[i]))
    # x0ᵀ W x0: dx0 = Σ_{j≠0} x_j (x_jᵀ dA x0)/(λ0 - λj)
    vec = mpmath.zeros(N, N)
    for j in range(1, N):
        c = 2 * (x[0].T * Wm * x[j])[0] / (lam[0] - lam[j])
        vec += c * sym(outer(x[j], x[0]))

    def tens(M):
        return torch.tensor([[float(M[i, j]) for j in range(N)] for i in range(N)], dtype=torch.float64)

    return {"eig0": tens(eig0), "eig03": tens(eig03), "proj": tens(proj), "vec": tens(vec)}


def _grad(A, loss, opts):
    A = A.detach().clone().requires_grad_(True)
    L, X = eigrad.eigh(A, backward=opts)
    saved = _dense_function.with_near_degenerate
    if opts is EXACT:  # the exact couplings everywhere: no near-degenerate mask either
        _dense_function.with_near_degenerate = lambda D, *args: D
    try:
        loss(L, X).backward()
    finally:
        _dense_function.with_near_degenerate = saved
    return A.grad.double()


def _losses(W):
    return {
        "eig0": lambda L, X: L[0],
        "eig03": lambda L, X: L[0] + 3 * L[1],
        "proj": lambda L, X: (W * (X[:, :2] @ X[:, :2].T)).sum(),
        "vec": lambda L, X: X[:, 0] @ W @ X[:, 0],
    }


COLUMNS = [  # (header, loss, options)
    ("λ0", "eig0", MERGED),
    ("λ0 + 3λ1", "eig03", MERGED),
    ("tr(WP) merged", "proj", MERGED),
    ("tr(WP) coupled", "proj", EXACT),
    ("x0ᵀWx0 merged", "vec", MERGED),
    ("x0ᵀWx0 coupled", "vec", EXACT),
]


def measure(dtype, gaps):
    rows = []
    for gap in gaps:
        worst = [0.0] * len(COLUMNS)
        for seed in SEEDS:
            A, W = _problem(gap, seed, dtype)
            ref = _reference(A, W)
            losses = _losses(W)
            for c, (_, name, opts) in enumerate(COLUMNS):
                G = _grad(A, losses[name], opts)
                err = float((G - ref[name]).norm() / ref[name].norm())
                worst[c] = max(worst[c], err)
        rows.append((gap, worst))
    return rows


def main():
    for dtype in (torch.float64, torch.float32):
        eps = torch.finfo(dtype).eps
        gaps = GAPS if dtype == torch.float64 else [g for g in GAPS if g >= 1e-7]
        print(f"\n{dtype} (eps = {eps:.2g}): relative error of the gradient, worst of {len(SEEDS)} seeds")
        print("| gap δ/‖A‖ | " + " | ".join(h for h, _, _ in COLUMNS) + " | eps/δ |")
        print("|---" * (len(COLUMNS) + 2) + "|")
        for gap, worst in measure(dtype, gaps):
            print(f"| {gap:.0e} | " + " | ".join(f"{e:.1e}" for e in worst) + f" | {eps / gap:.1e} |")


if __name__ == "__main__":
    main()
