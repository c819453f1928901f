"""Property tests on hypothesis-generated spectra with planted clusters and gaps (float64).

Each example plants clusters of sizes 1-4 (exact, or spread by 1e-11 so that
the tolerance merges them) separated by gaps of 0.15-2, with ``B = I`` or a
random SPD ``B``, and takes ``k`` = the clusters' total so every cluster is
whole. Properties:

* central finite differences of a gauge-invariant loss (generic and
  cluster-splitting directions);
* Hellmann–Feynman: ``∇_A Σ_{i<k} λ_i = X Xᵀ`` and ``∇_B Σ λ_i = -X Λ Xᵀ``,
  compared with the *planted* eigenvectors (basis invariant for whole
  clusters, so independent of the basis eigrad returns);
* a diagonal potential ``A(v) = A + diag(v)``: ``∇_v Σ λ_i`` is the density
  ``Σ_i x_i ∘ x_i``.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eigrad
from eigrad.testing import central_difference, cluster_direction, invariant_loss, planted, random_symmetric

SETTINGS = settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def clustered_problems(draw):
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=5))
    gaps = draw(st.lists(st.floats(0.15, 2.0), min_size=len(sizes) + 4, max_size=len(sizes) + 4))
    spread = draw(st.sampled_from([0.0, 1e-11]))
    extra = draw(st.integers(1, 6))
    start = draw(st.floats(-3.0, 3.0))
    vals, clusters, level = [], [], start
    for j, s in enumerate(sizes):
        clusters.append(list(range(len(vals), len(vals) + s)))
        vals += [level + spread * i for i in range(s)]
        level += gaps[j]
    k = len(vals)
    for i in range(extra):
        vals.append(level)
        level += gaps[len(sizes) + min(i, 3)]
    return dict(
        vals=vals,
        k=k,
        clusters=clusters,
        with_B=draw(st.booleans()),
        largest=draw(st.booleans()),
        solver=draw(st.sampled_from(["lapack", "dense"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _setup(c):
    vals = [-v for v in c["vals"]] if c["largest"] else c["vals"]  # largest: clusters at the top
    p = planted(vals, B="random" if c["with_B"] else None, seed=c["seed"], cond=5.0)
    n, k = p.n, c["k"]
    sel = slice(n - k, n) if c["largest"] else slice(0, k)
    # cluster positions among the k ascending returned columns
    clusters = [[k - 1 - i for i in reversed(g)] for g in c["clusters"]] if c["largest"] else c["clusters"]
    return p, n, k, sel, clusters


def _eigsh(c, A, B):
    return eigrad.eigsh(A, c["k"], B=B, largest=c["largest"], solver=c["solver"])


@SETTINGS
@given(clustered_problems())
def test_fd_of_invariant_loss(c):
    p, n, k, sel, clusters = _setup(c)
    W = random_symmetric(n, seed=c["seed"] % 1000 + 1)

    def loss(A, B):
        L, X = _eigsh(c, A, B)
        return invariant_loss(L, X, clusters, W)

    A = p.A.clone().requires_grad_(True)
    B = p.B.clone().requires_grad_(True) if c["with_B"] else None
    grads = torch.autograd.grad(loss(A, B), [A] + ([B] if c["with_B"] else []))
    biggest = max(clusters, key=len)  # split the largest cluster (positions among all n)
    EA = random_symmetric(n, seed=2) + cluster_direction(p, [sel.start + i for i in biggest], seed=3)
    fd = central_difference(loss, [p.A, p.B], [EA, None], h=1e-4)
    an = (grads[0] * EA).sum()
    assert abs(float(an - fd)) <= 1e-6 * max(1.0, abs(float(fd))), (float(an), float(fd))
    if c["with_B"]:
        EB = 0.1 * random_symmetric(n, seed=4)
        fd = central_difference(loss, [p.A, p.B], [None, EB], h=1e-4)
        an = (grads[1] * EB).sum()
        assert abs(float(an - fd)) <= 1e-6 * max(1.0, abs(float(fd))), (float(an), float(fd))


@SETTINGS
@given(clustered_problems())
def test_hellmann_feynman(c):
    p, n, k, sel, _ = _setup(c)
    A = p.A.clone().requires_grad_(True)
    B = p.B.clone().requires_grad_(True) if c["with_B"] else None
    L, _ = _eigsh(c, A, B)
    grads = torch.autograd.grad(L.sum(), [A] + ([B] if c["with_B"] else []))
    Xp, Lp = p.eigenvectors[:, sel], p.eigenvalues[sel]  # planted
    torch.testing.assert_close(grads[0], Xp @ Xp.T, rtol=1e-9, atol=1e-9)
    if c["with_B"]:
        torch.testing.assert_close(grads[1], -(Xp * Lp) @ Xp.T, rtol=1e-9, atol=1e-9 * float(Lp.abs().max() + 1))


@SETTINGS
@given(clustered_problems())
def test_diagonal_potential_gradient_is_density(c):
    p, n, k, sel, _ = _setup(c)
    v = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    L, _ = _eigsh(c, p.A + torch.diag(v), p.B)
    (gv,) = torch.autograd.grad(L.sum(), [v])
    Xp = p.eigenvectors[:, sel]
    torch.testing.assert_close(gv, (Xp**2).sum(-1), rtol=1e-9, atol=1e-9)
    # the same through forward mode: d/dt Σλ(A + t diag(u)) = <u, density>
    u = random_symmetric(n, seed=5).diagonal().clone()
    _, t = torch.func.jvp(lambda w: _eigsh(c, p.A + torch.diag(w), p.B).eigenvalues.sum(), (v.detach(),), (u,))
    torch.testing.assert_close(t, (u * (Xp**2).sum(-1)).sum(), rtol=1e-9, atol=1e-9)
