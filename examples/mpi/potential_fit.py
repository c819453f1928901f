"""Fit a potential on a distributed 3D grid to target eigenvalues (eigrad.petsc, matrix-free).

    mpirun -n 2 python examples/mpi/potential_fit.py [--N 8] [--steps 5]   (make test-mpi runs main())

Every rank owns PETSc's rows of the N³ grid and the potential values θ on them.
The operator ``A(θ) = -Δ + diag(θ)`` is a ``DistributedFunctionOperator``: its
local product is a torch function of this rank's θ, reading the neighbouring
ranks' rows through PETSc's ghost scatter. The loss ``Σ_i (λ_i(θ) − λ*_i)²``
of the k lowest eigenvalues is minimised by a few gradient steps (the gradient
reaches each rank's θ), then the gradient is checked against central finite
differences along a random direction.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import torch

import eigrad
from eigrad.petsc import DistributedFunctionOperator, Slepc, ownership_range


def laplacian(N):
    T = sp.diags([-np.ones(N - 1), 2 * np.ones(N), -np.ones(N - 1)], [-1, 0, 1])
    I = sp.identity(N)
    return (sp.kron(sp.kron(T, I), I) + sp.kron(sp.kron(I, T), I) + sp.kron(sp.kron(I, I), T)).tocsr()


def local_operator(K, n):
    """``(matmat(X_ext, θ), ghosts)`` for this rank's rows of ``K + diag(θ)``."""
    s, e = ownership_range(n)
    blk = K[s:e].tocoo()
    off = (blk.col < s) | (blk.col >= e)
    ghosts = np.unique(blk.col[off])
    ext = np.where(off, 0, blk.col - s)
    ext[off] = (e - s) + np.searchsorted(ghosts, blk.col[off])
    Kl = torch.sparse_coo_tensor(np.vstack([blk.row, ext]), blk.data, (e - s, e - s + ghosts.size),
                                 check_invariants=True).coalesce()

    def matmat(Xext, theta):
        return Kl @ Xext + theta.unsqueeze(-1) * Xext[: e - s]

    return matmat, torch.from_numpy(ghosts)


def main(N=6, k=4, steps=5, lr=None, seed=0, verbose=True):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    n = N**3
    s, e = ownership_range(n)
    K = laplacian(N)
    matmat, ghosts = local_operator(K, n)
    opts = dict(solver=Slepc(rtol=1e-11), backward=eigrad.BackwardOptions(linsolve_rtol=1e-12))
    x = (np.arange(N) - (N - 1) / 2) / N
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    V_true = 4.0 * (X**2 + 0.7 * Y**2 + 1.3 * Z**2).ravel() + 0.3 * np.random.default_rng(seed).uniform(size=n)

    def eigvals(theta):
        A = DistributedFunctionOperator(matmat, [theta], (n, n), ghosts=ghosts)
        return eigrad.eigsh(A, k, **opts).eigenvalues

    target = eigvals(torch.tensor(V_true[s:e])).detach()

    def loss_of(theta):
        return ((eigvals(theta) - target) ** 2).sum()

    # start: a flat potential plus noise (θ = 0 would be the bare Laplacian, whose triple levels make a loss of the
    # individual eigenvalues non-differentiable: eigrad would warn)
    theta0 = 1.0 + 0.5 * np.random.default_rng(seed + 2).uniform(size=n)
    theta = torch.tensor(theta0[s:e], requires_grad=True)
    losses, t0 = [], time.perf_counter()
    lr = 0.08 * n if lr is None else lr  # ∂λ/∂θ_j = x_j², of size 1/n: steps scale with n
    for _ in range(steps):
        loss = loss_of(theta)
        (g,) = torch.autograd.grad(loss, theta)
        losses.append(float(loss.detach()))
        with torch.no_grad():
            theta -= lr * g
    losses.append(float(loss_of(theta.detach())))
    t_fit = time.perf_counter() - t0
    # gradient check: central finite differences along a random direction (the same on every rank's rows)
    th = theta.detach().clone().requires_grad_(True)
    t1 = time.perf_counter()
    (g,) = torch.autograd.grad(loss_of(th), th)
    t_grad = time.perf_counter() - t1
    d = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal(n)[s:e].copy())
    h = 1e-5
    fd = (float(loss_of(th.detach() + h * d)) - float(loss_of(th.detach() - h * d))) / (2 * h)
    ad = comm.allreduce(float((g * d).sum()))
    rel = abs(ad - fd) / max(abs(fd), 1e-300)
    if verbose and comm.rank == 0:
        print(f"n={n} on {comm.size} rank(s), k={k}: loss {' -> '.join(f'{v:.3e}' for v in losses)}")
        print(f"gradient check vs central FD (h={h:g}): AD {ad:.10e}, FD {fd:.10e}, rel. diff {rel:.1e}")
        print(f"{steps} steps (forward + backward) {t_fit:.2f} s; one loss + gradient {t_grad:.2f} s")
    return losses, rel


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--fast", action="store_true", help="N=6, 3 steps")
    a = ap.parse_args()
    main(N=6 if a.fast else a.N, k=a.k, steps=3 if a.fast else a.steps)
