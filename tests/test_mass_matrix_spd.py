"""``B`` must be symmetric positive definite on every path (issue 10, item 3).

An indefinite or singular ``B`` raises a ``ValueError`` that names ``B`` from
the dense solvers (Cholesky, with a pivot test for a ``B`` singular to working
precision), the materialized operators, ARPACK, LOBPCG and PRIMME (a short
Lanczos run on ``B``, the signs of the B-Gram matrices, the Cholesky of
``Xᵀ B X``, ARPACK's CG breakdown). Before, LOBPCG returned the smallest
positive-norm eigenvalues of an indefinite pencil and skipped its smallest
eigenvalue silently, and ARPACK raised a bare ``RuntimeError``. An inner CG
solve with ``B`` that misses its tolerance follows ``on_failure``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import eigrad
from eigrad.eigensolvers import LOBPCG, Arpack, Primme
from eigrad.eigensolvers._arpack import cg_solve
from eigrad.eigensolvers._auto import primme_available
from eigrad.eigensolvers._definite import check_B_gram, check_B_positive
from eigrad.eigensolvers._iterative import svqb
from eigrad.operators import DenseOperator, as_operator
from eigrad.testing import random_spd

NOT_SPD = r"B is not symmetric positive definite: "
needs_primme = pytest.mark.skipif(not primme_available(), reason="primme is not installed")
N = 300  # above the size that eigsh(solver="auto") materializes


def _tridiag(diag, off):
    n = len(diag)
    return sp.diags([off * np.ones(n - 1), diag, off * np.ones(n - 1)], [-1, 0, 1]).tocsr()


A_SP = _tridiag(2.0 + np.linspace(0.0, 1.0, N), -1.0)  # SPD, eigenvalues in (0.02, 5)
B_SP = _tridiag(2.0 * np.ones(N), 0.3)  # SPD mass matrix, eigenvalues in (1.4, 2.6)


def _bad_B(kind):
    B = B_SP.toarray()
    if kind == "one-negative-entry":  # one negative eigenvalue, far from the rest
        B[7, 7] = -2.0
    elif kind == "rank-one-negative":  # B - 3 z zᵀ: one negative eigenvalue, B dense
        z = np.random.default_rng(0).standard_normal(N)
        z /= np.linalg.norm(z)
        B = B - 3.0 * np.outer(z, z)
    elif kind == "singular":  # v = 1/√n in the null space, exactly as far as rounding allows
        v = np.ones((N, 1)) / N**0.5
        B = B - (B @ v @ v.T @ B) / (v.T @ B @ v).item()
        B = 0.5 * (B + B.T)
    elif kind == "negative":
        B = -B
    return torch.from_numpy(B)


def _sparse(M):
    M = sp.csr_matrix(M)
    return torch.sparse_csr_tensor(
        torch.from_numpy(M.indptr).long(), torch.from_numpy(M.indices).long(), torch.from_numpy(M.data), M.shape
    )


KINDS = ["one-negative-entry", "rank-one-negative", "singular", "negative"]
MESSAGE = {
    "one-negative-entry": "indefinite",
    "rank-one-negative": "indefinite",
    "singular": "singular to working precision",
    "negative": "indefinite",
}
ITERATIVE = [
    pytest.param(lambda: Arpack(), id="arpack"),
    pytest.param(lambda: LOBPCG(), id="lobpcg"),
    pytest.param(lambda: Primme(), id="primme", marks=needs_primme),
]


# --- iterative solvers --------------------------------------------------------------------------------
@pytest.mark.parametrize("make", ITERATIVE)
@pytest.mark.parametrize("kind", KINDS)
def test_iterative_solvers_reject_a_B_that_is_not_spd(make, kind):
    """Before: LOBPCG returned 0.0213, 0.0356, 0.0469 for one negative entry (the pencil's smallest is -0.858)."""
    with pytest.raises(ValueError, match=NOT_SPD + "it is " + MESSAGE[kind]):
        make()(as_operator(_sparse(A_SP)), 3, B=DenseOperator(_bad_B(kind)), n_guard=1)


@pytest.mark.parametrize("kind", KINDS)
def test_eigsh_auto_with_sparse_B_says_B(kind):
    """``solver="auto"`` with ``B`` takes PRIMME or LOBPCG; both refuse."""
    with pytest.raises(ValueError, match=NOT_SPD):
        eigrad.eigsh(_sparse(A_SP), 3, B=_sparse(_bad_B(kind)))


def _spd_with_condition(n, cond, seed=1):
    Q = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))[0]
    B = (Q * torch.logspace(-np.log10(cond), 0, n, dtype=torch.float64)) @ Q.T
    return 0.5 * (B + B.T)


