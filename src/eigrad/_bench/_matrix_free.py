"""Matrix-free suite: the k smallest eigenpairs of a 3D grid operator, forward and forward+backward.

The 7-point Dirichlet Laplacian on the unit cube with ``N³`` interior points
plus a diagonal potential ``v ~ U(0, 100)`` (seed 0), float64, relative
residual ``‖A x − λ x‖ / |λ| <= 1e-8`` per pair. eigrad's forward solvers see
the operator only through ``matmat``; the reference is scipy's ARPACK on the
CSR matrix. The forward+backward setups (:data:`FWD_BWD`) time
``eigrad.eigsh`` and the gradient of a density loss with respect to the
potential. Every record carries the true residual, checked here, not taken
from the solver.

The single definition of the problem, the preconditioner and the methods:
``eigrad bench`` runs them, and ``benchmarks/matrix_free.py`` is a command
line over them.
"""

from __future__ import annotations

import time

K_DEFAULT = 8
RTOL = 1e-8
VMAX = 100.0

#: forward+backward setups: (forward solver, forward preconditioner σ, backward preconditioner σ);
#: a σ is the preconditioner ``(L + σ I)⁻¹`` by fast sine transforms, None for none
FWD_BWD = {
    "eigrad-fwd+bwd": ("auto", None, None),
    "eigrad-arpack-fwd+bwd+dst": ("arpack", None, 0.0),
    "eigrad-fwd+bwd+dst": ("auto", VMAX / 2, 0.0),
}
#: forward methods in report order; the reference of the ratios is "arpack-scipy"
FORWARD_METHODS = (
    "arpack-scipy", "eigrad-arpack", "eigrad-lobpcg", "eigrad-lobpcg+dst", "primme", "eigrad-primme",
    "eigrad-primme+dst", "torch-lobpcg", "xitorch-davidson",
)
#: every method in report order: the forward ones, then the forward+backward setups
METHODS = FORWARD_METHODS + tuple(FWD_BWD)
REFERENCE = "arpack-scipy"
_FWD_BWD_LOSS = "the gradient of n Σ_j ρ_j² + Σλ (ρ = Σ_i x_i²) with respect to the potential"
DESCRIPTION = {
    "arpack-scipy": "ARPACK: `scipy.sparse.linalg.eigsh` on the CSR matrix, which='SA', tol=1e-8 (reference)",
    "eigrad-arpack": "eigrad `Arpack()` over the operator (matmat only)",
    "eigrad-lobpcg": "eigrad `LOBPCG()`, no preconditioner",
    "eigrad-lobpcg+dst": "eigrad `LOBPCG()` with the preconditioner (L + 50 I)⁻¹ by fast sine transforms",
    "primme": "PRIMME: `primme.eigsh` on the CSR matrix, which='SA' (tol scaled to the same per-pair residual)",
    "eigrad-primme": "eigrad `Primme()` over the operator (GD+k, PRIMME_DEFAULT_MIN_MATVECS)",
    "eigrad-primme+dst": "eigrad `Primme()` with the sine-transform preconditioner",
    "torch-lobpcg": "`torch.lobpcg` on a torch sparse COO matrix (tol scaled to the same per-pair residual)",
    "xitorch-davidson": "`xitorch.linalg.symeig(method='davidson')` over a matvec operator",
    "eigrad-fwd+bwd": f"`eigrad.eigsh` forward (solver='auto': ARPACK; a dense eigh at n <= 200), then {_FWD_BWD_LOSS} by plain MINRES; "
    "wall time covers both (ratio: to ARPACK's forward alone)",
    "eigrad-arpack-fwd+bwd+dst": "the same with ARPACK forward, backward MINRES preconditioned by L⁻¹ "
    "(fast sine transforms)",
    "eigrad-fwd+bwd+dst": "the same with forward preconditioner (L + 50 I)⁻¹ (solver='auto': PRIMME) and "
    "backward MINRES preconditioned by L⁻¹",
}


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
    """The problem as an eigrad operator known only through ``matmat`` (scipy CSR product, no gradient)."""
    import torch

    from ..operators import LinearOperator, OperatorSpec

    vt = torch.from_numpy(v)

    class LaplacePlusPotential(LinearOperator):
        def __init__(self):
            self.shape, self.dtype, self.device = (L.shape[0], L.shape[0]), torch.float64, torch.device("cpu")

        def matmat(self, X):  # (n, m) -> (n, m)
            return torch.from_numpy(L @ X.numpy()) + vt.unsqueeze(-1) * X

        def flatten(self):
            return (), OperatorSpec(lambda ts: self)

    return LaplacePlusPotential()


