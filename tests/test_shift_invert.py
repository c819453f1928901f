"""solver="shift-invert" (eigensolvers/_shift_invert.py): sparse LU of A - σB, ARPACK mode 3, reused backward.

References are independent of the solver: the dense spectrum (scipy.linalg.eigh),
the dense route's gradients, and central finite differences of gauge-invariant
losses. Grids with exactly repeated eigenvalues (2D square: pairs; 3D cube:
triples) check that every copy is found and that a cut cluster is reported.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import torch

import eigrad
from eigrad.eigensolvers import Arpack, ShiftInvert
from eigrad.eigensolvers._auto import choose_solver
from eigrad.eigensolvers._sparse_factor import effective_dimension
from eigrad.operators import as_operator


def lap1d(m, neumann=False):
    T = sp.diags([-np.ones(m - 1), 2 * np.ones(m), -np.ones(m - 1)], [-1, 0, 1]).tolil()
    if neumann:
        T[0, 0] = T[m - 1, m - 1] = 1.0
    return sp.csr_matrix(T)


def lap2d(m):
    """Dirichlet Laplacian on an m×m grid: exact pairs λ_(i,j) = λ_(j,i)."""
    T, eye = lap1d(m), sp.identity(m)
    return sp.csr_matrix(sp.kron(T, eye) + sp.kron(eye, T))


def lap3d(m):
    """Cubic grid: exact triples λ_(2,1,1) = λ_(1,2,1) = λ_(1,1,2)."""
    T, eye = lap1d(m), sp.identity(m)
    return sp.csr_matrix(sp.kron(sp.kron(T, eye), eye) + sp.kron(sp.kron(eye, T), eye) + sp.kron(sp.kron(eye, eye), T))


def fem(m):
    """P1 FEM pencil (stiffness K, consistent mass M) on the unit square, Dirichlet boundary condensed."""
    skfem = pytest.importorskip("skfem")
    from skfem.models.poisson import laplace, mass

    mesh = skfem.MeshTri.init_tensor(np.linspace(0, 1, m + 1), np.linspace(0, 1, m + 1))
    basis = skfem.Basis(mesh, skfem.ElementTriP1())
    inner = basis.complement_dofs(basis.get_dofs())
    return laplace.assemble(basis)[inner][:, inner].tocsr(), mass.assemble(basis)[inner][:, inner].tocsr()


def torch_coo(S, requires_grad=False):
    C = S.tocoo()
    idx = torch.from_numpy(np.vstack([C.row, C.col]).astype(np.int64))
    vals = torch.from_numpy(C.data.astype(np.float64)).requires_grad_(requires_grad)
    return torch.sparse_coo_tensor(idx, vals, C.shape, check_invariants=False), vals, idx


def dense_spectrum(A, B=None):
    return scipy.linalg.eigh(A.toarray(), None if B is None else B.toarray(), eigvals_only=True)


def test_forward_matches_dense_standard_and_generalized():
    A = lap2d(20) + sp.diags(np.linspace(0.0, 1.0, 400))
    w = dense_spectrum(A)
    L, X = eigrad.eigsh(torch_coo(A)[0], 6, solver="shift-invert")
    np.testing.assert_allclose(L.numpy(), w[:6], rtol=1e-10)
    Ad = torch.tensor(A.toarray())
    torch.testing.assert_close(Ad @ X, X * L, atol=1e-7, rtol=0)
    K, M = fem(16)
    wg = dense_spectrum(K, M)
    Lg, Xg = eigrad.eigsh(torch_coo(K)[0], 5, B=torch_coo(M)[0], solver="shift-invert")
    np.testing.assert_allclose(Lg.numpy(), wg[:5], rtol=1e-10)
    Md = torch.tensor(M.toarray())
    torch.testing.assert_close(Xg.T @ Md @ Xg, torch.eye(5, dtype=torch.float64), atol=1e-10, rtol=0)


def test_scipy_sparse_inputs_and_random_spd_diagonal_B():
    rng = np.random.default_rng(0)
    A = lap2d(15) + sp.diags(rng.uniform(0, 1, 225))
    B = sp.diags(rng.uniform(0.5, 2.0, 225)).tocsr()
    L, _ = eigrad.eigsh(A, 4, B=B, solver="shift-invert")
    np.testing.assert_allclose(L.numpy(), dense_spectrum(A, B)[:4], rtol=1e-10)


def _loss(L, X, w):
    # Σ λ + Σ_j Σ_i w_i x_ij²: the diagonal of a weighted projector, invariant in each eigenspace
    return L.sum() + (w.unsqueeze(-1) * X**2).sum()


@pytest.mark.parametrize("backward", ["minres", "lu"])
def test_gradients_match_dense_route_and_finite_differences(backward):
    """B ≠ I (FEM mass matrix), gradient to K's stored values."""
    K, M = fem(14)  # n = 169; k = 4 ends after the exact-by-symmetry near pair
    n = K.shape[0]
    w = torch.from_numpy(np.random.default_rng(1).uniform(0.5, 1.5, n))
    Kt, vals, idx = torch_coo(K, requires_grad=True)
    Mt = torch_coo(M)[0]
    L, X = eigrad.eigsh(Kt, 4, B=Mt, solver=ShiftInvert(backward=backward))
    (g,) = torch.autograd.grad(_loss(L, X, w), [vals])
    Kd = torch.tensor(K.toarray(), requires_grad=True)
    Ld, Xd = eigrad.eigsh(Kd, 4, B=torch.tensor(M.toarray()), solver="dense")
    (gd,) = torch.autograd.grad(_loss(Ld, Xd, w), [Kd])
    torch.testing.assert_close(g, gd[idx[0], idx[1]], atol=1e-8 * float(gd.abs().max()), rtol=0)
    # central differences along a symmetric perturbation of the stored values
    d = torch.from_numpy(np.random.default_rng(2).standard_normal(vals.shape[0]))
    r, c = idx[0].numpy().copy(), idx[1].numpy().copy()
    Dd = np.zeros(K.shape)
    np.add.at(Dd, (r, c), d.numpy())
    Dd = (Dd + Dd.T) / 2  # symmetric, on the pattern
    D = sp.csr_matrix(Dd)
    dv = torch.from_numpy(Dd[r, c])

    def f(t):
        At = torch_coo(K + t * D)[0]
        L, X = eigrad.eigsh(At, 4, B=Mt, solver="shift-invert")
        return float(_loss(L, X, w))

    h = 1e-4
    fd = (f(h) - f(-h)) / (2 * h)
    assert abs(float(g @ dv) - fd) <= 1e-6 * abs(fd)


