"""Sparse direct shift-invert (issue 12 item 2): eigrad fwd+bwd vs scipy shift-invert and ARPACK forwards.

Problems (float64, the k smallest eigenpairs):

* ``fem:M`` — P1 FEM pencil ``K x = λ M x`` (scikit-fem, Laplace stiffness and
  consistent mass) on the unit square, an ``M × M`` grid of squares cut into
  triangles, Dirichlet boundary condensed: ``n = (M - 1)²``. Gradient to K's
  stored values (torch sparse COO, values a leaf).
* ``lap2d:N`` — 2D 5-point Dirichlet Laplacian, ``N²`` interior points, ``B = I``;
* ``lap3d:N`` — 3D 7-point Dirichlet Laplacian, ``N³`` interior points,
  ``B = I`` (exact triple eigenvalues: k = 10 is 1 + 3 + 3 + 3, whole levels).

Loss: ``Σ λ_j + Σ_j Σ_i w_i x_ij²`` (fixed weights ``w``, the diagonal of a
projector: invariant under any basis of each eigenspace).

Methods, each in its own subprocess (peak RSS is its own):

* ``eigrad-si``: ``eigrad.eigsh(..., solver="shift-invert")`` forward and backward;
* ``eigrad-si-lu``: the same with ``ShiftInvert(backward="lu")`` (one LU of ``A - λB`` per distinct eigenvalue);
* ``eigrad-auto``: ``solver="auto"`` forward and backward;
* ``eigrad-arpack``: ``solver="arpack"`` forward and backward;
* ``scipy-si``: ``scipy.sparse.linalg.eigsh(A, k, M, sigma=0)`` forward alone (SuperLU, scipy's defaults);
* ``scipy-arpack``: ``scipy.sparse.linalg.eigsh(A, k, M, which="SA")`` forward alone.

Ratios are wall times over ``scipy-si`` of the same run.

    OPENBLAS_NUM_THREADS=1 python benchmarks/shift_invert.py --threads 1 --problems fem:160,fem:320,lap3d:20,lap3d:30,lap3d:40
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

METHODS = ("scipy-si", "scipy-arpack", "eigrad-si", "eigrad-si-lu", "eigrad-auto", "eigrad-arpack")


def build(problem: str):
    import numpy as np
    import scipy.sparse as sp

    kind, size = problem.split(":")
    size = int(size)
    if kind == "fem":  # P1 on size × size squares: the pencil eigrad bench's suite defines
        from eigrad._bench._pencil import fem_pencil

        return fem_pencil("P1", size)
    if kind == "lap2d":
        T = sp.diags([-np.ones(size - 1), 2 * np.ones(size), -np.ones(size - 1)], [-1, 0, 1])
        eye = sp.identity(size)
        return ((sp.kron(T, eye) + sp.kron(eye, T)) * (size + 1) ** 2).tocsr(), None
    if kind == "lap3d":
        T = sp.diags([-np.ones(size - 1), 2 * np.ones(size), -np.ones(size - 1)], [-1, 0, 1])
        eye = sp.identity(size)
        A = sp.kron(sp.kron(T, eye), eye) + sp.kron(sp.kron(eye, T), eye) + sp.kron(sp.kron(eye, eye), T)
        return (A * (size + 1) ** 2).tocsr(), None
    raise ValueError(f"unknown problem {problem!r}; pass fem:M or lap3d:N")


def run(problem: str, method: str, k: int):
    import numpy as np
    import scipy.sparse.linalg as spla
    import torch

    A, B = build(problem)
    n = A.shape[0]
    out = {"problem": problem, "method": method, "n": n, "k": k}
    if method.startswith("scipy"):
        t0 = time.perf_counter()
        if method == "scipy-si":
            vals = spla.eigsh(A, k, M=B, sigma=0, return_eigenvectors=False)
        else:
            vals = spla.eigsh(A, k, M=B, which="SA", return_eigenvectors=False)
        out["fwd"] = time.perf_counter() - t0
        out["total"] = out["fwd"]
        out["lam"] = sorted(float(v) for v in vals)[:3]
    else:
        import eigrad
        from eigrad._bench._pencil import torch_sparse

        solver = {"eigrad-si": "shift-invert", "eigrad-si-lu": eigrad.solvers.ShiftInvert(backward="lu"),
                  "eigrad-auto": "auto", "eigrad-arpack": "arpack"}[method]
        At, vals_leaf = torch_sparse(A, True)
        Bt = None if B is None else torch_sparse(B, False)[0]
        w = torch.from_numpy(np.random.default_rng(0).uniform(0.5, 1.5, n))
        t0 = time.perf_counter()
        L, X, info = eigrad.eigsh_ex(At, k, B=Bt, solver=solver)
        t1 = time.perf_counter()
        loss = L.sum() + (w.unsqueeze(-1) * X**2).sum()
        loss.backward()
        t2 = time.perf_counter()
        out.update(fwd=t1 - t0, bwd=t2 - t1, total=t2 - t0, solver=info.solver, matvecs=info.matvecs,
                   bwd_iters=sum(b.iterations for b in info.backward),
                   lam=[float(v) for v in L[:3]])
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="fem:160,lap3d:20")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cap", type=float, default=600.0, help="seconds per subprocess")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        from _common import set_threads

        set_threads(args.threads)
        problem, method = args.one.split("@")
        print(json.dumps(run(problem, method, args.k)))
        return
    from _common import machine_line, table

    print(machine_line(args.threads))
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    for problem in args.problems.split(","):
        res = {}
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--one", f"{problem}@{method}", "--k", str(args.k),
                   "--threads", str(args.threads)]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.cap, env=env)
                line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
                res[method] = json.loads(line) if p.returncode == 0 else {"error": p.stderr.strip().splitlines()[-1]}
            except subprocess.TimeoutExpired:
                res[method] = {"error": f"> {args.cap:.0f} s"}
        ref = res.get("scipy-si", {}).get("total")
        for method, r in res.items():
            if "error" in r:
                rows.append([problem, method, "", "", "", "", "", "", "", r["error"][:60]])
                continue
            ratio = f"{r['total'] / ref:.2f}" if ref else ""
            rows.append([problem, method, str(r["n"]), f"{r['fwd']:.2f}", f"{r.get('bwd', 0):.2f}",
                         f"{r['total']:.2f}", ratio, str(r.get("matvecs", "")), str(r.get("bwd_iters", "")),
                         f"{r['peak_rss_mib']:.0f}"])
        print(table(["problem", "method", "n", "fwd s", "bwd s", "total s", "/scipy-si", "fwd solves/matvecs",
                     "bwd iters", "peak RSS MiB"], rows[-len(res):], args.markdown), flush=True)
    print()
    print(table(["problem", "method", "n", "fwd s", "bwd s", "total s", "/scipy-si", "fwd solves/matvecs",
                 "bwd iters", "peak RSS MiB"], rows, args.markdown))


if __name__ == "__main__":
    main()
