"""Complex Hermitian problems on dense tensors (complex128): ``A X = B X Λ``, ``Xᴴ B X = I``.

References are independent of eigrad: central finite differences (five-point
stencil) along random Hermitian directions of gauge-invariant real losses
(``Σ h(λ)``, ``Re tr(W P_g)`` with Hermitian ``W`` and the cluster projectors
``P_g = X_g X_gᴴ``, ``|x_iᴴ c|²`` for simple ``λ_i``), torch's complex
``gradcheck``/``gradgradcheck`` with forward AD, and ``torch.linalg.eigh``'s
autograd where the spectrum is simple. Spectra are planted as
``Lc Q diag(λ) Qᴴ Lcᴴ`` with a random unitary ``Q`` (QR of a complex Gaussian,
seeded ``torch.Generator``) and ``B = Lc Lcᴴ`` Hermitian positive definite.
See MATH-complex (docs/math.md, "Complex Hermitian problems").
"""

from __future__ import annotations

import warnings

import pytest
import torch

import eigrad
from eigrad import testing

CT = torch.complex128
N = 10
K = 7
# positions 0-1 double, 2 simple, 3-5 triple, 6 simple; 7 (not returned) simple: k = 7 closes
SPECTRUM = [-1.0, -1.0, -0.25, 0.5, 0.5, 0.5, 1.25, 2.0, 2.75, 3.5]
CLUSTERS = [[0, 1], [2], [3, 4, 5], [6]]
H = 1e-4
# eigrad vs five-point FD: FD truncation ~h⁴ f⁽⁵⁾ and rounding ~eps·|f|/h ~ 1e-12; measured <= 3e-10
RTOL = 1e-8
SOLVERS = ["lapack", "dense", "eigh"]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def random_unitary(n, gen, batch=()):
    return testing.random_unitary(n, seed=gen, batch_shape=batch, dtype=CT)


def random_hermitian(n, gen, batch=()):
    return testing.random_hermitian(n, seed=gen, batch_shape=batch, dtype=CT)


def random_hpd(n, gen, cond=8.0):
    Q = random_unitary(n, gen)
    w = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    B = (Q * w.to(CT)) @ Q.mH
    return 0.5 * (B + B.mH)


def planted(vals, *, with_B, seed, batch=()):
    """``(A, B, X)``: exact spectrum ``vals``, B-orthonormal eigenvectors ``X = Lc⁻ᴴ Q``."""
    gen = _gen(seed)
    n = len(vals)
    Q = random_unitary(n, gen, batch)
    lam = torch.tensor(vals, dtype=torch.float64).to(CT)
    C = (Q * lam) @ Q.mH
    C = 0.5 * (C + C.mH)
    if not with_B:
        return C, None, Q
    B = random_hpd(n, gen)
    Lc = torch.linalg.cholesky(B)
    A = Lc @ C @ Lc.mH
    A = 0.5 * (A + A.mH)
    return A, B, torch.linalg.solve_triangular(Lc.mH, Q, upper=True)


def herm(M):
    return 0.5 * (M + M.mH)


def inner(G, E):
    """``Re tr(Gᴴ E)``: PyTorch's pairing of a complex gradient with a direction."""
    return (G.conj() * E).real.sum()


def fd(f, inputs, directions, h=H):
    def at(t):
        args = [x if v is None else x + t * v for x, v in zip(inputs, directions)]
        with torch.no_grad():
            return f(*args)

    return (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)


def assert_close(a, f, rtol, what, floor=1.0):
    a, f = float(a), float(f)
    err = abs(a - f) / max(abs(a), abs(f), floor)
    assert err <= rtol, f"{what}: analytic {a:.12g} vs FD {f:.12g} (rel. err {err:.2e} > {rtol:.0e})"
    return err


def invariant_loss(L, X, clusters, W, c):
    """``Σ (λ² + sin λ) + Σ_g Re tr(W P_g)/(1+g) + Σ_{simple i} |x_iᴴ c|²``: both existence conditions hold."""
    loss = (L**2 + torch.sin(L)).sum()
    for g, pos in enumerate(clusters):
        Xg = X[..., list(pos)]
        loss = loss + inner(W / (1.0 + g), Xg @ Xg.mH)
        if len(pos) == 1:
            loss = loss + ((Xg[..., 0].conj() * c).sum(-1).abs() ** 2).sum()
    return loss


