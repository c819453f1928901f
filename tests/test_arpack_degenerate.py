"""ARPACK never misses copies of an exactly repeated eigenvalue silently (eigensolvers/_arpack.py).

Single-vector Lanczos sees one direction per eigenspace in exact arithmetic:
on a cubic grid with a cubic-symmetric potential scipy's ``eigsh`` returns
one copy of a triple level and skips the others. Each test first shows the
miss with scipy directly (so that it can fail without the verification on
the deflated operator), then checks eigrad's ``Arpack`` against the dense
spectrum.
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


def scipy_misses(k, largest, **kw):
    v0 = np.random.default_rng(0).uniform(-1, 1, M.shape[0])
    vals = np.sort(spla.eigsh(M, k=k, which="LA" if largest else "SA", v0=v0, tol=5e-9, **kw)[0])
    return vals


def test_problem_has_exact_triples_and_doubles():
    mult = multiplicities(W[:12])
    assert list(mult[:5]) == [1, 3, 2, 3, 1], mult


@pytest.mark.parametrize("k,largest", [(3, False), (5, False), (9, False), (3, True)])
def test_missed_copies_are_found(k, largest):
    """k + 1 pairs (one guard); k = 3 and 5 cut the triple and the double, k = 9 closes them."""
    ref = W[-k:] if largest else W[:k]
    ref_all = W[-k - 1:] if largest else W[: k + 1]
    plain = scipy_misses(k + 1, largest)
    assert np.abs(plain - ref_all).max() > 1e-6 * SCALE, "scipy's eigsh did not miss a copy: the test is void"
    sol = Arpack()(CSR(M), k, largest=largest, n_guard=1)
    assert sol.converged, sol.status
    np.testing.assert_allclose(sol.eigenvalues.numpy(), ref, rtol=0, atol=1e-9 * SCALE)
    guard = W[-k - 1] if largest else W[k]
    np.testing.assert_allclose(sol.guard_eigenvalues.numpy(), [guard], rtol=0, atol=1e-9 * SCALE)
    X = sol.eigenvectors.numpy()
    np.testing.assert_allclose(X.T @ X, np.eye(k), atol=1e-8)
    assert sol.n_matvec > 0


def test_switching_the_verification_off_misses_again():
    sol = Arpack(n_verify=0)(CSR(M), 5, n_guard=1)  # documented as unsafe at repeated eigenvalues
    assert np.abs(sol.eigenvalues.numpy() - W[:5]).max() > 1e-6 * SCALE


def test_generalized_with_symmetric_mass():
    Bm = sp.diags(1.0 + 2.0 * R2).tocsr()  # cubic-symmetric SPD mass: the degeneracies stay
    wB = scipy.linalg.eigh(M.toarray(), Bm.toarray(), eigvals_only=True)
    k = 4
    plain = scipy_misses(k, False, M=Bm)
    assert np.abs(plain - wB[:k]).max() > 1e-6 * np.abs(wB).max(), "scipy's eigsh did not miss: void test"
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
    """k cuts the triple (k=3) or the double (k=5): scipy's guard skips the missing copy, eigrad's does not."""
    plain = scipy_misses(k + 1, False)
    assert not np.isclose(plain[k], W[k - 1], rtol=1e-9), "scipy's guard did not skip the copy: void test"
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
    plain = Primme(n_verify=0)(CSR(M), k, n_guard=1, largest=largest)
    sol = Primme()(CSR(M), k, n_guard=1, largest=largest)
    ref = W[-k:] if largest else W[:k]
    np.testing.assert_allclose(sol.eigenvalues.numpy(), ref, rtol=1e-9)
    np.testing.assert_allclose(sol.guard_eigenvalues.numpy(), [ref_guard], rtol=1e-9)
    if not largest:  # the miss that makes this test meaningful (measured on this grid)
        assert abs(float(plain.guard_eigenvalues[0]) - ref_guard) > 1.0
