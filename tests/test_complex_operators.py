"""Complex Hermitian operators (complex128): torch sparse COO/CSR, FunctionOperator, scipy matrices.

References: ``eigrad.eigsh`` on the dense tensor (tests/test_complex_dense.py
checks it against finite differences and torch), and central finite
differences (five-point stencil) along random Hermitian directions of the
stored values, of gauge-invariant real losses (``Σ h(λ)``, ``Re tr(W P_g)``,
``|x_iᴴ c|²``). The sparse gradient is ``herm(L_A Xᴴ)`` sampled on the
pattern (MATH-complex, "Operators"). Matrices: a 2-D tight-binding lattice
with Peierls phases and a random potential (simple spectrum), and a planted
spectrum ``Q diag(λ) Qᴴ`` with exact double and triple clusters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse
import torch

import eigrad
from eigrad import testing

CT = torch.complex128
K = 5
H = 1e-4
RTOL = 1e-7
# positions 0-1 double, 2 simple, 3-5 triple, 6 simple; k = 7 closes the clusters
SPECTRUM = [-1.0, -1.0, -0.25, 0.5, 0.5, 0.5, 1.25] + [2.0 + 0.25 * i for i in range(41)]
CLUSTERS = [[0, 1], [2], [3, 4, 5], [6]]
MATERIALIZED = ["dense", "lapack", "auto"]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def lattice(side=6, flux=0.15, seed=0):
    """``(indices, values, n)`` of a periodic ``side × side`` square lattice, hopping ``-e^{iφ}`` with
    Peierls phases ``φ = 2π flux x`` on the vertical bonds, a random on-site potential (COO, coalesced)."""
    gen = _gen(seed)
    n = side * side
    pot = torch.randn(n, dtype=torch.float64, generator=gen)
    entries = {}
    for x in range(side):
        for y in range(side):
            i = x * side + y
            entries[(i, i)] = complex(pot[i])
            for dx, dy in ((1, 0), (0, 1)):
                j = ((x + dx) % side) * side + (y + dy) % side
                t = -complex(np.exp(2j * math.pi * flux * x)) if dy else -1.0 + 0j
                entries[(i, j)] = entries.get((i, j), 0) + t
                entries[(j, i)] = entries.get((j, i), 0) + t.conjugate()
    keys = sorted(entries)
    idx = torch.tensor(keys, dtype=torch.int64).T.contiguous()
    vals = torch.tensor([entries[key] for key in keys], dtype=CT)
    return idx, vals, n


def random_unitary(n, gen):
    return testing.random_unitary(n, seed=gen, dtype=CT)


def planted(seed=3):
    """``(indices, values, n)``: ``Q diag(SPECTRUM) Qᴴ`` stored as a sparse matrix (every entry)."""
    gen = _gen(seed)
    n = len(SPECTRUM)
    Q = random_unitary(n, gen)
    A = (Q * torch.tensor(SPECTRUM, dtype=torch.float64).to(CT)) @ Q.mH
    A = 0.5 * (A + A.mH)
    S = A.to_sparse().coalesce()
    return S.indices(), S.values(), n


def build(kind, idx, vals, n):
    if kind == "coo":
        return torch.sparse_coo_tensor(idx, vals, (n, n))
    if kind == "csr":  # torch refuses autograd through a complex CSR constructor: a leaf CSR tensor
        S = torch.sparse_coo_tensor(idx, vals.detach(), (n, n)).coalesce().to_sparse_csr()
        return S.requires_grad_(vals.requires_grad)
    if kind == "function":  # FunctionOperator over the stored values (index ops, differentiable)
        row, col = idx[0], idx[1]

        def matmat(X, v):
            out = torch.zeros(n, X.shape[-1], dtype=X.dtype)
            return out.index_add(0, row, v.unsqueeze(-1) * X[col])

        return eigrad.FunctionOperator(matmat, (vals,), (n, n))
    raise ValueError(kind)


def gradient_of_values(kind, idx, vals0, n, loss):
    """``∂ loss(A) / ∂ values`` (CSR order), ``A`` built as ``kind`` from ``vals0``."""
    v = vals0.clone().requires_grad_(True)
    A = build(kind, idx, v, n)
    if kind == "csr":
        A.grad = None
        loss(A).backward()
        return A.grad.values().clone()  # (torch: conj of the view fails)
    return torch.autograd.grad(loss(A), v)[0]


def transpose_positions(idx, n):
    key = idx[0] * n + idx[1]
    return torch.searchsorted(key, idx[1] * n + idx[0])


def dense_of(idx, vals, n):
    return torch.zeros(n, n, dtype=CT).index_put((idx[0], idx[1]), vals, accumulate=True)


def inner(G, E):
    return (G.conj() * E).real.sum()


def loss_of(L, X, clusters, W, c):
    """Σ (λ² + sin λ) + Σ_g Re tr(W P_g)/(1+g) + Σ_{simple i} |x_iᴴ c|²: gauge invariant."""
    loss = (L**2 + torch.sin(L)).sum()
    for g, pos in enumerate(clusters):
        Xg = X[:, list(pos)]
        loss = loss + inner(W / (1.0 + g), Xg @ Xg.mH)
        if len(pos) == 1:
            loss = loss + (Xg[:, 0].conj() @ c).abs() ** 2
    return loss


def hermitian_direction(idx, n, gen):
    G = torch.randn(n, n, dtype=CT, generator=gen)
    return (0.5 * (G + G.mH))[idx[0], idx[1]]


def fd(f, x, dx, h=H):
    def at(t):
        with torch.no_grad():
            return float(f(x + t * dx))

    return (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)


CASES = {
    "lattice": (lattice, K, [[i] for i in range(K)]),
    "planted": (planted, 7, CLUSTERS),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kind", ["coo", "csr", "function"])
@pytest.mark.parametrize("solver", MATERIALIZED)
def test_gradient_to_values_matches_dense_and_fd(case, kind, solver):
    make, k, clusters = CASES[case]
    idx, vals0, n = make()
    gen = _gen(11)
    W = torch.randn(n, n, dtype=CT, generator=gen)
    W = 0.5 * (W + W.mH)
    c = torch.randn(n, dtype=CT, generator=gen)

    def loss_A(A):
        L, X = eigrad.eigsh(A, k, solver=solver)
        return loss_of(L, X, clusters, W, c)

    def loss(v):
        return loss_A(build(kind, idx, v, n))

    g = gradient_of_values(kind, idx, vals0, n, loss_A)
    # the dense route's gradient, sampled on the pattern
    Ad = dense_of(idx, vals0, n).requires_grad_(True)
    L, X = eigrad.eigsh(Ad, k)
    (gd,) = torch.autograd.grad(loss_of(L, X, clusters, W, c), Ad)
    ref = gd[idx[0], idx[1]]
    if kind == "function":  # the raw VJP (L_A Xᴴ)_ij: its Hermitian part on the pattern is the gradient
        g = 0.5 * (g + g.conj()[transpose_positions(idx, n)])
    err_dense = float((g - ref).abs().max() / ref.abs().max())
    assert err_dense < 1e-10, err_dense
    dv = hermitian_direction(idx, n, gen)
    a, f = float(inner(g, dv)), fd(loss, vals0, dv)
    assert abs(a - f) <= RTOL * max(abs(a), abs(f), 1.0), (a, f)


@pytest.mark.parametrize("kind", ["function"])  # torch's sparse constructors have no forward AD
def test_forward_mode_matches_fd(kind):
    idx, vals0, n = planted()
    gen = _gen(12)
    dv = hermitian_direction(idx, n, gen)
    W = torch.randn(n, n, dtype=CT, generator=gen)
    W = 0.5 * (W + W.mH)

    def loss(v):
        L, X = eigrad.eigsh(build(kind, idx, v, n), 7, solver="dense")
        return loss_of(L, X, CLUSTERS, W, torch.zeros(n, dtype=CT))

    _, t = torch.func.jvp(loss, (vals0,), (dv,))
    f = fd(loss, vals0, dv)
    assert abs(float(t) - f) <= RTOL * max(abs(f), 1.0), (float(t), f)


def test_function_operator_with_complex_and_real_params():
    idx, vals0, n = lattice()
    H0 = dense_of(idx, vals0, n)
    gen = _gen(13)
    c = torch.randn(n, dtype=CT, generator=gen)
    clusters = [[i] for i in range(K)]
    W = torch.zeros(n, n, dtype=CT)
    Hp = H0.clone().requires_grad_(True)
    L, X = eigrad.eigsh(eigrad.FunctionOperator(lambda X, H: H @ X, (Hp,), (n, n)), K, solver="dense")
    (g,) = torch.autograd.grad(loss_of(L, X, clusters, W, c), Hp)
    Hd = H0.clone().requires_grad_(True)
    Ld, Xd = eigrad.eigsh(Hd, K)
    (gd,) = torch.autograd.grad(loss_of(Ld, Xd, clusters, W, c), Hd)
    # the raw VJP L_A Xᴴ: the same pairing with every Hermitian direction as herm(L_A Xᴴ)
    assert float((0.5 * (g + g.mH) - gd).abs().max()) < 1e-12
    # a real potential on a complex hopping matrix: dtype= declares the complex operator
    pot = torch.linspace(-0.5, 0.5, n, dtype=torch.float64).requires_grad_(True)
    op = eigrad.FunctionOperator(lambda X, p: H0 @ X + p[:, None] * X, (pot,), (n, n), dtype=CT)
    L, X = eigrad.eigsh(op, K, solver="lapack")
    (gp,) = torch.autograd.grad(L.sum(), pot)
    assert gp.dtype == torch.float64
    # Hellmann-Feynman: ∂λ_i/∂p_j = |x_ji|²
    assert float((gp - (X.detach().abs() ** 2).sum(-1)).abs().max()) < 1e-12


def test_scipy_complex_sparse_matrix():
    idx, vals, n = lattice()
    S = scipy.sparse.coo_matrix((vals.numpy(), (idx[0].numpy(), idx[1].numpy())), shape=(n, n)).tocsr()
    L, X = eigrad.eigsh(S, K, solver="dense")
    Ld, _ = eigrad.eigsh(dense_of(idx, vals, n), K)
    assert X.dtype == CT and L.dtype == torch.float64
    assert float((L - Ld).abs().max()) < 1e-12
    assert eigrad.as_operator(S.astype(np.complex64)).dtype == torch.complex64


def test_phase_dependent_loss_warns():
    idx, vals0, n = lattice()
    v = vals0.clone().requires_grad_(True)
    L, X = eigrad.eigsh(build("coo", idx, v, n), K, solver="dense")
    with pytest.warns(eigrad.GaugeWarning, match=r"depends on the phase of a complex eigenvector"):
        torch.autograd.grad(X[3, 1].real, v)  # an entry with Im != 0 (LAPACK makes row 0 real)


def test_non_hermitian_complex_operators_are_rejected():
    idx, vals, n = lattice()
    bad = vals.clone()
    bad[0] = bad[0] + 1e-3j  # an imaginary diagonal entry
    with pytest.raises(ValueError, match=r"A is not Hermitian: max \|A - Aᴴ\|"):
        eigrad.eigsh(build("coo", idx, bad, n), K, solver="dense")
    # H + 0.1i·I is complex symmetric on the diagonal, not Hermitian
    M = dense_of(idx, vals, n) + 0.1j * torch.eye(n, dtype=CT)
    with pytest.raises(ValueError, match=r"A is not Hermitian: for probe vectors"):
        eigrad.eigsh(eigrad.FunctionOperator(lambda X, M: M @ X, (M,), (n, n)), K, solver="dense")


# Iterative solvers (ARPACK, LOBPCG) and the projected block MINRES backward ---------------------
ITERATIVE = ["arpack", "lobpcg"]
ITER_CASES = {
    "lattice": (lambda: lattice(side=8), K, [[i] for i in range(K)]),  # n = 64
    "planted": (planted, 7, CLUSTERS),  # n = 48, exact double and triple clusters
}
# iterative forward (rtol ~1e-10) and MINRES backward against the dense route: measured <= 5e-9
ITER_RTOL = 1e-7


def _dense_gradient(idx, vals0, n, k, loss_LX, B=None, largest=False):
    Ad = dense_of(idx, vals0, n).requires_grad_(True)
    L, X = eigrad.eigsh(Ad, k, B=B, largest=largest)
    return torch.autograd.grad(loss_LX(L, X), Ad)[0][idx[0], idx[1]]


@pytest.mark.parametrize("case", sorted(ITER_CASES))
@pytest.mark.parametrize("kind", ["coo", "function"])
@pytest.mark.parametrize("solver", ITERATIVE)
def test_iterative_gradient_matches_dense_and_fd(case, kind, solver):
    make, k, clusters = ITER_CASES[case]
    idx, vals0, n = make()
    gen = _gen(21)
    W = torch.randn(n, n, dtype=CT, generator=gen)
    W = 0.5 * (W + W.mH)
    c = torch.randn(n, dtype=CT, generator=gen)

    def loss_A(A, s=solver):
        L, X = eigrad.eigsh(A, k, solver=s)
        return loss_of(L, X, clusters, W, c)

    g = gradient_of_values(kind, idx, vals0, n, loss_A)
    if kind == "function":
        g = 0.5 * (g + g.conj()[transpose_positions(idx, n)])
    ref = _dense_gradient(idx, vals0, n, k, lambda L, X: loss_of(L, X, clusters, W, c))
    err = float((g - ref).abs().max() / ref.abs().max())
    assert err < ITER_RTOL, err
    # FD of the same loss on the exact (dense) forward: the iterative forward's own rounding-level
    # noise would dominate a difference quotient
    dv = hermitian_direction(idx, n, gen)
    a = float(inner(g, dv))
    f = fd(lambda v: loss_A(build("coo", idx, v, n), "dense"), vals0, dv)
    assert abs(a - f) <= ITER_RTOL * max(abs(a), abs(f), 1.0), (a, f)


@pytest.mark.parametrize("solver", ITERATIVE + ["dense"])
def test_generalized_and_largest_with_gradients_to_A_and_B(solver):
    idx, vals0, n = lattice(side=8)
    Bd0 = torch.eye(n, dtype=CT) + 0.025 * dense_of(idx, vals0, n)  # Hermitian positive definite
    Bd0 = 0.5 * (Bd0 + Bd0.mH)
    bvals0 = Bd0[idx[0], idx[1]]
    for largest in (False, True):
        v, bv = vals0.clone().requires_grad_(True), bvals0.clone().requires_grad_(True)
        A = torch.sparse_coo_tensor(idx, v, (n, n))
        Bs = torch.sparse_coo_tensor(idx, bv, (n, n))
        L, X = eigrad.eigsh(A, 4, B=Bs, solver=solver, largest=largest)
        ga, gb = torch.autograd.grad((L**2).sum() + (X[:, 0].conj() @ X[:, 0]).real, (v, bv))
        Ad = dense_of(idx, vals0, n).requires_grad_(True)
        Bd = dense_of(idx, bvals0, n).requires_grad_(True)
        Ld, Xd = eigrad.eigsh(Ad, 4, B=Bd, largest=largest)
        gad, gbd = torch.autograd.grad((Ld**2).sum() + (Xd[:, 0].conj() @ Xd[:, 0]).real, (Ad, Bd))
        assert float((L - Ld).detach().abs().max()) < 1e-10
        for g, gd in ((ga, gad), (gb, gbd)):
            ref = gd[idx[0], idx[1]]
            assert float((g - ref).abs().max() / ref.abs().max()) < ITER_RTOL


@pytest.mark.parametrize("solver", ITERATIVE)
def test_iterative_phase_dependent_loss_warns(solver):
    idx, vals0, n = lattice(side=8)
    v = vals0.clone().requires_grad_(True)
    L, X = eigrad.eigsh(build("coo", idx, v, n), K, solver=solver)
    i = int(X[:, 1].imag.abs().argmax())
    with pytest.warns(eigrad.GaugeWarning, match=r"depends on the phase of a complex eigenvector"):
        torch.autograd.grad(X[i, 1].real, v)


def test_hermitian_minres_matches_the_eigenbasis_solution():
    from eigrad.linsolve._minres import ProjectedMinres
    from eigrad.operators import DenseOperator

    idx, vals, n = planted()
    A = dense_of(idx, vals, n)
    lam, Xf = torch.linalg.eigh(A)
    k = 7
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    M = labels.unsqueeze(-1) == labels.unsqueeze(-2)
    X = Xf[:, :k]
    R = torch.randn(n, k, dtype=CT, generator=_gen(31))
    R = R - X @ (M.to(CT) * (X.mH @ R))  # X_gᴴ r_j = 0
    shifts = lam[:k]
    for deflate in (True, False):
        Y = ProjectedMinres(DenseOperator(A), None, lam[:k], rtol=1e-12, deflate=deflate)(R, shifts, X, M)
        C = Xf.mH @ R
        diff = lam.unsqueeze(-1) - shifts.unsqueeze(-2)
        inside = torch.zeros(n, k, dtype=torch.bool)
        inside[:k] = M
        Y_exact = Xf @ torch.where(inside, torch.zeros_like(C), C / torch.where(inside, torch.ones_like(diff), diff))
        err = float(torch.linalg.vector_norm(Y - Y_exact) / torch.linalg.vector_norm(Y_exact))
        assert err < 1e-9, (deflate, err)
        assert float((M.to(CT) * (X.mH @ Y)).abs().max()) < 1e-12  # X_gᴴ y_j = 0


def test_auto_above_the_materialization_size_and_unsupported_solvers():
    idx, vals, n = lattice(side=15)  # n = 225 > 200: solver="auto" runs ARPACK (PRIMME refuses)
    A = torch.sparse_coo_tensor(idx, vals, (n, n))
    L, X = eigrad.eigsh(A, 3)
    assert float((L - torch.linalg.eigvalsh(dense_of(idx, vals, n))[:3]).abs().max()) < 1e-10
    for solver in ("primme",):
        with pytest.raises(TypeError, match=r"complex dtype torch.complex128 and solver .* does not support complex"):
            eigrad.eigsh(A, 3, solver=solver)


def test_spectral_functions_refuse_complex_operators_for_now():
    idx, vals, n = lattice()
    A = torch.sparse_coo_tensor(idx, vals, (n, n))
    with pytest.raises(TypeError, match=r"A is a complex operator .*spectral functions support real symmetric"):
        eigrad.funm(A, torch.exp, k=3)
    with pytest.raises(TypeError, match=r"B is a complex operator"):
        eigrad.funm(torch.eye(n, dtype=torch.float64).to_sparse(), torch.exp, k=3, B=A)


def _simple_spectrum_loss(L, X):
    return (L**2).sum() + (X[:, 0].abs() ** 4).sum()


@pytest.mark.parametrize("solver", ["dense"] + ITERATIVE)
def test_forward_mode_and_second_order_at_a_simple_spectrum(solver):
    """The differentiable routes (torch.func.jvp with grad mode on; create_graph=True): tangents and a
    Hessian-vector product against the dense route and FD of its gradient."""
    idx, vals0, n = lattice(side=8)
    dv = hermitian_direction(idx, n, _gen(41))

    def loss(kind, s):
        def f(v):
            L, X = eigrad.eigsh(build(kind, idx, v, n), 3, solver=s)
            return _simple_spectrum_loss(L, X)
        return f

    def dense_loss(v):
        L, X = eigrad.eigsh(dense_of(idx, v, n), 3)
        return _simple_spectrum_loss(L, X)

    _, ref = torch.func.jvp(dense_loss, (vals0,), (dv,))
    _, t = torch.func.jvp(loss("function", solver), (vals0,), (dv,))
    assert abs(float(t - ref)) <= ITER_RTOL * abs(float(ref)), (float(t), float(ref))

    def directional_gradient(v):
        with torch.enable_grad():
            v = v.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(dense_loss(v), v)
        return inner(g, dv)

    href = fd(directional_gradient, vals0, dv)
    v = vals0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss("coo", solver)(v), v, create_graph=True)
    (h,) = torch.autograd.grad(inner(g, dv), v)
    hv = float(inner(h, dv))
    assert abs(hv - href) <= ITER_RTOL * abs(href), (hv, href)


@pytest.mark.parametrize("solver", ["dense"] + ITERATIVE)
def test_second_order_and_forward_mode_at_exact_clusters(solver):
    """Repeated eigenvalues inside k: the exact degenerate second order (a Hessian-vector product of
    Σ h(λ) + Re tr(W P_g)) and the forward tangent against FD of the dense route."""
    idx, vals0, n = planted()
    gen = _gen(51)
    dv = hermitian_direction(idx, n, gen)
    W = torch.randn(n, n, dtype=CT, generator=gen)
    W = 0.5 * (W + W.mH)
    zero = torch.zeros(n, dtype=CT)

    def dense_loss(v):
        L, X = eigrad.eigsh(dense_of(idx, v, n), 7)
        return loss_of(L, X, CLUSTERS, W, zero)

    def directional_gradient(v):
        with torch.enable_grad():
            v = v.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(dense_loss(v), v)
        return inner(g, dv)

    href = fd(directional_gradient, vals0, dv)
    v = vals0.clone().requires_grad_(True)
    L, X = eigrad.eigsh(build("coo", idx, v, n), 7, solver=solver)
    (g,) = torch.autograd.grad(loss_of(L, X, CLUSTERS, W, zero), v, create_graph=True)
    (h,) = torch.autograd.grad(inner(g, dv), v)
    hv = float(inner(h, dv))
    assert abs(hv - href) <= ITER_RTOL * abs(href), (hv, href)

    def op_loss(v):
        L, X = eigrad.eigsh(build("function", idx, v, n), 7, solver=solver)
        return loss_of(L, X, CLUSTERS, W, zero)

    _, t = torch.func.jvp(op_loss, (vals0,), (dv,))
    f = fd(dense_loss, vals0, dv)
    assert abs(float(t) - f) <= ITER_RTOL * abs(f), (float(t), f)


class _Hopping(torch.nn.Module):
    """``A X = H X + diag(p) X``: a complex hopping matrix (buffer) and a real potential (parameter)."""

    def __init__(self, H):
        super().__init__()
        self.register_buffer("H", H)
        self.p = torch.nn.Parameter(torch.zeros(H.shape[-1], dtype=torch.float64))

    def forward(self, X):
        return self.H @ X + self.p[:, None] * X


@pytest.mark.parametrize("solver", ["dense"] + ITERATIVE)
def test_module_operator_with_a_real_parameter(solver):
    idx, vals, n = lattice(side=8)
    mod = _Hopping(dense_of(idx, vals, n))
    L, X = eigrad.eigsh(eigrad.ModuleOperator(mod, n, dtype=CT), K, solver=solver)
    (gp,) = torch.autograd.grad(L.sum(), mod.p)
    assert gp.dtype == torch.float64
    assert float((gp - (X.abs() ** 2).sum(-1).detach()).abs().max()) < 1e-9  # Hellmann-Feynman


@pytest.mark.parametrize("solver", ["dense"] + ITERATIVE)
def test_basis_dependent_loss_at_a_cluster_warns(solver):
    """A loss of one vector of the triple cluster depends on the U(3) basis: reported (the phase of
    each vector is fixed by |·|, so the message names the cluster, not a phase)."""
    idx, vals0, n = planted()
    v = vals0.clone().requires_grad_(True)
    L, X = eigrad.eigsh(build("coo", idx, v, n), 7, solver=solver)
    with pytest.warns(eigrad.GaugeWarning, match=r"degenerate eigenvalue.*positions \[3, 4, 5\]"):
        torch.autograd.grad((X[:, 3].abs() ** 4).sum(), v)


@pytest.mark.parametrize("solver", ["dense"] + ITERATIVE)
def test_complex64_operators(solver):
    idx, vals, n = lattice(side=8)
    ref = torch.linalg.eigvalsh(dense_of(idx, vals, n))[:4]
    v = vals.to(torch.complex64).requires_grad_(True)
    L, X = eigrad.eigsh(torch.sparse_coo_tensor(idx, v, (n, n)), 4, solver=solver)
    assert L.dtype == torch.float32 and X.dtype == torch.complex64
    assert float((L.detach().double() - ref).abs().max()) < 1e-4
    (g,) = torch.autograd.grad(L.sum(), v)
    assert g.dtype == torch.complex64


@pytest.mark.parametrize("solver", ["dense", "lobpcg"])
def test_batched_function_operator(solver):
    idx, vals, n = lattice(side=8)
    H0 = dense_of(idx, vals, n)
    Hb = torch.stack([H0, H0 + 0.3 * torch.diag(torch.linspace(0, 1, n, dtype=torch.float64)).to(CT)])
    Hp = Hb.clone().requires_grad_(True)
    L, X = eigrad.eigsh(eigrad.FunctionOperator(lambda X, H: H @ X, (Hp,), (2, n, n)), 4, solver=solver)
    (g,) = torch.autograd.grad((L**2).sum(), Hp)
    Hd = Hb.clone().requires_grad_(True)
    Ld, _ = eigrad.eigsh(Hd, 4)
    (gd,) = torch.autograd.grad((Ld**2).sum(), Hd)
    assert float((L - Ld).detach().abs().max()) < 1e-10
    assert float((0.5 * (g + g.mH) - gd).abs().max() / gd.abs().max()) < ITER_RTOL


@pytest.mark.parametrize("solver", ["dense"] + ITERATIVE)
def test_gradcheck_real_parameters_of_a_complex_operator(solver):
    """torch's gradcheck / gradgradcheck (with forward AD) in a real potential p and a flux phase φ of
    A(p, φ) = T₀ + e^{iφ} T₁ + e^{-iφ} T₁ᴴ + diag(p), a complex Hermitian FunctionOperator."""
    idx, vals, n = lattice(side=7, flux=0.0)
    T = dense_of(idx, vals, n) - torch.diag(torch.diagonal(dense_of(idx, vals, n)))
    T1 = torch.triu(T, 1) * (torch.arange(n) % 3 == 0).to(CT)[:, None]  # some bonds carry the flux
    T0 = T - T1 - T1.mH
    c = torch.randn(n, dtype=CT, generator=_gen(61))

    def matmat(X, p, phi):
        e = torch.exp(1j * phi)
        return T0 @ X + e * (T1 @ X) + e.conj() * (T1.mH @ X) + p[:, None] * X

    def f(p, phi):
        L, X = eigrad.eigsh(eigrad.FunctionOperator(matmat, (p, phi), (n, n), dtype=CT), 3, solver=solver)
        return (L**2).sum() + ((X[:, 0].conj() @ c).abs() ** 2)

    p = torch.linspace(-0.5, 0.7, n, dtype=torch.float64).requires_grad_(True)
    phi = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (p, phi), check_forward_ad=True, fast_mode=True, atol=1e-6, rtol=1e-5)
    assert torch.autograd.gradgradcheck(f, (p, phi), fast_mode=True, atol=1e-5, rtol=1e-4)
