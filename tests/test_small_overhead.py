"""The per-call fast path of the dense solvers (issue 14, item 2): no scaling in the safe range, few host
synchronizations, and the cheaper cluster helpers agreeing with the general ones."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import eigrad
from eigrad._scaling import SAFE_EXPONENT, in_safe_range
from eigrad.autodiff._clusters import any_linked_pair, cluster_labels, simple_spectrum
from eigrad.autodiff._formulas import full_simple_vjp, sym, vjp_terms
from eigrad.linsolve import eigenbasis_factory
from eigrad.testing import random_symmetric


class _CountScalarReads(TorchDispatchMode):
    """Counts the reads of a tensor's value by the host (``bool(t)``, ``float(t)``, ``t.item()``)."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


def _reads(fn):
    with _CountScalarReads() as mode:
        out = fn()
    return mode.reads, out


@pytest.mark.parametrize("call", ["eigh", "eigsh"])
def test_small_dense_call_reads_few_values_on_the_host(call):
    A = random_symmetric(8, seed=0).requires_grad_(True)
    fn = (lambda: eigrad.eigh(A)) if call == "eigh" else (lambda: eigrad.eigsh(A, 3))
    fwd, (L, X) = _reads(fn)
    loss = L.sum() + (X**2 * torch.arange(X.shape[-1], dtype=X.dtype)).sum()
    bwd, _ = _reads(lambda: torch.autograd.grad(loss, A))
    # forward: the input check and the safe-range test (+1 for eigsh: does a cluster run past the guards);
    # backward: one pre-check of a simple spectrum (simple_spectrum: no cluster, cut or near pair; it was
    # 6 reads in all for eigh)
    assert fwd <= (2 if call == "eigh" else 3)
    assert bwd <= 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.complex128])
def test_in_safe_range(dtype):
    lim = SAFE_EXPONENT[torch.float32 if dtype == torch.float32 else torch.float64]
    A = torch.ones(3, 4, 4, dtype=dtype)
    assert in_safe_range(A)
    assert in_safe_range(A * 2.0 ** (lim - 2)) and in_safe_range(A * 2.0 ** -(lim - 2))
    assert not in_safe_range(A * 2.0 ** (lim + 1)) and not in_safe_range(A * 2.0 ** -(lim + 2))
    assert not in_safe_range(A[0] * 2.0 ** (lim + 1))  # a single matrix
    B = A.clone()
    B[0] = 0  # a zero matrix needs no scaling, and does not hide a tiny one
    assert in_safe_range(B)
    B[1] *= 2.0 ** -(lim + 2)
    assert not in_safe_range(B)
    B = A.clone()
    B[2, 1, 1] = float("nan")
    assert not in_safe_range(B)


def test_unscaled_results_match_the_scaled_route():
    A = random_symmetric(12, seed=1) * 3.0e5
    L, X = eigrad.eigh(A)
    e = 19  # 2**19 ≈ 5e5: what the scaled route divides by
    Ls, Xs = eigrad.eigh(A * 2.0**-e)
    torch.testing.assert_close(L, Ls * 2.0**e, rtol=1e-13, atol=0)
    torch.testing.assert_close((X * Xs).sum(0).abs(), torch.ones(12, dtype=A.dtype), rtol=1e-12, atol=1e-12)


def test_asymmetric_infinite_entry_is_reported():
    A = random_symmetric(5, seed=2)
    A[0, 3] = float("inf")  # its mirror stays finite: max|A - Aᵀ| = inf = the tolerance
    with pytest.raises(ValueError, match="NaN or inf"):
        eigrad.eigh(A)


def test_cluster_helpers_agree_with_cluster_labels():
    gen = torch.Generator().manual_seed(3)
    vals = torch.randint(0, 6, (50, 7), generator=gen).double() * 0.5
    vals = vals + 1e-9 * torch.rand(vals.shape, generator=gen, dtype=torch.float64)
    atol = torch.full((50,), 1e-6, dtype=torch.float64)
    sv = vals.sort(-1).values
    torch.testing.assert_close(cluster_labels(sv, atol, 1e-8, ascending=True), cluster_labels(sv, atol, 1e-8))
    for row in range(50):
        labels = cluster_labels(vals[row : row + 1], atol[row : row + 1], 1e-8)
        has_cluster = bool((labels[0].bincount() > 1).any())
        assert any_linked_pair(vals[row : row + 1], atol[row : row + 1], 1e-8) == has_cluster


@pytest.mark.parametrize("solver", ["dense", "lapack"])
def test_deferred_residual_norms_are_reported_by_eigsh_ex(solver):
    A = random_symmetric(10, seed=5)
    L, X, info = eigrad.eigsh_ex(A, 3, solver=solver)
    expected = torch.linalg.vector_norm(A @ X - X * L, dim=0)
    torch.testing.assert_close(info.residuals, expected, rtol=0, atol=1e-13)
    assert torch.is_tensor(info.residuals) and info.residuals.shape == (3,)


