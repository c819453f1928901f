"""Spectral functions ``X f(Λ) Xᵀ``: values against scipy, derivatives against finite
differences at exact and near-repeated eigenvalues, full and partial, standard and
generalized (issue 5). The broadening option is tested in test_broadening.py."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import scipy.linalg
import torch
from torch.func import jacfwd, jacrev, jvp, vmap

import eigrad
from eigrad.spectral._divided import ExpFn, LogFn, PowerFn, SqrtFn, UserFn
from _spectral_problems import planted

DT = torch.float64


# --- problems ---------------------------------------------------------------------------


def sym_direction(n, g):
    E = torch.randn(n, n, dtype=DT, generator=g)
    return 0.5 * (E + E.T)


def fd_check(fun, A, B, seed=1, h=1e-6, symmetric_cotangent=False):
    """``(reverse, forward, finite difference)`` of ``<W, fun(A, B)>`` along random symmetric
    directions of ``A`` and ``B``, with ``W`` a non-symmetric cotangent (or a symmetric one)."""
    g = torch.Generator().manual_seed(seed)
    n = A.shape[-1]
    W = torch.randn(n, n, dtype=DT, generator=g)
    if symmetric_cotangent:
        W = W + W.T
    EA = sym_direction(n, g)
    EB = sym_direction(n, g) if B is not None else None

    def loss(a, b):
        return (W * fun(a, b)).sum()

    Ar = A.clone().requires_grad_(True)
    Br = B.clone().requires_grad_(True) if B is not None else None
    grads = torch.autograd.grad(loss(Ar, Br), [Ar] + ([Br] if B is not None else []))
    rev = (grads[0] * EA).sum() + ((grads[1] * EB).sum() if B is not None else 0.0)
    if B is None:
        fwd = jvp(lambda a: loss(a, None), (A,), (EA,))[1]
    else:
        fwd = jvp(loss, (A, B), (EA, EB))[1]

    def at(t):
        return loss(A + t * EA, None if B is None else B + t * EB)

    fd = (at(h) - at(-h)) / (2 * h)
    return float(rev), float(fwd), float(fd)


def assert_close_fd(rev, fwd, fd, rtol, what):
    scale = max(abs(fd), 1.0)
    assert abs(rev - fd) <= rtol * scale, f"{what}: reverse {rev:.12g} vs FD {fd:.12g}"
    assert abs(fwd - fd) <= rtol * scale, f"{what}: forward {fwd:.12g} vs FD {fd:.12g}"


SPECTRA = {
    "simple": [0.5, 1.0, 1.7, 2.3, 3.1, 4.0, 5.2, 6.1],
    "triple": [0.5, 1.0, 1.0, 1.0, 2.3, 3.1, 4.0, 5.2],
    "near1e-6": [0.5, 1.0, 1.0 + 1e-6, 1.0 + 2e-6, 2.3, 3.1, 4.0, 5.2],
    "near1e-9": [0.5, 1.0, 1.0 + 1e-9, 2.3, 2.3, 3.1, 4.0, 5.2],
    "near1e-12": [0.5, 1.0, 1.0 + 1e-12, 1.0 + 3e-12, 2.3, 3.1, 4.0, 5.2],
}

FULL_FUNCTIONS = {
    "expm": lambda A, B: eigrad.expm(A, B=B),
    "logm": lambda A, B: eigrad.logm(A, B=B),
    "sqrtm": lambda A, B: eigrad.sqrtm(A, B=B),
    "powm(-0.7)": lambda A, B: eigrad.powm(A, -0.7, B=B),
    "funm(sin)": lambda A, B: eigrad.funm(A, torch.sin, B=B),
    "funm((tanh, tanh'))": lambda A, B: eigrad.funm(A, (torch.tanh, lambda x: 1 - torch.tanh(x) ** 2), B=B),
}


# --- values -----------------------------------------------------------------------------


def _spd(n, seed, shift=0.1):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, dtype=DT, generator=g)
    return M @ M.T / n + shift * torch.eye(n, dtype=DT)


@pytest.mark.parametrize(
    "name, ours, ref",
    [
        ("expm", eigrad.expm, scipy.linalg.expm),
        ("logm", eigrad.logm, scipy.linalg.logm),
        ("sqrtm", eigrad.sqrtm, scipy.linalg.sqrtm),
        ("powm(0.3)", lambda A: eigrad.powm(A, 0.3), lambda A: scipy.linalg.fractional_matrix_power(A, 0.3)),
        ("powm(-1.5)", lambda A: eigrad.powm(A, -1.5), lambda A: scipy.linalg.fractional_matrix_power(A, -1.5)),
        ("funm(cos)", lambda A: eigrad.funm(A, torch.cos), scipy.linalg.cosm),
        ("funm(log1p) vs scipy.funm", lambda A: eigrad.funm(A, torch.log1p), lambda A: scipy.linalg.funm(A, np.log1p)),
    ],
)
def test_values_match_scipy(name, ours, ref):
    A = _spd(7, seed=3)
    expected = torch.as_tensor(np.real(ref(A.numpy())))
    got = ours(A)
    assert torch.allclose(got, got.T)
    err = float((got - expected).norm() / expected.norm())
    assert err < 1e-12, f"{name}: relative error {err:.2e}"


def test_integer_power_of_indefinite_matrix_and_batch():
    g = torch.Generator().manual_seed(5)
    A = torch.stack([sym_direction(6, g) for _ in range(3)])  # indefinite
    for p in (3, -2):
        expected = torch.linalg.matrix_power(A, p)
        assert torch.allclose(eigrad.powm(A, p), expected, rtol=1e-10, atol=1e-10)


def test_generalized_meaning_is_f_of_inverse_B_times_A():
    """With B: F = X f(Λ) Xᵀ (Xᵀ B X = I), so F B = f(B⁻¹A) and B F = f(A B⁻¹)."""
    A, B = _spd(6, seed=1), _spd(6, seed=2, shift=0.5)
    BinvA = torch.linalg.solve(B, A).numpy()
    for ours, ref in ((eigrad.expm, scipy.linalg.expm), (eigrad.logm, scipy.linalg.logm)):
        F = ours(A, B=B)
        expected = torch.as_tensor(np.real(ref(BinvA)))
        assert torch.allclose(F @ B, expected, rtol=1e-11, atol=1e-11)
        assert torch.allclose(B @ F, expected.T, rtol=1e-11, atol=1e-11)
    # the projector onto the 2 smallest: P B is the B-orthogonal projector onto their eigenspace
    w, V = scipy.linalg.eigh(A.numpy(), B.numpy())
    P = eigrad.projector(A, 2, B=B)
    assert torch.allclose(P, torch.as_tensor(V[:, :2] @ V[:, :2].T), atol=1e-12)
    assert torch.allclose(P @ B @ P, P, atol=1e-12)


def test_partial_value_and_float32():
    A, _ = planted(SPECTRA["triple"], seed=4)
    w, V = torch.linalg.eigh(A)
    for largest, sl in ((False, slice(0, 4)), (True, slice(4, 8))):
        F = eigrad.funm(A, torch.exp, 4, largest=largest)
        expected = V[:, sl] @ torch.diag(torch.exp(w[sl])) @ V[:, sl].T
        assert torch.allclose(F, expected, atol=1e-12)
    A32 = _spd(5, seed=6).float()
    ref = torch.as_tensor(np.real(scipy.linalg.sqrtm(A32.double().numpy())))
    assert torch.allclose(eigrad.sqrtm(A32).double(), ref, rtol=1e-5, atol=1e-5)


def test_float32_gradient_matches_float64():
    A, _ = planted([1.0, 1.0, 1.0, 2.0, 3.0, 4.0], seed=22)
    W = torch.randn(6, 6, dtype=DT, generator=torch.Generator().manual_seed(1))
    for k in (None, 3):
        grads = []
        for dt in (torch.float32, DT):
            a = A.to(dt).clone().requires_grad_(True)
            grads.append(torch.autograd.grad((W.to(dt) * eigrad.funm(a, torch.sin, k)).sum(), a)[0].double())
        err = float((grads[0] - grads[1]).abs().max() / grads[1].abs().max())
        assert err < 1e-5, f"k={k}: float32 vs float64 relative error {err:.1e}"


# --- divided differences ----------------------------------------------------------------

_MP = {
    "exp": (mpmath.exp, mpmath.exp),
    "log": (mpmath.log, lambda x: 1 / x),
    "sqrt": (mpmath.sqrt, lambda x: 1 / (2 * mpmath.sqrt(x))),
    "x**0.3": (lambda x: x ** mpmath.mpf(0.3), lambda x: mpmath.mpf(0.3) * x ** mpmath.mpf(-0.7)),
    "x**-2": (lambda x: x**-2, lambda x: -2 * x**-3),
    "x**3": (lambda x: x**3, lambda x: 3 * x**2),
}


@pytest.mark.parametrize(
    "fn, ref, tol_eps",
    [
        (ExpFn(), "exp", 4),
        (LogFn(), "log", 4),
        (SqrtFn(), "sqrt", 4),
        (PowerFn(0.3), "x**0.3", 16),
        (PowerFn(-2), "x**-2", 16),
        (PowerFn(3), "x**3", 16),
        (UserFn(torch.exp), "exp", 64),  # generic: quotient or Gauss-Legendre, chosen per pair
        (UserFn(torch.log), "log", 64),
    ],
)
def test_divided_differences_without_cancellation(fn, ref, tol_eps):
    """f[a, b] against 60-digit arithmetic from coincident to well-separated pairs."""
    mpmath.mp.dps = 60
    f, fp = _MP[ref]
    eps = torch.finfo(DT).eps
    positive = ref in ("log", "sqrt", "x**0.3")
    worst = 0.0
    for a in (1e-8, 1e-3, 0.7, 3.0, 40.0):
        for sign in (1.0,) if positive else (1.0, -1.0):
            for r in (0.0, 1e-15, 1e-12, 1e-9, 1e-6, 1e-3, 0.3, 2.0):
                x = sign * a
                y = x + r * (abs(x) if positive else max(abs(x), 1.0))
                if ref == "x**-2" and x * y <= 0:
                    continue  # across the pole
                L = torch.tensor([x, y], dtype=DT)
                got = fn.divided(L, fn(L))[0, 1].item()
                xm, ym = mpmath.mpf(x), mpmath.mpf(y)
                exact = fp(xm) if x == y else (f(xm) - f(ym)) / (xm - ym)
                worst = max(worst, float(abs((got - exact) / exact)))
    assert worst <= tol_eps * eps, f"worst relative error {worst:.2e} = {worst / eps:.1f} eps"
    # the naive quotient at a close pair is far off: what the stable forms avoid
    x, y = torch.tensor(0.7, dtype=DT), torch.tensor(0.7 + 1e-10, dtype=DT)
    naive = ((fn(x) - fn(y)) / (x - y)).item()
    assert abs(naive / float(fp(mpmath.mpf(0.7))) - 1) > 1e-8


# --- derivatives: full ------------------------------------------------------------------


@pytest.mark.parametrize("generalized", [False, True], ids=["standard", "generalized"])
@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("name", list(FULL_FUNCTIONS))
def test_full_derivatives_match_fd(name, spectrum, generalized):
    A, B = planted(SPECTRA[spectrum], seed=2, generalized=generalized)
    rev, fwd, fd = fd_check(FULL_FUNCTIONS[name], A, B)
    assert_close_fd(rev, fwd, fd, 1e-7, f"{name} {spectrum} B={generalized}")


def test_autograd_derivative_of_f_matches_given_pair():
    A, B = planted(SPECTRA["triple"], seed=3, generalized=True)
    W = torch.randn(8, 8, dtype=DT, generator=torch.Generator().manual_seed(0))
    grads = []
    for f in (torch.sin, (torch.sin, torch.cos)):
        Ar = A.clone().requires_grad_(True)
        grads.append(torch.autograd.grad((W * eigrad.funm(Ar, f, B=B)).sum(), Ar)[0])
    assert torch.allclose(grads[0], grads[1], rtol=1e-13, atol=1e-13)


# --- derivatives: partial k -------------------------------------------------------------

PARTIAL_SPECTRUM = [0.5, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0 + 1e-10, 6.0]


@pytest.mark.parametrize("generalized", [False, True], ids=["standard", "generalized"])
@pytest.mark.parametrize("largest, k", [(False, 4), (True, 3)], ids=["smallest4", "largest3"])
@pytest.mark.parametrize("solver", ["lapack", "dense"])
@pytest.mark.parametrize(
    "name, fun",
    [
        ("sin", lambda A, B, k, largest, s: eigrad.funm(A, torch.sin, k, B=B, largest=largest, solver=s)),
        ("exp", lambda A, B, k, largest, s: eigrad.funm(A, torch.exp, k, B=B, largest=largest, solver=s)),
        ("projector", lambda A, B, k, largest, s: eigrad.projector(A, k, B=B, largest=largest, solver=s)),
    ],
)
def test_partial_derivatives_with_clusters_inside_k(name, fun, solver, largest, k, generalized):
    """Clusters inside the computed block (a triple among the smallest, a 1e-10 pair among the
    largest): Daleckii–Krein inside, projected shifted solves for the uncomputed rest."""
    A, B = planted(PARTIAL_SPECTRUM, seed=7, generalized=generalized)
    rev, fwd, fd = fd_check(lambda a, b: fun(a, b, k, largest, solver), A, B)
    assert_close_fd(rev, fwd, fd, 1e-7, f"{name} k={k} largest={largest} {solver} B={generalized}")


@pytest.mark.parametrize("generalized", [False, True], ids=["standard", "generalized"])
@pytest.mark.parametrize("k", [None, 4])
def test_symmetric_cotangent(k, generalized):
    A, B = planted(SPECTRA["triple"], seed=21, generalized=generalized)
    fun = lambda a, b: eigrad.funm(a, torch.exp, k, B=b)  # noqa: E731
    rev, fwd, fd = fd_check(fun, A, B, symmetric_cotangent=True)
    assert_close_fd(rev, fwd, fd, 1e-7, f"symmetric W, k={k}, B={generalized}")


def test_projector_gradient_matches_closed_form():
    """Ā = Σ_{i≤k<j} (x_i x_jᵀ + x_j x_iᵀ) (x_iᵀ W x_j) / (λ_i - λ_j), W = sym(W̄);
    basis invariant, so it holds with a double eigenvalue inside k."""
    A, _ = planted([0.3, 1.0, 1.0, 2.0, 2.5, 4.0, 7.0], seed=8)
    k = 3
    g = torch.Generator().manual_seed(2)
    Wbar = torch.randn(7, 7, dtype=DT, generator=g)
    W = 0.5 * (Wbar + Wbar.T)
    Ar = A.clone().requires_grad_(True)
    (got,) = torch.autograd.grad((Wbar * eigrad.projector(Ar, k)).sum(), Ar)
    lam, X = torch.linalg.eigh(A)
    expected = torch.zeros_like(A)
    for i in range(k):
        for j in range(k, 7):
            xi, xj = X[:, i : i + 1], X[:, j : j + 1]
            expected += (xi @ xj.T + xj @ xi.T) * (xi.T @ W @ xj) / (lam[i] - lam[j])
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


# --- torch.func and gradcheck -----------------------------------------------------------


@pytest.mark.parametrize(
    "name, fun",
    [
        ("logm, B", lambda a, b: eigrad.logm(a, B=b)),
        ("funm partial, B", lambda a, b: eigrad.funm(a, torch.sin, 2, B=b)),
        ("projector largest, lapack", lambda a, b: eigrad.projector(a, 2, B=b, largest=True, solver="lapack")),
    ],
)
def test_gradcheck_forward_and_reverse(name, fun):
    A, B = _spd(5, seed=9), _spd(5, seed=10, shift=1.0)
    a, b = A.clone().requires_grad_(True), B.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: fun(0.5 * (a + a.T), 0.5 * (b + b.T)), (a, b), check_forward_ad=True
    )


def test_vmap_jacrev_jacfwd():
    As = torch.stack([_spd(5, seed=s) for s in range(3)])
    B = _spd(5, seed=11, shift=1.0)
    assert torch.allclose(vmap(eigrad.logm)(As), eigrad.logm(As), atol=1e-14)
    for fun in (
        lambda a: eigrad.expm(a, B=B),
        lambda a: eigrad.funm(a, torch.exp, 2, B=B),
        lambda a: eigrad.projector(a, 2, solver="lapack"),
    ):
        Jr = vmap(jacrev(fun))(As)
        Jf = torch.stack([jacfwd(fun)(a) for a in As])
        assert torch.allclose(Jr, Jf, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "fun",
    [
        lambda a: eigrad.logm(a)[0, 1],
        lambda a: eigrad.projector(a, 2, solver="lapack")[0, 1],
    ],
    ids=["logm", "projector partial"],  # eigh/eigsh now differentiate twice: tests/test_second_order.py
)
@pytest.mark.parametrize(
    "second",
    [torch.func.hessian, lambda F: jacrev(jacrev(F)), lambda F: jacfwd(jacfwd(F))],
    ids=["hessian", "rev-rev", "fwd-fwd"],
)
def test_second_derivatives_raise_instead_of_returning_zero(fun, second):
    """The saved eigenpairs carry no derivative: a second derivative must fail loudly."""
    A = _spd(4, seed=12)
    with pytest.raises(RuntimeError, match="second derivatives"):
        second(fun)(A)
    a = A.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fun(a), a, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        g.sum().backward()


# --- the MATH.md claim: eigsh-based X f(Λ) Xᵀ over a triple cluster ----------------------


def test_eigsh_spectral_function_over_cluster_warns_while_funm_is_exact():
    A, _ = planted(SPECTRA["triple"], seed=13)

    def via_eigsh(a, b):
        L, X = eigrad.eigsh(a, 4, solver="dense")
        return (X * torch.exp(L)) @ X.T

    with pytest.warns(eigrad.GaugeWarning, match=r"condition 2.*eigrad\.funm or eigrad\.projector"):
        rev, fwd, fd = fd_check(via_eigsh, A, None)
    masked_err = abs(rev - fd) / abs(fd)
    assert masked_err > 1e-2, f"the masked gradient should be visibly wrong; error {masked_err:.2e}"
    rev, fwd, fd = fd_check(lambda a, b: eigrad.funm(a, torch.exp, 4, solver="dense"), A, None)
    assert_close_fd(rev, fwd, fd, 1e-7, "funm over the triple cluster")


# --- errors -----------------------------------------------------------------------------


def test_cluster_cut_by_k_is_reported():
    A, _ = planted([0.5, 1.0, 1.0, 2.0, 3.0, 4.0], seed=14)
    with pytest.warns(eigrad.GaugeWarning, match=r"k=2 cuts a degenerate cluster.*Pass k=1 or k=3"):
        eigrad.funm(A, torch.exp, 2)
    with pytest.raises(eigrad.GaugeError, match=r"Pass k=3"):
        eigrad.projector(A, 4, largest=True, backward=eigrad.BackwardOptions(gauge="raise"))
    eigrad.projector(A, 3)  # whole cluster: no warning (the suite turns GaugeWarning into errors)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda A: eigrad.sqrtm(A), r"sqrtm needs a positive semidefinite A.*λ\[0\] = -0.5"),
        (lambda A: eigrad.logm(A), r"logm needs a positive definite A.*λ\[0\] = -0.5"),
        (lambda A: eigrad.powm(A, 0.5), r"powm needs a positive semidefinite A.*λ\[0\] = -0.5"),
        (lambda A: eigrad.funm(A, torch.log), r"f \(log\) is not finite on the spectrum.*λ\[0\] = -0.5"),
    ],
)
def test_domain_errors_name_the_eigenvalue(call, match):
    A, _ = planted([-0.5, 1.0, 2.0, 3.0], seed=15)
    with pytest.raises(ValueError, match=match):
        call(A)


def test_domain_error_names_batch_element_and_zero_eigenvalue():
    A = torch.stack([planted([1.0, 2.0, 3.0])[0], torch.diag(torch.tensor([2.0, 0.0, 3.0], dtype=DT))])
    with pytest.raises(ValueError, match=r"nonsingular.*λ\[0\] = 0 \(batch element \(1,\)\)"):
        eigrad.powm(A, -1)


def test_input_errors():
    A = _spd(4, seed=16)
    t = torch.tensor(2.0, dtype=DT, requires_grad=True)
    with pytest.raises(TypeError, match="closes over a parameter"):
        eigrad.funm(A, lambda x: torch.exp(-t * x))
    with pytest.raises(TypeError, match="pair"):
        eigrad.funm(A, (torch.exp,))
    with pytest.raises(TypeError, match="elementwise torch function"):
        eigrad.funm(A, "exp")
    with pytest.raises(TypeError, match="same shape"):
        eigrad.funm(A, lambda x: x.sum())
    with pytest.raises(TypeError, match="requires a gradient"):
        eigrad.powm(A, t)
    with pytest.raises(TypeError, match="needs k"):
        eigrad.projector(A, None)
    with pytest.raises(ValueError, match="out of range"):
        eigrad.funm(A, torch.exp, 5)
    # operators are accepted (tests/test_spectral_operators.py); the whole spectrum only when small
    big = eigrad.FunctionOperator(lambda X: X, (), (5000, 5000), dtype=DT)
    with pytest.raises(ValueError, match="Pass k"):
        eigrad.expm(big)
