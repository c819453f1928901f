"""Second, independent test set of complex shift-invert (written separately from
test_complex_shift_invert.py against the same implementation): solver="shift-invert"
on complex Hermitian sparse A (B real or complex HPD).

References: dense ``torch.linalg.eigh`` values, ``eigrad.eigsh(..., solver="dense")``
gradients (checked against FD in tests/test_complex_operators.py) and central
finite differences along Hermitian directions of a gauge-invariant loss, for
both backward routes ("minres", "lu"); the planted spectrum has exact double and
triple clusters. The inertia check: a shift above an eigenvalue of a complex
pencil is refused (SuperLU's pivots of a Hermitian ``A - σB`` are real to
rounding, their signs give the inertia).
"""

from __future__ import annotations

import pytest
import scipy.sparse
import torch

import eigrad
from test_complex_operators import (
    CLUSTERS, CT, SPECTRUM, _gen, build, fd, gradient_of_values, hermitian_direction, inner, lattice, loss_of,
    planted,
)

K = 7


def _si(backward):
    return eigrad.solvers.ShiftInvert(rtol=1e-10, backward=backward)


def _hpd(n, seed, complex_):
    """A sparse tridiagonal HPD ``B`` (diagonally dominant), complex off-diagonal when ``complex_``."""
    gen = _gen(seed)
    off = 0.2 * torch.randn(n - 1, dtype=CT if complex_ else torch.float64, generator=gen)
    d = 1.0 + 0.3 * torch.rand(n, dtype=torch.float64, generator=gen)
    Bd = torch.diag(d.to(off.dtype)) + torch.diag(off, 1) + torch.diag(off.conj(), -1)
    return Bd


@pytest.mark.parametrize("case", ["lattice", "planted"])
def test_forward_values_match_dense(case):
    idx, vals, n = lattice(8) if case == "lattice" else planted()
    A = build("coo", idx, vals, n)
    L, X = eigrad.eigsh(A, K, solver=_si("minres"))
    Ad = A.to_dense()
    ref = torch.linalg.eigvalsh(Ad)[:K]
    assert L.dtype == torch.float64 and X.dtype == CT
    assert (L - ref).abs().max() < 1e-9
    assert torch.linalg.matrix_norm(Ad @ X - X * L.to(CT)) < 1e-8
    assert torch.allclose(X.mH @ X, torch.eye(K, dtype=CT), atol=1e-10)


@pytest.mark.parametrize("backward", ["minres", "lu"])
@pytest.mark.parametrize("case", ["lattice", "planted"])
def test_gradient_matches_dense_and_fd(case, backward):
    idx, vals, n = lattice(8) if case == "lattice" else planted()
    clusters = [[i] for i in range(K)] if case == "lattice" else CLUSTERS
    gen = _gen(11)
    W = torch.randn(n, n, dtype=CT, generator=gen)
    W = W + W.mH
    c = torch.randn(n, dtype=CT, generator=gen)

    def loss_with(solver):
        def loss(A):
            L, X = eigrad.eigsh(A, K, solver=solver)
            return loss_of(L, X, clusters, W, c)
        return loss

    g = gradient_of_values("coo", idx, vals, n, loss_with(_si(backward)))
    g_ref = gradient_of_values("coo", idx, vals, n, loss_with("dense"))
    assert (g - g_ref).abs().max() / g_ref.abs().max() < 1e-6
    dv = hermitian_direction(idx, n, gen)
    ref = fd(lambda v: loss_with("dense")(build("coo", idx, v, n)), vals, dv)
    assert abs(float(inner(g, dv)) - ref) < 1e-5 * max(1.0, abs(ref))


@pytest.mark.parametrize("complex_B", [False, True])
@pytest.mark.parametrize("backward", ["minres", "lu"])
def test_generalized_real_or_complex_B(complex_B, backward):
    idx, vals, n = lattice(7)
    Bd = _hpd(n, 5, complex_B)
    Bs = Bd.to(CT).to_sparse()
    Ad = build("coo", idx, vals, n).to_dense()
    ref = torch.linalg.eigvalsh(torch.linalg.solve(torch.linalg.cholesky(Bd.to(CT)), Ad)
                                @ torch.linalg.inv(torch.linalg.cholesky(Bd.to(CT))).mH)[:K]
    gen = _gen(2)
    w = torch.randn(n, dtype=CT, generator=gen)

    def loss_with(solver):
        def loss(A):
            L, X = eigrad.eigsh(A, K, B=Bs, solver=solver)
            return (L**2).sum() + ((X.mH @ w).abs() ** 2)[: K - 1].sum() * 0 + L.sin().sum()
        return loss

    L, X = eigrad.eigsh(Ad.to_sparse(), K, B=Bs, solver=_si(backward))
    assert (L - ref).abs().max() < 1e-9
    assert torch.allclose(X.mH @ (Bd.to(CT) @ X), torch.eye(K, dtype=CT), atol=1e-9)
    g = gradient_of_values("coo", idx, vals, n, loss_with(_si(backward)))
    g_ref = gradient_of_values("coo", idx, vals, n, loss_with("dense"))
    assert (g - g_ref).abs().max() / g_ref.abs().max() < 1e-6


def test_scipy_complex_matrix_and_shift_inertia():
    idx, vals, n = planted()
    A = build("coo", idx, vals, n).coalesce()
    S = scipy.sparse.csr_matrix((A.values().numpy(), A.indices().numpy()), shape=(n, n))
    L, _ = eigrad.eigsh(S, K, solver=eigrad.solvers.ShiftInvert(shift=-1.5))
    assert (L - torch.tensor(SPECTRUM[:K], dtype=torch.float64)).abs().max() < 1e-9
    with pytest.raises(ValueError, match="eigenvalue"):  # -0.5 lies above the double eigenvalue -1
        eigrad.eigsh(S, K, solver=eigrad.solvers.ShiftInvert(shift=-0.5))

