"""PyTorch's own OpInfo tests for ``linalg.eigh`` / ``linalg.eigvalsh``, run through ``eigrad.eigh``.

The samples, the gradcheck wrapper and the output processing are taken from
``torch.testing._internal.common_methods_invocations.op_db``, as PyTorch's
``test_ops.py`` uses them:

* ``sample_inputs_linalg_eigh``: full-rank 5×5 matrices with batch shapes
  ``()``, ``(0,)``, ``(2,)``, ``(1, 1)``, and their ``n = 0`` versions (the
  matrices are not symmetric; each sample carries a random ``UPLO``: the
  derivative checks use it, the forward check runs both ``"L"`` and ``"U"``);
* ``gradcheck_wrapper_hermitian_input``: the derivative checks call the op on
  ``A + Aᴴ`` (finite differences of a raw ``A`` would leave the symmetric
  matrices);
* ``output_process_fn_grad``: ``(L, |X|)``, a function of the outputs that
  does not depend on the eigenvectors' signs (phases).

Every real sample passes forward (against ``torch.linalg.eigh`` on the raw,
non-symmetric input: ``UPLO`` reads one triangle), ``gradcheck`` with
``check_forward_ad=True`` and ``gradgradcheck`` (reverse-over-reverse and
forward-over-reverse), all with batched (vmapped) gradients, which torch's
OpInfo switches off for these two ops. Every complex128 sample passes the same
checks without the batched ones (see ``test_gradcheck``).

The samples are drawn with the global RNGs forked (torch's) and restored
(Python's ``random``, which the sample function uses for ``UPLO``), from
seed 0, so the suite's RNG state is untouched and the samples are fixed.
"""

from __future__ import annotations

import random
import sys
import types
import unittest

import pytest
import torch

import eigrad


def _op_db():
    try:
        import expecttest  # noqa: F401  (a dependency of torch's internal test utilities only)
    except ImportError:
        # torch.testing._internal.common_utils imports it for its TestCase base class; nothing
        # used here needs more than unittest's
        shim = types.ModuleType("expecttest")
        shim.TestCase = unittest.TestCase
        sys.modules["expecttest"] = shim
    from torch.testing._internal.common_methods_invocations import op_db

    return op_db


OPS = {op.name: op for op in _op_db() if op.name in ("linalg.eigh", "linalg.eigvalsh") and not op.variant_test_name}
assert set(OPS) == {"linalg.eigh", "linalg.eigvalsh"}, "torch's OpInfo for linalg.eigh/eigvalsh not found"

#: the double-precision dtypes the OpInfo declares (real, and complex once eigrad supports it)
DTYPES = [d for d in (torch.float64, torch.complex128) if d in OPS["linalg.eigh"].supported_dtypes("cpu")]


def _samples(op, dtype):
    state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            random.seed(0)
            return list(op.sample_inputs("cpu", dtype, requires_grad=True))
    finally:
        random.setstate(state)


def _cases(both: bool):
    return [
        pytest.param(name, dtype, i, uplo, id=f"{name}-{str(dtype)[6:]}-{tuple(s.input.shape)}-{uplo}")
        for name, op in OPS.items()
        for dtype in DTYPES
        for i, s in enumerate(_samples(op, dtype))
        for uplo in (("L", "U") if both else (s.kwargs["UPLO"],))
    ]


#: forward: every sample with both triangles; derivatives: with the sample's own UPLO, as torch runs them
#: (the wrapper's A + Aᴴ is symmetric, so the two triangles give the same numbers)
CASES, GRAD_CASES = _cases(True), _cases(False)


def _eigrad_op(name):
    if name == "linalg.eigh":
        return lambda A, UPLO: tuple(eigrad.eigh(A, UPLO=UPLO))
    return lambda A, UPLO: eigrad.eigh(A, UPLO=UPLO).eigenvalues


def _case(name, dtype, i):
    op = OPS[name]
    sample = _samples(op, dtype)[i]
    return op, sample


