"""solver="shift-invert" on complex Hermitian pencils (eigensolvers/_shift_invert.py).

References independent of the solver: ``scipy.linalg.eigh`` of the dense
matrices, and central finite differences of gauge-invariant real losses along
random Hermitian directions of the stored values. Matrices: a 2-D magnetic
Laplacian (Peierls phases on the vertical bonds, Dirichlet; exact pairs at
flux 0 are split), a planted spectrum ``Q diag(λ) Qᴴ`` with exact double and
triple clusters, and complex / real ``B`` (Hermitian positive definite).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import torch

import eigrad
from eigrad import testing
from eigrad.eigensolvers import ShiftInvert
from eigrad.eigensolvers._sparse_factor import below_count, definite, factor

CT = torch.complex128
H = 1e-4


def maglap(m, flux=0.1):
    """Dirichlet magnetic Laplacian on an m×m grid: 4 on the diagonal, -e^{±iφ_x} on the bonds."""
    n = m * m
    rows, cols, vals = [], [], []
    for x in range(m):
        for y in range(m):
            i = x * m + y
            rows.append(i)
            cols.append(i)
            vals.append(4.0 + 0j)
            if x + 1 < m:
                j = i + m
                rows += [i, j]
                cols += [j, i]
                vals += [-1.0 + 0j, -1.0 + 0j]
            if y + 1 < m:
                j = i + 1
                t = -np.exp(2j * math.pi * flux * x)
                rows += [i, j]
                cols += [j, i]
                vals += [t, np.conj(t)]
    return sp.csr_matrix((np.array(vals), (rows, cols)), shape=(n, n))


def planted(spectrum, seed=3):
    Q = testing.random_unitary(len(spectrum), seed=seed, dtype=CT).numpy()
    A = (Q * np.asarray(spectrum)) @ Q.conj().T
    return sp.csr_matrix(0.5 * (A + A.conj().T))


def complex_mass(n, seed=1):
    """A complex Hermitian positive definite tridiagonal B."""
    rng = np.random.default_rng(seed)
    off = 0.2 * (rng.uniform(-1, 1, n - 1) + 1j * rng.uniform(-1, 1, n - 1))
    return sp.csr_matrix(sp.diags([off.conj(), 1.0 + 0.3 * rng.uniform(0, 1, n), off], [-1, 0, 1]))


def to_torch(S, requires_grad=False):
    C = S.tocoo()
    idx = torch.from_numpy(np.vstack([C.row, C.col]).astype(np.int64))
    vals = torch.from_numpy(C.data.astype(np.complex128)).requires_grad_(requires_grad)
    return torch.sparse_coo_tensor(idx, vals, C.shape, check_invariants=False), vals, idx


def herm_direction(S, seed):
    """Random values on S's pattern whose matrix is Hermitian."""
    C = S.tocoo()
    rng = np.random.default_rng(seed)
    D = sp.coo_matrix((rng.standard_normal(C.nnz) + 1j * rng.standard_normal(C.nnz), (C.row, C.col)), shape=S.shape)
    D = (D + D.conj().T).tocsr()
    return np.asarray(D[C.row, C.col]).ravel()


def dense_eigh(A, B, k):
    w, V = scipy.linalg.eigh(A.toarray(), None if B is None else B.toarray())
    return w[:k], V[:, :k]


@pytest.mark.parametrize("with_B", ["none", "complex", "real"])
def test_forward_matches_dense(with_B):
    A = maglap(9)
    n = A.shape[0]
    B = {"none": None, "complex": complex_mass(n), "real": sp.csr_matrix(complex_mass(n).real)}[with_B]
    k = 6
    At = to_torch(A)[0]
    Bt = None if B is None else to_torch(B)[0]
    lam, X = eigrad.eigsh(At, k, B=Bt, solver="shift-invert")
    w, _ = dense_eigh(A, B, k)
    assert X.dtype == CT and lam.dtype == torch.float64
    np.testing.assert_allclose(lam.numpy(), w, rtol=1e-9, atol=1e-10)
    Bd = torch.eye(n, dtype=CT) if B is None else torch.from_numpy(B.toarray().astype(np.complex128))
    assert torch.allclose(X.mH @ Bd @ X, torch.eye(k, dtype=CT), atol=1e-9)


