"""Gradients of torch sparse values stay O(nnz) in memory, first and second order (issue 12, item 0).

torch's CSR constructor differentiates its values as
``grad.to_dense().sparse_mask(result).values()`` (an ``n × n`` matrix), and
neither sparse constructor is twice differentiable; eigrad routes the gradient
of a leaf ``values`` tensor around the constructor (``constructor_leaf``).
References: the dense-tensor route on the same matrix, central differences of
the gradient (second order), and peak RSS in a subprocess at a size where an
``n × n`` float64 matrix (80 GB) cannot be allocated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import eigrad

DT = torch.float64


def wells(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(row, col, values)`` of a 1D Dirichlet Laplacian plus a weak random potential and
    four deep wells: four bound states far below the continuum [0, 4], so ARPACK and the
    backward's MINRES converge in few iterations at any n. CSR (row-major) order."""
    g = torch.Generator().manual_seed(seed)
    pot = 0.1 * torch.rand(n, generator=g, dtype=DT)
    for j, depth in enumerate((-6.0, -5.0, -4.0, -3.0)):
        pot[(j + 1) * n // 5] += depth
    i = torch.arange(n)
    rows = torch.cat([i, i[:-1], i[1:]])
    cols = torch.cat([i, i[1:], i[:-1]])
    vals = torch.cat([2 + pot, -torch.ones(2 * (n - 1), dtype=DT)])
    order = torch.argsort(rows * n + cols)
    return rows[order], cols[order], vals[order]


def csr(rows, cols, values, n):
    crow = torch.zeros(n + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return torch.sparse_csr_tensor(crow, cols, values, (n, n))


def loss(L, X):
    return L.sum() + (X**4).sum()  # gauge invariant at simple eigenvalues (column signs)


N_SMALL = 300  # above the materialization threshold: ARPACK forward, MINRES backward


@pytest.fixture(scope="module")
def small():
    rows, cols, vals = wells(N_SMALL)
    dense_v = vals.clone().requires_grad_()
    Ad = torch.zeros(N_SMALL, N_SMALL, dtype=DT).index_put((rows, cols), dense_v, accumulate=True)
    L, X = eigrad.eigsh(Ad, 2)
    (g_ref,) = torch.autograd.grad(loss(L, X), dense_v)
    return rows, cols, vals, g_ref


def test_csr_from_a_leaf_gives_the_gradient_to_the_leaf(small):
    rows, cols, vals, g_ref = small
    v = vals.clone().requires_grad_()
    L, X = eigrad.eigsh(csr(rows, cols, v, N_SMALL), 2)
    loss(L, X).backward()
    assert v.grad is not None and v.grad.layout == torch.strided
    torch.testing.assert_close(v.grad, g_ref, atol=1e-8, rtol=1e-6)


def test_uncoalesced_coo_from_a_leaf_sums_duplicates(small):
    """COO indices in reverse order with every diagonal entry split in two: each stored copy
    gets the gradient of its (i, j) entry."""
    rows, cols, vals, g_ref = small
    diag = rows == cols
    idx = torch.cat([torch.stack([rows, cols]), torch.stack([rows[diag], cols[diag]])], 1).flip(1)
    v = torch.cat([torch.where(diag, 0.25 * vals, vals), 0.75 * vals[diag]]).flip(0).requires_grad_()
    A = torch.sparse_coo_tensor(idx, v, (N_SMALL, N_SMALL))
    L, X = eigrad.eigsh(A, 2)
    loss(L, X).backward()
    expect = torch.cat([g_ref, g_ref[diag]]).flip(0)
    torch.testing.assert_close(v.grad, expect, atol=1e-8, rtol=1e-6)


def test_coo_leaf_and_csr_from_non_leaf_values_still_reach_their_tensors(small):
    rows, cols, vals, g_ref = small
    S = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (N_SMALL, N_SMALL)).coalesce()
    S = S.detach().requires_grad_()  # a leaf sparse tensor: sparse gradient on its pattern
    L, X = eigrad.eigsh(S, 2)
    loss(L, X).backward()
    assert S.grad.layout == torch.sparse_coo
    torch.testing.assert_close(S.grad.coalesce().values(), g_ref, atol=1e-8, rtol=1e-6)
    theta = vals.clone().requires_grad_()
    L, X = eigrad.eigsh(csr(rows, cols, theta * 1.0, N_SMALL), 2)  # constructor's own (dense) backward
    loss(L, X).backward()
    torch.testing.assert_close(theta.grad, g_ref, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("layout", ["csr", "coo"])
def test_second_order_through_sparse_values_matches_central_differences(small, layout):
    """Hessian-vector product of the loss in the values (create_graph through eigsh): torch's
    constructors are not twice differentiable, so this went through eigrad's leaf route only."""
    rows, cols, vals, _ = small
    w = torch.cos(0.02 * (rows + cols).to(DT))  # symmetric: w(i, j) = w(j, i)

    def grad_of(v, create_graph):
        if layout == "csr":
            A = csr(rows, cols, v, N_SMALL)
        else:
            A = torch.sparse_coo_tensor(torch.stack([rows, cols]), v, (N_SMALL, N_SMALL))
        L, X = eigrad.eigsh(A, 2)
        return torch.autograd.grad(loss(L, X), v, create_graph=create_graph)[0]

    v = vals.clone().requires_grad_()
    g = grad_of(v, True)
    assert g.requires_grad
    (hvp,) = torch.autograd.grad((g * w).sum(), v)

    def at(t):
        return grad_of((vals + t * w).requires_grad_(), False)

    h = 1e-3  # five-point stencil of the gradient (central_difference runs under no_grad)
    fd = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)
    torch.testing.assert_close(hvp, fd, atol=1e-6, rtol=1e-5)


def test_csr_from_non_leaf_values_warns_when_its_gradient_would_be_large():
    n = 6000  # a dense float64 gradient of 275 MiB
    rows, cols, vals = wells(n)
    theta = vals.clone().requires_grad_()
    with pytest.warns(UserWarning, match="gh-107381"):
        eigrad.as_operator(csr(rows, cols, theta * 1.0, n))
    eigrad.as_operator(csr(rows, cols, theta, n))  # the leaf route: no warning (pytest: errors on none)


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, warnings
    import torch
    sys.path.insert(0, {tests!r})
    from test_sparse_memory import wells, csr, loss
    import eigrad
    torch.set_num_threads(1)
    n = {n}
    rows, cols, vals = wells(n)
    out = {{}}
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # CSR from a leaf: first order, then second order (create_graph) of the same loss
    v = vals.clone().requires_grad_()
    L, X = eigrad.eigsh(csr(rows, cols, v, n), 2)
    (g,) = torch.autograd.grad(loss(L, X), v, create_graph=True)
    (h,) = torch.autograd.grad((g * torch.linspace(0, 1, g.numel(), dtype=g.dtype)).sum(), v)
    # Hellmann-Feynman at scale: d(λ₀ + λ₁)/dv_e = Σ_j X_ij X_kj for the entry e = (i, k)
    v2 = vals.clone().requires_grad_()
    L2, X2 = eigrad.eigsh(torch.sparse_coo_tensor(torch.stack([rows, cols]), v2, (n, n)), 2)
    L2.sum().backward()
    Xd = X2.detach()
    hf = (Xd[rows] * Xd[cols]).sum(-1)
    out["hf_error"] = float((v2.grad - hf).abs().max())
    out["finite"] = bool(torch.isfinite(g).all() and torch.isfinite(h).all())
    out["peak_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps(out))
    """
)


def test_peak_memory_of_sparse_gradients_is_far_below_a_dense_matrix():
    """n = 100000: a dense n × n float64 gradient is 80 GB (torch's CSR backward allocated it
    and failed); eigrad's first and second order stay within a few hundred MiB of the start."""
    n = 100_000
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    src = os.path.join(os.path.dirname(tests), "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT.format(tests=tests, n=n)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["finite"]
    assert out["hf_error"] < 1e-8
    assert out["peak_mib"] < 1024, out  # 80 000 MiB for one dense gradient
