"""Every magnitude of A and B: values, gradients and degeneracy handling (issue 10, item 2).

The dense solvers scale the problem by exact powers of two before reducing it
(``eigensolvers/_reduce.scaled_standard_form``), as LAPACK's ``syevr`` does;
unscaled, ``solver="lapack"`` returned eigenvalues 18-90 % wrong below
``max|A| ≈ 1e-153`` (float64) / ``1e-18`` (float32) and failed in ``stebz``
above ``1e154``. For ``A -> s A``, ``B -> t B`` the eigenvalues scale by
``s/t`` and the eigenvectors by ``t^(-1/2)``, so the gradients of
``f = Σ λ_i`` scale as ``∂f/∂A: 1/t``, ``∂f/∂B: s/t²`` and those of the
projector loss ``h = Σ_g <W, X_g X_gᵀ>`` as ``∂h/∂A: 1/(s t)``, ``∂h/∂B:
1/t²``. Each case is compared with the same problem at scale 1 in float64
(eigenvalues also with ``scipy.linalg.eigh``), under ``gauge="raise"``, with an
exactly double eigenvalue among the k computed, which must be merged into one
cluster at every scale.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

import eigrad
from eigrad.eigensolvers import DenseEigh, LapackSubset
from eigrad.testing import clustered_spectrum, planted, random_symmetric

N, K = 12, 3
SPEC = clustered_spectrum(N, [1, 2], start=0.5, spacing=0.8)  # 0.5, 1.3, 1.3, 2.1, ...
CLUSTERS = [[0], [1, 2]]
RAISE = eigrad.BackwardOptions(gauge="raise")

SCALES = {
    torch.float64: [1e-300, 1e-200, 1e-160, 1e160, 1e200, 1e300],
    torch.float32: [1e-30, 1e-20, 1e20, 1e30],
}
CASES = [
    pytest.param(dtype, s, t, with_B, id=f"{str(dtype)[6:]}-{'B' if with_B else 'I'}-{which}{x:.0e}")
    for dtype, scales in SCALES.items()
    for x in scales
    for with_B, which in [(False, "A"), (True, "A"), (True, "B")]
    for s, t in [((x, 1.0) if which == "A" else (1.0, x))]
]
#: relative tolerance of values and gradients: float64 ~1e4 eps; float32 ~1e3 eps (gaps ~1, cond(B) = 4)
REL = {torch.float64: 1e-11, torch.float32: 2e-4}


def _problem(with_B):
    p = planted(SPEC, B="random" if with_B else None, seed=3, cond=4.0)
    return p.A, p.B, random_symmetric(N, seed=4)


def _losses(L, X, W):
    proj = sum(((W / (1.0 + g)) * (X[:, c] @ X[:, c].T)).sum() for g, c in enumerate(CLUSTERS))
    return L.sum(), proj


def _grads(A, B, W, solver, need_B):
    A = A.clone().requires_grad_(True)
    B = None if B is None else B.clone().requires_grad_(need_B)
    if solver == "eigh":
        L, X = eigrad.eigh(A, B, backward=RAISE)
        L, X = L[:K], X[:, :K]
    else:
        L, X = eigrad.eigsh(A, K, B=B, solver=solver, backward=RAISE)
    wrt = [A] + ([B] if need_B else [])
    f, h = _losses(L, X, W.to(A.dtype))
    return L, torch.autograd.grad(f, wrt, retain_graph=True), torch.autograd.grad(h, wrt)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _representable(log10_factor, dtype):
    finfo = torch.finfo(dtype)
    return math.log10(finfo.tiny) + 3 < log10_factor < math.log10(finfo.max) - 3


@pytest.mark.parametrize("solver", ["lapack", "dense", "eigh"])
@pytest.mark.parametrize("dtype, s, t, with_B", CASES)
def test_values_and_gradients_at_every_scale(solver, dtype, s, t, with_B):
    A0, B0, W = _problem(with_B)
    A = (A0 * s).to(dtype)
    B = None if B0 is None else (B0 * t).to(dtype)
    # the matrices actually solved, scaled back to magnitude 1 in float64
    A1 = A.double() / s
    B1 = None if B is None else B.double() / t
    # ∂/∂B of both losses is representable only where s/t² and 1/t² are
    ls, lt = math.log10(s), math.log10(t)
    need_B = with_B and _representable(ls - 2 * lt, dtype) and _representable(-2 * lt, dtype)
    L, gf, gh = _grads(A, B, W, solver, need_B)
    ref_vals = scipy.linalg.eigh(A1.numpy(), None if B1 is None else B1.numpy(), eigvals_only=True)[:K]
    got = L.detach().double().numpy() * (t / s)
    assert np.abs(got - ref_vals).max() <= REL[dtype] * np.abs(ref_vals).max()
    _, rf, rh = _grads(A1, B1, W, "dense", need_B)
    factors_f = [1 / t] + ([s / t**2] if need_B else [])  # ∂f/∂A, ∂f/∂B
    factors_h = [1 / (s * t)] + ([1 / t**2] if need_B else [])
    for got_g, ref_g, fac in zip(gf, rf, factors_f):
        assert got_g.dtype == dtype and _rel(got_g.double() / fac, ref_g) < REL[dtype]
    for got_g, ref_g, fac in zip(gh, rh, factors_h):
        assert got_g.dtype == dtype and _rel(got_g.double() / fac, ref_g) < REL[dtype]


@pytest.mark.parametrize("solver", ["lapack", "dense"])
@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_materialized_sparse_operator_at_extreme_scales(solver, scale):
    """A sparse ``A`` is materialized (n <= 200) and solved by the same dense solvers; gradient to its values."""
    A0, B0, W = _problem(True)

    def run(s):
        Asp = (A0 * s).to_sparse_coo().coalesce()
        vals = Asp.values().clone().requires_grad_(True)
        A = torch.sparse_coo_tensor(Asp.indices(), vals, (N, N))
        L, X = eigrad.eigsh(A, K, B=B0, solver=solver, backward=RAISE)
        f, h = _losses(L, X, W)
        (g,) = torch.autograd.grad(f + s * h, vals)  # ∂f/∂A is scale invariant, ∂h/∂A scales as 1/s
        return L / s, g

    L1, g1 = run(1.0)
    L, g = run(scale)
    torch.testing.assert_close(L, L1, rtol=1e-12, atol=0)
    assert _rel(g, g1) < REL[torch.float64]


@pytest.mark.parametrize("solver", ["lapack", "dense"])
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
@pytest.mark.parametrize("scale", [1e-150, 1e150])
def test_second_derivatives_at_extreme_scales(solver, with_B, scale):
    """The Hessian-vector product of the projector loss scales as 1/s² (representable up to 1e±150)."""
    A0, B0, W = _problem(with_B)
    V = random_symmetric(N, seed=6)

    def hvp(s):
        A = (A0 * s).requires_grad_(True)
        _, X = eigrad.eigsh(A, 1, B=B0, solver=solver, backward=RAISE)
        (g,) = torch.autograd.grad((W * (X @ X.T)).sum(), A, create_graph=True)
        (h,) = torch.autograd.grad((g * V).sum(), A)
        return h * s * s

    assert _rel(hvp(scale), hvp(1.0)) < 1e-11


@pytest.mark.parametrize("solver", ["lapack", "dense"])
@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_cluster_cut_by_k_is_reported_at_extreme_scales(solver, scale):
    """The guard eigenvalue is compared relative to the spectrum's scale: k = 2 cuts the double pair."""
    A0, _, W = _problem(False)
    A = (A0 * scale).requires_grad_(True)
    L, X = eigrad.eigsh(A, 2, solver=solver, backward=RAISE)
    with pytest.raises(eigrad.GaugeError, match="cut"):
        torch.autograd.grad((W * (X @ X.T)).sum(), A)


