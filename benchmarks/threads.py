"""Thread counts in iterative loops (eigrad/_threads.py): 1 vs 2 torch threads per kernel, and per solve.

Part 1, the kernels of an iterative loop: one product of a 3-D 7-point
Laplacian (torch sparse CSR, N³ rows) with a block of b vectors plus one block
Gram–Schmidt step (``G = Xᵀ Y``, ``Y − X G``), milliseconds per step with 1
and with 2 torch threads, in one process.

Part 2, whole solves: ``eigrad.eigsh_ex`` forward + backward on the FEM pencil
``P1`` (``eigrad._bench._pencil``) and on the 3-D Laplacian as a torch sparse
matrix, each in a child process per thread setting (``OMP_NUM_THREADS`` and
``OPENBLAS_NUM_THREADS``): eigrad's own thread handling decides inside, so
the columns show what a user gets with each setting.

Run it on a quiet machine and again while the machine is loaded (the
numbers in eigrad/_threads.py were taken at load average ~5.4 on 2 cores):

    python benchmarks/threads.py
    python benchmarks/threads.py --part 2 --fem 32,160 --lap3d 20,40
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _laplacian(N: int):
    import numpy as np
    import scipy.sparse as sp

    T = sp.diags([-np.ones(N - 1), 2 * np.ones(N), -np.ones(N - 1)], [-1, 0, 1])
    eye = sp.identity(N)
    A = sp.kron(sp.kron(T, eye), eye) + sp.kron(sp.kron(eye, T), eye) + sp.kron(sp.kron(eye, eye), T)
    return (A * (N + 1) ** 2).tocsr()


def kernels(grids, blocks):
    import torch

    rows = []
    for N in grids:
        A = _laplacian(N)
        n = A.shape[0]
        At = torch.sparse_csr_tensor(torch.from_numpy(A.indptr).long(), torch.from_numpy(A.indices).long(),
                                     torch.from_numpy(A.data), A.shape)
        for b in blocks:
            X = torch.randn(n, b, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
            ms = []
            for t in (1, 2):
                torch.set_num_threads(t)
                reps = max(3, int(2e6 / (n * b)))
                t0 = time.perf_counter()
                for _ in range(reps):
                    Y = At @ X
                    G = X.mT @ Y
                    Y = Y - X @ G
                ms.append((time.perf_counter() - t0) / reps * 1e3)
            rows.append([str(n), str(b), f"{ms[0]:.3f}", f"{ms[1]:.3f}", f"{ms[1] / ms[0]:.2f}"])
    return rows


def solve(problem: str, k: int) -> dict:
    import numpy as np
    import torch

    import eigrad
    from eigrad._bench import _pencil

    kind, size = problem.split(":")
    if kind == "fem":
        K, M = _pencil.fem_pencil("P1", int(size))
    else:
        K, M = _laplacian(int(size)), None
    At, leaf = _pencil.torch_sparse(K, requires_grad=True)
    Bt = None if M is None else _pencil.torch_sparse(M)[0]
    w = torch.from_numpy(np.random.default_rng(0).uniform(0.5, 1.5, K.shape[0]))
    eigrad.eigsh(At.detach(), k, B=Bt)  # warm-up: imports, first-call costs
    t0 = time.perf_counter()
    L, X, info = eigrad.eigsh_ex(At, k, B=Bt)
    t1 = time.perf_counter()
    (L.sum() + (w.unsqueeze(-1) * X**2).sum()).backward()
    t2 = time.perf_counter()
    return {"n": K.shape[0], "solver": info.solver, "fwd": t1 - t0, "bwd": t2 - t1}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="1,2")
    ap.add_argument("--grids", default="10,20,40,64", help="part 1: N of the N³ Laplacian")
    ap.add_argument("--blocks", default="1,10", help="part 1: block sizes b")
    ap.add_argument("--fem", default="32,160", help="part 2: P1 FEM sizes S (n = (S-1)²)")
    ap.add_argument("--lap3d", default="20,40", help="part 2: 3-D Laplacian N (n = N³)")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(solve(args.one, args.k)))
        return
    from _common import machine_line, table

    print(machine_line(2))
    if "1" in args.part.split(","):
        rows = kernels([int(v) for v in args.grids.split(",")], [int(v) for v in args.blocks.split(",")])
        print(table(["n", "b", "1 thread ms", "2 threads ms", "2 / 1"], rows, args.markdown), flush=True)
    if "2" in args.part.split(","):
        problems = [f"fem:{s}" for s in args.fem.split(",") if s] + [f"lap3d:{s}" for s in args.lap3d.split(",") if s]
        rows = []
        for problem in problems:
            res = {}
            for omp, blas in ((1, 1), (2, 1), (2, 2)):
                env = {**os.environ, "OMP_NUM_THREADS": str(omp), "OPENBLAS_NUM_THREADS": str(blas),
                       "MKL_NUM_THREADS": str(omp)}
                p = subprocess.run([sys.executable, __file__, "--one", problem, "-k", str(args.k)], env=env,
                                   capture_output=True, text=True)
                if p.returncode:
                    sys.exit(p.stderr)
                res[omp, blas] = json.loads(p.stdout.strip().splitlines()[-1])
            r11 = res[1, 1]
            cells = [problem, str(r11["n"]), r11["solver"]]
            for key in ((1, 1), (2, 1), (2, 2)):
                r = res[key]
                cells.append(f"{r['fwd'] + r['bwd']:.3f}")
            cells.append(f"{(res[2, 2]['fwd'] + res[2, 2]['bwd']) / (r11['fwd'] + r11['bwd']):.2f}")
            rows.append(cells)
            print(table(["problem", "n", "solver", "omp1 blas1 s", "omp2 blas1 s", "omp2 blas2 s", "(2,2) / (1,1)"],
                        rows[-1:], args.markdown), flush=True)
        print(table(["problem", "n", "solver", "omp1 blas1 s", "omp2 blas1 s", "omp2 blas2 s", "(2,2) / (1,1)"],
                    rows, args.markdown))


if __name__ == "__main__":
    main()
