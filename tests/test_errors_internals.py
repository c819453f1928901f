"""Errors that used to leak raw internals (aminmax, ArpackError -8, _LinAlgError, a MINRES maxiter after
thousands of iterations on NaN) now say what the user passed and what to do (issue 10, item 6).

Operators, iterative solvers, preconditioners, the operator backward and the spectral functions; the
dense API's messages are in tests/test_errors.py.
"""

from __future__ import annotations

import pytest
import torch

import eigrad
from eigrad.eigensolvers import LOBPCG

D = torch.float64
N = 60
LAP = (torch.diag(torch.full((N,), 2.0, dtype=D)) - torch.diag(torch.ones(N - 1, dtype=D), 1)
       - torch.diag(torch.ones(N - 1, dtype=D), -1))
ITERATIVE = ["lobpcg", "arpack"]


def _op(matmat, params=()):
    return eigrad.FunctionOperator(matmat, params, N, dtype=D)


# --- what matmat returns ------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ITERATIVE)
def test_matmat_returning_numpy(solver):
    op = _op(lambda X: (LAP @ X).numpy())
    with pytest.raises(TypeError, match=r"FunctionOperator's matmat returned a numpy.ndarray, not a torch.Tensor; "
                                        r"matmat must compute A X in torch ops"):
        eigrad.eigsh(op, 2, solver=solver)


def test_custom_operator_returning_numpy_is_named_by_the_probe():
    class Op(eigrad.LinearOperator):
        shape, dtype, device = (N, N), D, torch.device("cpu")

        def matmat(self, X):
            return (LAP @ X).numpy()

        def flatten(self):
            return (), eigrad.operators.OperatorSpec(lambda ts: Op())

    with pytest.raises(TypeError, match=r"A.matmat returned a numpy.ndarray, not a torch.Tensor"):
        eigrad.eigsh(Op(), 2, solver="lobpcg")


def _wrong_for_wide(X):  # right for the probe's 2 columns, wrong for wider blocks
    Y = LAP @ X
    return Y[:, :2] if X.shape[-1] > 2 else Y


@pytest.mark.parametrize("solver", ITERATIVE)
def test_matmat_wrong_shape_only_for_more_columns(solver):
    with pytest.raises(ValueError, match=rf"FunctionOperator's matmat returned shape \({N}, 2\) for X of shape "
                                         rf"\({N}, \d+\); an operator of shape \({N}, {N}\) must return A X with "
                                         r"the shape of X"):
        eigrad.eigsh(_op(_wrong_for_wide), 2, solver=solver)


def test_matmat_wrong_dtype_on_a_later_product():
    def matmat(X):
        Y = LAP @ X
        return Y.float() if X.shape[-1] > 2 else Y

    with pytest.raises(TypeError, match=r"returned dtype torch.float32 for X of dtype torch.float64; the operator "
                                        r"declares torch.float64"):
        eigrad.eigsh(_op(matmat), 2, solver="lobpcg")


# --- the operator's dtype and parameters -----------------------------------------------------------------
def test_function_operator_without_params_needs_dtype():
    with pytest.raises(TypeError, match=r"FunctionOperator has no floating-point parameter to take its dtype "
                                        r"from; pass dtype="):
        eigrad.FunctionOperator(lambda X: LAP @ X, (), N)
    op = eigrad.FunctionOperator(lambda X: LAP @ X, (), N, dtype=D)
    assert op.dtype == D
    torch.testing.assert_close(eigrad.eigsh(op, 2, solver="lobpcg").eigenvalues,
                               torch.linalg.eigvalsh(LAP)[:2], rtol=1e-8, atol=1e-10)


def test_module_operator_without_params_needs_dtype():
    class Fixed(torch.nn.Module):
        def forward(self, X):
            return LAP @ X

    with pytest.raises(TypeError, match=r"ModuleOperator has no floating-point parameter .*pass dtype="):
        eigrad.ModuleOperator(Fixed(), N)
    assert eigrad.ModuleOperator(Fixed(), N, dtype=D).dtype == D