def decompose(method, A, B, k, largest=False, backward=None):
    if method == "eigh":
        L, X = eigrad.eigh(A, B, backward=backward)
        n = A.shape[-1]
        return (L[..., n - k :], X[..., n - k :]) if largest else (L[..., :k], X[..., :k])
    return eigrad.eigsh(A, k, B=B, largest=largest, solver=method, backward=backward)


def cluster_direction(BX, pos, gen):
    """``B X_g S X_gᴴ B`` with ``S`` Hermitian: splits the cluster to first order."""
    BXg = BX[..., pos]
    S = random_hermitian(len(pos), gen)
    return herm(BXg @ S @ BXg.mH)


# --- values -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", SOLVERS)
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
def test_forward_values(method, with_B):
    A, B, _ = planted(SPECTRUM, with_B=with_B, seed=1)
    L, X = decompose(method, A, B, K)
    assert L.dtype == torch.float64 and X.dtype == CT  # eigenvalues of a Hermitian problem are real
    torch.testing.assert_close(L, torch.tensor(SPECTRUM[:K], dtype=torch.float64), atol=1e-13, rtol=0)
    BX = X if B is None else B @ X
    torch.testing.assert_close(X.mH @ BX, torch.eye(K, dtype=CT), atol=1e-13, rtol=0)
    torch.testing.assert_close(A @ X, BX * L.to(CT), atol=1e-12, rtol=0)


# --- first derivatives at clusters against finite differences ---------------------------------------
@pytest.mark.parametrize("method", SOLVERS)
@pytest.mark.parametrize("largest", [False, True], ids=["smallest", "largest"])
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
def test_gradient_and_jvp_at_double_and_triple_clusters(method, largest, with_B):
    vals = [-v for v in SPECTRUM] if largest else SPECTRUM  # mirrored: the clusters at the top
    A0, B0, X0 = planted(vals, with_B=with_B, seed=3 + 2 * largest + with_B)
    gen = _gen(40 + with_B)
    W, c = random_hermitian(N, gen), torch.randn(N, dtype=CT, generator=gen)
    # returned columns are ascending: mirrored clusters sit at positions k-1-i
    clusters = [sorted(K - 1 - i for i in g) for g in CLUSTERS] if largest else CLUSTERS

    def loss(A, B):
        L, X = decompose(method, A, B, K, largest)
        return invariant_loss(L, X, clusters, W, c)

    A = A0.clone().requires_grad_(True)
    B = B0.clone().requires_grad_(True) if with_B else None
    grads = torch.autograd.grad(loss(A, B), [A] + ([B] if with_B else []))
    gA = grads[0]
    torch.testing.assert_close(gA, gA.mH, atol=1e-12, rtol=0)  # the gradient of a Hermitian input

    BX0 = X0 if B0 is None else B0 @ X0
    offset = N - K if largest else 0
    multi = [[offset + i for i in g] for g in clusters if len(g) > 1]
    dirs = [(random_hermitian(N, gen), None)]
    dirs += [(cluster_direction(BX0, g, gen), None) for g in multi]
    if with_B:
        dirs += [(None, 0.2 * random_hermitian(N, gen)), (None, 0.2 * cluster_direction(BX0, multi[-1], gen))]
    for j, (EA, EB) in enumerate(dirs):
        ref = fd(loss, [A0, B0], [EA, EB])
        vjp = (0 if EA is None else inner(gA, EA)) + (0 if EB is None else inner(grads[1], EB))
        assert_close(vjp, ref, RTOL, f"VJP, direction {j}")
        tangents = (torch.zeros_like(A0) if EA is None else EA, None if not with_B else
                    (torch.zeros_like(B0) if EB is None else EB))
        if with_B:
            _, jvp = torch.func.jvp(loss, (A0, B0), tangents)
        else:
            _, jvp = torch.func.jvp(lambda A: loss(A, None), (A0,), tangents[:1])
        assert_close(jvp, ref, RTOL, f"JVP, direction {j}")