@pytest.mark.parametrize("cond", [1e4, 1e8, 1e12])
def test_lanczos_check_accepts_ill_conditioned_spd_B(cond):
    """No false alarm below cond(B) = 1/(n·eps) = 1.5e13 (n = 300)."""
    check_B_positive(DenseOperator(_spd_with_condition(N, cond)))


@pytest.mark.parametrize("make", [pytest.param(lambda: LOBPCG(), id="lobpcg"),
                                  pytest.param(lambda: Primme(), id="primme", marks=needs_primme)])
def test_iterative_solvers_accept_an_ill_conditioned_spd_B(make):
    """cond(B) = 1e8: the Gram checks raise nothing and the eigenvalues are right (ARPACK's inner CG
    cannot reach its 1e-11 there: ConvergenceError, tested below)."""
    n = 120
    B = _spd_with_condition(n, 1e8)
    A = torch.from_numpy(A_SP.toarray()[:n, :n])
    sol = make()(DenseOperator(A), 3, B=DenseOperator(B), n_guard=1)
    Lc = torch.linalg.cholesky(B)
    C = torch.linalg.solve_triangular(Lc, torch.linalg.solve_triangular(Lc, A, upper=False).mT, upper=False)
    ref = torch.linalg.eigvalsh(0.5 * (C + C.mT))[:3]
    torch.testing.assert_close(sol.eigenvalues, ref, rtol=1e-6, atol=0)


def test_lanczos_check_names_the_batch_element():
    B = torch.from_numpy(B_SP.toarray()[:40, :40])
    Bs = torch.stack([B, B.clone(), B.clone()])
    Bs[2, 3, 3] = -1.0
    with pytest.raises(ValueError, match=NOT_SPD + r"it is indefinite \(it has a negative eigenvalue\) \(batch element \(2,\)\)"):
        check_B_positive(DenseOperator(Bs))
    check_B_positive(DenseOperator(Bs[:2]))  # the SPD ones pass


def test_lanczos_check_sees_the_whole_space_when_n_is_small():
    """``n <= 32``: the Lanczos run spans R^n, so a negative eigenvalue of -1e-3 next to 1.4 is found."""
    lam = torch.linspace(1.4, 2.6, 20, dtype=torch.float64)
    lam[0] = -1e-3
    Q = torch.linalg.qr(torch.randn(20, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64))[0]
    with pytest.raises(ValueError, match=NOT_SPD + "it is indefinite"):
        check_B_positive(DenseOperator((Q * lam) @ Q.T))


def test_lobpcg_batched_B_is_checked():
    A = torch.from_numpy(A_SP.toarray()[:120, :120])
    B = torch.from_numpy(B_SP.toarray()[:120, :120])
    Bs = torch.stack([B, B.clone()])
    Bs[1, 5, 5] = -2.0
    with pytest.raises(ValueError, match=NOT_SPD + r".*batch element \(1,\)"):
        LOBPCG()(DenseOperator(A.expand(2, 120, 120)), 2, B=DenseOperator(Bs))


