"""``BackwardOptions(broadening=ε)``: the Lorentzian-broadened backward against the exact one
(issue 5 item 4). The error is about ``ε²/gap²`` for separated eigenvalues and the
gradient stays bounded near crossings, where the exact one grows like ``1/gap``."""

from __future__ import annotations

import math

import pytest
import torch

import eigrad
from eigrad.testing import planted, random_symmetric


def _eigvec_grad(A, W, broadening, solver="dense"):
    """Gradient of ``<W, x₁ x₁ᵀ>`` (the middle of the 3 smallest eigenvectors)."""
    Ar = A.clone().requires_grad_(True)
    _, X = eigrad.eigsh(Ar, 3, solver=solver, backward=eigrad.BackwardOptions(broadening=broadening))
    return torch.autograd.grad((W * (X[:, 1:2] @ X[:, 1:2].T)).sum(), Ar)[0]


def test_error_is_quadratic_in_epsilon_for_separated_eigenvalues():
    """Relative error ≈ c ε²/gap² (gap = 1 here): the ratio err/ε² is constant in ε."""
    A = planted([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], seed=17).A
    W = random_symmetric(8, seed=3)
    exact = _eigvec_grad(A, W, None)
    ratios = []
    for eps in (1e-1, 1e-2, 1e-3):
        err = float((_eigvec_grad(A, W, eps) - exact).norm() / exact.norm())
        assert err <= 2 * eps**2, f"broadening {eps}: error {err:.2e}"
        ratios.append(err / eps**2)
    assert max(ratios) / min(ratios) < 1.05, ratios


def test_bounded_near_a_crossing():
    W = random_symmetric(8, seed=4)
    eps = 1e-2
    for d in (1e-4, 1e-6):
        A = planted([0.0, 1.0, 1.0 + d, 3.0, 4.0, 5.0, 6.0, 7.0], seed=18).A
        exact = _eigvec_grad(A, W, None).norm()
        broadened = _eigvec_grad(A, W, eps).norm()
        assert exact > 0.1 / d  # the exact gradient blows up like 1/d
        assert broadened < 10.0 / eps  # each broadened term is bounded by 1/(2ε)


def test_partial_funm_and_eigh_apply_it():
    A = planted([0.0, 1.0, 1.0, 2.0, 3.0, 4.0], seed=19).A
    W = random_symmetric(6, seed=5)
    grads = []
    for eps in (None, 1e-3):
        Ar = A.clone().requires_grad_(True)
        F = eigrad.funm(Ar, torch.sin, 3, backward=eigrad.BackwardOptions(broadening=eps))
        grads.append(torch.autograd.grad((W * F).sum(), Ar)[0])
    assert 0 < float((grads[0] - grads[1]).norm() / grads[0].norm()) < 1e-5
    exact_full = None
    for eps in (None, 1e-3):
        Ar = A.clone().requires_grad_(True)
        L, X = eigrad.eigh(Ar, backward=eigrad.BackwardOptions(broadening=eps))
        g = torch.autograd.grad((W * (X[:, 4:5] @ X[:, 4:5].T)).sum() + L.sum(), Ar)[0]
        if exact_full is None:
            exact_full = g
    assert 0 < float((g - exact_full).norm() / exact_full.norm()) < 1e-5


def test_errors():
    A = planted([0.0, 1.0, 2.0, 3.0], seed=20).A
    with pytest.raises(ValueError, match="solver='dense'"):
        eigrad.eigsh(A, 2, solver="lapack", backward=eigrad.BackwardOptions(broadening=1e-2))
    for bad in (0.0, -1.0, math.nan, math.inf, True, "0.1"):
        with pytest.raises(ValueError, match="broadening"):
            eigrad.BackwardOptions(broadening=bad)