@pytest.mark.parametrize("solver", ["lapack", "dense", "eigh"])
def test_entries_near_the_largest_float(solver):
    """max|A| = 1e308: (A + Aᵀ)/2 overflowed to inf when it added before halving."""
    A0, _, _ = _problem(False)
    A = A0 * (1e308 / float(A0.abs().max()))
    L = eigrad.eigh(A).eigenvalues[:K] if solver == "eigh" else eigrad.eigsh(A, K, solver=solver).eigenvalues
    ref = scipy.linalg.eigh((A / 1e308).numpy(), eigvals_only=True)[:K]
    np.testing.assert_allclose(L.numpy() / 1e308, ref, rtol=1e-13)


@pytest.mark.parametrize("solver", ["lapack", "dense"])
def test_eigenvalues_beyond_the_dtype_range_raise(solver):
    """``A`` near the largest float64 and ``B`` tiny: eigenvalues ~1e600 are not representable."""
    A0, B0, _ = _problem(True)
    with pytest.raises(ValueError, match=r"eigenvalues of \(A, B\) have magnitude about 1e\d+, outside the range"):
        eigrad.eigsh(A0 * 1e300, K, B=B0 * 1e-300, solver=solver)


@pytest.mark.parametrize("solver", [DenseEigh(), LapackSubset()], ids=["dense", "lapack"])
@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_residual_norms_are_scaled_too(solver, scale):
    """``‖A x - λ x‖`` at 1e300 squared its entries (inf); at 1e-300 the squares underflowed."""
    A0, _, _ = _problem(False)
    res = solver(A0 * scale, K).residual_norms
    assert torch.isfinite(res).all() and 0 < float(res.max()) < 1e-13 * scale


# --- spectral_norm -----------------------------------------------------------------------------------
@pytest.mark.parametrize("batched", [False, True], ids=["operator", "batched"])
@pytest.mark.parametrize(
    "dtype, scale",
    [(torch.float64, 1e-200), (torch.float64, 1e200), (torch.float64, 1e-300), (torch.float64, 1e300),
     (torch.float32, 1e-30), (torch.float32, 1e30)],
)
def test_spectral_norm_at_every_scale(batched, dtype, scale):
    """Unscaled, WᵀW underflowed to 0 (value 0.0 at 1e-200) or overflowed ("matmat returned NaN")."""
    W0 = torch.randn(7, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ref = float(np.linalg.svd(W0.numpy(), compute_uv=False)[0])
    W1 = W0.clone().requires_grad_(True)
    (G1,) = torch.autograd.grad(eigrad.spectral_norm(W1), W1)  # u vᵀ: scale invariant
    W = (W0 * scale).to(dtype)
    if batched:
        W = torch.stack([W, 2 * W])
    W.requires_grad_(True)
    v = eigrad.spectral_norm(W)
    (G,) = torch.autograd.grad(v.sum(), W)
    rel = 1e-12 if dtype == torch.float64 else 1e-5
    want = [ref, 2 * ref] if batched else [ref]
    assert np.allclose(v.detach().double().reshape(-1).numpy() / scale, want, rtol=rel, atol=0)
    for Gi in G.reshape(-1, 7, 5):
        assert _rel(Gi.double(), G1) < (1e-10 if dtype == torch.float64 else 1e-4)
    assert math.isfinite(float(v.detach().double().sum()))
