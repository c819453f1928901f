"""Spectral functions of dense complex Hermitian matrices (complex128): ``F = X f(Λ) Xᴴ``.

References independent of eigrad: SciPy's ``sqrtm``/``logm``/``expm`` (Schur
and Padé algorithms, not eigendecompositions), ``X f(Λ) Xᴴ`` from
``torch.linalg.eigh``, four-point central finite differences along random
Hermitian directions of real losses (``Re tr(W F)`` with Hermitian ``W``,
``‖F‖²``), torch's complex ``gradcheck`` with forward AD, and
``torch.linalg.matrix_norm(W, 2)`` for ``spectral_norm``. Spectra are planted
as ``Q diag(λ) Qᴴ`` with a random unitary ``Q`` (seeded ``torch.Generator``).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.autograd import forward_ad

import eigrad
from eigrad import testing

CT = torch.complex128
N = 6
H = 1e-4
# four-point FD: truncation ~h⁴ f⁽⁵⁾, rounding ~eps·|loss|/h ~ 1e-12 relative; measured <= 2e-10
RTOL = 1e-8

# (spectrum, k that keeps every cluster whole for the k smallest)
SPECTRA = {
    "simple": ([0.5, 1.1, 1.9, 2.7, 3.6, 4.4], 3),
    "double": ([0.6, 1.3, 1.3, 2.2, 3.1, 3.9], 3),
    "triple": ([0.6, 1.6, 1.6, 1.6, 3.1, 3.9], 4),
    "near": ([0.6, 1.3, 1.3 + 1e-8, 2.2, 3.1, 3.9], 3),
}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def random_unitary(n, gen, batch=()):
    return testing.random_unitary(n, seed=gen, batch_shape=batch, dtype=CT)


def random_hermitian(n, gen, batch=()):
    return testing.random_hermitian(n, seed=gen, batch_shape=batch, dtype=CT)


def planted(vals, seed, batch=()):
    Q = random_unitary(len(vals), _gen(seed), batch)
    A = (Q * torch.tensor(vals, dtype=torch.float64).to(CT)) @ Q.mH
    return 0.5 * (A + A.mH)


def reference(A, f, k=None, largest=False):
    """``X f(Λ) Xᴴ`` from ``torch.linalg.eigh`` (``k``: the k smallest or largest pairs)."""
    L, X = torch.linalg.eigh(A)
    if k is not None:
        sl = slice(-k, None) if largest else slice(0, k)
        L, X = L[..., sl], X[..., sl]
    return (X * f(L).to(CT).unsqueeze(-2)) @ X.mH


# name -> (eigrad call A -> F, the scalar function for the reference)
FUNCTIONS = {
    "sqrtm": (eigrad.sqrtm, torch.sqrt),
    "logm": (eigrad.logm, torch.log),
    "expm": (eigrad.expm, torch.exp),
    "powm1.5": (lambda A: eigrad.powm(A, 1.5), lambda x: x ** 1.5),
    "powm-2": (lambda A: eigrad.powm(A, -2), lambda x: x ** -2),
    "funm_tanh": (lambda A: eigrad.funm(A, torch.tanh), torch.tanh),
}


def partial(k, largest):
    return lambda A: eigrad.funm(A, torch.sin, k, largest=largest)


def fd_t(phi):
    """Four-point central difference of ``phi(t)`` at ``t = 0``."""
    with torch.no_grad():
        p1, m1, p2, m2 = phi(H), phi(-H), phi(2 * H), phi(-2 * H)
    return float((8 * (p1 - m1) - (p2 - m2)) / (12 * H))


def fd(loss, A, D):
    """Four-point central difference of ``loss`` at ``A`` along ``D``."""
    return fd_t(lambda t: loss(A + t * D))


def _losses(W):
    return {
        "ReTrWF": lambda F: (W * F.mT).sum().real,  # Re tr(W F)
        "frob": lambda F: (F.abs() ** 2).sum(),
    }


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.parametrize("name", ["sqrtm", "logm", "expm"])
def test_values_match_scipy(name):
    gen = _gen(1)
    Z = torch.randn(N, N, dtype=CT, generator=gen)
    A = Z @ Z.mH / N + 0.5 * torch.eye(N, dtype=CT)
    A = 0.5 * (A + A.mH)
    F = getattr(eigrad, name)(A)
    ref = torch.from_numpy(getattr(scipy.linalg, name)(A.numpy()))
    assert F.dtype == CT
    err = float((F - ref).abs().max() / ref.abs().max())
    assert err < 1e-13, err  # measured <= 5e-15 (SciPy's own rounding)
    assert float((F - F.mH).abs().max()) == 0.0  # Hermitian exactly


@pytest.mark.parametrize("spec", list(SPECTRA))
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_values_match_eigh(name, spec):
    vals, _ = SPECTRA[spec]
    A = planted(vals, 2, batch=(2,))
    call, f = FUNCTIONS[name]
    F, ref = call(A), reference(A, f)
    err = float((F - ref).abs().max() / ref.abs().max())
    assert err < 1e-12, err


@pytest.mark.parametrize("largest", [False, True])
def test_partial_values_and_projector(largest):
    vals, k = SPECTRA["double"]
    A = planted(vals, 3)
    kk = 2 if largest else k
    F = eigrad.funm(A, torch.sin, kk, largest=largest)
    ref = reference(A, torch.sin, kk, largest)
    assert float((F - ref).abs().max()) < 1e-13
    P = eigrad.projector(A, kk, largest=largest)
    Pref = reference(A, torch.ones_like, kk, largest)
    assert float((P - Pref).abs().max()) < 1e-13
    assert float((P @ P - P).abs().max()) < 1e-13


def _cases():
    for spec, (vals, k) in SPECTRA.items():
        for name in FUNCTIONS:
            yield spec, name
        yield spec, f"funm_k{k}"
        yield spec, "funm_largest2"


def _call(name, spec):
    if name.startswith("funm_k"):
        return partial(SPECTRA[spec][1], False)
    if name == "funm_largest2":
        return partial(2, True)
    return FUNCTIONS[name][0]


@pytest.mark.parametrize("spec,name", list(_cases()))
def test_gradient_and_jvp_vs_finite_differences(spec, name):
    vals, _ = SPECTRA[spec]
    call = _call(name, spec)
    gen = _gen(10)
    A0 = planted(vals, 11)
    D = random_hermitian(N, gen)
    W = random_hermitian(N, gen)
    for lname, loss_F in _losses(W).items():
        def loss(A):
            return loss_F(call(A))

        ref = fd(loss, A0, D)
        A = A0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(A), A)
        assert g.dtype == CT
        assert float((g - g.mH).abs().max()) <= 1e-14 * float(g.abs().max())  # Hermitian gradient
        vjp = float((g.conj() * D).sum().real)  # dL = Re tr(Ḡᴴ D)
        with forward_ad.dual_level():
            out = loss(forward_ad.make_dual(A0, D))
            jvp = float(forward_ad.unpack_dual(out).tangent)
        assert _rel(vjp, ref) < RTOL, (lname, vjp, ref)
        assert _rel(jvp, ref) < RTOL, (lname, jvp, ref)


def test_generalized_problem_vs_finite_differences():
    """``B`` Hermitian positive definite (complex), and a real ``B`` promoted to complex."""
    vals, _ = SPECTRA["double"]
    gen = _gen(20)
    A0 = planted(vals, 21)
    G = torch.randn(N, N, dtype=CT, generator=gen)
    B0 = G @ G.mH / N + torch.eye(N, dtype=CT)
    B0 = 0.5 * (B0 + B0.mH)
    DA, DB, W = random_hermitian(N, gen), random_hermitian(N, gen), random_hermitian(N, gen)

    def loss(A, B):
        return (W * eigrad.sqrtm(A, B=B).mT).sum().real

    ref = fd_t(lambda t: loss(A0 + t * DA, B0 + t * DB))
    A, B = A0.clone().requires_grad_(True), B0.clone().requires_grad_(True)
    gA, gB = torch.autograd.grad(loss(A, B), (A, B))
    vjp = float((gA.conj() * DA).sum().real + (gB.conj() * DB).sum().real)
    assert _rel(vjp, ref) < RTOL, (vjp, ref)
    # F @ B = sqrt(B⁻¹A): (F B)² = B⁻¹ A
    with torch.no_grad():
        FB = eigrad.sqrtm(A0, B=B0) @ B0
        assert float((FB @ FB - torch.linalg.solve(B0, A0)).abs().max()) < 1e-12
    # a real B is promoted; its gradient is the real part
    Br = B0.real.clone()
    Br = 0.5 * (Br + Br.mT)
    Br.requires_grad_(True)
    (gr,) = torch.autograd.grad(loss(A0, Br), Br)
    Bc = Br.detach().to(CT).requires_grad_(True)
    (gc,) = torch.autograd.grad(loss(A0, Bc), Bc)
    assert gr.dtype == torch.float64
    assert float((gr - gc.real).abs().max()) == 0.0


@pytest.mark.parametrize(
    "name,vals,call",
    [
        ("expm_simple", SPECTRA["simple"][0][:4], eigrad.expm),
        ("logm_double", [0.6, 1.3, 1.3, 2.2], eigrad.logm),
        ("sqrtm_triple", [0.6, 1.6, 1.6, 1.6], eigrad.sqrtm),
        ("funm_k2", [0.6, 1.3, 2.2, 3.1], lambda A: eigrad.funm(A, torch.sin, 2)),
        ("projector_largest", [0.6, 1.3, 2.2, 3.1], lambda A: eigrad.projector(A, 2, largest=True)),
    ],
)
def test_gradcheck_forward_ad(name, vals, call):
    A0 = planted(vals, 30).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda A: call(0.5 * (A + A.mH)), (A0,), check_forward_ad=True, atol=1e-6, rtol=1e-5
    )


def test_second_order_raises_as_for_real():
    A = planted(SPECTRA["simple"][0], 40).requires_grad_(True)
    (g,) = torch.autograd.grad(eigrad.expm(A).diagonal().sum().real, A, create_graph=True)
    with pytest.raises(RuntimeError, match="does not yet differentiate its own backward"):
        torch.autograd.grad(g.abs().sum(), A)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (2, 4, 3)])
def test_spectral_norm_complex(shape):
    gen = _gen(50)
    W0 = torch.randn(*shape, dtype=CT, generator=gen)
    D = torch.randn(*shape, dtype=CT, generator=gen)
    W = W0.clone().requires_grad_(True)
    s = eigrad.spectral_norm(W)
    assert s.dtype == torch.float64
    ref = torch.linalg.matrix_norm(W0, 2)
    assert float((s.detach() - ref).abs().max() / ref.abs().max()) < 1e-14
    (g,) = torch.autograd.grad(s.sum(), W)
    with torch.no_grad():
        U, S, Vh = torch.linalg.svd(W0)
        uvh = U[..., :, :1] @ Vh[..., :1, :]  # u vᴴ (phase-invariant)
    assert float((g - uvh).abs().max()) < 1e-13
    ref_dir = fd(lambda M: eigrad.spectral_norm(M).sum(), W0, D)
    assert _rel(float((g.conj() * D).sum().real), ref_dir) < RTOL


def test_complex64_smoke():
    vals, _ = SPECTRA["double"]
    A64 = planted(vals, 60)
    W = random_hermitian(N, _gen(61))

    def grad(dtype, call):
        A = A64.to(dtype).clone().requires_grad_(True)
        F = call(A)
        assert F.dtype == dtype
        (g,) = torch.autograd.grad((W.to(dtype) * F.mT).sum().real, A)
        assert g.dtype == dtype
        return g

    for call in (eigrad.expm, eigrad.sqrtm, lambda A: eigrad.funm(A, torch.sin, 3)):
        g32, g64 = grad(torch.complex64, call), grad(CT, call)
        err = float((g32.to(CT) - g64).abs().max() / g64.abs().max())
        assert err < 1e-4, err
    s = eigrad.spectral_norm(A64.to(torch.complex64))
    assert s.dtype == torch.float32
    assert abs(float(s) - 3.9) < 1e-5


def test_errors_for_complex_input():
    A = planted([-0.5, 1.0, 2.0, 3.0], 70)
    with pytest.raises(ValueError, match="logm needs a positive definite A"):
        eigrad.logm(A)
    with pytest.raises(ValueError, match="sqrtm needs a positive semidefinite A"):
        eigrad.sqrtm(A)
    with pytest.raises(ValueError, match="not Hermitian|not symmetric"):
        eigrad.expm(A + 0.1j * torch.eye(4, dtype=CT))
    with pytest.raises(TypeError, match=r"A is a complex operator .*Pass the dense matrix"):
        eigrad.funm(A.to_sparse(), torch.exp, 2)
    with pytest.raises(TypeError, match=r"pass a float32, float64, complex64 or complex128 tensor"):
        eigrad.spectral_norm(torch.ones(2, 2, dtype=torch.int64))


def test_singular_sqrtm_and_cut_cluster_report_in_hermitian_terms():
    A0 = planted([0.0, 0.0, 1.0, 2.0, 3.0, 4.0], 80)
    _, X = torch.linalg.eigh(A0)
    Xr = X[:, 2:]
    W = Xr @ random_hermitian(4, _gen(81)) @ Xr.mH  # no component on the null space: the gradient exists
    A = A0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((W * eigrad.sqrtm(A).mT).sum().real, A)
    assert bool(torch.isfinite(g).all())
    A = A0.clone().requires_grad_(True)
    with pytest.raises(ValueError, match=r"derivative of X sqrt\(Λ\) Xᴴ does not exist.*x_iᴴ W x_j"):
        torch.autograd.grad(eigrad.sqrtm(A).diagonal().sum().real, A)
    A = planted(SPECTRA["double"][0], 82)
    with pytest.warns(eigrad.GaugeWarning, match=r"k=2 cuts a degenerate cluster.*X_k f\(Λ_k\) X_kᴴ.*k=1 or k=3"):
        eigrad.funm(A, torch.sin, 2)


def test_batched_gradient_matches_per_matrix():
    A0 = planted(SPECTRA["double"][0], 90, batch=(3,))
    W = random_hermitian(N, _gen(91), batch=(3,))
    for call in (eigrad.logm, lambda A: eigrad.funm(A, torch.sin, 3)):
        A = A0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((W * call(A).mT).sum().real, A)
        for b in range(3):
            a = A0[b].clone().requires_grad_(True)
            (gb,) = torch.autograd.grad((W[b] * call(a).mT).sum().real, a)
            assert float((gb - g[b]).abs().max()) <= 1e-14 * float(gb.abs().max())


def test_torch_func_grad_and_jvp_under_vmap():
    A0 = planted(SPECTRA["double"][0], 100, batch=(3,))
    W, D = random_hermitian(N, _gen(101)), random_hermitian(N, _gen(102), batch=(3,))

    def loss(A):
        return (W * eigrad.funm(A, torch.sin, 3).mT).sum().real

    g = torch.func.vmap(torch.func.grad(loss))(A0)
    A = A0.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(sum(loss(A[b]) for b in range(3)), A)
    assert float((g - ref).abs().max()) <= 1e-14 * float(ref.abs().max())
    _, j = torch.func.vmap(lambda a, d: torch.func.jvp(eigrad.expm, (a,), (d,)))(A0, D)
    with forward_ad.dual_level():
        jref = forward_ad.unpack_dual(eigrad.expm(forward_ad.make_dual(A0, D))).tangent
    assert float((j - jref).abs().max()) <= 1e-14 * float(jref.abs().max())
