"""ARPACK never misses copies of an exactly repeated eigenvalue silently (eigensolvers/_arpack.py).

Single-vector Lanczos sees one direction per eigenspace in exact arithmetic:
on a cubic grid with a cubic-symmetric potential scipy's ``eigsh`` returns
one copy of a triple level and skips the others (measured here; whether it
does depends on the rounding of the BLAS and CPU, so no test asserts what
scipy returns). The verification itself is tested deterministically on a
planted miss (``test_verification_finds_a_planted_miss``); the other tests
check eigrad's ``Arpack`` against the dense spectrum.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

import eigrad
from eigrad.eigensolvers import Arpack, Primme
from eigrad.eigensolvers._auto import primme_available
from eigrad.operators import LinearOperator, OperatorSpec

N = 10  # n = 1000


class CSR(LinearOperator):
    """A scipy CSR matrix seen only through ``matmat``."""

    def __init__(self, M):
        self.M = sp.csr_matrix(M)
        self.shape, self.dtype, self.device = tuple(self.M.shape), torch.float64, torch.device("cpu")

    def matmat(self, X):
        return torch.from_numpy(np.asarray(self.M @ X.numpy()))

    def flatten(self):
        return (), OperatorSpec(lambda ts: self)


def symmetric_grid(N=N):
    """Dirichlet Laplacian on the unit cube plus ``400 r² + 3000 r⁴`` about its centre.

    Cubic symmetry: levels of multiplicity 1, 3, 2, 3, 1, 3, ... (76.1, 133.4, 194.02, 194.73, 201.8, 258.0).
    """
    T = sp.diags([-np.ones(N - 1), 2 * np.ones(N), -np.ones(N - 1)], [-1, 0, 1]) * float((N + 1) ** 2)
    Id = sp.identity(N)
    L = sp.kron(sp.kron(T, Id), Id) + sp.kron(sp.kron(Id, T), Id) + sp.kron(sp.kron(Id, Id), T)
    x = np.arange(1, N + 1) / (N + 1) - 0.5
    r2 = (x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2).ravel()
    return sp.csr_matrix(L + sp.diags(400.0 * r2 + 3000.0 * r2**2)), r2


M, R2 = symmetric_grid()
W = scipy.linalg.eigvalsh(M.toarray())  # ascending, the reference spectrum
SCALE = np.abs(W).max()


def multiplicities(w, tol=1e-9):
    return np.diff(np.flatnonzero(np.r_[True, np.diff(w) > tol * np.abs(w).max(), True]))


def test_problem_has_exact_triples_and_doubles():
    mult = multiplicities(W[:12])
    assert list(mult[:5]) == [1, 3, 2, 3, 1], mult


@pytest.mark.parametrize("k,largest", [(3, False), (5, False), (9, False), (3, True)])
def test_missed_copies_are_found(k, largest):
    """k + 1 pairs (one guard); k = 3 and 5 cut the triple and the double, k = 9 closes them."""
    ref = W[-k:] if largest else W[:k]
    sol = Arpack()(CSR(M), k, largest=largest, n_guard=1)
    assert sol.converged, sol.status
    np.testing.assert_allclose(sol.eigenvalues.numpy(), ref, rtol=0, atol=1e-9 * SCALE)
    guard = W[-k - 1] if largest else W[k]
    np.testing.assert_allclose(sol.guard_eigenvalues.numpy(), [guard], rtol=0, atol=1e-9 * SCALE)
    X = sol.eigenvectors.numpy()
    np.testing.assert_allclose(X.T @ X, np.eye(k), atol=1e-8)
    assert sol.n_matvec > 0


def _dense_deflated_eigsh(op, p, v0, tol):
    """The ``eigsh`` callable of ``verify_no_missed`` by a dense eigh: no Lanczos, no rounding luck."""
    n = op.shape[-1]
    Ad = op.matmat(torch.eye(n, dtype=torch.float64))
    mu, Y = torch.linalg.eigh(0.5 * (Ad + Ad.T))
    return mu[:p], Y[:, :p], n, True


@pytest.mark.parametrize("dropped", [2, 3], ids=["inside", "last-copy"])
def test_verification_finds_a_planted_miss(dropped):
    """Pairs 0..4 with one copy of the triple (positions 1-3) left out, as a single-vector Lanczos
    run returns them: the deflated check must find it and return W[:4] (W[1] = W[2] = W[3])."""
    from eigrad.eigensolvers._arpack import verify_no_missed

    w, V = torch.linalg.eigh(torch.from_numpy(M.toarray()))
    keep = [i for i in range(5) if i != dropped]
    vals, X, count, reason = verify_no_missed(
        CSR(M), None, w[keep], V[:, keep], False, 1e-10, 1, _dense_deflated_eigsh, np.random.default_rng(0)
    )
    assert reason == ""
    np.testing.assert_allclose(vals.numpy(), W[:4], rtol=0, atol=1e-9 * SCALE)
    Xn = X.numpy()
    np.testing.assert_allclose(Xn.T @ Xn, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(M @ Xn - Xn * vals.numpy(), 0.0, atol=1e-8 * SCALE)
    assert count > 0


def test_verification_leaves_a_complete_result_alone():
    from eigrad.eigensolvers._arpack import verify_no_missed

    w, V = torch.linalg.eigh(torch.from_numpy(M.toarray()))
    vals, X, _, reason = verify_no_missed(
        CSR(M), None, w[:4], V[:, :4], False, 1e-10, 1, _dense_deflated_eigsh, np.random.default_rng(0)
    )
    assert reason == ""
    torch.testing.assert_close(vals, w[:4], rtol=0, atol=0)


def test_generalized_with_symmetric_mass():
    Bm = sp.diags(1.0 + 2.0 * R2).tocsr()  # cubic-symmetric SPD mass: the degeneracies stay
    wB = scipy.linalg.eigh(M.toarray(), Bm.toarray(), eigvals_only=True)
    k = 4
    sol = Arpack()(CSR(M), k, B=CSR(Bm), n_guard=1)
    assert sol.converged, sol.status
    np.testing.assert_allclose(sol.eigenvalues.numpy(), wB[:k], rtol=0, atol=1e-9 * np.abs(wB).max())
    X = sol.eigenvectors.numpy()
    np.testing.assert_allclose(X.T @ (Bm @ X), np.eye(k), atol=1e-8)


def sparse_tensor(Msp):
    coo = Msp.tocoo()
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    vals = torch.from_numpy(coo.data.copy()).requires_grad_(True)
    return torch.sparse_coo_tensor(idx, vals, coo.shape, check_invariants=True).coalesce(), vals


@pytest.mark.parametrize("k,positions,alt", [(3, r"\[1, 2\]", "k=1 or k=4"), (5, r"\[4\]", "k=4 or k=6")])
def test_cut_cluster_is_detected_through_eigsh(k, positions, alt):
    """k cuts the triple (k=3) or the double (k=5): the guard must be the next copy, never skipped."""
    A, _ = sparse_tensor(M)
    L, X = eigrad.eigsh(A, k, solver="arpack")
    np.testing.assert_allclose(L.detach().numpy(), W[:k], rtol=0, atol=1e-9 * SCALE)
    with pytest.warns(eigrad.GaugeWarning, match=rf"k={k} cuts a degenerate cluster.*positions {positions}.*Pass {alt}"):
        L.sum().backward()


def test_closed_clusters_give_hellmann_feynman_without_warning():
    """k = 4 closes the triple: d(Σλ)/dA_ij = Σ x_i x_j (Hellmann–Feynman), no GaugeWarning."""
    A, vals = sparse_tensor(M)
    L, X = eigrad.eigsh(A, 4, solver="arpack")
    L.sum().backward()
    coo = M.tocoo()
    P = X.detach().numpy()
    expect = (P[coo.row] * P[coo.col]).sum(1)
    np.testing.assert_allclose(vals.grad.numpy(), expect, atol=1e-7)


@pytest.mark.skipif(not primme_available(), reason="primme is not installed")
@pytest.mark.parametrize("largest", [False, True], ids=["smallest", "largest"])
def test_primme_guard_does_not_skip_a_copy(largest):
    """PRIMME's GD+k skips the third copy of the triple as a guard (k=3), hiding the cut: verified, it does not."""
    k = 3
    ref_guard = W[-k - 1] if largest else W[k]
    sol = Primme()(CSR(M), k, n_guard=1, largest=largest)
    ref = W[-k:] if largest else W[:k]
    np.testing.assert_allclose(sol.eigenvalues.numpy(), ref, rtol=1e-9)
    np.testing.assert_allclose(sol.guard_eigenvalues.numpy(), [ref_guard], rtol=1e-9)


