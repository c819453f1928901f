"""The iterative solvers and the operator backward at any magnitude of A (found by tests/test_fuzz.py).

Before ``eigensolvers/_scaled.py`` ARPACK's absolute convergence floor stopped it early below
``‖A‖ ≈ 1e-10`` (ConvergenceError at 1e-12), its inner CG on ``B`` called an SPD ``B`` indefinite at
``‖A‖ = 1e153``, LOBPCG overflowed at 1e192; the operator probe's symmetry test underflowed
("relative inf") at 1e-164, MINRES clamped its rotations at an absolute eps (stagnation at 1e-17), and
its squared norms overflowed beyond 1e±154 (now solved in scaled units there).
"""

from __future__ import annotations

import pytest
import torch

import eigrad
from eigrad.testing import planted, random_symmetric

VALS = [0.5, 1.0, 1.0, 2.0, 2.5] + [3.0 + 0.25 * i for i in range(35)]
K = 3


def _op(M):
    return eigrad.FunctionOperator(lambda X, M: M @ X, (M,), tuple(M.shape))


@pytest.mark.parametrize("solver", ["arpack", "lobpcg"])
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
@pytest.mark.parametrize("scale", [1e-300, 1e-164, 1e-17, 1e-12, 1e153, 1e192, 1e300])
def test_iterative_forward_at_any_scale(solver, with_B, scale):
    p = planted(VALS, B="random" if with_B else None, seed=1, cond=5.0)
    L, X = eigrad.eigsh(_op(p.A * scale), K, B=None if p.B is None else _op(p.B), solver=solver)
    torch.testing.assert_close(L / scale, p.eigenvalues[:K], rtol=1e-9, atol=0)
    Bd = torch.eye(len(VALS), dtype=torch.float64) if p.B is None else p.B
    torch.testing.assert_close(X.T @ Bd @ X, torch.eye(K, dtype=torch.float64), rtol=0, atol=1e-9)


@pytest.mark.parametrize("solver", ["arpack", "lobpcg"])
@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-100, 1e-17, 1e-12, 1e100, 1e200, 1e300])
def test_operator_backward_at_small_and_large_scales(solver, scale):
    """A projector loss over the whole double (MINRES backward): the gradient scales as 1/s."""
    p = planted(VALS, seed=2)
    W = random_symmetric(len(VALS), seed=3)

    def grad_at(s):
        A = (p.A * s).requires_grad_(True)
        L, X = eigrad.eigsh(_op(A), K, solver=solver)
        P = X[:, 1:3] @ X[:, 1:3].T
        (g,) = torch.autograd.grad((W * P).sum() + (L / s).sum(), [A])
        return g * s

    ref = grad_at(1.0)
    torch.testing.assert_close(grad_at(scale), ref, rtol=1e-6, atol=1e-7 * float(ref.abs().max()))


@pytest.mark.parametrize("solver", ["arpack", "lobpcg"])
@pytest.mark.parametrize("b_scale", [1e-200, 1e-20, 1e20, 1e200])
def test_iterative_forward_with_B_at_any_scale(solver, b_scale):
    """B scaled alone: λ/b_scale, B-orthonormal X/√b_scale, and residual norms that match the pairs."""
    from eigrad.eigensolvers import Arpack, LOBPCG

    p = planted(VALS, B="random", seed=4, cond=5.0)
    Bs = p.B * b_scale
    s = (Arpack if solver == "arpack" else LOBPCG)()
    sol = s(_op(p.A), K, B=_op(Bs), n_guard=1)
    torch.testing.assert_close(sol.eigenvalues * b_scale, p.eigenvalues[:K], rtol=1e-9, atol=0)
    X = sol.eigenvectors
    torch.testing.assert_close(X.T @ Bs @ X, torch.eye(K, dtype=torch.float64), rtol=0, atol=1e-9)
    r = torch.linalg.vector_norm(p.A @ X - Bs @ X * sol.eigenvalues, dim=0)
    torch.testing.assert_close(sol.residual_norms, r, rtol=1e-2, atol=1e-9 * float(r.max()))
