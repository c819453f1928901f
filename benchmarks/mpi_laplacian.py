"""eigrad on PETSc/SLEPc under MPI (issue 13, item 5): the 3D Laplacian + a potential, forward + backward.

Run under mpirun with the MPI venv (``make test-mpi`` builds it; docs/scaleout.md):

    OMP_NUM_THREADS=1 mpirun -n 2 .venv-mpi/bin/python benchmarks/mpi_laplacian.py --N 32 --k 8
    .venv-mpi/bin/python benchmarks/mpi_laplacian.py --N 32 --k 8 --reference     # + single-process peers

Every rank assembles its own rows of ``H = -Δ + diag(v)`` (7-point Dirichlet
stencil on an N³ grid, ``v`` a smooth non-separable potential, so the levels
are simple) as an ``eigrad.petsc.DistributedCSR`` and runs
``eigrad.eigsh(H, k, solver=Slepc(rtol))`` then the backward of
``Σλ + Σ_i w_i x_0,i²`` (gradients to every rank's stored values). Rank 0
prints the forward and backward wall times (the slowest rank's), the peak
resident memory of each rank (``ru_maxrss``), and with ``--reference`` (one
process only) scipy ARPACK's forward and eigrad's single-process
``eigsh`` forward + backward on the same matrix, with the ratios.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import scipy.sparse as sp
import torch


def hamiltonian(N: int) -> sp.csr_matrix:
    T = sp.diags([-np.ones(N - 1), 2 * np.ones(N), -np.ones(N - 1)], [-1, 0, 1]) * float((N + 1) ** 2)
    Id = sp.identity(N)
    lap = sp.kron(sp.kron(T, Id), Id) + sp.kron(sp.kron(Id, T), Id) + sp.kron(sp.kron(Id, Id), T)
    x = np.arange(1, N + 1) / (N + 1)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    v = 300.0 * (X - 0.3) ** 2 + 200.0 * (Y - 0.6) ** 2 * (1 + Z) + 100.0 * np.sin(3 * X * Y * Z)
    return sp.csr_matrix(lap + sp.diags(v.ravel()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--N", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--reference", action="store_true", help="single-process peers (run without mpirun)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    import eigrad
    from eigrad.petsc import DistributedCSR, Slepc, ownership_range
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    H = hamiltonian(args.N)
    n = H.shape[0]
    start, end = ownership_range(n)
    rows = H[start:end]
    values = torch.tensor(rows.data, requires_grad=True)
    Hd = DistributedCSR(torch.tensor(rows.indptr), torch.tensor(rows.indices), values, (n, n))
    w = torch.linspace(0.0, 1.0, end - start, dtype=torch.float64)

    comm.Barrier()
    t0 = time.perf_counter()
    L, X = eigrad.eigsh(Hd, args.k, solver=Slepc(rtol=args.rtol))
    comm.Barrier()
    t1 = time.perf_counter()
    (L.sum() + (w * X[:, 0] ** 2).sum()).backward()
    comm.Barrier()
    t2 = time.perf_counter()
    rss = comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, root=0)  # MiB (Linux: KiB)
    if comm.rank != 0:
        return
    print(f"N = {args.N} (n = {n}), k = {args.k}, rtol = {args.rtol:g}, {comm.size} rank(s)")
    print(f"levels {', '.join(f'{x:.6g}' for x in L.tolist())}")
    print(f"eigrad slepc: forward {t1 - t0:.2f} s, backward {t2 - t1:.2f} s, "
          f"peak RSS per rank {', '.join(f'{r:.0f}' for r in rss)} MiB")
    if args.reference and comm.size == 1:
        import scipy.sparse.linalg as spla

        v0 = np.random.default_rng(0).uniform(-1, 1, n)
        t = time.perf_counter()
        spla.eigsh(H, k=args.k + 1, which="SA", v0=v0, tol=0.5 * args.rtol)
        t_arpack = time.perf_counter() - t
        idx = torch.from_numpy(np.vstack(H.nonzero()).astype(np.int64))
        vals = torch.tensor(np.asarray(H[H.nonzero()]).ravel(), requires_grad=True)
        S = torch.sparse_coo_tensor(idx, vals, (n, n)).coalesce()
        t = time.perf_counter()
        L1, X1 = eigrad.eigsh(S, args.k, solver=eigrad.solvers.Arpack(rtol=args.rtol))
        t_f = time.perf_counter() - t
        (L1.sum() + (torch.linspace(0.0, 1.0, n, dtype=torch.float64) * X1[:, 0] ** 2).sum()).backward()
        t_b = time.perf_counter() - t - t_f
        print(f"scipy ARPACK forward {t_arpack:.2f} s; eigrad single-process arpack: forward {t_f:.2f} s, "
              f"backward {t_b:.2f} s")
        print(f"ratios: slepc fwd+bwd / scipy ARPACK fwd = {(t2 - t0) / t_arpack:.2f}; "
              f"single-process fwd+bwd / scipy ARPACK fwd = {(t_f + t_b) / t_arpack:.2f}; "
              f"max |Δλ| = {float((L.detach() - L1.detach()).abs().max()):.1e}")


if __name__ == "__main__":
    main()