@pytest.mark.parametrize("zeros", [1, 3], ids=["simple", "triple"])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("largest", [False, True], ids=["smallest", "largest"])
def test_exactly_zero_eigenvalues_are_not_skipped(zeros, k, largest):
    """scipy 1.17's ARPACK returned [1, 2] for the two smallest of 0, 1, 2, ... (a zero eigenvalue,
    simple or repeated, skipped with nothing reported; measured on seeds 0-5). eigrad's Arpack
    shifts the operator off zero; the residual floor and the degeneracy tolerances use the
    spectrum's scale, so an all-zero result still converges and its copies are merged."""
    from eigrad.testing import planted

    vals = [0.0] * zeros + [float(i) for i in range(1, 33)]
    vals = [-v for v in vals] if largest else vals
    for seed in range(3):
        p = planted(vals, seed=seed)
        op = eigrad.FunctionOperator(lambda X, M: M @ X, (p.A,), tuple(p.A.shape))
        L, X = eigrad.eigsh(op, k, largest=largest, solver="arpack")
        ref = p.eigenvalues[-k:] if largest else p.eigenvalues[:k]
        np.testing.assert_allclose(L.numpy(), ref.numpy(), rtol=0, atol=1e-9)
        np.testing.assert_allclose((X.T @ X).numpy(), np.eye(k), atol=1e-9)


