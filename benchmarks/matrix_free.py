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

see :func:`forward_backward` and :data:`FWD_BWD`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

K_DEFAULT = 8
RTOL = 1e-8
VMAX = 100.0

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
DESCRIPTION = {
    "arpack-scipy": "ARPACK: scipy eigsh on the CSR matrix, which='SA', tol=1e-8 (reference)",
    "eigrad-arpack": "eigrad Arpack() over the operator",
    "eigrad-primme": "eigrad Primme() over the operator (GD+k, PRIMME_DEFAULT_MIN_MATVECS)",
    "eigrad-lobpcg": "eigrad LOBPCG(), no preconditioner",
    "eigrad-lobpcg+dst": "eigrad LOBPCG() with preconditioner (L + 50 I)⁻¹ by fast sine transforms",
    "eigrad-primme+dst": "eigrad Primme() with the same preconditioner",
    "torch-lobpcg": "torch.lobpcg on a torch sparse COO matrix (tol scaled to the same per-pair residual)",
    "xitorch-davidson": "xitorch.linalg.symeig(method='davidson')",
    "eigrad-fwd+bwd": "eigrad.eigsh forward (solver='auto': ARPACK), then the gradient of n Σ_j ρ_j² + Σλ "
    "(ρ = Σ_i x_i²) with respect to the potential by plain MINRES; wall time covers both",
    "eigrad-arpack-fwd+bwd+dst": "the same with ARPACK forward, backward MINRES preconditioned by (L)⁻¹ "
    "(fast sine transforms)",
    "eigrad-fwd+bwd+dst": "the same with forward preconditioner (L + 50 I)⁻¹ (solver='auto': PRIMME) and "
    "backward MINRES preconditioned by (L)⁻¹",
}
#: ``--fwd-bwd``: the forward reference next to eigrad's forward+backward configurations
FWD_BWD_METHODS = ["arpack-scipy", "eigrad-fwd+bwd", "eigrad-arpack-fwd+bwd+dst", "eigrad-fwd+bwd+dst"]


# --------------------------------------------------------------------- problem
def build_problem(N: int):
    """``(M, L, v)``: CSR of ``L + diag(v)``, CSR Laplacian, potential (numpy)."""
    import numpy as np
    import scipy.sparse as sp

    c = float((N + 1) ** 2)
    T = sp.diags([-np.ones(N - 1), 2 * np.ones(N), -np.ones(N - 1)], [-1, 0, 1]) * c
    Id = sp.identity(N)
    L = sp.csr_matrix(sp.kron(sp.kron(T, Id), Id) + sp.kron(sp.kron(Id, T), Id) + sp.kron(sp.kron(Id, Id), T))
    v = np.random.default_rng(0).uniform(0.0, VMAX, N**3)
    return sp.csr_matrix(L + sp.diags(v)), L, v


def laplace_plus_potential(L, v):
    """The problem as an eigrad operator known only through ``matmat``."""
    import torch

    from eigrad.operators import LinearOperator, OperatorSpec

    vt = torch.from_numpy(v)

    class LaplacePlusPotential(LinearOperator):
        def __init__(self):
            self.shape, self.dtype, self.device = (L.shape[0], L.shape[0]), torch.float64, torch.device("cpu")

        def matmat(self, X):
            return torch.from_numpy(L @ X.numpy()) + vt.unsqueeze(-1) * X

        def flatten(self):
            return (), OperatorSpec(lambda ts: self)

    return LaplacePlusPotential()


def dst_preconditioner(N: int, sigma: float, workers: int):
    """``X -> (L + σ I)⁻¹ X`` exactly, by type-I discrete sine transforms (O(n log n) per column)."""
    import numpy as np
    import scipy.fft
    import torch

    mu1 = (2.0 - 2.0 * np.cos(np.arange(1, N + 1) * np.pi / (N + 1))) * (N + 1) ** 2
    denom = mu1[:, None, None] + mu1[None, :, None] + mu1[None, None, :] + sigma

    def apply(X):
        Y = X.numpy().reshape(N, N, N, -1)
        Z = scipy.fft.dstn(Y, type=1, axes=(0, 1, 2), workers=workers) / denom[..., None]
        return torch.from_numpy(scipy.fft.idstn(Z, type=1, axes=(0, 1, 2), workers=workers).reshape(X.shape))

    return apply


