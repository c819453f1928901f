"""The existence checks (MATH.md, "When the derivative exists"): invalid losses always warn, valid never.

A loss whose derivative does not exist at a degenerate cluster gets a
``GaugeWarning`` naming the cluster (positions, eigenvalues), the failed
condition (1: basis invariance, 2: uniform eigenvalue cotangent, or a cluster
cut by ``k`` with the ``k`` values that keep it whole); ``gauge="raise"``
raises ``GaugeError``, ``gauge="ignore"`` is silent. pyproject turns any
``GaugeWarning`` into an error, so every test here that does not expect one
also proves that none was emitted.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch.func import grad, vmap

import eigrad
from eigrad.testing import central_difference, clustered_spectrum, invariant_loss, planted, random_symmetric

N = 12
SPEC = clustered_spectrum(N, [1, 1, 3, 2])  # 1, 2, [3, 3, 3] at positions 2-4, [4, 4] at 5-6, 5, ...
TRIPLE, PAIR = [2, 3, 4], [5, 6]
RAISE = eigrad.BackwardOptions(gauge="raise")
IGNORE = eigrad.BackwardOptions(gauge="ignore")


def _backward(loss, k, *, A=None, B=None, solver="auto", largest=False, backward=None):
    A = (planted(SPEC, seed=1).A if A is None else A).clone().requires_grad_(True)
    L, X = eigrad.eigsh(A, k, B=B, solver=solver, largest=largest, backward=backward)
    (g,) = torch.autograd.grad(loss(L, X), [A])
    return g


def _spectral(L, X, f=torch.exp, W=None):
    """``<W, X_g f(Λ_g) X_gᵀ>`` over the triple: basis invariant, but Λ̄ not uniform (condition 2)."""
    W = random_symmetric(N, seed=3) if W is None else W
    Xg = X[:, TRIPLE]
    return (W * ((Xg * f(L[TRIPLE])) @ Xg.T)).sum()


INVALID = {
    "basis-dependent X[0,2]": (lambda L, X: X[0, 2], 7, ["condition 1", "basis invariance"], TRIPLE),
    "smallest of a pair": (lambda L, X: L[5], 7, ["condition 2", "uniform eigenvalue cotangent"], PAIR),
    "spectral function over a triple": (_spectral, 7, ["condition 2", "eigrad.funm"], TRIPLE),
}


@pytest.mark.parametrize("solver", ["lapack", "dense"])
@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_loss_warns_with_cluster_and_condition(case, solver):
    loss, k, phrases, positions = INVALID[case]
    with pytest.warns(eigrad.GaugeWarning) as rec:
        _backward(loss, k, solver=solver)
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert f"positions {positions}" in msg
    for phrase in phrases:
        assert phrase in msg, (phrase, msg)
    # the eigenvalues of the cluster and the size of the violation relative to the tolerance
    lam = SPEC[positions[0]]
    assert re.search(rf"λ = {lam:g}, {lam:g}", msg), msg
    assert re.search(r"\d\.\d\de[-+]\d\d of the", msg) and "tolerance 1.2e-04" in msg
    other = "condition 2" if "condition 1" in phrases else "condition 1"
    assert other not in msg, "only the failed condition is reported"


@pytest.mark.parametrize("case", list(INVALID))
def test_raise_policy_raises_and_ignore_policy_is_silent(case):
    loss, k, phrases, _ = INVALID[case]
    with pytest.raises(eigrad.GaugeError, match=phrases[0]):
        _backward(loss, k, backward=RAISE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # anything at all would fail
        g = _backward(loss, k, backward=IGNORE)
    assert torch.isfinite(g).all()


def test_spectral_function_gradient_is_really_wrong():
    """Why condition 2 must be reported: the masked gradient of ``X f(Λ) Xᵀ`` misses FD by percents."""
    p = planted(SPEC, seed=1)
    W = random_symmetric(N, seed=3)

    def loss(A):
        return _spectral(*eigrad.eigsh(A, 7, backward=IGNORE), W=W)

    A = p.A.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(A), [A])
    E = random_symmetric(N, seed=4)
    fd = float(central_difference(loss, [p.A], [E], h=1e-4))
    assert abs(float((g * E).sum()) - fd) > 1e-2 * abs(fd)


@pytest.mark.parametrize("largest", [False, True], ids=["smallest", "largest"])
@pytest.mark.parametrize("k,shown,beyond", [(3, [2], 2), (4, [2, 3], 1)])
def test_cluster_cut_by_k_names_positions_and_k_that_close_it(largest, k, shown, beyond):
    spec = [-v for v in SPEC] if largest else SPEC  # largest: the triple at -3 is cut from above
    A = planted(spec, seed=2).A
    if largest:  # returned columns are ascending: the cut cluster's members come first
        shown = list(range(len(shown)))
    with pytest.warns(eigrad.GaugeWarning) as rec:
        _backward(lambda L, X: L.sum(), k, A=A, largest=largest)
    msg = str(rec[0].message)
    assert f"k={k} cuts a degenerate cluster" in msg
    assert f"positions {shown}" in msg and f"degenerate with {beyond} eigenvalue(s) beyond" in msg
    assert "Pass k=2 or k=5" in msg
    # and the suggestions are right: both close the cluster, so the same loss is valid there
    for k_ok in (2, 5):
        _backward(lambda L, X: L.sum(), k_ok, A=A, largest=largest)


def test_cut_cluster_with_zero_cotangent_on_it_does_not_warn():
    """``λ_1`` with k cutting a cluster elsewhere: that derivative exists."""
    _backward(lambda L, X: L[0] + (X[:, 1] ** 2).sum(), 4)


@pytest.mark.parametrize("solver", ["lapack", "dense"])
def test_warnings_under_torch_func_and_vmap_name_the_batch_element(solver):
    spec_ok = [0.5 + i for i in range(N)]
    As = torch.stack([planted(spec_ok, seed=5).A, planted(SPEC, seed=6).A])

    def loss(A):
        L, X = eigrad.eigsh(A, 7, solver=solver)
        return X[0, 3]

    with pytest.warns(eigrad.GaugeWarning, match="condition 1"):
        grad(loss)(As[1])
    with pytest.warns(eigrad.GaugeWarning, match=r"in batch element \(1,\)") as rec:
        vmap(grad(loss))(As)
    assert "batch element (0,)" not in str(rec[0].message)
    with pytest.warns(eigrad.GaugeWarning, match=r"in batch element \(1,\)"):
        _backward(lambda L, X: X[..., 0, 3].sum(), 7, A=As, solver=solver)


# --- valid losses never warn ----------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["lapack", "dense"])
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
def test_valid_losses_do_not_warn(solver, with_B):
    p = planted(SPEC, B="random" if with_B else None, seed=7)
    W = random_symmetric(N, seed=8)
    clusters = [[0], [1], TRIPLE, PAIR]
    losses = [
        lambda L, X: (L**2).sum(),
        lambda L, X: invariant_loss(L, X, clusters, W),
        lambda L, X: (W * (X[:, TRIPLE] @ X[:, TRIPLE].T)).sum() + L[TRIPLE].sum(),
        lambda L, X: L[0] + X[3, 1] * X[5, 1],  # simple eigenpairs may be used entrywise
    ]
    for loss in losses:
        A = p.A.clone().requires_grad_(True)
        B = p.B.clone().requires_grad_(True) if with_B else None
        L, X = eigrad.eigsh(A, 7, B=B, solver=solver, backward=RAISE)
        torch.autograd.grad(loss(L, X), [A] + ([B] if with_B else []))
    L, X = eigrad.eigh(p.A.clone().requires_grad_(True), p.B, backward=RAISE)
    (L[: TRIPLE[-1] + 1] ** 2).sum().backward()


@pytest.mark.parametrize("gap", [1e-9, 1e-11, 1e-13])
def test_near_degenerate_merged_cluster_with_valid_loss_does_not_warn(gap):
    """Σλ² over a pair merged by the tolerance: its cotangents differ by ~gap, far below check_rtol."""
    spec = [0.5, 1.0, 1.0 + gap, 2.0] + [3.0 + i for i in range(N - 4)]
    W = random_symmetric(N, seed=9)
    for solver in ("lapack", "dense"):
        A = planted(spec, seed=10).A.clone().requires_grad_(True)
        L, X = eigrad.eigsh(A, 4, solver=solver, backward=RAISE)
        P = X[:, 1:3] @ X[:, 1:3].T
        torch.autograd.grad((L**2).sum() + (W * P).sum(), [A])


@pytest.mark.parametrize("solver", ["lapack", "dense"])
def test_float32_valid_loss_does_not_warn_and_invalid_does(solver):
    p = planted(SPEC, B="random", seed=11, dtype=torch.float32)
    W = random_symmetric(N, seed=12, dtype=torch.float32)
    A = p.A.clone().requires_grad_(True)
    L, X = eigrad.eigsh(A, 7, B=p.B, solver=solver, backward=RAISE)
    torch.autograd.grad(invariant_loss(L, X, [[0], [1], TRIPLE, PAIR], W), [A])
    A = p.A.clone().requires_grad_(True)
    L, X = eigrad.eigsh(A, 7, B=p.B, solver=solver)
    with pytest.warns(eigrad.GaugeWarning, match=r"positions \[2, 3, 4\]"):
        torch.autograd.grad(X[1, 3], [A])
