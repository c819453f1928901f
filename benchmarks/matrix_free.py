"""Matrix-free forward eigensolvers: eigrad vs ARPACK, PRIMME, torch.lobpcg and xitorch (issue 3 item 4).

Problem: the 3D 7-point Dirichlet Laplacian on the unit cube with ``N³``
interior points plus a diagonal potential ``v ~ U(0, 100)`` i.i.d. per point
(seed 0), float64, the ``k = 8`` smallest eigenpairs, relative residual
``‖A x − λ x‖ / |λ| <= 1e-8`` per pair. eigrad's solvers see the operator only
through ``matmat`` (scipy CSR Laplacian times X plus ``v * X``); the ARPACK
reference is ``scipy.sparse.linalg.eigsh`` on the CSR matrix itself.

Every (method, size) runs in its own subprocess with a wall-clock cap, so a
method that does not finish costs at most ``--cap`` seconds and the peak
memory of each is its own. Ratios are wall time over the reference's.

    python benchmarks/matrix_free.py --quick
    python benchmarks/matrix_free.py --sizes 32,48,64 --out docs/benchmarks_matrix_free.md

Forward+backward (the gradient of a density loss with respect to the
potential, issue 3's target), next to ARPACK's forward alone, and the
n = 10⁶ scale run (k = 16, wall time and peak RSS):

    python benchmarks/matrix_free.py --fwd-bwd --sizes 32,48,64 --threads 1
    python benchmarks/matrix_free.py --big --threads 1

The problem, the preconditioner and the methods (:func:`forward_backward`,
:data:`FWD_BWD`) are defined once in ``eigrad._bench._matrix_free``, which
``eigrad bench`` runs too; this script is the command line over them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from eigrad._bench._matrix_free import (  # noqa: F401 - the problem and methods, defined once
    DESCRIPTION,
    FWD_BWD,
    K_DEFAULT,
    RTOL,
    VMAX,
    build_problem,
    dst_preconditioner,
    forward_backward,
    laplace_plus_potential,
    run_method,
)

#: methods run by default, in order; the first is the reference for the ratios
DEFAULT_METHODS = [
    "arpack-scipy",
    "eigrad-arpack",
    "eigrad-primme",
    "eigrad-lobpcg",
    "eigrad-lobpcg+dst",
    "eigrad-primme+dst",
    "torch-lobpcg",
    "xitorch-davidson",
]
#: ``--fwd-bwd``: the forward reference next to eigrad's forward+backward setups
FWD_BWD_METHODS = ["arpack-scipy", *FWD_BWD]


# --------------------------------------------------------------------- driver
def child(args) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    print("RESULT " + json.dumps(run_method(args.one, args.size, args.k, args.threads)), flush=True)


def run_one(method: str, N: int, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", method, "--size", str(N), "--k", str(args.k),
           "--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.cap, env=env)
    except subprocess.TimeoutExpired:
        return {"method": method, "N": N, "error": f"> {args.cap:.0f} s (cap)"}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    last = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return {"method": method, "N": N, "error": last[:120]}


def table(results: list[dict], sizes, methods, k: int) -> str:
    lines = []
    for N in sizes:
        rows = [r for r in results if r["N"] == N]
        ref = next((r for r in rows if r["method"] == methods[0] and "error" not in r), None)
        lines.append(f"\n**N = {N} (n = {N**3}), k = {k}**\n")
        lines.append("| method | wall s | × ref | cpu s | matvecs | max rel. residual | max ‖Δλ‖/λ vs ref | peak RSS MB |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['method']} | {r['error']} | | | | | | |")
                continue
            ratio = f"{r['wall'] / ref['wall']:.2f}" if ref else "–"
            if ref:
                import numpy as np

                a, b = np.array(r["eigenvalues"]), np.array(ref["eigenvalues"])
                dl = f"{np.max(np.abs(a - b) / np.abs(b)):.1e}" if a.shape == b.shape else "–"
            else:
                dl = "–"
            extra = (
                f" (forward {r['forward_s']:.2f} s, backward {r['backward_s']:.2f} s with "
                f"{r['bwd_A_applications']} operator / {r['bwd_M_applications']} preconditioner applications; "
                f"Hellmann–Feynman error {r['hellmann_feynman_err']:.0e})"
                if "hellmann_feynman_err" in r
                else ""
            )
            lines.append(
                f"| {r['method']}{extra} | {r['wall']:.2f} | {ratio} | {r['cpu']:.2f} | {r.get('n_matvec', '–')} | "
                f"{r['max_rel_residual']:.1e} | {dl} | {r['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="32,48,64", help="grid sizes N (n = N³), comma separated")
    p.add_argument("--quick", action="store_true", help="sizes 16,24")
    p.add_argument("--fwd-bwd", action="store_true",
                   help=f"methods {','.join(FWD_BWD_METHODS)}: eigrad forward+backward next to ARPACK's forward")
    p.add_argument("--big", action="store_true",
                   help="the scale target: N=100 (n=10⁶), k=16, eigrad-fwd+bwd+dst only, cap 3 h; "
                   "records wall time and peak RSS (ru_maxrss of the run's own process)")
    p.add_argument("--k", type=int, default=K_DEFAULT)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cap", type=float, default=120.0,
                   help="wall-clock cap per method and size, seconds (a capped method skips larger sizes)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"any of: {', '.join(DESCRIPTION)}")
    p.add_argument("--out", default=None, help="write the table (markdown) to this file")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        return child(args)
    sizes = [16, 24] if args.quick else [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")
    if args.fwd_bwd:
        methods = FWD_BWD_METHODS
    if args.big:
        sizes, args.k, args.cap = [100], 16, max(args.cap, 3 * 3600.0)
        methods = methods if "--methods" in (argv if argv is not None else sys.argv) else ["eigrad-fwd+bwd+dst"]
    unknown = [m for m in methods if m not in DESCRIPTION]
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {', '.join(DESCRIPTION)}")
    results = []
    capped: set[str] = set()  # a method that hit the cap is not run at larger sizes
    for N in sizes:
        for m in methods:
            if m in capped:
                results.append({"method": m, "N": N, "error": "skipped (hit the cap at a smaller size)"})
                continue
            r = run_one(m, N, args)
            if "cap" in r.get("error", ""):
                capped.add(m)
            results.append(r)
            status = r.get("error") or f"{r['wall']:.2f} s, residual {r['max_rel_residual']:.1e}"
            print(f"N={N:3d} {m:20s} {status}", flush=True)
    load = os.getloadavg()[0]
    header = [
        "# Matrix-free " + ("forward + backward" if any("fwd+bwd" in m for m in methods) else "forward eigensolvers")
        + " (issue 3 item 4)",
        "",
        f"Command: `python benchmarks/matrix_free.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        f"Machine: {os.cpu_count()} logical cores, {args.threads} thread(s) per run, load average {load:.1f} "
        "at the end (shared machine: wall times are noisy, cpu times less so).",
        "",
        "Methods:",
        "",
        *[f"- `{m}`: {DESCRIPTION[m]}" for m in methods],
    ]
    text = "\n".join(header) + "\n" + table(results, sizes, methods, args.k) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