# --------------------------------------------------------------------- methods
def run_method(method: str, N: int, k: int, threads: int) -> dict:
    import numpy as np

    M, L, v = build_problem(N)
    n = M.shape[0]
    info: dict = {}
    t0, c0 = time.perf_counter(), time.process_time()
    if method == "arpack-scipy":
        import scipy.sparse.linalg as spla

        vals, vecs = spla.eigsh(M, k, which="SA", tol=RTOL, v0=np.random.default_rng(0).uniform(-1, 1, n))
    elif method.startswith("eigrad-") and "fwd+bwd" not in method:
        from eigrad.eigensolvers import LOBPCG, Arpack, Primme

        solver = {"arpack": Arpack, "primme": Primme, "lobpcg": LOBPCG}[method[7:].split("+")[0]]()
        pre = dst_preconditioner(N, VMAX / 2, threads) if method.endswith("+dst") else None
        sol = solver(laplace_plus_potential(L, v), k, preconditioner=pre)
        vals, vecs = sol.eigenvalues.numpy(), sol.eigenvectors.numpy()
        info = {"n_matvec": sol.n_matvec, "n_iter": sol.n_iter}
    elif method == "torch-lobpcg":
        import torch

        coo = M.tocoo()
        A = torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, (n, n)).coalesce()
        X0 = torch.randn(n, k, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        # torch's criterion is ‖r‖ / ((‖A‖ + |λ|) ‖x‖): scale tol to a per-pair 1e-8 relative residual
        norm_A = 12.0 * (N + 1) ** 2 + VMAX
        tol = RTOL * 3 * np.pi**2 / norm_A
        L_, X_ = torch.lobpcg(A, k=k, X=X0, largest=False, tol=tol, niter=100000)
        vals, vecs = L_.numpy(), X_.numpy()
    elif method == "xitorch-davidson":
        import torch
        import xitorch
        from xitorch.linalg import symeig

        class Op(xitorch.LinearOperator):
            def __init__(self):
                super().__init__(shape=(n, n), is_hermitian=True, dtype=torch.float64)

            def _mv(self, x):  # (..., n) -> (..., n)
                X = x.reshape(-1, n).T.numpy()
                return torch.from_numpy(np.ascontiguousarray((M @ X).T)).reshape(x.shape)

            def _getparamnames(self, prefix=""):
                return []

        # xitorch stops on the largest residual entry: the entry bound that implies the norm bound
        L_, X_ = symeig(Op(), neig=k, mode="lowest", method="davidson", max_niter=100000,
                        min_eps=RTOL * 3 * np.pi**2 / np.sqrt(n))
        vals, vecs = L_.numpy(), X_.numpy()
    elif "fwd+bwd" in method:
        vals, vecs, info = forward_backward(L, v, k, method, threads)
    else:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(DESCRIPTION)}")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    wall = info.pop("wall_fwd_bwd", wall)  # forward + backward only (not the Hellmann–Feynman check)
    order = np.argsort(vals)
    vals, vecs = np.asarray(vals)[order], np.asarray(vecs)[:, order]
    R = M @ vecs - vecs * vals
    rel = np.linalg.norm(R, axis=0) / (np.abs(vals) * np.linalg.norm(vecs, axis=0))
    import resource

    return {
        "method": method, "N": N, "n": n, "wall": wall, "cpu": cpu, "eigenvalues": vals.tolist(),
        "max_rel_residual": float(rel.max()), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **info,
    }


