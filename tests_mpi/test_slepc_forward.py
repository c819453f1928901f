"""eigsh(DistributedCSR, k, solver="slepc"): forward vs dense references, errors on every rank alike."""

import numpy as np
import pytest
import torch

import eigrad
from eigrad.petsc import DistributedCSR, Slepc, ownership_range

from _problems import WORLD, cubic_problem, distribute, gather_rows, global_max, mass_matrix, random_potential_problem


@pytest.mark.parametrize("largest", [False, True])
def test_forward_matches_dense_on_gathered_matrix(largest):
    A = random_potential_problem(6, seed=1)
    D, _, (s, e) = distribute(A, requires_grad=False)
    L, X = eigrad.eigsh(D, 4, solver=Slepc(rtol=1e-10), largest=largest)
    assert X.shape == (e - s, 4) and L.shape == (4,)
    w, Q = np.linalg.eigh(A.toarray())
    sel = slice(-4, None) if largest else slice(0, 4)
    ref, Qk = w[sel], Q[:, sel]
    # replicated eigenvalues: identical on every rank
    assert all(np.array_equal(L.numpy(), o) for o in WORLD.allgather(L.numpy()))
    np.testing.assert_allclose(L.numpy(), ref, rtol=1e-12, atol=0)
    Xg = gather_rows(X).numpy()
    np.testing.assert_allclose(np.abs(Xg.T @ Qk), np.eye(4), atol=1e-8)  # the same vectors up to sign
    np.testing.assert_allclose(Xg.T @ Xg, np.eye(4), atol=1e-12)


def test_missed_copies_of_a_triple_are_found():
    # a start vector with the grid's full cubic symmetry spans (in exact arithmetic) only the symmetric
    # eigenvectors: Krylov–Schur alone would return none of the triple λ_1 = λ_2 = λ_3; the deflated
    # re-check must find all three copies
    A = cubic_problem(6)
    D, _, (s, e) = distribute(A, requires_grad=False)
    X0 = torch.ones(e - s, 1, dtype=torch.float64)
    L, X = eigrad.eigsh(D, 4, solver=Slepc(rtol=1e-10), X0=X0)
    ref = np.linalg.eigvalsh(A.toarray())[:4]
    assert ref[3] - ref[1] < 1e-12 and ref[1] - ref[0] > 0.5  # the problem has the triple
    np.testing.assert_allclose(L.numpy(), ref, rtol=1e-11, atol=0)
    Xg = gather_rows(X).numpy()
    np.testing.assert_allclose(Xg.T @ Xg, np.eye(4), atol=1e-10)


def test_nonconvergence_raises_on_every_rank():
    D, _, _ = distribute(random_potential_problem(6), requires_grad=False)
    with pytest.raises(eigrad.ConvergenceError, match="converged .* of the 5 eigenpairs wanted"):
        eigrad.eigsh(D, 4, solver=Slepc(rtol=1e-13, maxiter=1, ncv=6))


def test_malformed_block_raises_on_every_rank():
    n = 27
    s, e = ownership_range(n)
    # rank 0 passes one row pointer too many; every rank must raise (rank 0's message)
    m = e - s + (2 if WORLD.rank == 0 else 1)
    crow = torch.zeros(m, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"crow_local has .* entries but this rank owns rows"):
        DistributedCSR(crow, torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.float64), (n, n))


def test_unsymmetric_matrix_raises_on_every_rank():
    A = random_potential_problem(4).tolil()
    A[0, 1] = 5.0  # (0, 1) no longer equals (1, 0)
    D, _, _ = distribute(A.tocsr(), requires_grad=False)
    with pytest.raises(ValueError, match="not symmetric"):
        eigrad.eigsh(D, 2, solver="slepc")


