"""Block Lanczos vs ARPACK on the issue #12 problem: 3-D Dirichlet Laplacian N³ (levels 1, 3, 3) as a
FunctionOperator over a torch sparse CSR matrix plus a potential, k = 7, projector loss.

Prints, per solver, forward+backward wall time (``eigrad.eigsh`` defaults otherwise), the ratio to scipy
ARPACK's forward alone on the CSR matrix, and whether all 7 eigenvalues (with their copies) were found.

    python benchmarks/block_lanczos.py --N 40 --threads 1
    python benchmarks/block_lanczos.py --N 40 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.sparse.linalg as spla
import torch

import eigrad
from eigrad._bench._matrix_free import build_problem, torch_csr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--N", type=int, default=40)
    ap.add_argument("--k", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--solvers", default="arpack,block-lanczos")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    _, L, _ = build_problem(a.N)
    Lt = torch_csr(L)
    n = L.shape[0]
    t = time.perf_counter()
    ref = np.sort(spla.eigsh(L, a.k, which="SA", tol=1e-9)[0])
    t_ref = time.perf_counter() - t
    print(f"N={a.N} n={n} k={a.k} threads={a.threads} load={os.getloadavg()[0]:.2f}")
    print(f"scipy-arpack forward {t_ref:.2f} s")
    W = torch.from_numpy(np.random.default_rng(0).standard_normal(n))
    for solver in a.solvers.split(","):
        v = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        A = eigrad.FunctionOperator(lambda X, v: Lt @ X + v.unsqueeze(-1) * X, (v,), (n, n))
        t = time.perf_counter()
        lam, X = eigrad.eigsh(A, a.k, solver=solver)
        loss = ((X * X).sum(-1) * W).sum()  # projector (density) loss: gauge invariant
        loss.backward()
        dt = time.perf_counter() - t
        ok = np.allclose(lam.detach().numpy(), ref, rtol=1e-7)
        print(f"{solver:14s} fwd+bwd {dt:.2f} s  ratio {dt / t_ref:.2f}x scipy fwd  all copies {ok}")


if __name__ == "__main__":
    main()