def test_captured_tensor_that_needs_a_gradient():
    v = torch.linspace(0.0, 1.0, N, dtype=D).requires_grad_()
    op = _op(lambda X: LAP @ X + v[:, None] * X)  # v captured, not in params: its gradient would be lost
    with pytest.raises(ValueError, match=r"A.matmat uses a tensor that requires a gradient but is not among the "
                                         r"operator's parameters .*Pass it in params"):
        eigrad.eigsh(op, 2, solver="lobpcg")
    with torch.no_grad():  # no gradient wanted: nothing to report
        eigrad.eigsh(op, 2, solver="lobpcg")
    eigrad.eigsh(_op(lambda X: LAP @ X + v.detach()[:, None] * X), 2, solver="lobpcg")
    # passed in params it gets its gradient
    L, _ = eigrad.eigsh(_op(lambda X, v: LAP @ X + v[:, None] * X, (v,)), 2, solver="lobpcg")
    (g,) = torch.autograd.grad(L.sum(), v)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


# --- preconditioners -------------------------------------------------------------------------------------
def test_preconditioner_matrix_of_the_wrong_size():
    with pytest.raises(ValueError, match=rf"LOBPCG: the preconditioner has shape \({N - 1}, {N - 1}\); it must be "
                                         rf"\(n, n\) = \({N}, {N}\)"):
        eigrad.eigsh(eigrad.as_operator(LAP), 2, solver="lobpcg", preconditioner=torch.eye(N - 1, dtype=D))


def test_preconditioner_callable_returning_the_wrong_shape():
    with pytest.raises(ValueError, match=rf"LOBPCG: the preconditioner returned shape \({N - 1}, \d+\) for input "
                                         rf"\({N}, \d+\); it must map"):
        eigrad.eigsh(eigrad.as_operator(LAP), 2, solver="lobpcg", preconditioner=lambda X: X[:-1])


def test_backward_preconditioner_of_the_wrong_size():
    v = torch.linspace(0.0, 1.0, N, dtype=D).requires_grad_()
    op = _op(lambda X, v: LAP @ X + v[:, None] * X, (v,))
    opts = eigrad.BackwardOptions(linsolve_preconditioner=torch.eye(N - 1, dtype=D))
    _, X = eigrad.eigsh(op, 2, solver="lobpcg", backward=opts)
    with pytest.raises(ValueError, match=rf"BackwardOptions\(linsolve_preconditioner=...\) has shape "
                                         rf"\({N - 1}, {N - 1}\); it must be \(n, n\) = \({N}, {N}\)"):
        (X[:5] ** 2).sum().backward()


# --- non-finite values during an iteration and in the backward ---------------------------------------------
def _nan_after(calls: int):
    count = {"n": 0}

    def matmat(X):
        count["n"] += 1
        Y = LAP @ X
        return Y * float("nan") if count["n"] > calls else Y

    return matmat


@pytest.mark.parametrize("solver, where", [("arpack", r"at operator application \d+ of the eigensolver"),
                                           ("lobpcg", r"at LOBPCG iteration \d+")])
def test_nan_in_operator_output_mid_iteration(solver, where):
    with pytest.raises(ValueError, match=r"A.matmat returned NaN or inf " + where):
        eigrad.eigsh(_op(_nan_after(5)), 2, solver=solver)


def test_inf_in_preconditioner_output_is_named():
    count = {"n": 0}

    def T(X):
        count["n"] += 1
        return X * float("inf") if count["n"] > 3 else X

    with pytest.raises(ValueError, match=r"the preconditioner returned NaN or inf at LOBPCG iteration \d+"):
        eigrad.eigsh(eigrad.as_operator(LAP), 2, solver="lobpcg", preconditioner=T)


def test_nan_cotangent_in_operator_backward_is_reported_at_once():
    v = torch.linspace(0.0, 1.0, N, dtype=D).requires_grad_()
    op = _op(lambda X, v: LAP @ X + v[:, None] * X, (v,))
    _, X = eigrad.eigsh(op, 2, solver="lobpcg")
    with pytest.raises(ValueError, match=r"right-hand sides with NaN or inf: the cotangents reaching eigsh .* are "
                                         r"not finite"):
        (X * torch.full_like(X, float("nan"))).sum().backward()