def torch_csr(L):
    """The scipy CSR matrix ``L`` as a torch sparse CSR tensor (its products are 4–8× faster than scipy's)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: sparse CSR is "beta"
        return torch.sparse_csr_tensor(torch.from_numpy(L.indptr).long(), torch.from_numpy(L.indices).long(),
                                       torch.from_numpy(L.data), L.shape)


def dst_preconditioner(N: int, sigma: float, workers: int):
    """``X -> (L + σ I)⁻¹ X`` exactly, by type-I discrete sine transforms (O(n log n) per column)."""
    import numpy as np
    import scipy.fft
    import torch

    mu1 = (2.0 - 2.0 * np.cos(np.arange(1, N + 1) * np.pi / (N + 1))) * (N + 1) ** 2
    denom = mu1[:, None, None] + mu1[None, :, None] + mu1[None, None, :] + sigma

    def apply(X):  # (n, m) -> (n, m)
        Y = X.numpy().reshape(N, N, N, -1)
        Z = scipy.fft.dstn(Y, type=1, axes=(0, 1, 2), workers=workers) / denom[..., None]
        return torch.from_numpy(scipy.fft.idstn(Z, type=1, axes=(0, 1, 2), workers=workers).reshape(X.shape))

    return apply


def _solve(method: str, M, L, v, N: int, k: int, threads: int):
    """``(eigenvalues, eigenvectors, extra info)`` of one method (numpy arrays)."""
    import numpy as np

    n = M.shape[0]
    if method == "arpack-scipy":
        import scipy.sparse.linalg as spla

        vals, vecs = spla.eigsh(M, k, which="SA", tol=RTOL, v0=np.random.default_rng(0).uniform(-1, 1, n))
        return vals, vecs, {}
    if method == "primme":
        import primme

        # PRIMME stops at ‖r‖ <= tol·‖A‖: scale tol to a per-pair residual RTOL·|λ| (λ_1 >= 3π²)
        tol = RTOL * 3 * np.pi**2 / (12.0 * (N + 1) ** 2 + VMAX)
        vals, vecs, stats = primme.eigsh(M, k, which="SA", tol=tol, return_stats=True)
        return vals, vecs, {"n_matvec": int(stats["numMatvecs"])}
    if method in FWD_BWD:
        return forward_backward(L, v, k, method, threads)
    if method.startswith("eigrad-"):
        from ..eigensolvers import LOBPCG, Arpack, Primme

        solver = {"arpack": Arpack, "primme": Primme, "lobpcg": LOBPCG}[method[7:].split("+")[0]]()
        pre = dst_preconditioner(N, VMAX / 2, threads) if method.endswith("+dst") else None
        sol = solver(laplace_plus_potential(L, v), k, preconditioner=pre)
        return sol.eigenvalues.numpy(), sol.eigenvectors.numpy(), {"n_matvec": int(sol.n_matvec),
                                                                      "n_iter": int(sol.n_iter)}
    if method == "torch-lobpcg":
        import torch

        coo = M.tocoo()
        A = torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, (n, n)).coalesce()
        X0 = torch.randn(n, k, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        # torch's criterion is ‖r‖ / ((‖A‖ + |λ|) ‖x‖): scale tol to a per-pair 1e-8 relative residual
        tol = RTOL * 3 * np.pi**2 / (12.0 * (N + 1) ** 2 + VMAX)
        vals, vecs = torch.lobpcg(A, k=k, X=X0, largest=False, tol=tol, niter=100000)
        return vals.numpy(), vecs.numpy(), {}
    if method == "xitorch-davidson":
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
        with torch.random.fork_rng(devices=[]):
            vals, vecs = symeig(Op(), neig=k, mode="lowest", method="davidson", max_niter=100000,
                                min_eps=RTOL * 3 * np.pi**2 / np.sqrt(n))
        return vals.numpy(), vecs.numpy(), {}
    raise ValueError(f"unknown matrix-free method {method!r}; pass one of {', '.join(METHODS)}")


def forward_backward(L, v, k: int, method: str = "eigrad-fwd+bwd", threads: int = 1):
    """eigrad forward + backward with respect to the potential (issue 3's target).

    ``A(v) = L + diag(v)`` is an :class:`eigrad.FunctionOperator` (the
    Laplacian a constant torch sparse CSR matrix, the potential its
    parameter). Times ``eigrad.eigsh(A(v), k)`` and the gradient of
    ``n Σ_j ρ_j² + Σ λ_i`` (``ρ = Σ_i x_i²``, the density) with respect to
    ``v``: the eigenvector cotangent needs the k projected shifted solves
    (MINRES). ``method`` names a setup of :data:`FWD_BWD`: the forward solver
    (``"auto"`` is ARPACK without and PRIMME with a preconditioner), the
    forward preconditioner ``(L + σ I)⁻¹`` and the backward's
    ``BackwardOptions(linsolve_preconditioner=(L + σ I)⁻¹)``, both by fast sine
    transforms. Also checks Hellmann–Feynman (``∂Σλ/∂v = Σ_i x_i²``, outside
    the timing) and counts operator and preconditioner applications in the
    backward. Returns ``(eigenvalues, eigenvectors, info)`` (numpy); ``info``
    holds ``wall_fwd_bwd``, the forward + backward time.
    """
    import torch

    from .. import BackwardOptions, FunctionOperator, eigsh

    solver, sig_f, sig_b = FWD_BWD[method]
    n = L.shape[0]
    N = round(n ** (1 / 3))
    Lt = torch_csr(L)
    counts = {"A": 0, "A_cols": 0, "M": 0, "M_cols": 0}

    def matmat(X, p):  # (n, m) -> (n, m)
        counts["A"] += 1
        counts["A_cols"] += X.shape[-1]
        return Lt @ X + p.unsqueeze(-1) * X

    def counted(apply):
        def M(R):  # (n, m) -> (n, m)
            counts["M"] += 1
            counts["M_cols"] += R.shape[-1]
            return apply(R)
        return M

    pre_f = None if sig_f is None else dst_preconditioner(N, sig_f, threads)
    pre_b = None if sig_b is None else counted(dst_preconditioner(N, sig_b, threads))
    vt = torch.from_numpy(v).requires_grad_(True)
    op = FunctionOperator(matmat, (vt,), (n, n))
    t0 = time.perf_counter()
    vals, vecs = eigsh(op, k, solver=solver, preconditioner=pre_f,
                       backward=BackwardOptions(linsolve_preconditioner=pre_b))
    t1 = time.perf_counter()
    for key in counts:
        counts[key] = 0
    # a density loss Σ_j ρ_j² exercises the projected shifted solves
    (g,) = torch.autograd.grad(n * ((vecs**2).sum(-1) ** 2).sum() + vals.sum(), vt, retain_graph=True)
    t2 = time.perf_counter()
    bwd = dict(counts)
    # Σλ needs no linear solve: Hellmann–Feynman checks the operator VJP
    (g_sum,) = torch.autograd.grad(vals.sum(), vt)
    hf = (vecs.detach() ** 2).sum(-1)  # (n,)
    info = {
        "hellmann_feynman_err": float((g_sum - hf).abs().max() / hf.abs().max()), "forward_s": t1 - t0,
        "backward_s": t2 - t1, "bwd_A_applications": bwd["A"], "bwd_A_columns": bwd["A_cols"],
        "bwd_M_applications": bwd["M"], "grad_norm": float(g.norm()), "wall_fwd_bwd": t2 - t0,
    }
    return vals.detach().numpy(), vecs.detach().numpy(), info


def run_method(method: str, N: int, k: int = K_DEFAULT, threads: int = 1) -> dict:
    """One record: wall and CPU time of ``method`` on the ``N³`` grid, its true residual and eigenvalues.

    A forward+backward setup's wall time is its forward + backward; its CPU
    time also covers the Hellmann–Feynman check of :func:`forward_backward`.
    """
    import resource

    import numpy as np

    if not 2 * k < N**3:
        raise ValueError(f"grid size N = {N} too small for k = {k}: need N³ > 2k (pass larger --grid-sizes)")
    M, L, v = build_problem(N)
    t0, c0 = time.perf_counter(), time.process_time()
    vals, vecs, info = _solve(method, M, L, v, N, k, threads)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    wall = info.pop("wall_fwd_bwd", wall)  # forward + backward only, not the Hellmann–Feynman check
    order = np.argsort(vals)
    vals, vecs = np.asarray(vals)[order], np.asarray(vecs)[:, order]
    R = M @ vecs - vecs * vals  # (n, k)
    rel = np.linalg.norm(R, axis=0) / (np.abs(vals) * np.linalg.norm(vecs, axis=0))
    return {
        "suite": "matrix-free", "method": method, "N": N, "n": N**3, "k": k, "wall": wall, "cpu": cpu,
        "eigenvalues": vals.tolist(), "max_rel_residual": float(rel.max()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **info,
    }


def log_line(r: dict) -> str:
    """One progress line for a record of :func:`run_method`."""
    return f"matrix-free N={r['N']:3d} {r['method']:25s} {r['wall']:.3f} s, residual {r['max_rel_residual']:.1e}"