def test_backward_on_dual_tensors_still_refuses_second_order():
    """The first-order backward skips its second-order marks only where nothing records: a backward
    run on forward-AD dual tensors (forward-over-reverse) must still raise, not return a tangent."""
    import torch.autograd.forward_ad as fwAD

    A = random_symmetric(5, seed=6)
    T = random_symmetric(5, seed=7)
    with fwAD.dual_level():
        Ad = fwAD.make_dual(A.clone().requires_grad_(True), T)
        L, X = eigrad.eigh(Ad)
        loss = (X[:, 0] ** 4).sum() + L.sum()
        with pytest.raises(RuntimeError, match="does not yet differentiate its own backward"):
            torch.autograd.grad(loss, Ad)


def test_simple_spectrum_agrees_with_the_cluster_helpers():
    """simple_spectrum is True exactly when no cluster, cut or near-degenerate (eps^(1/4)) pair exists."""
    gen = torch.Generator().manual_seed(4)
    eps = torch.finfo(torch.float64).eps
    for gap in (1.0, 1e-3, 1e-5, 1e-9, 0.0):
        vals = torch.randn(20, 6, generator=gen, dtype=torch.float64).sort(-1).values
        vals[:, 3] = vals[:, 2] + gap  # may break the order: unsorted rows are sorted by the helper
        atol = torch.full((20,), eps**0.5, dtype=torch.float64)
        labels = cluster_labels(vals, atol, eps**0.5)
        none = torch.zeros(20, 6, dtype=torch.bool)
        near = any_linked_pair(vals, atol * eps**-0.25, eps**0.25)
        assert simple_spectrum(vals, labels, none, atol, eps**0.5) == (not near)
        cut = none.clone()
        cut[5, 1] = True
        assert not simple_spectrum(vals, labels, cut, atol, eps**0.5)
    nan = torch.tensor([[0.0, float("nan"), 2.0]], dtype=torch.float64)
    assert not simple_spectrum(nan, torch.tensor([[0, 0, 1]]), None, torch.ones(1, dtype=torch.float64), 1e-8)


@pytest.mark.parametrize("cotangents", ["both", "values", "vectors"])
def test_full_simple_vjp_equals_the_general_formula(cotangents):
    """The fast full-eigenbasis gradient (MATH.md, "Full decomposition") against vjp_terms with D = I."""
    gen = torch.Generator().manual_seed(5)
    A = random_symmetric(7, seed=gen, batch_shape=(3,))
    L, X = torch.linalg.eigh(A)
    Lbar = None if cotangents == "vectors" else torch.randn(3, 7, generator=gen, dtype=torch.float64)
    Xbar = None if cotangents == "values" else torch.randn(3, 7, 7, generator=gen, dtype=torch.float64)
    D = torch.eye(7, dtype=torch.bool).expand(3, 7, 7)
    solve = eigenbasis_factory((L, X), torch.zeros(3, dtype=torch.float64), 0.0)
    LA, _ = vjp_terms(L, X, X, D, Lbar, Xbar, lambda R, s: solve(R, s, X, None), need_B=False)
    torch.testing.assert_close(full_simple_vjp(L, X, Lbar, Xbar), sym(LA @ X.mT), rtol=0, atol=1e-12)


@pytest.mark.parametrize("largest", [False, True])
def test_partial_simple_vjp_from_the_eigenbasis_equals_the_general_formula(largest):
    """k < n wanted pairs, the shifted solves diagonal in the whole eigenbasis: against vjp_terms."""
    gen = torch.Generator().manual_seed(6)
    n, k = 9, 3
    A = random_symmetric(n, seed=gen, batch_shape=(2,))
    Lf, Xf = torch.linalg.eigh(A)
    off = n - k if largest else 0
    L, X = Lf[..., off : off + k], Xf[..., off : off + k]
    Lbar = torch.randn(2, k, generator=gen, dtype=torch.float64)
    Xbar = torch.randn(2, n, k, generator=gen, dtype=torch.float64)
    D = torch.eye(k, dtype=torch.bool).expand(2, k, k)
    solve = eigenbasis_factory((Lf, Xf), torch.full((2,), 1e-8, dtype=torch.float64), 1e-8)
    LA, _ = vjp_terms(L, X, X, D, Lbar, Xbar, lambda R, s: solve(R, s, X, None), need_B=False)
    got = full_simple_vjp(L, X, Lbar, Xbar, Lf, Xf, off)
    torch.testing.assert_close(got, sym(LA @ X.mT), rtol=0, atol=1e-12)
    # and end to end: eigsh's gradient (solver "dense") against torch.linalg.eigh's at this simple spectrum
    A1 = A.clone().requires_grad_()
    A2 = A.clone().requires_grad_()
    res = eigrad.eigsh(A1, k, largest=largest, solver="dense")
    Lt, Xt = torch.linalg.eigh(A2)
    Lt, Xt = Lt[..., off : off + k], Xt[..., off : off + k]
    loss = lambda L_, X_: (L_ * Lbar).sum() + (X_.square() * Xbar).sum()  # noqa: E731 (sign-invariant)
    g1, = torch.autograd.grad(loss(res.eigenvalues, res.eigenvectors), A1)
    g2, = torch.autograd.grad(loss(Lt, Xt), A2)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-12)