# --- solver choice --------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["lobpcg", "arpack", LOBPCG()], ids=["lobpcg", "arpack", "LOBPCG()"])
def test_dense_tensor_with_an_iterative_solver_says_as_operator(solver):
    with pytest.raises(ValueError, match=r"is an iterative eigensolver for operators, and A is a dense tensor; "
                                         r"wrap it: eigrad.eigsh\(eigrad.as_operator\(A\), k, solver="):
        eigrad.eigsh(LAP, 2, solver=solver)


# --- sqrtm / powm at rank-deficient PSD matrices ------------------------------------------------------------
def _rotated(evals, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(evals), len(evals), generator=g, dtype=D))
    return Q, (Q * torch.tensor(evals, dtype=D)) @ Q.mT


@pytest.mark.parametrize("fn", [eigrad.sqrtm, lambda A: eigrad.powm(A, 0.5), lambda A: eigrad.powm(A, 1.5)],
                         ids=["sqrtm", "powm-0.5", "powm-1.5"])
def test_semidefinite_rank_deficient_is_accepted(fn):
    # exact: eigh of a diagonal matrix returns its entries, so λ = -1e-16 reaches the domain check
    P = torch.diag(torch.tensor([-1e-16, 1.0, 4.0], dtype=D))
    F = fn(P)
    assert F[0, 0] == 0.0  # clamped to 0
    _, P = _rotated([0.0, 0.0, 1.0, 2.0, 3.0])  # rounding gives zero eigenvalues of either sign
    F = fn(P)
    assert torch.isfinite(F).all()
    if fn is eigrad.sqrtm:
        torch.testing.assert_close(F @ F, P, rtol=0, atol=1e-13)


def test_clearly_negative_eigenvalue_is_still_rejected():
    P = torch.diag(torch.tensor([-1e-10, 1.0, 4.0], dtype=D))
    with pytest.raises(ValueError, match=r"sqrtm needs a positive semidefinite A .*within 16·n·eps·max\|λ\| of 0 "
                                         r"are taken as 0.*λ\[0\] = -1e-10"):
        eigrad.sqrtm(P)


def test_sqrtm_derivative_at_a_zero_eigenvalue():
    Q, P = _rotated([0.0, 0.0, 1.0, 2.0, 3.0])
    Qr = Q[:, 2:]  # the range of P
    C = torch.tensor([[1.0, 0.3, -0.2], [0.3, 2.0, 0.5], [-0.2, 0.5, -1.0]], dtype=D)
    W = Qr @ C @ Qr.mT  # a cotangent that does not see the null space
    A = P.clone().requires_grad_()
    (g,) = torch.autograd.grad((eigrad.sqrtm(A) * W).sum(), A)
    # the derivative exists (the loss is smooth along directions inside the range): central FD
    E = Qr @ torch.tensor([[0.5, 1.0, 0.0], [1.0, -0.3, 0.2], [0.0, 0.2, 0.7]], dtype=D) @ Qr.mT
    h = 1e-6
    fd = ((eigrad.sqrtm(P + h * E) * W).sum() - (eigrad.sqrtm(P - h * E) * W).sum()) / (2 * h)
    torch.testing.assert_close((g * E).sum(), fd, rtol=1e-7, atol=1e-9)
    # a loss that sees the null space: √ has an infinite slope at 0, no derivative
    A = P.clone().requires_grad_()
    with pytest.raises(ValueError, match=r"the derivative of X sqrt\(Λ\) Xᵀ does not exist here: A is singular"):
        eigrad.sqrtm(A).trace().backward()
    with pytest.raises(ValueError, match=r"does not exist here"):
        torch.func.jvp(eigrad.sqrtm, (P,), (torch.eye(5, dtype=D),))


@pytest.mark.parametrize("solver", ["auto", "lobpcg"])
def test_nan_when_a_small_operator_is_materialized(solver):
    # n = 8: "auto" materializes the operator, LOBPCG falls back to the dense solve; the probe (2 columns)
    # is finite, the 8 identity columns are not
    M = LAP[:8, :8]

    def matmat(X):
        return M @ X if X.shape[-1] <= 2 else (M @ X) / 0.0

    op = eigrad.FunctionOperator(matmat, (), 8, dtype=D)
    with pytest.raises(ValueError, match=r"A.matmat returned NaN or inf when the operator was materialized"):
        eigrad.eigsh(op, 2, solver=solver)
