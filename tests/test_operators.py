"""Operator adapters: products, derivative hooks, conversions and their errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from _operator_helpers import DT, laplacian_2d, scipy_to_torch_csr, sym_direction

import eigrad
from eigrad.operators import DenseOperator, ScipyLinearOperator, SparseOperator

N = 12


def _sparse_symmetric(n=N, seed=0, density=0.3):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, dtype=DT, generator=g)
    keep = torch.rand(n, n, dtype=DT, generator=g) < density
    M = torch.where(keep | keep.T, M + M.T, torch.zeros_like(M)) + torch.diag(torch.arange(1.0, n + 1, dtype=DT))
    return M


def _rand(shape, seed):
    return torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["dense", "coo", "csr", "scipy_csr", "scipy_coo", "scipy_linop"])
def test_representations_apply_the_same_matrix(kind):
    M = _sparse_symmetric()
    obj = {
        "dense": lambda: M,
        "coo": lambda: M.to_sparse(),
        "csr": lambda: M.to_sparse_csr(),
        "scipy_csr": lambda: sp.csr_matrix(M.numpy()),
        "scipy_coo": lambda: sp.coo_matrix(M.numpy()),
        "scipy_linop": lambda: spla.aslinearoperator(M.numpy()),
    }[kind]()
    op = eigrad.as_operator(obj)
    X = _rand((N, 3), 1)
    assert op.shape == (N, N) and op.dtype == DT
    assert torch.allclose(op.matmat(X), M @ X, atol=1e-13, rtol=0)
    assert torch.allclose(op.to_dense(), M, atol=1e-13, rtol=0)
    Xb = _rand((2, N, 3), 2)  # a batch of blocks against one matrix
    assert torch.allclose(op.matmat(Xb), M @ Xb, atol=1e-13, rtol=0)


def test_uncoalesced_coo_sums_duplicates():
    idx = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 0, 1, 1]])
    vals = torch.tensor([1.0, 2.0, 2.0, 3.0, 0.5], dtype=DT)
    op = eigrad.as_operator(torch.sparse_coo_tensor(idx, vals, (2, 2)))
    assert torch.equal(op.to_dense(), torch.tensor([[1.0, 2.5], [2.0, 3.0]], dtype=DT))


def test_sparse_bilinear_vjp_is_the_symmetrized_sample_on_the_pattern():
    """MATH.md: the gradient of the stored values is sym(L Rᵀ) sampled on the pattern."""
    M = _sparse_symmetric()
    op = eigrad.as_operator(M.to_sparse_csr())
    L, R = _rand((N, 4), 3), _rand((N, 4), 4)
    (g,) = op.bilinear_vjp(L, R)
    G = 0.5 * (L @ R.T + R @ L.T)
    p = op.pattern
    assert torch.allclose(g, G[p.row, p.col], atol=1e-13, rtol=0)
    # and it is the gradient of <L, A(v) R> for a symmetric perturbation of the stored values
    v = op.values.clone().requires_grad_()
    ((L * SparseOperator.from_values(v, p).matmat(R)).sum()).backward()
    gsym = 0.5 * (v.grad + v.grad[p.transpose_positions()[0]])
    assert torch.allclose(g, gsym, atol=1e-13, rtol=0)


def test_sparse_tangent_matmat():
    M = _sparse_symmetric()
    op = eigrad.as_operator(M.to_sparse_csr())
    dv = _rand((op.pattern.nnz,), 5)
    X = _rand((N, 3), 6)
    dA = torch.zeros(N, N, dtype=DT).index_put((op.pattern.row, op.pattern.col), dv, accumulate=True)
    # the tangent of the symmetric problem, sym(dA) X: the adjoint of bilinear_vjp's symmetrized gradient
    assert torch.allclose(op.tangent_matmat((dv,), X), 0.5 * (dA + dA.T) @ X, atol=1e-13, rtol=0)
    pos, _ = op.pattern.transpose_positions()
    dvs = 0.5 * (dv + dv[pos])  # a symmetric tangent: exactly dA X
    dAs = torch.zeros(N, N, dtype=DT).index_put((op.pattern.row, op.pattern.col), dvs, accumulate=True)
    assert torch.allclose(op.tangent_matmat((dvs,), X), dAs @ X, atol=1e-13, rtol=0)
    L = _rand((N, 3), 8)  # <L, A'(dv) X> = <bilinear_vjp(L, X), dv>: JVP and VJP are adjoint
    (g,) = op.bilinear_vjp(L, X)
    torch.testing.assert_close((L * op.tangent_matmat((dv,), X)).sum(), (g * dv).sum(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kind", ["function", "module"])
def test_parametrized_hooks_match_autograd(kind):
    """bilinear_vjp = ∂/∂θ <L, A(θ) R>; tangent_matmat = A' X, for function and module operators."""
    lap = eigrad.as_operator(laplacian_2d(3))
    v, c = _rand((9,), 7), torch.tensor(1.3, dtype=DT)

    def apply(X, v, c):
        return c * lap.matmat(X) + v.unsqueeze(-1) * X

    if kind == "function":
        op = eigrad.FunctionOperator(apply, (v, c), 9)
    else:
        class Mod(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.v = torch.nn.Parameter(v.clone())
                self.c = torch.nn.Parameter(c.clone())

            def forward(self, X):
                return apply(X, self.v, self.c)

        op = eigrad.ModuleOperator(Mod(), 9)
    L, R = _rand((9, 2), 8), _rand((9, 2), 9)
    vr, cr = v.clone().requires_grad_(), c.clone().requires_grad_()
    ref = torch.autograd.grad((L * apply(R, vr, cr)).sum(), (vr, cr))
    got = op.bilinear_vjp(L, R)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-13, rtol=0)
    dv, dc = _rand((9,), 10), torch.tensor(0.7, dtype=DT)
    expect = dc * lap.matmat(R) + dv.unsqueeze(-1) * R
    assert torch.allclose(op.tangent_matmat((dv, dc), R), expect, atol=1e-13, rtol=0)