@pytest.mark.parametrize("method", SOLVERS)
def test_gradient_at_near_clusters(method):
    """Pairs split by 1e-10 (merged by the degeneracy tolerance) and by 1e-6 (not merged), k < n, B ≠ I."""
    vals = [0.0, 1e-10, 0.8, 1.5, 1.5 + 1e-6, 2.3, 3.0, 3.6]
    A0, B0, _ = planted(vals, with_B=True, seed=8)
    gen = _gen(9)
    W = random_hermitian(8, gen)
    clusters = [[0, 1], [2], [3, 4], [5]]
    k = 6

    def loss(A, B):
        L, X = decompose(method, A, B, k)
        return invariant_loss(L, X, clusters, W, torch.zeros(8, dtype=CT))

    A = A0.clone().requires_grad_(True)
    B = B0.clone().requires_grad_(True)
    gA, gB = torch.autograd.grad(loss(A, B), [A, B])
    for j in range(2):
        EA, EB = random_hermitian(8, gen), 0.2 * random_hermitian(8, gen)
        assert_close(inner(gA, EA) + inner(gB, EB), fd(loss, [A0, B0], [EA, EB]), RTOL, f"direction {j}")


# --- torch's own checks ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", SOLVERS)
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
def test_gradcheck_and_gradgradcheck(method, with_B):
    """Simple spectrum, k < n (eigsh): eigenvalues and the phase-invariant ``|Xᴴ c|²``."""
    n, k = 4, 2
    gen = _gen(11)
    A0 = random_hermitian(n, gen)
    B0 = random_hpd(n, gen) if with_B else None
    c = torch.randn(n, dtype=CT, generator=gen)

    def f(A, *B):
        L, X = decompose(method, herm(A), herm(B[0]) if B else None, n if method == "eigh" else k)
        return L, (X.mH @ c).abs() ** 2

    inputs = (A0.clone().requires_grad_(True),) + ((B0.clone().requires_grad_(True),) if with_B else ())
    assert torch.autograd.gradcheck(f, inputs, check_forward_ad=True, fast_mode=True)
    assert torch.autograd.gradgradcheck(f, inputs, check_fwd_over_rev=True, fast_mode=True)


@pytest.mark.parametrize("method", ["lapack", "dense"])
def test_gradgradcheck_at_a_double_eigenvalue(method):
    """Exact repeated eigenvalue, invariant outputs (the cluster's eigenvalue sum and projector)."""
    A0, _, _ = planted([0.0, 0.0, 1.0, 2.5], with_B=False, seed=12)
    c = torch.randn(4, dtype=CT, generator=_gen(13))

    def f(A):
        L, X = eigrad.eigsh(herm(A), 3, solver=method)
        P = X[:, :2] @ X[:, :2].mH
        return L[:2].sum(), L[2], (P @ c).real, (X[:, 2].conj() @ c).abs() ** 2

    A = A0.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (A,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, (A,), fast_mode=True)


@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
def test_agrees_with_torch_linalg_eigh(with_B):
    """Simple spectrum: eigrad's gradient and JVP equal torch's (Cholesky + eigh for B ≠ I)."""
    n = 6
    gen = _gen(14)
    A0 = random_hermitian(n, gen)
    B0 = random_hpd(n, gen) if with_B else None
    w = torch.randn(n, dtype=torch.float64, generator=gen)
    Cm = torch.randn(n, n, dtype=CT, generator=gen)

    def torch_eigh(A, B):
        if B is None:
            return torch.linalg.eigh(A)
        Lc = torch.linalg.cholesky(B)
        C = torch.linalg.solve_triangular(Lc, torch.linalg.solve_triangular(Lc, A, upper=False).mH, upper=False)
        L, V = torch.linalg.eigh(C)
        return L, torch.linalg.solve_triangular(Lc.mH, V, upper=True)

    def loss(eig, A, B):
        L, X = eig(A, B)
        return (L * w).sum() + (Cm.conj() * (X * X.conj())).real.sum() + ((X.mH @ Cm).abs() ** 2).sum()

    for method in SOLVERS:
        ours = lambda A, B: decompose(method, A, B, n)  # noqa: E731
        args = (A0, B0) if with_B else (A0,)
        g1 = torch.func.grad(lambda *a: loss(ours, a[0], a[1] if with_B else None), argnums=tuple(range(len(args))))(*args)
        g2 = torch.func.grad(lambda *a: loss(torch_eigh, a[0], a[1] if with_B else None), argnums=tuple(range(len(args))))(*args)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
        V = tuple(random_hermitian(n, gen) for _ in args)
        j1 = torch.func.jvp(lambda *a: loss(ours, a[0], a[1] if with_B else None), args, V)[1]
        j2 = torch.func.jvp(lambda *a: loss(torch_eigh, a[0], a[1] if with_B else None), args, V)[1]
        torch.testing.assert_close(j1, j2, atol=1e-12, rtol=0)


