"""Warm starts in an optimization loop (issue 12, item 5): the previous step's eigenvectors as ``X0``.

A 3D grid Hamiltonian ``H(v) = -Δ + diag(v)`` (Dirichlet, N³ points) is fitted
by Adam so that its k lowest levels reach target values: each step is one
``eigrad.eigsh_ex`` forward and one backward (MINRES), and the loop runs once
from random starts (``X0=None``) and once with ``X0`` = the eigenvectors of the
previous step, for each iterative solver, on the same steps (the same seed and
learning rate; the iterates agree to the solver tolerance). Printed per run:
forward operator applications, backward MINRES iterations, wall time, and the
ratios warm/cold. Operator applications are machine independent; the times are
not (say which machine they are from).

    python benchmarks/warm_start.py                 # N = 16, k = 8, 50 steps
    python benchmarks/warm_start.py --N 24 --steps 50 --solvers lobpcg,arpack
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import eigrad


def laplacian(N: int) -> torch.Tensor:
    """The 7-point Dirichlet Laplacian on an N³ grid (h = 1/(N+1)) as a torch sparse CSR matrix."""
    n = N**3
    idx = torch.arange(n).reshape(N, N, N)
    rows, cols, vals = [idx.reshape(-1)], [idx.reshape(-1)], [torch.full((n,), 6.0)]
    for d in range(3):
        a = idx.narrow(d, 0, N - 1).reshape(-1)
        b = idx.narrow(d, 1, N - 1).reshape(-1)
        rows += [a, b]
        cols += [b, a]
        vals += [torch.full((a.numel(),), -1.0)] * 2
    h2 = float((N + 1) ** 2)
    coo = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(vals) * h2,
                                  (n, n), dtype=torch.float64).coalesce()
    return coo.to_sparse_csr()


def run(N: int, k: int, steps: int, solver: str, warm: bool, lr: float, seed: int):
    L = laplacian(N)
    n = N**3
    gen = torch.Generator().manual_seed(seed)
    v = (200.0 * torch.rand(n, generator=gen, dtype=torch.float64)).requires_grad_(True)
    with torch.no_grad():
        base = torch.linalg.eigvalsh(torch.diag(torch.arange(1.0, k + 1, dtype=torch.float64)))
    target = 3 * torch.pi**2 + 40.0 * base  # k target levels above the Laplacian's ground state
    opt = torch.optim.Adam([v], lr=lr)
    H = eigrad.FunctionOperator(lambda X, v: L @ X + v.unsqueeze(-1) * X, (v,), (n, n))
    X0, fwd_mv, bwd_it, t0 = None, 0, 0, time.perf_counter()
    s = eigrad.solvers.Arpack() if solver == "arpack" else eigrad.solvers.LOBPCG()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        lam, X, info = eigrad.eigsh_ex(H, k, solver=s, X0=X0 if warm else None)
        loss = ((lam - target) ** 2).mean() + 1e-3 * (X**4).sum()
        loss.backward()
        opt.step()
        fwd_mv += info.matvecs
        bwd_it += sum(b.iterations or 0 for b in info.backward)
        X0 = X.detach()
        losses.append(float(loss.detach()))
    return dict(fwd_mv=fwd_mv, bwd_it=bwd_it, wall=time.perf_counter() - t0, loss0=losses[0], loss=losses[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--solvers", default="lobpcg,arpack")
    ap.add_argument("--lr", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    print(f"H = -Δ + diag(v) on {args.N}³ (n = {args.N ** 3}), k = {args.k}, {args.steps} Adam steps, "
          f"{args.threads} torch thread(s)")
    print("| solver | start | forward matvecs | backward MINRES its | wall s | loss first → last |")
    print("|---|---|---:|---:|---:|---|")
    for solver in args.solvers.split(","):
        res = {}
        for warm in (False, True):
            r = run(args.N, args.k, args.steps, solver, warm, args.lr, args.seed)
            res[warm] = r
            print(f"| {solver} | {'X0 = previous' if warm else 'random'} | {r['fwd_mv']} | {r['bwd_it']} | "
                  f"{r['wall']:.2f} | {r['loss0']:.3e} → {r['loss']:.3e} |")
        c, w = res[False], res[True]
        print(f"| {solver} | warm / cold | {w['fwd_mv'] / c['fwd_mv']:.2f} | "
              f"{(w['bwd_it'] / c['bwd_it']) if c['bwd_it'] else float('nan'):.2f} | {w['wall'] / c['wall']:.2f} | |")


if __name__ == "__main__":
    main()