def test_clusters_found():
    """Exact double and triple clusters: every copy found (single-vector Lanczos can skip copies)."""
    spectrum = [0.5, 1.0, 1.0, 1.5, 2.0, 2.0, 2.0] + [3.0 + 0.1 * i for i in range(33)]
    A = planted(spectrum)
    lam, _ = eigrad.eigsh(to_torch(A)[0], 7, solver="shift-invert")
    np.testing.assert_allclose(lam.numpy(), spectrum[:7], atol=1e-9)


def test_inertia_counts_negative_real_pivots():
    """SuperLU's diagonal of U (symmetric mode, diagonal pivots) of a complex Hermitian K = A - σI:
    the number of Re d_i <= 0 is the number of eigenvalues below σ (Sylvester)."""
    A = maglap(8)
    w = np.linalg.eigvalsh(A.toarray())
    for sigma in (w[0] - 0.1, 0.5 * (w[2] + w[3]), 0.5 * (w[10] + w[11])):
        lu = factor(A - sigma * sp.identity(A.shape[0], format="csr"))
        expected = int((w < sigma).sum())
        assert below_count(lu) in (expected, None)
        assert definite(lu) == (expected == 0)
    with pytest.raises(ValueError, match="eigenvalue\\(s\\) lie below it|not positive definite"):
        eigrad.eigsh(to_torch(A)[0], 3, solver=ShiftInvert(shift=float(0.5 * (w[2] + w[3]))))


@pytest.mark.parametrize("backward", ["minres", "lu"])
@pytest.mark.parametrize("with_B", [False, True])
def test_gradient_vs_fd(backward, with_B):
    """VJP of Σ λ_i² + Re tr(W P) + |x_iᴴ c|² vs central differences along a Hermitian direction of A's values
    (and of B's)."""
    A = maglap(6)
    n = A.shape[0]
    B = complex_mass(n) if with_B else None
    k = 4
    gen = torch.Generator().manual_seed(5)
    W = testing.random_hermitian(n, seed=gen, dtype=CT)
    c = torch.randn(n, dtype=CT, generator=gen)
    solver = ShiftInvert(backward=backward)

    def loss_of(Avals, Bvals, solver_name):
        C = A.tocoo()
        At = torch.sparse_coo_tensor(torch.from_numpy(np.vstack([C.row, C.col]).astype(np.int64)), Avals, A.shape)
        Bt = None
        if B is not None:
            D = B.tocoo()
            Bt = torch.sparse_coo_tensor(torch.from_numpy(np.vstack([D.row, D.col]).astype(np.int64)), Bvals, B.shape)
        lam, X = eigrad.eigsh(At, k, B=Bt, solver=solver_name)
        P = X @ X.mH
        return (lam**2).sum() + torch.einsum("ij,ji->", W, P).real + (X[:, 1].conj() @ c).abs() ** 2

    av = torch.from_numpy(A.tocoo().data.astype(np.complex128)).requires_grad_(True)
    bv = None if B is None else torch.from_numpy(B.tocoo().data.astype(np.complex128)).requires_grad_(True)
    L = loss_of(av, bv, solver)
    grads = torch.autograd.grad(L, [av] if bv is None else [av, bv])
    dA = torch.from_numpy(herm_direction(A, 7))
    dirs = [dA] + ([] if B is None else [0.05 * torch.from_numpy(herm_direction(B, 8))])
    with torch.no_grad():
        def f(t):
            return float(loss_of(av + t * dirs[0], None if bv is None else bv + t * dirs[1], "dense"))
        fd = (f(H) - f(-H)) / (2 * H)
    # dL = Re Σ conj(ḡ) d (PyTorch's convention for real losses of complex inputs)
    an = sum(float((g.conj() * d).real.sum()) for g, d in zip(grads, dirs))
    assert abs(an - fd) <= 1e-6 * max(1.0, abs(fd))


def test_scipy_complex_input():
    A = maglap(7)
    lam, X = eigrad.eigsh(A, 3, solver="shift-invert")
    np.testing.assert_allclose(lam.numpy(), dense_eigh(A, None, 3)[0], rtol=1e-9)
    assert X.dtype == CT