# --- torch.func, batches -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lapack", "dense"])
def test_vmap_grad_and_batch_agree_with_a_loop(method):
    gen = _gen(15)
    As = torch.stack([planted(SPECTRUM, with_B=False, seed=20 + i)[0] for i in range(3)])
    W, c = random_hermitian(N, gen), torch.randn(N, dtype=CT, generator=gen)

    def loss(A):
        L, X = eigrad.eigsh(A, K, solver=method)
        return invariant_loss(L, X, CLUSTERS, W, c)

    loop = torch.stack([torch.func.grad(loss)(A) for A in As])
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(loss))(As), loop, atol=1e-12, rtol=0)
    batched = torch.func.grad(loss)(As)  # a leading batch dimension of A
    torch.testing.assert_close(batched, loop, atol=1e-12, rtol=0)


# --- second order at a repeated eigenvalue ------------------------------------------------------------
@pytest.mark.parametrize("method", ["lapack", "dense"])
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
def test_hessian_vector_product_at_clusters(method, with_B):
    """Forward-over-reverse and reverse-over-reverse HVPs against FD of the (exact) gradient."""
    A0, B0, _ = planted(SPECTRUM, with_B=with_B, seed=30 + with_B)
    gen = _gen(31)
    W, c = random_hermitian(N, gen), torch.randn(N, dtype=CT, generator=gen)

    def loss(A):
        L, X = eigrad.eigsh(A, K, B=B0, solver=method)
        return invariant_loss(L, X, CLUSTERS, W, c) + L[3:6].sum() ** 2

    grad = torch.func.grad(loss)
    V = random_hermitian(N, gen)
    ref = fd(grad, [A0], [V], h=1e-3)
    hv_fwd = torch.func.jvp(grad, (A0,), (V,))[1]
    A = A0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(A), A, create_graph=True)
    (hv_rev,) = torch.autograd.grad(g, A, V)
    for what, hv in (("forward-over-reverse", hv_fwd), ("reverse-over-reverse", hv_rev)):
        err = float((hv - ref).abs().max() / ref.abs().max())
        assert err < 1e-8, f"{what}: relative error {err:.2e}"


# --- existence checks: the U(1) phase and the U(m) basis -----------------------------------------------
@pytest.mark.parametrize("method", SOLVERS)
def test_valid_losses_never_warn(method):
    """Σ h(λ), Re tr(W P_g), |x_iᴴ c|²: no GaugeWarning (pytest turns it into an error)."""
    A0, B0, _ = planted(SPECTRUM, with_B=True, seed=50)
    gen = _gen(51)
    W, c = random_hermitian(N, gen), torch.randn(N, dtype=CT, generator=gen)
    A = A0.clone().requires_grad_(True)
    L, X = decompose(method, A, B0, K)
    for loss in ((L**3).sum(), inner(W, X[:, :2] @ X[:, :2].mH), (X[:, 2].conj() @ c).abs() ** 2,
                 invariant_loss(L, X, CLUSTERS, W, c)):
        torch.autograd.grad(loss, A, retain_graph=True)


def _phase_losses(X, c):
    # LAPACK (and eigrad's LAPACK route) returns each x_i with its first entry real: use entry 1
    assert float(X[1, 2].detach().imag.abs()) > 1e-3
    return {"Re(cᴴ x_2)": (c.conj() @ X[:, 2]).real, "Re(X[1, 2])": X[1, 2].real}