#: forward+backward configurations: (forward solver, forward preconditioner σ, backward preconditioner σ)
FWD_BWD = {
    "eigrad-fwd+bwd": ("auto", None, None),
    "eigrad-arpack-fwd+bwd+dst": ("arpack", None, 0.0),
    "eigrad-fwd+bwd+dst": ("auto", VMAX / 2, 0.0),
}


def forward_backward(L, v, k: int, method: str = "eigrad-fwd+bwd", threads: int = 1):
    """eigrad forward + backward with respect to the potential (the issue's target).

    ``A(v) = L + diag(v)`` is an :class:`eigrad.FunctionOperator` (the
    Laplacian a constant torch sparse CSR matrix, the potential its
    parameter). Times ``eigrad.eigsh(A(v), k)`` and the gradient of
    ``n Σ_j ρ_j² + Σ λ_i`` (``ρ = Σ_i x_i²``, the density) with respect to
    ``v``: the eigenvector cotangent needs the k projected shifted solves
    (MINRES). Configurations (:data:`FWD_BWD`): the forward solver
    (``"auto"`` is ARPACK without and PRIMME with a preconditioner), the
    forward preconditioner ``(L + σ I)⁻¹`` and the backward's
    ``BackwardOptions(linsolve_preconditioner=(L + σ I)⁻¹)``, both by fast sine
    transforms. Also checks Hellmann–Feynman (``∂Σλ/∂v = Σ_i x_i²``) and
    counts operator and preconditioner applications in the backward.
    """
    import warnings

    import torch

    import eigrad

    solver, sig_f, sig_b = FWD_BWD[method]
    n = L.shape[0]
    N = round(n ** (1 / 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: sparse CSR is "beta"
        Lt = torch.sparse_csr_tensor(torch.from_numpy(L.indptr).long(), torch.from_numpy(L.indices).long(),
                                     torch.from_numpy(L.data), L.shape)
    counts = {"A": 0, "A_cols": 0, "M": 0, "M_cols": 0}

    def matmat(X, p):  # (n, m) -> (n, m)
        counts["A"] += 1
        counts["A_cols"] += X.shape[-1]
        return Lt @ X + p.unsqueeze(-1) * X

    def counted(apply):
        def M(R):
            counts["M"] += 1
            counts["M_cols"] += R.shape[-1]
            return apply(R)
        return M

    pre_f = None if sig_f is None else dst_preconditioner(N, sig_f, threads)
    pre_b = None if sig_b is None else counted(dst_preconditioner(N, sig_b, threads))
    vt = torch.from_numpy(v).requires_grad_(True)
    op = eigrad.FunctionOperator(matmat, (vt,), (n, n))
    t0 = time.perf_counter()
    vals, vecs = eigrad.eigsh(op, k, solver=solver, preconditioner=pre_f,
                              backward=eigrad.BackwardOptions(linsolve_preconditioner=pre_b))
    t1 = time.perf_counter()
    # a density loss Σ_j ρ_j² exercises the projected shifted solves
    for key in counts:
        counts[key] = 0
    (g,) = torch.autograd.grad(n * ((vecs**2).sum(-1) ** 2).sum() + vals.sum(), vt, retain_graph=True)
    t2 = time.perf_counter()
    bwd_counts = dict(counts)
    # Σλ needs no linear solve: Hellmann–Feynman checks the operator VJP (outside the timing)
    (g_sum,) = torch.autograd.grad(vals.sum(), vt)
    hf = (vecs.detach() ** 2).sum(-1)
    err = float((g_sum - hf).abs().max() / hf.abs().max())
    info = {"hellmann_feynman_err": err, "forward_s": t1 - t0, "backward_s": t2 - t1,
            "bwd_A_applications": bwd_counts["A"], "bwd_A_columns": bwd_counts["A_cols"],
            "bwd_M_applications": bwd_counts["M"], "grad_norm": float(g.norm()), "wall_fwd_bwd": t2 - t0}
    return vals.detach().numpy(), vecs.detach().numpy(), info


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