def test_svqb_rejects_an_indefinite_gram_matrix():
    """A vector with vᵀ B v < 0 (beyond rounding) was dropped as 'dependent'; now it names B."""
    B = torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0], dtype=torch.float64))
    V = torch.eye(4, dtype=torch.float64)[:, :3]
    with pytest.raises(ValueError, match=NOT_SPD + r"B is indefinite: the solver met a vector v with vᵀ B v = -1"):
        svqb(V, B @ V)
    W = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 1.5], [0.0, 0.0]], dtype=torch.float64)  # diagonal > 0, G not
    with pytest.raises(ValueError, match=NOT_SPD + "B is indefinite"):
        svqb(W, B @ W)
    svqb(V, V)  # B = I: nothing to check


def test_gram_of_the_result_must_factor():
    B = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=NOT_SPD + r"the Gram matrix Xᵀ B X of the computed eigenvectors"):
        check_B_gram(DenseOperator(B), torch.eye(3, dtype=torch.float64)[:, :2])


# --- ARPACK's inner CG ----------------------------------------------------------------------------------
def test_cg_breakdown_is_a_value_error_naming_B():
    """Was ``RuntimeError("B is not positive definite: CG met a direction ...")``."""
    B = DenseOperator(torch.diag(torch.tensor([1.0, 2.0, -3.0, 4.0], dtype=torch.float64)))
    with pytest.raises(ValueError, match=NOT_SPD + r"conjugate gradients on B .* pᵀ B p = .* <= 0"):
        cg_solve(B, torch.ones(4, 1, dtype=torch.float64), 1e-12, 100)


def _ill_conditioned_B(n=N):
    return DenseOperator(random_spd(n, seed=3, cond=1e6))


def test_cg_that_misses_cg_rtol_raises_convergence_error():
    """Was ``RuntimeError("CG on B did not reach rtol ...")``, whatever on_failure said."""
    with pytest.raises(eigrad.ConvergenceError, match=r"inner conjugate-gradient solve with B .* cg_maxiter=3"):
        Arpack(cg_maxiter=3)(as_operator(_sparse(A_SP)), 3, B=_ill_conditioned_B(), n_guard=1)


def test_cg_that_misses_cg_rtol_warns_under_on_failure_warn():
    with pytest.warns(eigrad.ConvergenceWarning, match=r"inner CG solves with B stopped at relative residual"):
        sol = Arpack(cg_maxiter=3, on_failure="warn")(as_operator(_sparse(A_SP)), 3, B=_ill_conditioned_B(), n_guard=1)
    assert not sol.converged


# --- dense paths: a B singular to working precision -----------------------------------------------------
def _singular_small():
    n = 8
    B = random_spd(n, seed=1, cond=4.0)
    v = torch.ones(n, 1, dtype=B.dtype) / n**0.5
    S = B - (B @ v @ v.T @ B) / float(v.T @ B @ v)  # exactly singular (v in its null space) up to rounding
    A = torch.randn(n, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return A + A.T, 0.5 * (S + S.T)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda A, B: eigrad.eigh(A, B), id="eigh"),
        pytest.param(lambda A, B: eigrad.eigsh(A, 2, B=B, solver="lapack"), id="lapack"),
        pytest.param(lambda A, B: eigrad.eigsh(A, 2, B=B, solver="dense"), id="dense"),
        pytest.param(lambda A, B: eigrad.eigsh(A.to_sparse_csr(), 2, B=B.to_sparse_csr()), id="materialized"),
        pytest.param(lambda A, B: LOBPCG()(DenseOperator(A), 5, B=DenseOperator(B)), id="lobpcg-dense-fallback"),
    ],
)
def test_dense_paths_reject_a_singular_B(call):
    """Before, rounding let the Cholesky factorization through and the eigenvalues came out ~1e16."""
    A, S = _singular_small()
    with pytest.raises(ValueError, match=NOT_SPD + r"it is singular to working precision \(a pivot of its Cholesky"):
        call(A, S)


def test_small_lobpcg_rejects_a_singular_B():
    A, S = _singular_small()
    with pytest.raises(ValueError, match=NOT_SPD + r"it is singular to working precision: a Lanczos run on B"):
        LOBPCG()(DenseOperator(A), 2, B=DenseOperator(S))