def test_rebuild_from_flattened_tensors():
    M = _sparse_symmetric()
    for op in (eigrad.as_operator(M), eigrad.as_operator(M.to_sparse_csr()),
               eigrad.FunctionOperator(lambda X, A: A @ X, (M,), N)):
        tensors, spec = op.flatten()
        new = spec.rebuild([2 * t for t in tensors])
        assert torch.allclose(new.to_dense(), 2 * M, atol=1e-13, rtol=0)
        assert torch.allclose(op.to_dense(), M, atol=1e-13, rtol=0)  # never mutated


def test_module_operator_is_not_mutated_by_rebuild():
    mod = torch.nn.Linear(4, 4, bias=False).double()
    op = eigrad.ModuleOperator(mod, 4)
    before = mod.weight.detach().clone()
    tensors, spec = op.flatten()
    X = _rand((4, 2), 1)
    out = spec.rebuild([torch.eye(4, dtype=DT)]).matmat(X.T).T  # Linear acts on rows
    assert torch.allclose(out, X, atol=1e-14, rtol=0)
    assert torch.equal(mod.weight.detach(), before)


def test_scipy_inputs_carry_no_gradient():
    op = eigrad.as_operator(laplacian_2d(3))
    assert not op.values.requires_grad
    assert isinstance(eigrad.as_operator(spla.aslinearoperator(laplacian_2d(3))), ScipyLinearOperator)
    assert eigrad.as_operator(sp.csr_matrix(np.eye(3, dtype=np.float32))).dtype == torch.float32


def test_as_operator_returns_operators_unchanged():
    op = DenseOperator(torch.eye(3, dtype=DT))
    assert eigrad.as_operator(op) is op


def test_torch_csr_helper_matches_scipy():
    lap = laplacian_2d(4)
    op = eigrad.as_operator(scipy_to_torch_csr(lap))
    assert torch.allclose(op.to_dense(), torch.from_numpy(lap.toarray()), atol=0, rtol=0)


# Errors -------------------------------------------------------------------


def test_as_operator_rejects_other_types():
    with pytest.raises(TypeError, match=r"A must be a torch\.Tensor .* received ndarray.*FunctionOperator"):
        eigrad.as_operator(np.eye(3))


def test_as_operator_rejects_integer_and_nonsquare():
    with pytest.raises(TypeError, match="has dtype torch.int64"):
        eigrad.as_operator(torch.eye(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"square matrix .* received shape \(3, 4\)"):
        eigrad.as_operator(torch.zeros(3, 4, dtype=DT))
    with pytest.raises(ValueError, match="must be square"):
        eigrad.as_operator(sp.csr_matrix(np.zeros((3, 4))))


def test_batched_sparse_is_rejected():
    S = torch.eye(3, dtype=DT).expand(2, 3, 3).to_sparse(sparse_dim=3)
    with pytest.raises(ValueError, match="Batched sparse operators are not supported"):
        eigrad.as_operator(S)


def test_function_operator_argument_errors():
    with pytest.raises(TypeError, match="matmat must be callable"):
        eigrad.FunctionOperator("not a function", (), 3)
    with pytest.raises(TypeError, match="needs shape"):
        eigrad.FunctionOperator(lambda X: X, ())
    with pytest.raises(TypeError, match=r"params\[0\] is a float"):
        eigrad.FunctionOperator(lambda X, a: a * X, (2.0,), 3)
    with pytest.raises(ValueError, match="shape must be"):
        eigrad.FunctionOperator(lambda X: X, (), (3, 4))
    with pytest.raises(TypeError, match="takes a torch.nn.Module"):
        eigrad.ModuleOperator(lambda X: X, 3)


def test_nonsymmetric_inputs_are_rejected_by_eigsh():
    M = _sparse_symmetric()
    M[0, 1] += 1.0
    with pytest.raises(ValueError, match="A is not symmetric"):
        eigrad.eigsh(M.to_sparse_csr(), 2)
    with pytest.raises(ValueError, match=r"A is not symmetric: for probe vectors"):
        eigrad.eigsh(eigrad.FunctionOperator(lambda X, A: A @ X, (M,), N), 2)


def test_bad_matmat_output_is_reported():
    with pytest.raises(ValueError, match=r"returned shape \(12, 1\) for X of shape \(12, 2\)"):
        eigrad.eigsh(eigrad.FunctionOperator(lambda X: X[:, :1], (), N, dtype=DT), 2)
    with pytest.raises(ValueError, match="NaN or inf"):
        eigrad.eigsh(eigrad.FunctionOperator(lambda X: X * float("nan"), (), N, dtype=DT), 2)


def test_mismatched_B_is_reported():
    A = sp.identity(N, format="csr")
    with pytest.raises(ValueError, match=r"B has shape \(5, 5\) but A has shape \(12, 12\)"):
        eigrad.eigsh(A, 2, B=sp.identity(5, format="csr"))
    with pytest.raises(TypeError, match="A has dtype torch.float64 but B has dtype torch.float32"):
        eigrad.eigsh(A, 2, B=torch.eye(N, dtype=torch.float32).to_sparse_csr())


def test_unknown_solver_name_for_operators():
    with pytest.raises(ValueError, match="not an eigensolver for operators"):
        eigrad.eigsh(sp.identity(N, format="csr"), 2, solver="magic")


def test_symmetric_direction_helper_is_symmetric():
    E = sym_direction(5, 0)
    assert torch.equal(E, E.T)