@pytest.mark.parametrize("method", SOLVERS)
def test_phase_dependent_losses_always_warn(method):
    """At a simple eigenvalue (no cluster anywhere) a loss that depends on x_2's phase is reported."""
    vals = [0.0, 0.7, 1.3, 2.0, 2.9, 3.5]
    A0, _, _ = planted(vals, with_B=False, seed=52)
    c = torch.randn(6, dtype=CT, generator=_gen(53))
    A = A0.clone().requires_grad_(True)
    L, X = decompose(method, A, None, 4)
    for name, loss in _phase_losses(X, c).items():
        with pytest.warns(eigrad.GaugeWarning, match=r"depends on the phase of a complex eigenvector.*"
                          r"Simple eigenvalue at position 2.*phase invariance.*x_2.*e\^\(iφ\)"):
            torch.autograd.grad(loss, A, retain_graph=True)
    L, X = decompose(method, A, None, 4, backward=eigrad.BackwardOptions(gauge="raise"))
    with pytest.raises(eigrad.GaugeError, match="phase invariance"):
        torch.autograd.grad(_phase_losses(X, c)["Re(cᴴ x_2)"], A)
    L, X = decompose(method, A, None, 4, backward=eigrad.BackwardOptions(gauge="ignore"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.autograd.grad(_phase_losses(X, c)["Re(cᴴ x_2)"], A)


@pytest.mark.parametrize("method", SOLVERS)
def test_basis_dependent_loss_at_a_cluster_warns(method):
    A0, _, _ = planted(SPECTRUM, with_B=False, seed=54)
    c = torch.randn(N, dtype=CT, generator=_gen(55))
    A = A0.clone().requires_grad_(True)
    L, X = decompose(method, A, None, K)
    with pytest.warns(eigrad.GaugeWarning, match=r"at a degenerate eigenvalue.*positions \[0, 1\].*"
                      r"basis invariance.*U\(m\).*skew\(X_gᴴ X̄_g\)"):
        torch.autograd.grad(((X[:, 0].conj() @ c).abs() ** 2), A)


# --- inputs: Hermitian check, promotion, precisions, complex64 ---------------------------------------------
def test_hermitian_check_includes_the_imaginary_diagonal():
    A0, _, _ = planted(SPECTRUM, with_B=False, seed=60)
    bad = A0 + 1e-6j * torch.eye(N, dtype=CT)
    with pytest.raises(ValueError, match=r"A is not Hermitian: max \|A - Aᴴ\| = 2\.000e-06.*imaginary parts "
                       r"of the diagonal.*\(A \+ A\.mH\) / 2"):
        eigrad.eigh(bad)
    with pytest.raises(ValueError, match=r"B is not Hermitian"):
        eigrad.eigsh(A0, 2, B=torch.eye(N, dtype=CT) + 1e-6j * torch.eye(N, dtype=CT))
    # rounding-level asymmetry (within 16·n·eps·max|A|) is accepted and read as (A + Aᴴ)/2
    eigrad.eigh(A0 + 1e-15j * torch.eye(N, dtype=CT))
    with pytest.raises(ValueError, match=r"B is not Hermitian positive definite"):
        eigrad.eigh(A0, -torch.eye(N, dtype=CT))


@pytest.mark.parametrize("method", SOLVERS)
def test_real_and_complex_inputs_promote(method):
    """A real B with a complex A (and the reverse) is complex; a real input gets the real part of its gradient."""
    A0, _, _ = planted(SPECTRUM, with_B=False, seed=61)
    Br = random_hpd(N, _gen(62)).real.contiguous()
    Br = 0.5 * (Br + Br.mT) + N * torch.eye(N, dtype=torch.float64)
    W = random_hermitian(N, _gen(63))

    def loss(A, B):
        L, X = decompose(method, A, B, K)
        return invariant_loss(L, X, CLUSTERS, W, torch.zeros(N, dtype=CT))

    A = A0.clone().requires_grad_(True)
    B = Br.clone().requires_grad_(True)
    gA, gB = torch.autograd.grad(loss(A, B), [A, B])
    assert gB.dtype == torch.float64
    Bc = Br.to(CT).requires_grad_(True)
    gBc = torch.autograd.grad(loss(A0, Bc), Bc)[0]
    torch.testing.assert_close(gB, gBc.real, atol=1e-12, rtol=0)
    # a real A with a complex B
    Ar = (A0.real + A0.real.mT) / 2
    Bh = random_hpd(N, _gen(64))
    L, X = decompose(method, Ar, Bh, K)
    assert X.dtype == CT and L.dtype == torch.float64


def test_mismatched_precisions_and_unsupported_dtypes_are_type_errors():
    A0 = torch.eye(4, dtype=CT)
    msg = r"A has dtype torch.complex64 but B has dtype torch.float64 \(a real matrix is promoted to complex only at the same precision"
    with pytest.raises(TypeError, match=msg):
        eigrad.eigh(A0.to(torch.complex64), torch.eye(4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"A has dtype torch.complex128 but B has dtype torch.float32"):
        eigrad.eigsh(A0, 2, B=torch.eye(4, dtype=torch.float32))
    with pytest.raises(TypeError, match=r"B has dtype torch.complex64"):
        eigrad.eigsh(A0, 2, B=torch.eye(4, dtype=torch.complex64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "ComplexHalf support is experimental"
        half = A0.to(torch.complex32)
    with pytest.raises(TypeError, match=r"complex32; eigrad supports complex64 and complex128"):
        eigrad.eigh(half)


def test_complex_operators_run_and_operator_spectral_functions_refuse_complex_for_now():
    """Complex operators (tests/test_complex_operators.py) run; the spectral functions of operators are
    real-only (dense complex spectral functions work: tests/test_complex_spectral.py)."""
    A0 = torch.diag(torch.arange(1.0, 5.0, dtype=torch.float64)).to(CT)
    want = torch.tensor([1.0, 2.0], dtype=torch.float64)
    for A in (A0.to_sparse(), eigrad.FunctionOperator(lambda X, p: p @ X, (A0,), (4, 4))):
        L, X = eigrad.eigsh(A, 2)
        assert X.dtype == CT and torch.allclose(L, want)
    with pytest.raises(TypeError, match=r"A is a complex operator .*spectral functions support real"):
        eigrad.funm(A0.to_sparse(), torch.exp, 2)


@pytest.mark.parametrize("method", SOLVERS)
def test_complex64_smoke(method):
    A0, B0, _ = planted(SPECTRUM, with_B=True, seed=70)
    gen = _gen(71)
    W, c = random_hermitian(N, gen), torch.randn(N, dtype=CT, generator=gen)

    def grads(dtype):
        A = A0.to(dtype).requires_grad_(True)
        L, X = decompose(method, A, B0.to(dtype), K)
        assert L.dtype == (torch.float32 if dtype == torch.complex64 else torch.float64)
        loss = invariant_loss(L, X, CLUSTERS, W.to(dtype), c.to(dtype))
        return torch.autograd.grad(loss, A)[0]

    g32, g64 = grads(torch.complex64), grads(CT)
    assert g32.dtype == torch.complex64
    err = float((g32.to(CT) - g64).abs().max() / g64.abs().max())
    assert err < 1e-3, err


@pytest.mark.parametrize("method", SOLVERS)
def test_eigenvalue_tangents_are_real(method):
    """Forward mode: the tangent of a real output (the eigenvalues) is real, at a simple spectrum and at
    clusters (a complex zero tied to the inputs must not make it complex)."""
    gen = _gen(80)
    for A0 in (random_hermitian(5, gen), planted(SPECTRUM, with_B=False, seed=81)[0]):
        n = A0.shape[-1]
        V = random_hermitian(n, gen)
        (L, X), (dL, dX) = torch.func.jvp(lambda A: decompose(method, A, None, n - 2), (A0,), (V,))
        assert dL.dtype == torch.float64 and dX.dtype == CT


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("method", SOLVERS)
def test_tiny_problems(method, n):
    """n = 1 and 2 through every route (the LAPACK route has special cases there)."""
    gen = _gen(90 + n)
    A0 = random_hermitian(n, gen) + 3 * torch.eye(n, dtype=CT)
    B0 = random_hpd(n, gen)

    def f(A, B):
        L, X = decompose(method, herm(A), herm(B), 1)
        return L, X.abs() ** 2

    assert torch.autograd.gradcheck(f, (A0.requires_grad_(True), B0.requires_grad_(True)), check_forward_ad=True)


def test_real_one_by_one_lapack_backward():
    """Regression: the LAPACK route's backward at n = 1 failed (empty tridiagonal, real and complex)."""
    A = torch.tensor([[2.0]], dtype=torch.float64, requires_grad=True)
    L, X = eigrad.eigsh(A, 1, solver="lapack")
    (g,) = torch.autograd.grad(L.sum() + (X**2).sum(), A)
    assert float(g) == 1.0


def test_legacy_batched_jacobian_of_eigenvalues():
    """torch.autograd.functional.jacobian(vectorize=True) of the eigenvalues: no X̄, so no phase to check
    (the check must not try to read the legacy batched cotangents); equal to torch's at a simple spectrum."""
    A0 = random_hermitian(5, _gen(95))
    J = torch.autograd.functional.jacobian(lambda A: eigrad.eigh(A).eigenvalues, A0, vectorize=True)
    J_ref = torch.autograd.functional.jacobian(lambda A: torch.linalg.eigvalsh(A), A0, vectorize=True)
    torch.testing.assert_close(J, J_ref, atol=1e-13, rtol=0)


@pytest.mark.parametrize("method", ["lapack", "dense"])
def test_hessian_wrt_real_parameters_at_clusters(method):
    """torch.func.hessian / jacrev(jacrev) / jacfwd(jacrev) of a loss of real θ through a complex Hermitian
    A(θ) = A0 + θ_1 V_1 + θ_2 V_2 at a double and a triple eigenvalue (torch.func's Jacobians refuse complex
    inputs, so the parameters are real); reference: five-point FD of the gradient (error ~h⁴, measured
    4e-11 at h = 3e-4, 1.6e-7 at h = 3e-3: truncation, not eigrad)."""
    A0, _, _ = planted(SPECTRUM, with_B=False, seed=3)
    gen = _gen(2)
    V1, V2 = random_hermitian(N, gen), random_hermitian(N, gen)
    W, c = random_hermitian(N, gen), torch.randn(N, dtype=CT, generator=gen)

    def f(th):
        L, X = eigrad.eigsh(A0 + th[0] * V1 + th[1] * V2, K, solver=method)
        return invariant_loss(L, X, CLUSTERS, W, c) + L[3:6].sum() ** 2

    th = torch.zeros(2, dtype=torch.float64)
    grad = torch.func.grad(f)
    ref = torch.stack([fd(grad, [th], [e], h=3e-4) for e in torch.eye(2, dtype=torch.float64)])
    for what, H in (("hessian", torch.func.hessian(f)(th)), ("jacrev(jacrev)", torch.func.jacrev(torch.func.jacrev(f))(th)),
                    ("jacfwd(jacrev)", torch.func.jacfwd(torch.func.jacrev(f))(th))):
        err = float((H - ref).abs().max() / ref.abs().max())
        assert err < 1e-8, f"{what}: relative error {err:.2e}"


@pytest.mark.parametrize("method", ["lapack", "dense"])
def test_batch_with_one_shared_B(method):
    """A (2, n, n) batch of clustered problems with one (n, n) Hermitian positive definite B."""
    B0 = random_hpd(N, _gen(96))
    Lc = torch.linalg.cholesky(B0)
    As = torch.stack([herm(Lc @ planted(SPECTRUM, with_B=False, seed=97 + i)[0] @ Lc.mH) for i in range(2)])
    W = random_hermitian(N, _gen(98))

    def loss(A, B):
        L, X = eigrad.eigsh(A, K, B=B, solver=method)
        return invariant_loss(L, X, CLUSTERS, W, torch.zeros(N, dtype=CT))

    gA, gB = torch.func.grad(loss, argnums=(0, 1))(As, B0)
    loop = [torch.func.grad(loss, argnums=(0, 1))(A, B0) for A in As]
    torch.testing.assert_close(gA, torch.stack([g[0] for g in loop]), atol=1e-12, rtol=0)
    torch.testing.assert_close(gB, loop[0][1] + loop[1][1], atol=1e-12, rtol=0)


def test_complex_report_speaks_of_conjugate_transposes():
    """The 'returned value' part of a complex report writes x_i x_iᴴ and skew(X_gᴴ X̄_g), not ᵀ."""
    A0, _, _ = planted(SPECTRUM, with_B=False, seed=54)
    c = torch.randn(N, dtype=CT, generator=_gen(55))
    A = A0.clone().requires_grad_(True)
    L, X = decompose("dense", A, None, K)
    with pytest.warns(eigrad.GaugeWarning) as rec:
        torch.autograd.grad(((X[:, 0].conj() @ c).abs() ** 2), A)
    msg = str(rec[0].message)
    assert "x_i x_iᴴ" in msg and "skew(X_gᴴ X̄_g)" in msg and "x_iᵀ" not in msg, msg


def test_testing_generators_for_complex():
    """eigrad.testing.random_unitary / random_hermitian: unitary, Hermitian, seeded without global RNG."""
    state = torch.random.get_rng_state()
    Q = testing.random_unitary(6, seed=3, batch_shape=(2,))
    H = testing.random_hermitian(6, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.testing.assert_close(Q.mH @ Q, torch.eye(6, dtype=CT).expand(2, 6, 6), rtol=0, atol=1e-13)
    assert torch.equal(H, H.mH) and H.is_complex()
    torch.testing.assert_close(testing.random_unitary(6, seed=3, batch_shape=(2,)), Q, rtol=0, atol=0)