def test_gradient_to_mass_matrix_values_matches_dense_route():
    K, M = fem(14)
    n = K.shape[0]
    w = torch.from_numpy(np.random.default_rng(3).uniform(0.5, 1.5, n))
    Mt, mvals, idx = torch_coo(M, requires_grad=True)
    L, X = eigrad.eigsh(torch_coo(K)[0], 4, B=Mt, solver="shift-invert")
    (g,) = torch.autograd.grad(_loss(L, X, w), [mvals])
    Md = torch.tensor(M.toarray(), requires_grad=True)
    Ld, Xd = eigrad.eigsh(torch.tensor(K.toarray()), 4, B=Md, solver="dense")
    (gd,) = torch.autograd.grad(_loss(Ld, Xd, w), [Md])
    torch.testing.assert_close(g, gd[idx[0], idx[1]], atol=1e-8 * float(gd.abs().max()), rtol=0)


def test_exact_pairs_found_completely_and_cut_detected():
    A = lap2d(20)  # λ_(1,1) < λ_(1,2) = λ_(2,1) < λ_(2,2) < λ_(1,3) = λ_(3,1)
    w = dense_spectrum(A)
    At, vals, _ = torch_coo(A, requires_grad=True)
    L, X, info = eigrad.eigsh_ex(At, 3, solver="shift-invert")
    np.testing.assert_allclose(L.detach().numpy(), w[:3], rtol=1e-10)
    assert info.solver == "shift-invert"
    _loss(L, X, torch.ones(400, dtype=torch.float64)).backward()  # whole pair: valid, no warning
    assert info.backward and info.backward[-1].solver.startswith("minres")
    L, X = eigrad.eigsh(At, 2, solver="shift-invert")
    with pytest.warns(eigrad.GaugeWarning, match="k=2 cuts a degenerate cluster"):
        L.sum().backward()


def test_cubic_triple_found_completely():
    A = lap3d(9)  # n = 729: levels 1, 3, 3, 3, ...
    w = dense_spectrum(A)
    for k in (4, 7):
        L, X = eigrad.eigsh(torch_coo(A)[0], k, solver="shift-invert")
        np.testing.assert_allclose(L.numpy(), w[:k], rtol=1e-10)
        np.testing.assert_allclose(X.T @ X, np.eye(k), atol=1e-10)


def test_shift_at_an_eigenvalue_is_nudged_and_singular_A_handled():
    A = lap1d(300, neumann=True)  # singular: an exact zero eigenvalue
    w = dense_spectrum(A)
    for solver in (ShiftInvert(shift=0.0), ShiftInvert()):
        L, _ = eigrad.eigsh(torch_coo(A)[0], 3, solver=solver)
        np.testing.assert_allclose(L.numpy(), w[:3], rtol=1e-9, atol=1e-12)


def test_shift_above_an_eigenvalue_raises():
    A = lap2d(12)
    w = dense_spectrum(A)
    with pytest.raises(ValueError, match=r"ShiftInvert\(shift=.*\): 3 eigenvalue\(s\) lie below it"):
        eigrad.eigsh(torch_coo(A)[0], 3, solver=ShiftInvert(shift=float(w[1] + w[3]) / 2))


def test_indefinite_A_gets_a_shift_below_the_spectrum():
    A = lap2d(15) - 3.0 * sp.identity(225)  # eigenvalues from about -2.96 upward
    L, _ = eigrad.eigsh(torch_coo(A)[0], 4, solver="shift-invert")
    np.testing.assert_allclose(L.numpy(), dense_spectrum(A)[:4], rtol=1e-10)


