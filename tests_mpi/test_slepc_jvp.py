"""Forward mode (JVP) of eigsh(DistributedCSR, k, solver="slepc") w.r.t. the stored values."""

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.autograd.forward_ad as fwAD

import eigrad
from eigrad.petsc import DistributedCSR, Slepc

from _problems import (
    WORLD,
    cubic_problem,
    distribute,
    gather_rows,
    global_max,
    global_sum,
    local_slice,
    mass_matrix,
    random_potential_problem,
)

TIGHT = dict(solver=Slepc(rtol=1e-11), backward=eigrad.BackwardOptions(linsolve_rtol=1e-12))
# torch's forward-mode machinery warns about its own use of torch.jit.script
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _dual_eigsh(D, tangent, k, B=None, tangent_B=None, **kw):
    """``(L, X, L', X')`` with the values of ``D`` (and ``B``) carrying ``tangent`` (``tangent_B``)."""
    p = D.pattern
    with fwAD.dual_level():
        v = fwAD.make_dual(D.values.detach(), tangent)
        Dd = DistributedCSR(torch.from_numpy(p.crow), torch.from_numpy(p.col), v, D.shape)
        Bd = None
        if B is not None:
            vb = fwAD.make_dual(B.values.detach(), tangent_B)
            Bd = DistributedCSR(torch.from_numpy(B.pattern.crow), torch.from_numpy(B.pattern.col), vb, B.shape)
        L, X = eigrad.eigsh(Dd, k, B=Bd, **kw)
        (Lp, Lt), (Xp, Xt) = fwAD.unpack_dual(L), fwAD.unpack_dual(X)
        return Lp, Xp, Lt, Xt


@pytest.mark.parametrize("generalized", [False, True])
def test_jvp_matches_reverse_mode(generalized):
    # <u, J t> = <Jᵀ u, t>: the forward-mode tangent of a loss equals the reverse-mode gradient · t
    A = random_potential_problem(6, seed=13)
    B = mass_matrix(6) if generalized else None
    n, k = A.shape[0], 3
    rng = np.random.default_rng(14)
    c = rng.uniform(0.5, 1.5, n)
    tA, tB = rng.standard_normal(A.nnz), rng.standard_normal(A.nnz)
    wts = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    D, v, (s, e) = distribute(A)
    DB, vB = (None, None) if B is None else distribute(B)[:2]
    sl = local_slice(A, (s, e))
    tl, tbl = torch.from_numpy(tA[sl].copy()), torch.from_numpy(tB[sl].copy())
    cl = torch.tensor(c[s:e]).unsqueeze(-1)

    L, X = eigrad.eigsh(D, k, B=DB, **TIGHT)
    ((wts * L).sum() + (cl * X**4).sum()).backward()
    rev = global_sum((v.grad * tl).sum() + (0.0 if vB is None else (vB.grad * tbl).sum()))

    Lp, Xp, Lt, Xt = _dual_eigsh(D, tl, k, B=DB, tangent_B=None if B is None else tbl, **TIGHT)
    fwd = float((wts * Lt).sum()) + global_sum((4 * cl * Xp**3 * Xt).sum())  # f(L) once, g(X) over the ranks
    assert abs(fwd - rev) <= 1e-9 * abs(rev)


def test_jvp_of_eigenvalues_and_vectors_vs_dense():
    A = random_potential_problem(6, seed=15)
    n, k = A.shape[0], 3
    t = np.random.default_rng(16).standard_normal(A.nnz)
    D, _, (s, e) = distribute(A)
    sl = local_slice(A, (s, e))
    Lp, Xp, Lt, Xt = _dual_eigsh(D, torch.from_numpy(t[sl].copy()), k, **TIGHT)
    h = 1e-6
    rows = np.repeat(np.arange(n), np.diff(A.indptr))

    def dense(data):
        M = np.zeros((n, n))
        np.add.at(M, (rows, A.indices), data)
        return 0.5 * (M + M.T)

    w1, Q1 = np.linalg.eigh(dense(A.data + h * t))
    w0, Q0 = np.linalg.eigh(dense(A.data - h * t))
    np.testing.assert_allclose(Lt.numpy(), (w1[:k] - w0[:k]) / (2 * h), rtol=1e-6)
    Xg = gather_rows(Xp).numpy()
    sgn1 = np.sign((Xg * Q1[:, :k]).sum(0))
    sgn0 = np.sign((Xg * Q0[:, :k]).sum(0))
    fd = (Q1[:, :k] * sgn1 - Q0[:, :k] * sgn0) / (2 * h)
    assert global_max(np.abs(Xt.numpy() - fd[s:e]).max()) < 1e-6 * np.abs(fd).max()


def test_jvp_splits_a_triple_into_its_slopes():
    # at an exact triple the eigenvalue tangents are the eigenvalues of X_gᵀ A' X_g (one-sided slopes)
    A = cubic_problem(6)
    n = A.shape[0]
    t = np.random.default_rng(17).standard_normal(A.nnz)
    D, _, (s, e) = distribute(A)
    Lp, Xp, Lt, Xt = _dual_eigsh(D, torch.from_numpy(t[local_slice(A, (s, e))].copy()), 4, **TIGHT)
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    M, dM = np.zeros((n, n)), np.zeros((n, n))
    np.add.at(M, (rows, A.indices), A.data)
    np.add.at(dM, (rows, A.indices), t)
    h = 1e-7
    w = scipy.linalg.eigh(0.5 * (M + M.T) + h * 0.5 * (dM + dM.T), eigvals_only=True)[:4]
    w0 = scipy.linalg.eigh(0.5 * (M + M.T), eigvals_only=True)[:4]
    np.testing.assert_allclose(Lt.numpy(), (w - w0) / h, rtol=1e-4, atol=1e-6)
