"""``eigrad.eigh`` as a drop-in for ``torch.linalg.eigh``: UPLO, empty inputs, integral ``k`` types.

(torch's own OpInfo samples run in tests/test_torch_opinfo.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import eigrad
from eigrad.testing import planted, random_spd

D = torch.float64


def _nonsymmetric(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n, generator=g, dtype=D)


@pytest.mark.parametrize("uplo", ["L", "U", "l", "u"])
def test_uplo_reads_one_triangle(uplo):
    A = _nonsymmetric(6, 0)
    S = A.tril() + A.tril(-1).mT if uplo in "Ll" else A.triu() + A.triu(1).mT
    L, X = eigrad.eigh(A, UPLO=uplo)
    L0, X0 = eigrad.eigh(S)
    torch.testing.assert_close(L, L0, rtol=0, atol=0)
    torch.testing.assert_close(X, X0, rtol=0, atol=0)


def test_uplo_none_still_checks_symmetry():
    with pytest.raises(ValueError, match="A is not symmetric"):
        eigrad.eigh(_nonsymmetric(6, 0))


def test_uplo_applies_to_B_too():
    A = planted([1.0, 2.0, 3.0, 4.0], seed=0).A
    B = random_spd(4, seed=1)
    Bl = B.tril() + torch.full((4, 4), float("nan"), dtype=D).triu(1)  # the upper triangle is never read
    L, X = eigrad.eigh(A.tril(), Bl, UPLO="L")
    L0, X0 = eigrad.eigh(A, B)
    torch.testing.assert_close(L, L0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(X.abs(), X0.abs(), rtol=1e-10, atol=1e-10)


def test_uplo_forward_ad_and_vmap():
    A = _nonsymmetric(5, 1)
    S = A.tril() + A.tril(-1).mT
    dA = _nonsymmetric(5, 2)
    # tangents, as gradients, are those of the symmetric matrix the triangle describes: sym(dA)
    _, (dL, _) = torch.func.jvp(lambda a: tuple(eigrad.eigh(a, UPLO="L")), (A,), (dA,))
    _, (dL0, _) = torch.func.jvp(lambda s: tuple(eigrad.eigh(s)), (S,), (0.5 * (dA + dA.mT),))
    torch.testing.assert_close(dL, dL0, rtol=1e-12, atol=1e-12)
    As = torch.stack([A, _nonsymmetric(5, 3)])
    Lv = torch.func.vmap(lambda a: eigrad.eigh(a, UPLO="L").eigenvalues)(As)
    torch.testing.assert_close(Lv, eigrad.eigh(As, UPLO="L").eigenvalues, rtol=1e-12, atol=1e-12)


# --- empty inputs --------------------------------------------------------------------------------------
EMPTY = [(0, 0), (0, 5, 5), (2, 0, 0), (1, 1, 0, 0), (0, 0, 0)]


@pytest.mark.parametrize("shape", EMPTY, ids=str)
@pytest.mark.parametrize("uplo", [None, "L"])
def test_eigh_empty_shapes_and_derivatives(shape, uplo):
    A = torch.zeros(shape, dtype=D, requires_grad=True)
    L, X = eigrad.eigh(A, UPLO=uplo)
    n = shape[-1]
    assert L.shape == (*shape[:-2], n) and X.shape == shape
    assert L.dtype == X.dtype == D
    (gA,) = torch.autograd.grad(L.sum() + X.sum(), A)
    assert gA.shape == shape
    assert torch.autograd.gradcheck(lambda a: tuple(eigrad.eigh(a, UPLO=uplo)), (A,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(lambda a: tuple(eigrad.eigh(a, UPLO=uplo)), (A,))


def test_eigh_empty_with_B_broadcasts():
    A = torch.zeros(0, 3, 3, dtype=D, requires_grad=True)
    B = random_spd(3, seed=0).requires_grad_()
    L, X = eigrad.eigh(A, B)
    assert L.shape == (0, 3) and X.shape == (0, 3, 3)
    gA, gB = torch.autograd.grad(L.sum() + X.sum(), (A, B))
    assert gA.shape == (0, 3, 3) and torch.equal(gB, torch.zeros(3, 3, dtype=D))


@pytest.mark.parametrize("solver", ["auto", "dense", "lapack"])
def test_eigsh_k_zero_is_empty(solver):
    A = planted([1.0, 2.0, 3.0, 4.0], seed=0).A.requires_grad_()
    L, X = eigrad.eigsh(A, 0, solver=solver)
    assert L.shape == (0,) and X.shape == (4, 0)
    (gA,) = torch.autograd.grad(L.sum() + X.sum(), A)
    assert torch.equal(gA, torch.zeros(4, 4, dtype=D))
    L, X = eigrad.eigsh(torch.zeros(2, 0, 0, dtype=D), 0, solver=solver)
    assert L.shape == (2, 0) and X.shape == (2, 0, 0)
    L, X = eigrad.eigsh(torch.zeros(0, 4, 4, dtype=D), 3, solver=solver)
    assert L.shape == (0, 3) and X.shape == (0, 4, 3)


def test_eigsh_k_zero_on_operators():
    v = torch.arange(1.0, 5.0, dtype=D).requires_grad_()
    op = eigrad.FunctionOperator(lambda X, v: v[:, None] * X, (v,), 4)
    L, X = eigrad.eigsh(op, 0)
    assert L.shape == (0,) and X.shape == (4, 0)
    (gv,) = torch.autograd.grad(L.sum() + X.sum(), v)
    assert torch.equal(gv, torch.zeros(4, dtype=D))
    L, X = eigrad.eigsh(torch.eye(4, dtype=D).to_sparse(), 0)
    assert L.shape == (0,) and X.shape == (4, 0)


# --- k types --------------------------------------------------------------------------------------------
class _Index:
    def __index__(self):
        return 2


@pytest.mark.parametrize(
    "k", [2, np.int64(2), np.int32(2), torch.tensor(2), torch.tensor(2, dtype=torch.int32), _Index()],
    ids=["int", "np.int64", "np.int32", "tensor-int64", "tensor-int32", "__index__"],
)
def test_k_any_integral_type(k):
    A = planted([1.0, 2.0, 3.0, 4.0, 5.0], seed=0).A
    for M in (A, eigrad.as_operator(A)):
        L = eigrad.eigsh(M, k).eigenvalues
        assert L.shape == (2,)
        torch.testing.assert_close(L, torch.tensor([1.0, 2.0], dtype=D), rtol=1e-10, atol=1e-10)
    assert eigrad.projector(A, np.int64(2)).shape == (5, 5)


def test_batched_gradients_of_eigenvectors():
    """``autograd.grad(is_grads_batched=True)`` (gradcheck's batched-gradient test) through the
    eigenvectors: a full slice of the legacy batched cotangent had no batching rule (aten::alias)."""
    A = _nonsymmetric(5, 4).requires_grad_()

    def fn(a):
        L, X = eigrad.eigh(a + a.mT)
        return L, X.abs()  # sign-invariant

    assert torch.autograd.gradcheck(fn, (A,), check_forward_ad=True, check_batched_grad=True,
                                    check_batched_forward_grad=True)
    assert torch.autograd.gradgradcheck(fn, (A,), check_batched_grad=True)