@pytest.mark.parametrize("name, dtype, i, uplo", CASES)
def test_forward_matches_torch(name, dtype, i, uplo):
    op, sample = _case(name, dtype, i)
    A = sample.input.detach()  # not symmetric: UPLO decides which triangle is read
    ours = sample.output_process_fn_grad(_eigrad_op(name)(A, UPLO=uplo))
    theirs = sample.output_process_fn_grad(op.op(A, UPLO=uplo))
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


def _checked_fn(name, op, sample, uplo):
    f = _eigrad_op(name)
    return lambda A: sample.output_process_fn_grad(op.gradcheck_wrapper(f, A, UPLO=uplo))


@pytest.mark.parametrize("name, dtype, i, uplo", GRAD_CASES)
def test_gradcheck(name, dtype, i, uplo):
    op, sample = _case(name, dtype, i)
    fn = _checked_fn(name, op, sample, uplo)
    # batched (vmapped) gradients too, which torch's OpInfo switches off for linalg.eigh/eigvalsh. Complex:
    # batched forward grad trips an internal assert in torch's own gradcheck wrapper (input + input.mH,
    # before eigrad is called), and legacy batched cotangents cannot be inspected for the phase check
    # (eigrad says so and points to torch.func: tests/test_complex_dense.py)
    real = not dtype.is_complex
    assert torch.autograd.gradcheck(
        fn, (sample.input,), check_forward_ad=True, check_batched_grad=real, check_batched_forward_grad=real,
    )


@pytest.mark.parametrize("name, dtype, i, uplo", GRAD_CASES)
def test_gradgradcheck(name, dtype, i, uplo):
    op, sample = _case(name, dtype, i)
    fn = _checked_fn(name, op, sample, uplo)
    real = not dtype.is_complex  # batched cotangents and the complex phase check: test_gradcheck
    assert torch.autograd.gradgradcheck(fn, (sample.input,), check_fwd_over_rev=True, check_batched_grad=real)


@pytest.mark.parametrize("uplo", ["L", "U"])
def test_uplo_gradient_is_torchs_symmetric_gradient(uplo):
    """With ``UPLO`` on a non-symmetric ``A`` the gradient is the symmetric gradient of the matrix the
    triangle describes, returned whole (torch's convention), not the derivative of the triangle map."""
    op, sample = _case("linalg.eigh", torch.float64, 0)
    A = sample.input.detach().clone().requires_grad_()
    S = (A.tril() + A.tril(-1).mT if uplo == "L" else A.triu() + A.triu(1).mT).detach().requires_grad_()
    w = torch.arange(1.0, 6.0, dtype=torch.float64)

    def loss(L, X):  # sign-invariant
        return (L * w).sum() + ((X**2) * w[:, None]).sum(-1)[0]

    (gA,) = torch.autograd.grad(loss(*eigrad.eigh(A, UPLO=uplo)), A)
    (gS,) = torch.autograd.grad(loss(*eigrad.eigh(S)), S)
    torch.testing.assert_close(gA, gS, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gA, gA.mT, rtol=0, atol=0)
    # torch.linalg.eigh's gradient is the same symmetric matrix (well-conditioned 5×5: agreement to
    # ~1e-15; the bound is loose so that no BLAS or CPU can change the verdict)
    At = A.detach().clone().requires_grad_()
    (gT,) = torch.autograd.grad(loss(*torch.linalg.eigh(At, UPLO=uplo)), At)
    torch.testing.assert_close(gA, gT, rtol=1e-8, atol=1e-8)
    # the unread triangle may hold anything, NaN included
    An = A.detach().clone()
    hidden = torch.ones(5, 5, dtype=torch.bool).triu(1) if uplo == "L" else torch.ones(5, 5, dtype=torch.bool).tril(-1)
    An[hidden] = float("nan")
    torch.testing.assert_close(eigrad.eigh(An, UPLO=uplo).eigenvalues, eigrad.eigh(S.detach()).eigenvalues)
