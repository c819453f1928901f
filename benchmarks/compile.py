"""Compiled (torch.compile fullgraph=True) vs eager eigrad.eigsh, forward + backward, small matrices.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/compile.py [--threads 1]

Prints the median time of each case and its ratio to eager (same run). docs/benchmarks.md, "torch.compile".
"""

import argparse
import statistics
import time

import torch

import eigrad


def loss(A):
    L, X = eigrad.eigsh(A, 2)
    return L.sum() + (X ** 4).sum()


def step(f, A):
    A = A.detach().requires_grad_()
    (g,) = torch.autograd.grad(f(A), A)
    return g


def bench(f, A, reps):
    for _ in range(3):
        step(f, A)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        step(f, A)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    cases = {"8x8 single": (torch.randn(8, 8, dtype=torch.float64, generator=g), 200),
             "3x3 batch 20000": (torch.randn(20000, 3, 3, dtype=torch.float64, generator=g), 20)}
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print("| case | eager | compiled aot_eager | compiled inductor |")
    print("|---|---|---|---|")
    for name, (M, reps) in cases.items():
        A = M + M.mT
        row = []
        t0 = bench(loss, A, reps)
        for backend in ("aot_eager", "inductor"):
            torch._dynamo.reset()
            row.append(bench(torch.compile(loss, fullgraph=True, backend=backend), A, reps))
        print(f"| {name} | {t0 * 1e3:.2f} ms | {row[0] * 1e3:.2f} ms ({row[0] / t0:.2f}x) | "
              f"{row[1] * 1e3:.2f} ms ({row[1] / t0:.2f}x) |")


if __name__ == "__main__":
    main()