def test_non_convergence_is_reported():
    A = torch_coo(lap2d(20))[0]
    with pytest.raises(eigrad.ConvergenceError, match="ShiftInvert did not converge"):
        eigrad.eigsh(A, 6, solver=ShiftInvert(maxiter=1, ncv=8))
    with pytest.warns(eigrad.ConvergenceWarning):
        L, _ = eigrad.eigsh(A, 6, solver=ShiftInvert(maxiter=1, ncv=8, on_failure="warn"))


def test_matrix_free_operator_rejected():
    S = lap2d(15)
    op = eigrad.FunctionOperator(lambda X: torch.from_numpy(S @ X.numpy()), (), (225, 225), dtype=torch.float64)
    with pytest.raises(TypeError, match="needs assembled sparse A and B .* received FunctionOperator for A"):
        eigrad.eigsh(op, 3, solver="shift-invert")
    with pytest.raises(TypeError, match="received DenseOperator for B"):
        eigrad.eigsh(torch_coo(S)[0], 3, B=torch.eye(225, dtype=torch.float64), solver="shift-invert")


def test_options_are_checked():
    with pytest.raises(ValueError, match="backward='cg'"):
        ShiftInvert(backward="cg")
    with pytest.raises(ValueError, match="shift=nan"):
        ShiftInvert(shift=float("nan"))


def test_largest_is_handed_to_arpack():
    A = lap2d(15)
    L, _ = eigrad.eigsh(torch_coo(A)[0], 3, largest=True, solver="shift-invert")
    np.testing.assert_allclose(L.numpy(), dense_spectrum(A)[-3:], rtol=1e-10)


def test_auto_picks_shift_invert_for_assembled_pencils():
    K, M = fem(8)
    assert isinstance(choose_solver(as_operator(torch_coo(K)[0]), as_operator(torch_coo(M)[0])), ShiftInvert)
    op = eigrad.FunctionOperator(lambda X: X, (), (49, 49), dtype=torch.float64)
    assert not isinstance(choose_solver(op, as_operator(torch_coo(M)[0])), ShiftInvert)


def test_auto_for_standard_problems_follows_the_graph_dimension():
    """B = I: shift-invert for 1-D/2-D graphs (small fill), ARPACK for 3-D grids (the measured crossover)."""
    assert effective_dimension(lap2d(40)) < 2 and effective_dimension(lap1d(500)) < 2
    assert effective_dimension(lap3d(12)) > 2
    assert isinstance(choose_solver(as_operator(torch_coo(lap2d(40))[0])), ShiftInvert)
    assert isinstance(choose_solver(as_operator(torch_coo(lap3d(12))[0])), Arpack)
    split = sp.block_diag([lap2d(3), lap3d(12)]).tocsr()  # node 0's component is tiny: no estimate
    assert effective_dimension(split) == float("inf")


def test_backward_non_convergence_is_reported():
    At, vals, _ = torch_coo(lap2d(20), requires_grad=True)
    L, X = eigrad.eigsh(At, 4, solver="shift-invert", backward=eigrad.BackwardOptions(linsolve_maxiter=1))
    with pytest.raises(eigrad.ConvergenceError, match="gradient was not computed"):
        _loss(L, X, torch.ones(400, dtype=torch.float64)).backward()


def test_second_order_and_torch_func_match_arpack():
    S = (lap2d(16) + sp.diags(np.linspace(0.0, 1.0, 256))).tocoo()
    idx = torch.from_numpy(np.vstack([S.row, S.col]).astype(np.int64))
    vals = torch.from_numpy(S.data.copy()).requires_grad_()

    def f(v, solver):
        L, X = eigrad.eigsh(torch.sparse_coo_tensor(idx, v, S.shape, check_invariants=False), 3, solver=solver)
        return (X[:, 0] ** 4).sum() + L.sum()

    out = {}
    for solver in ("arpack", "shift-invert"):
        (g,) = torch.autograd.grad(f(vals, solver), [vals], create_graph=True)
        (h,) = torch.autograd.grad((g**2).sum(), [vals])
        out[solver] = (g.detach(), h, torch.func.grad(lambda v: f(v, solver))(vals.detach()))
    for a, b in zip(out["arpack"], out["shift-invert"]):
        torch.testing.assert_close(a, b, atol=1e-7 * float(a.abs().max()), rtol=0)


def test_float32():
    S = lap2d(20) + sp.diags(np.linspace(0.0, 1.0, 400))
    C = S.tocoo()
    idx = torch.from_numpy(np.vstack([C.row, C.col]).astype(np.int64))
    vals = torch.from_numpy(C.data.astype(np.float32)).requires_grad_()
    L, X = eigrad.eigsh(torch.sparse_coo_tensor(idx, vals, C.shape, check_invariants=False), 4, solver="shift-invert")
    assert L.dtype == torch.float32
    np.testing.assert_allclose(L.detach().numpy(), dense_spectrum(S)[:4], rtol=1e-5)
    L.sum().backward()
    assert bool(torch.isfinite(vals.grad).all())
