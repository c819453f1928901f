"""FEM pencil suite: the k smallest eigenpairs of ``K x = λ M x``, eigrad forward+backward vs peers' forwards.

The Laplace stiffness ``K`` and consistent mass ``M`` of Lagrange elements on
the unit square (scikit-fem), Dirichlet boundary condensed, float64. Size
``S`` means ``P1`` on an ``S × S`` grid of squares cut into triangles and
``P2`` on ``S/2 × S/2``: both have ``n = (S - 1)²`` unknowns. The k = 10
smallest pairs of the unit square include the exact double levels
(``(1,2)``/``(2,1)``, ...) up to discretization (the triangulation's diagonals
break the symmetry slightly).

eigrad's row is ``eigrad.eigsh_ex(K, k, B=M)`` with the defaults
(``solver="auto"``) on torch sparse tensors, then the gradient of the
gauge-invariant loss ``Σ λ_j + Σ_j Σ_i w_i x_ij²`` (fixed weights ``w``) with
respect to K's stored values; the peers' rows are forwards alone. The
reference of the ratios is scipy's shift-invert (``eigsh(K, k, M,
sigma=0)``, SuperLU), what FEM users call. Each record carries the true
residual ``max_j ‖K x_j − λ_j M x_j‖ / (|λ_j| ‖M x_j‖)``, checked here.

The single definition of the problem and the methods: ``eigrad bench --suite
pencil`` runs them, and ``benchmarks/shift_invert.py`` builds its FEM
problems with :func:`fem_pencil`.
"""

from __future__ import annotations

import time

K_DEFAULT = 10
#: per-pair relative residual the peers are asked for
RTOL = 1e-8
REFERENCE = "scipy-si"
ELEMENTS = ("P1", "P2")
METHODS = ("scipy-si", "eigrad-fwd+bwd", "scipy-arpack", "primme", "torch-lobpcg")
_LOSS = "the gradient of Σλ + Σ_j Σ_i w_i x_ij² with respect to K's stored values"
DESCRIPTION = {
    "scipy-si": "`scipy.sparse.linalg.eigsh(K, k, M, sigma=0)`: shift-invert with SuperLU, forward alone (reference)",
    "eigrad-fwd+bwd": f"`eigrad.eigsh_ex(K, k, B=M)` with the defaults (torch sparse K, M), then {_LOSS}; "
    "the time covers both",
    "scipy-arpack": "`scipy.sparse.linalg.eigsh(K, k, M, which='SA', tol=1e-8)`: ARPACK mode 2 (a SuperLU solve "
    "with M per step), forward alone",
    "primme": "`primme.eigsh(K, k, M, which='SA')`, no preconditioner, forward alone",
    "torch-lobpcg": "`torch.lobpcg(K, k, B=M)` on torch sparse COO, no preconditioner, forward alone",
}


def fem_pencil(element: str, S: int):
    """``(K, M)`` scipy CSR: Laplace stiffness and consistent mass, ``element`` "P1" on ``S × S`` squares or "P2"
    on ``S/2 × S/2`` (``n = (S - 1)²`` either way), Dirichlet boundary condensed."""
    import numpy as np

    try:
        import skfem
        from skfem.models.poisson import laplace, mass
    except ImportError as exc:  # the runner reports it as a skipped suite
        raise ImportError("the FEM pencil suite needs scikit-fem (`pip install scikit-fem`)") from exc
    if element not in ELEMENTS:
        raise ValueError(f"element must be one of {ELEMENTS}; got {element!r}")
    if S < 4 or S % 2:
        raise ValueError(f"the FEM size must be an even integer >= 4 (P2 uses S/2 squares per side); got {S}")
    m = S if element == "P1" else S // 2
    mesh = skfem.MeshTri.init_tensor(np.linspace(0, 1, m + 1), np.linspace(0, 1, m + 1))
    basis = skfem.Basis(mesh, skfem.ElementTriP1() if element == "P1" else skfem.ElementTriP2())
    inner = basis.complement_dofs(basis.get_dofs())
    K = laplace.assemble(basis)[inner][:, inner].tocsr()
    M = mass.assemble(basis)[inner][:, inner].tocsr()
    return K, M