def test_wrong_inputs():
    D, _, _ = distribute(random_potential_problem(4), requires_grad=False)
    with pytest.raises(TypeError, match="DistributedCSR"):
        eigrad.eigsh(torch.eye(4, dtype=torch.float64), 2, solver="slepc")
    with pytest.raises(ValueError, match="solver='lobpcg'"):
        eigrad.eigsh(D, 2, solver="lobpcg")
    with pytest.raises(ValueError, match="k must be"):
        eigrad.eigsh(D, 0, solver="slepc")
    D5, _, _ = distribute(random_potential_problem(5), requires_grad=False)
    with pytest.raises(ValueError, match="must match A"):
        eigrad.eigsh(D, 2, B=D5, solver="slepc")
    with pytest.raises(TypeError, match="B as an eigrad.petsc.DistributedCSR"):
        eigrad.eigsh(D, 2, B=torch.eye(64, dtype=torch.float64), solver="slepc")


def test_one_rank_and_all_ranks_give_the_same_numbers():
    # every rank also solves the whole problem alone (PETSc on COMM_SELF) and compares
    from mpi4py import MPI

    A = random_potential_problem(6, seed=3)
    c = np.random.default_rng(7).uniform(0.5, 1.5, A.shape[0])
    w = torch.tensor([1.0, -0.5, 0.25])
    out = {}
    for name, comm in (("world", None), ("self", MPI.COMM_SELF)):
        D, v, (s, e) = distribute(A, comm=comm)
        L, X = eigrad.eigsh(D, 3, solver=Slepc(rtol=1e-10),
                            backward=eigrad.BackwardOptions(linsolve_rtol=1e-12))
        ((w * L).sum() + (torch.tensor(c[s:e]).unsqueeze(-1) * X**4).sum()).backward()
        out[name] = (L.detach(), v.grad, (s, e))
    Lw, gw, (s, e) = out["world"]
    Ls, gs, _ = out["self"]
    lo, hi = int(A.indptr[s]), int(A.indptr[e])
    assert global_max((Lw - Ls).abs().max() / Ls.abs().max()) < 1e-13
    assert global_max((gw - gs[lo:hi]).abs().max() / gs.abs().max()) < 1e-9


def test_petsc_matrix_products_and_value_refresh():
    A = random_potential_problem(5, seed=9)
    D, v, (s, e) = distribute(A, requires_grad=False)
    Xfull = np.random.default_rng(1).standard_normal((A.shape[0], 3))
    X = torch.from_numpy(Xfull[s:e].copy())
    op = D.operator()
    try:
        np.testing.assert_allclose(op.matmat(X).numpy(), (A @ Xfull)[s:e], rtol=1e-13, atol=1e-13)
        op.refresh(2.0 * v - 1.0)  # new values, same pattern (setValuesCSR)
        A2 = A.copy()
        A2.data = 2.0 * A2.data - 1.0
        np.testing.assert_allclose(op.matmat(X).numpy(), (A2 @ Xfull)[s:e], rtol=1e-13, atol=1e-13)
    finally:
        op.destroy()


@pytest.mark.parametrize("largest", [False, True])
def test_generalized_forward_matches_dense(largest):
    import scipy.linalg

    A, B = random_potential_problem(6, seed=1), mass_matrix(6)
    DA, _, _ = distribute(A, requires_grad=False)
    DB, _, _ = distribute(B, requires_grad=False)
    L, X = eigrad.eigsh(DA, 4, B=DB, solver=Slepc(rtol=1e-10), largest=largest)
    w, Q = scipy.linalg.eigh(A.toarray(), B.toarray())
    sel = slice(-4, None) if largest else slice(0, 4)
    np.testing.assert_allclose(L.numpy(), w[sel], rtol=1e-12, atol=0)
    Xg = gather_rows(X).numpy()
    np.testing.assert_allclose(Xg.T @ B.toarray() @ Xg, np.eye(4), atol=1e-12)  # B-orthonormal
    np.testing.assert_allclose(np.abs(Xg.T @ B.toarray() @ Q[:, sel]), np.eye(4), atol=1e-8)
