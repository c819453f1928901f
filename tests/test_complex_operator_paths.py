"""Complex operators beyond the solvers: real/complex promotion of operator pairs (operators/_convert.py)
and ``solver="auto"`` for complex operators.

References: the dense route on the promoted dense matrices (``eigrad.eigsh``,
``torch.linalg.eigh``) and central finite differences of gauge-invariant real losses.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import torch

import eigrad
from eigrad import testing
from eigrad.eigensolvers._auto import choose_solver
from eigrad.operators import as_operator
from eigrad.operators._convert import ComplexifiedOperator, promote_pair

CT = torch.complex128
H = 1e-5


def _A(n=40, seed=0):
    """A complex Hermitian tridiagonal-plus-corner matrix (sparse pattern, simple spectrum)."""
    rng = np.random.default_rng(seed)
    off = rng.uniform(-1, 1, n - 1) + 1j * rng.uniform(-1, 1, n - 1)
    A = sp.diags([off.conj(), 2.0 + rng.uniform(0, 1, n), off], [-1, 0, 1]).tolil()
    A[0, n - 1], A[n - 1, 0] = 0.3j, -0.3j
    return sp.csr_matrix(A)


def _B_real(n=40, seed=1):
    rng = np.random.default_rng(seed)
    off = 0.2 * rng.uniform(-1, 1, n - 1)
    return sp.csr_matrix(sp.diags([off, 1.0 + 0.3 * rng.uniform(0, 1, n), off], [-1, 0, 1]))


def _coo(S, dtype, requires_grad=False):
    C = S.tocoo()
    idx = torch.from_numpy(np.vstack([C.row, C.col]).astype(np.int64))
    v = torch.from_numpy(C.data).to(dtype).requires_grad_(requires_grad)
    return idx, v


def _herm_fd(S, seed):
    C = S.tocoo()
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(C.nnz) + (1j * rng.standard_normal(C.nnz) if np.iscomplexobj(C.data) else 0)
    D = sp.coo_matrix((data, (C.row, C.col)), shape=S.shape)
    D = (D + D.conj().T).tocsr()
    return torch.from_numpy(np.asarray(D[C.row, C.col]).ravel())


@pytest.mark.parametrize("solver", ["shift-invert", "lobpcg", "arpack", "dense"])
@pytest.mark.parametrize("order", ["complexA_realB", "realA_complexB"])
def test_promotion_matches_dense_and_fd(solver, order):
    """A complex A with a real B (and a real A with a complex B): values as the promoted dense pencil,
    gradient of the real input (real part) vs central differences."""
    n, k = 40, 3
    if order == "complexA_realB":
        SA, SB = _A(n), _B_real(n)
    else:
        SA, SB = sp.csr_matrix(_B_real(n, 2).real * 3 + sp.identity(n) * 0.5), sp.csr_matrix(_A(n, 4) * 0.05 + sp.identity(n))
    ia, va = _coo(SA, CT if np.iscomplexobj(SA.data) else torch.float64, True)
    ib, vb = _coo(SB, CT if np.iscomplexobj(SB.data) else torch.float64, True)
    gen = torch.Generator().manual_seed(3)
    W = testing.random_hermitian(n, seed=gen, dtype=CT)

    def loss(a, b, s):
        lam, X = eigrad.eigsh(torch.sparse_coo_tensor(ia, a, (n, n)), k, B=torch.sparse_coo_tensor(ib, b, (n, n)),
                              solver=s)
        return (lam**2).sum() + torch.einsum("ij,ji->", W, X @ X.mH).real

    L = loss(va, vb, solver)
    lam, _ = eigrad.eigsh(torch.sparse_coo_tensor(ia, va.detach(), (n, n)), k,
                          B=torch.sparse_coo_tensor(ib, vb.detach(), (n, n)), solver=solver)
    w = scipy.linalg.eigh(SA.toarray(), SB.toarray(), eigvals_only=True)[:k]
    np.testing.assert_allclose(lam.numpy(), w, rtol=1e-8, atol=1e-9)
    ga, gb = torch.autograd.grad(L, [va, vb])
    assert ga.dtype == va.dtype and gb.dtype == vb.dtype
    da, db = _herm_fd(SA, 5), 0.05 * _herm_fd(SB, 6)
    with torch.no_grad():
        f = lambda t: float(loss(va + t * da.to(va.dtype), vb + t * db.to(vb.dtype), "dense"))  # noqa: E731
        fd = (f(H) - f(-H)) / (2 * H)
    an = float((ga.conj() * da).real.sum() + (gb.conj() * db).real.sum())
    assert abs(an - fd) <= 1e-5 * max(1.0, abs(fd)), (an, fd)


def test_promotion_precision_mismatch_refused():
    A = as_operator(torch.from_numpy(_A(10).toarray()).to(CT))
    B = as_operator(torch.eye(10, dtype=torch.float32))
    with pytest.raises(TypeError, match=r"complex128 but B has dtype torch.float32 \(a real matrix is promoted"):
        promote_pair(A, B)
    with pytest.raises(TypeError, match="promoted to complex only at the same precision"):
        eigrad.eigsh(_A(10), 2, B=torch.eye(10, dtype=torch.float32).to_sparse(), solver="lobpcg")


def test_complexified_function_operator():
    """A real FunctionOperator paired with a complex B becomes ComplexifiedOperator: matmat and the
    gradient of its real parameters vs the dense route and FD."""
    n, k = 30, 3
    SB = sp.csr_matrix(_A(n, 7) * 0.05 + sp.identity(n))
    Bt = torch.from_numpy(SB.toarray()).to(CT)
    D0 = torch.from_numpy(np.linspace(1.0, 4.0, n))
    T = torch.diag(torch.full((n - 1,), -0.5, dtype=torch.float64), 1)
    T = T + T.T

    def make(d):
        return eigrad.FunctionOperator(lambda X, d: d.unsqueeze(-1) * X + T.to(X.dtype) @ X, (d,), (n, n))

    d = D0.clone().requires_grad_(True)
    op, Bop = promote_pair(as_operator(make(d)), as_operator(Bt))
    assert isinstance(op, ComplexifiedOperator) and op.dtype == CT
    X = torch.randn(n, 2, dtype=CT, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(op.matmat(X), (torch.diag(D0) + T).to(CT) @ X)

    def loss(dd, solver):
        lam, V = eigrad.eigsh(make(dd), k, B=Bt, solver=solver)
        return (lam**2).sum() + (V[:, 0].abs() ** 2).sum()

    (g,) = torch.autograd.grad(loss(d, "lobpcg"), d)
    dd = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fd = (float(loss(D0 + H * dd, "dense")) - float(loss(D0 - H * dd, "dense"))) / (2 * H)
    assert abs(float(g @ dd) - fd) <= 1e-5 * max(1.0, abs(fd))


def test_auto_complex_follows_real_table():
    A = as_operator(_A(300))
    assert type(choose_solver(A)).__name__ in ("Arpack", "ShiftInvert")
    B = as_operator(sp.csr_matrix(_B_real(300)).astype(np.complex128))
    assert type(choose_solver(A, B)).__name__ == "ShiftInvert"
    assert type(choose_solver(A, None, preconditioner=lambda R: R)).__name__ == "LOBPCG"


def test_petsc_refuses_complex_input_clearly():
    """eigrad.petsc is real-only (Debian's PETSc/SLEPc): a clear TypeError, without petsc4py too."""
    with pytest.raises(TypeError, match=r"real-only.*complex dtype torch.complex128"):
        eigrad.eigsh(torch.eye(4, dtype=torch.complex128), 2, solver="slepc")
    with pytest.raises(TypeError, match=r"real-only.*received B"):
        eigrad.eigsh(torch.eye(4, dtype=torch.float64), 2, B=sp.identity(4, dtype=complex), solver="slepc")