@pytest.mark.parametrize("solver", ["arpack", "lobpcg"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_cut_zero_triple_is_reported(solver, k):
    """k = 1, 2 cut a triple at exactly 0: the degeneracy tolerance must be relative to the
    spectrum's scale, not to the computed values (all ~1e-16 here, which split the copies and
    hid the cut from LOBPCG); k = 3 closes it and stays silent."""
    from eigrad.testing import planted

    p = planted([0.0, 0.0, 0.0] + [float(i) for i in range(1, 40)], seed=0)
    A = p.A.clone().requires_grad_(True)
    op = eigrad.FunctionOperator(lambda X, M: M @ X, (A,), tuple(A.shape))
    L, X = eigrad.eigsh(op, k, solver=solver)
    if k < 3:
        with pytest.warns(eigrad.GaugeWarning, match=rf"k={k} cuts a degenerate cluster"):
            L.sum().backward()
    else:
        L.sum().backward()
        torch.testing.assert_close(A.grad, X.detach() @ X.detach().T, rtol=0, atol=1e-8)


def test_generalized_zero_eigenvalue_converges():
    """Mode 2 (B ≠ I) at an exact zero eigenvalue: the default inner CG tolerance left a relative
    residual of 7.2e-8 (ConvergenceError at rtol 1e-8); the tighter second solve certifies it."""
    from eigrad.testing import planted

    vals = [0.0, 1.0, 2.0, 3.0] + [4.0 + 0.5 * i for i in range(26)]
    p = planted(vals, B="random", seed=0, cond=5.0)
    op = lambda M: eigrad.FunctionOperator(lambda X, M: M @ X, (M,), tuple(M.shape))  # noqa: E731
    L, X = eigrad.eigsh(op(p.A), 2, B=op(p.B), solver="arpack")
    np.testing.assert_allclose(L.numpy(), [0.0, 1.0], rtol=0, atol=1e-9)
    np.testing.assert_allclose((X.T @ p.B @ X).numpy(), np.eye(2), atol=1e-9)


def test_marginal_ritz_residuals_are_refined():
    """Found by the fuzz suite: ARPACK's own Ritz estimates passed, the true residual of the guard
    (3.8645, next to an eigenvalue 3.9e-9 away outside the computed set) was 1.3e-8 against rtol 1e-8,
    a ConvergenceError on an easy problem. One Rayleigh–Ritz step over [X, R] certifies it."""
    from eigrad.testing import planted

    vals = [0.0, 0.0, 0.0, 0.6077639141241293, 1.8890139141241293, 2.9894879794857734, 3.8644879794857734,
            3.8644879833502612, 4.989487979485773, 4.989487979485773, 5.189487979485773, 5.389487979485773,
            5.389487979485773, 5.639487979485773, 5.8394879794857735, 7.1519879794857735, 7.3531598544857735,
            8.454722354485774, 8.454722354485774, 8.954722354485774, 8.954722354485863, 8.954722354485954,
            9.454722354485774, 9.454722354485774, 10.454722354485774, 11.454722354485774, 12.954722354485774,
            13.923472354485774, 13.923472354485774, 13.923472354485774]
    p = planted(vals, seed=127136, cond=5.0)
    A = p.A * 1e-8
    op = eigrad.FunctionOperator(lambda X, M: M @ X, (A,), tuple(A.shape))
    L, X = eigrad.eigsh(op, 6, solver="arpack")
    np.testing.assert_allclose(L.numpy() * 1e8, vals[:6], rtol=0, atol=1e-9)
