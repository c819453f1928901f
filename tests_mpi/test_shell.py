"""eigsh(DistributedFunctionOperator, ...) on the SLEPc route: gradients to each rank's parameters vs a gathered
dense single-process reference (torch.linalg.eigh), ghost coupling across ranks, B as a shell, JVP."""

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import eigrad
from eigrad.petsc import DistributedCSR, DistributedFunctionOperator, Slepc, ownership_range

from _problems import (
    WORLD,
    cubic_problem,
    dense_shell_reference,
    distribute,
    global_max,
    global_sum,
    grid_laplacian,
    shell_potential,
)

TIGHT = dict(solver=Slepc(rtol=1e-11), backward=eigrad.BackwardOptions(linsolve_rtol=1e-12))
N = 6
n = N**3


def _theta(seed):
    return np.random.default_rng(seed).uniform(0.0, 1.0, n)


def _local(x, s, e, grad=True):
    return torch.tensor(x[s:e], dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("largest", [False, True])
def test_shell_A_gradient_to_params_matches_dense(largest):
    K, th, k = grid_laplacian(N), _theta(1), 4
    s, e = ownership_range(n)
    c = np.random.default_rng(2).uniform(0.5, 1.5, n)
    wts = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    t = _local(th, s, e)
    A = shell_potential(K, t, scale=2.0)
    if WORLD.size > 1:  # the product reads rows of other ranks (ghost coupling)
        assert global_sum(A.ghosts.size) > 0 and A.ghosts.size > 0
    L, X = eigrad.eigsh(A, k, largest=largest, **TIGHT)
    ((wts * L).sum() + (torch.tensor(c[s:e]).unsqueeze(-1) * X**4).sum()).backward()
    sel = slice(n - k, n) if largest else slice(0, k)
    ct = torch.tensor(c).unsqueeze(-1)
    ref, _ = dense_shell_reference(K, th, lambda Ld, Q: (wts * Ld[sel]).sum() + (ct * Q[:, sel] ** 4).sum(),
                                   scale=2.0)
    err = global_max((t.grad - ref[s:e]).abs().max()) / global_max(ref.abs().max())
    assert err < 1e-9, err


def test_shell_eigenvalues_match_distributed_csr():
    K, th = grid_laplacian(N), _theta(3)
    s, e = ownership_range(n)
    L1, _ = eigrad.eigsh(shell_potential(K, _local(th, s, e, False)), 3, **TIGHT)
    import scipy.sparse as sp

    D, _, _ = distribute((K + sp.diags(th)).tocsr(), requires_grad=False)
    L2, _ = eigrad.eigsh(D, 3, **TIGHT)
    assert float((L1 - L2).abs().max()) < 1e-9


@pytest.mark.parametrize("b_kind", ["shell", "csr"])
def test_shell_A_with_B_gradients_match_dense(b_kind):
    K, th, k = grid_laplacian(N), _theta(4), 3
    KB = 0.05 * grid_laplacian(N)
    phi = np.random.default_rng(5).uniform(0.9, 1.1, n)
    s, e = ownership_range(n)
    c = np.random.default_rng(6).uniform(0.5, 1.5, n)
    wts = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    t = _local(th, s, e)
    A = shell_potential(K, t)
    if b_kind == "shell":
        p = _local(phi, s, e)
        B = shell_potential(KB, p)
    else:
        import scipy.sparse as sp

        B, p, _ = distribute((KB + sp.diags(phi)).tocsr())
    L, X = eigrad.eigsh(A, k, B=B, **TIGHT)
    ((wts * L).sum() + (torch.tensor(c[s:e]).unsqueeze(-1) * X**4).sum()).backward()
    ct = torch.tensor(c).unsqueeze(-1)
    gt, gp = dense_shell_reference(K, th, lambda Ld, Q: (wts * Ld[:k]).sum() + (ct * Q[:, :k] ** 4).sum(),
                                   KB=KB, phi=phi)
    err = global_max((t.grad - gt[s:e]).abs().max()) / global_max(gt.abs().max())
    assert err < 1e-8, err
    if b_kind == "shell":
        errp = global_max((p.grad - gp[s:e]).abs().max()) / global_max(gp.abs().max())
        assert errp < 1e-8, errp


def test_shell_degenerate_triple_projector_loss_matches_dense():
    """A cubic-symmetric potential: λ_1 = λ_2 = λ_3; a loss of the whole cluster's projector is differentiable."""
    A0 = cubic_problem(N)
    K, th = grid_laplacian(N), A0.diagonal() - grid_laplacian(N).diagonal()
    s, e = ownership_range(n)
    c = torch.tensor(np.random.default_rng(7).uniform(0.5, 1.5, n))
    t = _local(th, s, e)
    L, X = eigrad.eigsh(shell_potential(K, t), 4, **TIGHT)
    assert float((L[3] - L[1]).detach()) < 1e-8
    (L.sum() + (c[s:e].unsqueeze(-1) * X[:, 1:4] ** 2).sum()).backward()
    ref, _ = dense_shell_reference(K, th, lambda Ld, Q: Ld[:4].sum() + (c.unsqueeze(-1) * Q[:, 1:4] ** 2).sum())
    err = global_max((t.grad - ref[s:e]).abs().max()) / global_max(ref.abs().max())
    assert err < 1e-7, err


def test_shell_invalid_loss_reported_on_every_rank():
    A0 = cubic_problem(N)
    K, th = grid_laplacian(N), A0.diagonal() - grid_laplacian(N).diagonal()
    s, e = ownership_range(n)
    L, X = eigrad.eigsh(shell_potential(K, _local(th, s, e)), 4, solver="slepc",
                        backward=eigrad.BackwardOptions(gauge="raise"))
    with pytest.raises(eigrad.GaugeError, match="condition 2"):
        L[1].backward()


def test_shell_jvp_matches_reverse_mode():
    K, th, k = grid_laplacian(N), _theta(8), 3
    s, e = ownership_range(n)
    c = torch.tensor(np.random.default_rng(9).uniform(0.5, 1.5, n))
    tan = torch.tensor(np.random.default_rng(10).standard_normal(n))
    ref, _ = dense_shell_reference(K, th, lambda Ld, Q: Ld[:k].sum() + (c.unsqueeze(-1) * Q[:, :k] ** 4).sum())
    with fwAD.dual_level():
        t = fwAD.make_dual(_local(th, s, e, False), tan[s:e])
        L, X = eigrad.eigsh(shell_potential(K, t), k, **TIGHT)
        (Lp, Lt), (Xp, Xt) = fwAD.unpack_dual(L), fwAD.unpack_dual(X)
    assert Lt is not None and Xt is not None
    # dλ_i = Σ_j t_j x_ji² (closed form for a diagonal perturbation)
    dL = torch.from_numpy(np.asarray(WORLD.allreduce(((Xp**2) * tan[s:e].unsqueeze(-1)).sum(0).numpy())))
    assert float((Lt - dL).abs().max()) < 1e-9
    d_loss = float(Lt.sum()) + global_sum(float((c[s:e].unsqueeze(-1) * 4 * Xp**3 * Xt).sum()))
    assert abs(d_loss - float(ref @ tan)) < 1e-8 * float(ref.abs().sum() * tan.abs().max())


def test_shell_rejects_bad_input_on_every_rank():
    with pytest.raises(ValueError, match="params\\[0\\] must be a float64"):
        DistributedFunctionOperator(lambda X, p: X, [torch.zeros(3, dtype=torch.float32)], (8, 8))
    with pytest.raises(ValueError, match="ghosts must be"):
        DistributedFunctionOperator(lambda X, p: X, [torch.zeros(3, dtype=torch.float64)], (8, 8), ghosts=[9])
    with pytest.raises(TypeError, match="DistributedFunctionOperator"):
        eigrad.eigsh(torch.eye(3, dtype=torch.float64), 1, solver="slepc")