def torch_sparse(S, requires_grad: bool = False):
    """``(torch sparse COO tensor, its values)`` of the scipy matrix ``S`` (the values a leaf when asked)."""
    import numpy as np
    import torch

    C = S.tocoo()
    idx = torch.from_numpy(np.vstack([C.row, C.col]).astype(np.int64))
    vals = torch.from_numpy(C.data.copy()).requires_grad_(requires_grad)
    return torch.sparse_coo_tensor(idx, vals, C.shape, check_invariants=False), vals


def _solve(method: str, K, M, k: int) -> tuple:
    """``(eigenvalues, eigenvectors, extra info)`` (numpy) of one method; eigrad's row includes its backward."""
    import numpy as np
    import scipy.sparse.linalg as spla

    n = K.shape[0]
    if method == "scipy-si":
        vals, vecs = spla.eigsh(K, k, M=M, sigma=0)
        return vals, vecs, {}
    if method == "scipy-arpack":
        vals, vecs = spla.eigsh(K, k, M=M, which="SA", tol=RTOL, v0=np.random.default_rng(0).uniform(-1, 1, n))
        return vals, vecs, {}
    if method == "primme":
        import primme

        vals, vecs, stats = primme.eigsh(K, k, M=M, which="SA", tol=RTOL, return_stats=True)
        return vals, vecs, {"n_matvec": int(stats["numMatvecs"])}
    import torch

    if method == "torch-lobpcg":
        Kt, Mt = torch_sparse(K)[0].coalesce(), torch_sparse(M)[0].coalesce()
        X0 = torch.randn(n, k, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        vals, vecs = torch.lobpcg(Kt, k=k, B=Mt, X=X0, largest=False, tol=RTOL, niter=100000)
        return vals.numpy(), vecs.numpy(), {}
    if method == "eigrad-fwd+bwd":
        from .. import eigsh_ex

        Kt, leaf = torch_sparse(K, requires_grad=True)
        Mt = torch_sparse(M)[0]
        w = torch.from_numpy(np.random.default_rng(0).uniform(0.5, 1.5, n))
        t0 = time.perf_counter()
        L, X, info = eigsh_ex(Kt, k, B=Mt)
        t1 = time.perf_counter()
        (L.sum() + (w.unsqueeze(-1) * X**2).sum()).backward()
        t2 = time.perf_counter()
        return L.detach().numpy(), X.detach().numpy(), {
            "forward_s": t1 - t0, "backward_s": t2 - t1, "wall_fwd_bwd": t2 - t0, "solver": info.solver,
            "n_matvec": int(info.matvecs), "bwd_iterations": int(sum(b.iterations for b in info.backward)),
            "grad_norm": float(leaf.grad.norm()),
        }
    raise ValueError(f"unknown pencil method {method!r}; pass one of {', '.join(METHODS)}")


def run_method(method: str, element: str, S: int, k: int = K_DEFAULT) -> dict:
    """One record: wall and CPU time of ``method`` on the ``element`` pencil of size ``S``, its true residual."""
    import resource

    import numpy as np

    K, M = fem_pencil(element, S)
    n = K.shape[0]
    if not 2 * k < n:
        raise ValueError(f"FEM size S = {S} too small for k = {k}: need (S-1)² > 2k (pass larger --fem-sizes)")
    t0, c0 = time.perf_counter(), time.process_time()
    vals, vecs, info = _solve(method, K, M, k)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    wall = info.pop("wall_fwd_bwd", wall)
    order = np.argsort(vals)
    vals, vecs = np.asarray(vals)[order], np.asarray(vecs)[:, order]
    MX = M @ vecs
    rel = np.linalg.norm(K @ vecs - MX * vals, axis=0) / (np.abs(vals) * np.linalg.norm(MX, axis=0))
    return {
        "suite": "pencil", "method": method, "element": element, "S": S, "n": n, "k": k, "wall": wall, "cpu": cpu,
        "eigenvalues": vals.tolist(), "max_rel_residual": float(rel.max()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **info,
    }


def log_line(r: dict) -> str:
    """One progress line for a record of :func:`run_method`."""
    return (f"pencil {r['element']} S={r['S']:4d} n={r['n']:7d} {r['method']:15s} {r['wall']:.3f} s, "
            f"residual {r['max_rel_residual']:.1e}")
