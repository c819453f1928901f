"""torch.compile(fullgraph=True) of the dense eigh/eigsh (eigrad/_compile.py): compiled equals eager.

Backends "eager" and "aot_eager" (seconds); one small "inductor" case. Values and first-order gradients
of gauge-invariant losses are compared with the eager eigrad (itself checked against finite differences
and gradcheck elsewhere); the error cases raise ValueError."""

import warnings

import pytest
import torch

import eigrad
from eigrad.testing import random_hermitian


@pytest.fixture(autouse=True)
def _reset():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _sym(n, batch=(), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(*batch, n, n, dtype=dtype, generator=g)
    return M + M.mH


def _spd(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, dtype=torch.float64, generator=g)
    return M @ M.T + n * torch.eye(n, dtype=torch.float64)


def _compare(f, inputs, backend="eager", **compile_kw):
    xs = [x.clone().requires_grad_() for x in inputs]
    out = torch.compile(f, fullgraph=True, backend=backend, **compile_kw)(*xs)
    grads = torch.autograd.grad(out, xs)
    xs_e = [x.clone().requires_grad_() for x in inputs]
    ref = f(*xs_e)
    grads_e = torch.autograd.grad(ref, xs_e)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for g, ge in zip(grads, grads_e):
        torch.testing.assert_close(g, ge, rtol=1e-9, atol=1e-10)
    return out, grads


def _loss(L, X):
    return L.sum() + (L ** 2).sum() + (X.abs() ** 4).sum()


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_eigsh_compiled_equals_eager(backend, dtype):
    A = _sym(6, (3,), dtype)
    _compare(lambda A: _loss(*eigrad.eigsh(A, 2)), [A], backend)


@pytest.mark.parametrize("largest", [False, True])
def test_eigsh_generalized_largest(largest):
    A, B = _sym(7), _spd(7)
    _compare(lambda A, B: _loss(*eigrad.eigsh(A, 3, B=B, largest=largest)), [A, B])


def test_batched_B_against_one_A():
    A, B = _sym(5), torch.stack([_spd(5, s) for s in (1, 2)])
    _compare(lambda A, B: _loss(*eigrad.eigsh(A, 2, B=B)), [A, B])


@pytest.mark.parametrize("uplo", ["L", "U"])
def test_eigh_uplo_and_complex(uplo):
    A = random_hermitian(5, seed=3)
    junk = 100 * A.abs()  # the unread triangle holds anything
    A = A.tril() + junk.triu(1) if uplo == "L" else A.triu() + junk.tril(-1)
    _compare(lambda A: _loss(*eigrad.eigh(A, UPLO=uplo)), [A])


def test_inductor_and_dynamic_shapes():
    f = lambda A: _loss(*eigrad.eigsh(A, 2))  # noqa: E731
    _compare(f, [_sym(5, (2,))], "inductor")
    torch._dynamo.reset()
    for n in (6, 8):
        _compare(f, [_sym(n, (2,))], "aot_eager", dynamic=True)


def test_degenerate_cluster_same_gradient():
    # a 3-fold eigenvalue kept whole by k: a basis-invariant loss has a gradient (MATH.md), equal to eager's
    g = torch.Generator().manual_seed(5)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=g))
    A = Q @ torch.diag(torch.tensor([1.0, 1.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)) @ Q.T
    f = lambda A: (eigrad.eigsh(A, 3)[1] @ eigrad.eigsh(A, 3)[1].T).diagonal().pow(2).sum() + eigrad.eigsh(A, 4)[0].sum()  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _compare(f, [A])


def test_cut_cluster_warns_at_run_time():
    g = torch.Generator().manual_seed(6)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=g))
    A = (Q @ torch.diag(torch.tensor([1.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)) @ Q.T).requires_grad_()
    out = torch.compile(lambda A: (eigrad.eigsh(A, 1)[1] ** 4).sum(), fullgraph=True, backend="eager")(A)
    with pytest.warns(eigrad.GaugeWarning):
        out.backward()
    B = A.detach().clone().requires_grad_()
    opts = eigrad.BackwardOptions(gauge="raise")
    out = torch.compile(lambda A: eigrad.eigsh(A, 1, backward=opts)[0].sum() + (eigrad.eigsh(A, 1, backward=opts)[1] ** 4).sum(),
                        fullgraph=True, backend="eager")(B)
    with pytest.raises(eigrad.GaugeError):
        out.backward()


def test_input_check_raises_at_run_time():
    A = torch.randn(4, 4, dtype=torch.float64)  # not symmetric
    with pytest.raises(ValueError, match="not symmetric"):
        torch.compile(lambda A: eigrad.eigh(A)[0], fullgraph=True, backend="eager")(A)


@pytest.mark.parametrize("call", [
    lambda A: eigrad.eigsh_ex(A, 2)[0],
    lambda A: eigrad.eigsh(A, 2, progress=True)[0],
    lambda A: eigrad.eigsh(A, 2, solver="lapack")[0],
])
def test_unsupported_under_compile_raise_value_error(call):
    # eigrad raises ValueError while Dynamo traces; with fullgraph=True Dynamo reports it inside its own
    # torch._dynamo.exc.Unsupported (a RuntimeError), the message kept
    with pytest.raises(Exception, match="ValueError.*under torch.compile"):
        torch.compile(call, fullgraph=True, backend="eager")(_sym(5))


def test_second_order_under_compile_raises():
    A = _sym(5).requires_grad_()
    L = torch.compile(lambda A: eigrad.eigsh(A, 2)[0].pow(2).sum(), fullgraph=True, backend="eager")(A)
    (g,) = torch.autograd.grad(L, A, create_graph=True)
    with pytest.raises(ValueError, match="second derivative"):
        g.sum().backward()


def test_opcheck_fake_kernels():
    A = _sym(5, (2,))
    B = _spd(5)
    args = (A, B, 2, False, None, None, "warn", None, None, "eigsh")
    torch.library.opcheck(torch.ops.eigrad.dense_eig.default, args, test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.eigrad.read_triangle.default, (A, "L"))
