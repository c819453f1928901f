"""``torch.autograd.gradcheck`` with ``check_forward_ad=True`` on small cases (float64).

The input is an unconstrained matrix ``M`` and ``A = (M + Mᵀ)/2`` (``B`` the
same way, shifted to stay positive definite), so that gradcheck's entrywise
perturbations stay on symmetric matrices. Non-degenerate spectra: every
output entry is differentiable, eigenvectors after a sign convention.
Degenerate spectra: only gauge-invariant outputs (cluster projectors, cluster
sums of eigenvalues), which stay smooth while gradcheck's steps split the
clusters.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

import eigrad
from eigrad.testing import planted, random_spd

N, K = 6, 3


def _sign_fixed(X):
    # a sign convention that is smooth near the base point: each column's entry of largest |.| is
    # positive (gradcheck's steps are far too small to flip it; d sign = 0, so no detach needed,
    # which would not batch under check_batched_forward_grad)
    idx = X.abs().argmax(dim=-2, keepdim=True)
    return X * torch.sign(torch.gather(X, -2, idx))


def _sym(M):
    return 0.5 * (M + M.transpose(-1, -2))


def _spd_from(M, n):
    return _sym(M) + n * torch.eye(n, dtype=M.dtype)


def _base(spectrum, seed, with_B):
    p = planted(spectrum, seed=seed)
    MA = (p.A + 0.1 * torch.triu(torch.ones(N, N, dtype=torch.float64), 1)).clone()  # not symmetric itself
    MB = None
    if with_B:
        B = random_spd(N, seed=seed + 1, cond=3.0)
        MB = (B - N * torch.eye(N, dtype=torch.float64)).clone()
    return MA, MB


SIMPLE = [0.3, 1.1, 1.9, 3.0, 4.2, 5.5]


@pytest.mark.parametrize("largest", [False, True], ids=["smallest", "largest"])
@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
@pytest.mark.parametrize("method", ["lapack", "dense", "eigh"])
def test_gradcheck_nondegenerate(method, with_B, largest):
    MA, MB = _base(SIMPLE, seed=1, with_B=with_B)

    def f(MA, MB=None):
        A = _sym(MA)
        B = None if MB is None else _spd_from(MB, N)
        if method == "eigh":
            L, X = eigrad.eigh(A, B)
        else:
            L, X = eigrad.eigsh(A, K, B=B, largest=largest, solver=method)
        return L, _sign_fixed(X)

    inputs = (MA.requires_grad_(True),) + ((MB.requires_grad_(True),) if with_B else ())
    # check_batched_grad / check_batched_forward_grad use torch's legacy vmap (torch._vmap_internals),
    # which ignores autograd.Function vmap rules; batching is tested with torch.func in test_dense_func
    # fast mode (random projections u, v: one VJP and one JVP per input) except for one full-Jacobian case
    full = method == "lapack" and with_B and not largest
    assert gradcheck(f, inputs, check_forward_ad=True, fast_mode=not full)


DEGENERATE = [1.0, 1.0, 1.0, 2.0, 2.0, 4.0]  # a triple and a double, k = 5 closes both


@pytest.mark.parametrize("with_B", [False, True], ids=["B=I", "B"])
@pytest.mark.parametrize("method", ["lapack", "dense"])
def test_gradcheck_degenerate_gauge_invariant_outputs(method, with_B):
    MA, MB = _base(DEGENERATE, seed=2, with_B=with_B)

    def f(MA, MB=None):
        A = _sym(MA)
        B = None if MB is None else _spd_from(MB, N)
        L, X = eigrad.eigsh(A, 5, B=B, solver=method)
        P3 = X[:, :3] @ X[:, :3].T  # triple's projector (B-orthogonal projector is P3 B)
        P2 = X[:, 3:5] @ X[:, 3:5].T
        sums = torch.stack([L[:3].sum(), (L[3:5] ** 2).sum()])
        return sums, P3, P2

    inputs = (MA.requires_grad_(True),) + ((MB.requires_grad_(True),) if with_B else ())
    full = method == "lapack" and with_B
    assert gradcheck(f, inputs, check_forward_ad=True, atol=1e-6, rtol=1e-5, fast_mode=not full)


def test_gradcheck_batched_input():
    """A batch ``(2, n, n)`` with a shared ``B`` broadcast over it."""
    MA = torch.stack([_base(SIMPLE, seed=s, with_B=False)[0] for s in (3, 4)])
    MB = _base(SIMPLE, seed=5, with_B=True)[1]

    def f(MA, MB):
        L, X = eigrad.eigsh(_sym(MA), K, B=_spd_from(MB, N), solver="dense")
        return L, _sign_fixed(X)

    assert gradcheck(f, (MA.requires_grad_(True), MB.requires_grad_(True)), check_forward_ad=True, fast_mode=True)
