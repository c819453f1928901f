"""The operator backward's linear solver and hygiene, through eigsh.

Preconditioned and unpreconditioned MINRES give one gradient; a solve that
misses its tolerance raises; the global RNG is untouched; no reference cycles
keep an operator or its module alive after backward.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
from _operator_grid import A0, LAP, LAP_OP, M_GRID, N, ROUTES, V0, closing_k, grid_loss
from _operator_helpers import DT, NoHandle, laplacian_2d_eigenvalues, potential_operator, sym_direction

import eigrad


def test_preconditioned_backward_gives_the_same_gradient():
    k = closing_k(3)
    W = sym_direction(N, 17)
    P = torch.linalg.inv(A0 + 0.5 * torch.eye(N, dtype=DT))  # SPD ≈ (A - σ)⁻¹, σ = -0.5
    grads = []
    for pre in (None, P, eigrad.as_operator(P), lambda R: P @ R):
        v = V0.clone().requires_grad_()
        L, X = eigrad.eigsh(potential_operator(LAP_OP, v), k, solver=NoHandle(),
                            backward=eigrad.BackwardOptions(linsolve_preconditioner=pre))
        grads.append(torch.autograd.grad(grid_loss(L, X, W), v)[0])
    for g in grads[1:]:
        assert torch.allclose(g, grads[0], atol=1e-9, rtol=1e-8)


def test_backward_solve_that_does_not_converge_raises():
    v = V0.clone().requires_grad_()
    L, X = eigrad.eigsh(potential_operator(LAP_OP, v), closing_k(3), solver=NoHandle(),
                        backward=eigrad.BackwardOptions(linsolve_maxiter=2))
    with pytest.raises(eigrad.ConvergenceError, match=r"MINRES .* reached maxiter=2.*gradient was not computed"):
        grid_loss(L, X, sym_direction(N, 18)).backward()
    assert v.grad is None


def test_eigenvalue_only_loss_needs_no_linear_solve():
    """Λ̄ alone: the backward is Hellmann–Feynman, so even maxiter=1 cannot fail."""
    v = V0.clone().requires_grad_()
    L, X = eigrad.eigsh(potential_operator(LAP_OP, v), closing_k(3), solver=NoHandle(),
                        backward=eigrad.BackwardOptions(linsolve_maxiter=1))
    L.sum().backward()
    assert torch.allclose(v.grad, (X.detach() ** 2).sum(-1), atol=1e-10, rtol=0)


def test_scipy_inputs_give_no_gradient():
    L, X = eigrad.eigsh(LAP, 3)
    assert not L.requires_grad and not X.requires_grad
    assert torch.allclose(L, torch.from_numpy(laplacian_2d_eigenvalues(M_GRID)[:3]), atol=1e-12, rtol=0)


# Hygiene -----------------------------------------------------------------------


@pytest.mark.parametrize("route", list(ROUTES))
def test_global_rng_is_untouched(route):
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    v = V0.clone().requires_grad_()
    L, X = eigrad.eigsh(potential_operator(LAP_OP, v), closing_k(3), solver=ROUTES[route])
    grid_loss(L, X, sym_direction(N, 19)).backward()
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


@pytest.mark.parametrize("route", ["dense", "minres"])
@pytest.mark.parametrize("kind", ["module", "function"])
def test_no_reference_cycles_after_backward(route, kind):
    """After backward and del, the operator and its module are freed by refcounting alone."""

    def run():
        if kind == "module":
            op = eigrad.ModuleOperator(_PotentialModule(), N)
            target = op.module
        else:
            v = V0.clone().requires_grad_()
            op = potential_operator(LAP_OP, v)
            target = op
        L, X = eigrad.eigsh(op, closing_k(3), solver=ROUTES[route])
        grid_loss(L, X, sym_direction(N, 20)).backward()
        return weakref.ref(target)

    run()  # warm-up: torch's lazy imports on the first torch.func call keep one frame alive
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        ref = run()
        assert ref() is None
    finally:
        if was_enabled:
            gc.enable()


class _PotentialModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.v = torch.nn.Parameter(V0.clone())

    def forward(self, X):
        return LAP_OP.matmat(X) + self.v.unsqueeze(-1) * X
