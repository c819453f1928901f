"""float32 smoke tests: values and derivatives against the same problem in float64.

float32 has eps = 1.2e-7; its default degeneracy tolerance (sqrt(eps) ≈ 3.5e-4
relative) merges the planted clusters, which in float32 are split by rounding
(~1e-6). Gradients of a gauge-invariant loss then carry errors ~ eps·κ with κ
the inverse of the smallest gap to the rest of the spectrum (here ~1) and
``cond(B)`` (4): measured relative errors are 7e-7 .. 5e-6, and the tolerance
1e-4 (~1000 eps) leaves a 20x margin.
"""

from __future__ import annotations

import pytest
import torch

import eigrad
from eigrad.testing import cluster_positions, clustered_spectrum, invariant_loss, planted, random_symmetric

N, K = 16, 6
SPEC = clustered_spectrum(N, [2, 3, 1], start=0.5, spacing=0.8)
CLUSTERS = cluster_positions(SPEC[:K])
REL = 1e-4


def _rel(a, b):
    return float((a.detach().double() - b.detach()).norm() / b.detach().norm())


def _both(with_B, seed):
    p64 = planted(SPEC, B="random" if with_B else None, seed=seed, cond=4.0)
    p32 = planted(SPEC, B="random" if with_B else None, seed=seed, cond=4.0, dtype=torch.float32)
    return p32, p64


@pytest.mark.parametrize("method", ["lapack", "dense", "eigh"])
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
def test_float32_values_and_gradients_match_float64(method, with_B):
    p32, p64 = _both(with_B, seed=1)
    W64 = random_symmetric(N, seed=2)

    def run(p, W):
        A = p.A.clone().requires_grad_(True)
        B = p.B.clone().requires_grad_(True) if with_B else None
        if method == "eigh":
            L, X = eigrad.eigh(A, B)
            L, X = L[:K], X[:, :K]
        else:
            L, X = eigrad.eigsh(A, K, B=B, solver=method)
        grads = torch.autograd.grad(invariant_loss(L, X, CLUSTERS, W), [A] + ([B] if with_B else []))
        return L, X, grads

    L32, X32, g32 = run(p32, W64.float())
    L64, X64, g64 = run(p64, W64)
    assert L32.dtype == X32.dtype == g32[0].dtype == torch.float32
    torch.testing.assert_close(L32.double(), L64, rtol=1e-5, atol=1e-5)
    for c in CLUSTERS:  # eigenvectors up to the basis of each cluster: compare projectors
        P32, P64 = X32[:, c] @ X32[:, c].T, X64[:, c] @ X64[:, c].T
        assert _rel(P32, P64) < REL
    for a, b in zip(g32, g64):
        assert _rel(a, b) < REL, _rel(a, b)


@pytest.mark.parametrize("solver", ["lapack", "dense"])
def test_float32_jvp_and_largest(solver):
    p32, p64 = _both(True, seed=3)
    EA, EB = random_symmetric(N, seed=4), 0.2 * random_symmetric(N, seed=5)
    W = random_symmetric(N, seed=6)
    top = cluster_positions(sorted(-v for v in SPEC[:K]))  # the K largest of -A, ascending

    def loss(A, B, W):
        L, X = eigrad.eigsh(-A, K, B=B, largest=True, solver=solver)
        return invariant_loss(L, X, top, W)

    _, t32 = torch.func.jvp(lambda a, b: loss(a, b, W.float()), (p32.A, p32.B), (EA.float(), EB.float()))
    _, t64 = torch.func.jvp(lambda a, b: loss(a, b, W), (p64.A, p64.B), (EA, EB))
    assert t32.dtype == torch.float32
    assert abs(float(t32) - float(t64)) < REL * max(1.0, abs(float(t64)))


def test_float32_batched_with_vmap():
    ps = [planted(SPEC, seed=s, dtype=torch.float32) for s in (7, 8)]
    As = torch.stack([p.A for p in ps])
    W = random_symmetric(N, seed=9, dtype=torch.float32)

    def loss(A):
        return invariant_loss(*eigrad.eigsh(A, K, solver="dense"), CLUSTERS, W)

    g = torch.func.vmap(torch.func.grad(loss))(As)
    for i, p in enumerate(ps):
        A64 = p.A.double().requires_grad_(True)
        L, X = eigrad.eigsh(A64, K, solver="dense")
        (ref,) = torch.autograd.grad(invariant_loss(L, X, CLUSTERS, W.double()), [A64])
        assert _rel(g[i], ref) < REL
