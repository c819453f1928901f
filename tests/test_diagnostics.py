"""eigsh_ex's info object, the public solver options, and progress reporting (issue 12, items 3-4).

References: residuals and gradients recomputed here from the dense matrix and
plain ``eigsh``; the progress display read from stderr (tqdm absent) or from
a fake ``tqdm`` module injected into ``sys.modules``.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

import eigrad
from eigrad import _monitor

DT = torch.float64
N = 300  # above the materialization threshold: ARPACK / LOBPCG forward, MINRES backward


def wells_csr(n: int, values: torch.Tensor | None = None):
    """1D Laplacian + four deep wells (four bound states far below [0, 4]); CSR, values CSR-ordered."""
    pot = 0.05 * torch.cos(torch.arange(n, dtype=DT))
    for j, depth in enumerate((-6.0, -5.0, -4.0, -3.0)):
        pot[(j + 1) * n // 5] += depth
    D = torch.diag(2 + pot) - torch.diag(torch.ones(n - 1, dtype=DT), 1) - torch.diag(torch.ones(n - 1, dtype=DT), -1)
    S = D.to_sparse_csr()
    v = S.values() if values is None else values
    return torch.sparse_csr_tensor(S.crow_indices(), S.col_indices(), v, (n, n)), D, S.values()


def x4(L, X):
    return L.sum() + (X**4).sum()  # gauge invariant at simple eigenvalues


@pytest.fixture(autouse=True)
def no_tqdm(monkeypatch):
    """tqdm absent (None in sys.modules makes the import fail), unless a test injects a fake."""
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)


# eigsh_ex: the info object ---------------------------------------------------


def test_eigsh_ex_on_a_sparse_operator_reports_the_forward_and_the_backward():
    _, D, vals = wells_csr(N)
    v1, v2 = vals.clone().requires_grad_(), vals.clone().requires_grad_()
    # solver='arpack': 'auto' takes shift-invert for this assembled 1-D matrix
    L, X, info = eigrad.eigsh_ex(wells_csr(N, v1)[0], 2, solver="arpack")
    L0, X0 = eigrad.eigsh(wells_csr(N, v2)[0], 2, solver="arpack")
    torch.testing.assert_close(L, L0, rtol=0, atol=0)
    assert isinstance(info, eigrad.EigshInfo)
    assert (info.solver, info.converged, info.status, info.calls) == ("arpack", True, "converged", 1)
    assert info.iterations > 0 and info.matvecs >= info.iterations and info.time > 0
    R = D @ X.detach() - X.detach() * L.detach()
    torch.testing.assert_close(info.residuals, torch.linalg.vector_norm(R, dim=0), rtol=1e-3, atol=1e-14)
    assert info.guard_eigenvalues.shape == (1,) and float(info.guard_eigenvalues[0]) > float(L[-1])
    assert info.backward == []
    x4(L, X).backward()
    x4(L0, X0).backward()
    torch.testing.assert_close(v1.grad, v2.grad, rtol=0, atol=0)  # recording changes nothing
    (solve,) = info.backward
    assert isinstance(solve, eigrad.BackwardSolveInfo)
    assert solve.solver == "minres" and solve.columns == 3  # k + one guard
    assert solve.iterations > 0 and solve.matvecs >= solve.iterations and solve.time > 0
    rtol = eigrad.BackwardOptions().resolved_linsolve_rtol(DT)
    assert solve.residuals.shape == (3,) and bool((solve.residuals <= rtol).all())


@pytest.mark.parametrize(
    "make, n, k, forward, backward",
    [
        ("dense", 300, 3, "lapack", "tridiagonal"),
        ("dense", 60, 3, "dense", "eigenbasis"),
        ("sparse", 150, 2, "dense (materialized)", "eigenbasis"),
    ],
)
def test_eigsh_ex_names_the_direct_routes(make, n, k, forward, backward):
    A, D, _ = wells_csr(n)
    A = (D.clone() if make == "dense" else A).requires_grad_()
    L, X, info = eigrad.eigsh_ex(A, k)
    assert (info.solver, info.converged, info.iterations) == (forward, True, 1)
    assert info.residuals.shape == (k,) and float(info.residuals.max()) < 1e-12
    x4(L, X).backward()
    (solve,) = info.backward
    assert (solve.solver, solve.iterations, solve.matvecs, solve.residuals) == (backward, 0, 0, None)


def test_eigenvalue_only_losses_need_no_backward_solve():
    A, _, _ = wells_csr(N)
    A = A.detach().requires_grad_()
    L, _, info = eigrad.eigsh_ex(A, 2)
    L.sum().backward()
    assert info.backward == []


def test_eigsh_ex_reports_a_non_converged_forward_that_was_allowed_through():
    A, _, _ = wells_csr(N)
    with pytest.warns(eigrad.ConvergenceWarning, match="did not converge"):
        _, _, info = eigrad.eigsh_ex(A, 2, solver=eigrad.solvers.LOBPCG(maxiter=2, on_failure="warn"))
    assert info.solver == "lobpcg" and not info.converged and "did not converge" in info.status
    assert info.iterations == 2


def test_eigsh_ex_under_torch_func_grad():
    _, D, _ = wells_csr(60)
    infos = []

    def f(A):
        L, X, info = eigrad.eigsh_ex(A, 2)
        infos.append(info)
        return x4(L, X)

    g = torch.func.grad(f)(D)
    A = D.clone().requires_grad_()
    L, X = eigrad.eigsh(A, 2)
    x4(L, X).backward()
    torch.testing.assert_close(g, A.grad, rtol=1e-10, atol=1e-12)
    assert infos[0].solver == "dense" and infos[0].backward[0].solver == "eigenbasis"


# Public solver options ---------------------------------------------------------


def test_forward_options_through_the_public_solvers_module():
    assert eigrad.solvers.Arpack is eigrad.eigensolvers.Arpack
    A, D, _ = wells_csr(N)
    loose = eigrad.eigsh_ex(A, 2, solver=eigrad.solvers.Arpack(rtol=1e-4))
    tight = eigrad.eigsh_ex(A, 2, solver=eigrad.solvers.Arpack(rtol=1e-13))
    for (L, X, info), rtol in ((loose, 1e-4), (tight, 1e-13)):
        R = torch.linalg.vector_norm(D @ X - X * L, dim=0)
        assert bool((R <= rtol * L.abs()).all())  # the criterion of eigrad.solvers.IterativeOptions
    assert tight[2].matvecs > loose[2].matvecs
    _, _, info = eigrad.eigsh_ex(A, 2, solver=eigrad.solvers.LOBPCG(rtol=1e-9, block_size=8))
    assert info.solver == "lobpcg" and info.converged


def test_progress_must_be_a_bool():
    A, _, _ = wells_csr(N)
    with pytest.raises(TypeError, match="progress must be a bool"):
        eigrad.eigsh(A, 2, progress="yes")
    with pytest.raises(TypeError, match="progress must be a bool"):
        eigrad.funm(A, torch.exp, 2, progress=1)


# Progress --------------------------------------------------------------------


def test_silent_by_default_and_for_dense_routes(capfd):
    A, D, _ = wells_csr(N)
    v = A.values().clone().requires_grad_()
    L, X = eigrad.eigsh(wells_csr(N, v)[0], 2)
    x4(L, X).backward()
    Dg = D.clone().requires_grad_()
    L, X = eigrad.eigsh(Dg, 3, progress=True)  # dense: nothing iterates, nothing shown
    x4(L, X).backward()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_lines_on_stderr_without_tqdm(capfd, monkeypatch):
    monkeypatch.setattr(_monitor, "INTERVAL", 0.0)  # a line per report
    A, _, vals = wells_csr(N)
    v = vals.clone().requires_grad_()
    L, X = eigrad.eigsh(wells_csr(N, v)[0], 2, solver="arpack", progress=True)
    x4(L, X).backward()
    _, err = capfd.readouterr()
    lines = err.splitlines()
    fwd = [ln for ln in lines if ln.startswith("eigrad forward [arpack]:")]
    bwd = [ln for ln in lines if ln.startswith("eigrad backward [minres]:")]
    assert len(fwd) > 2 and "matvecs" in fwd[0] and fwd[-1].endswith("(done)")
    assert len(bwd) > 2 and bwd[-1].endswith("(done)")
    assert "iteration" in bwd[-1] and "3/3 converged" in bwd[-1] and "worst residual" in bwd[-1]
    _, _, info = eigrad.eigsh_ex(A, 2, solver=eigrad.solvers.LOBPCG(rtol=1e-9), progress=True)
    err = capfd.readouterr()[1]
    last = [ln for ln in err.splitlines() if ln.startswith("eigrad forward [lobpcg]:")][-1]
    assert f"iteration {info.iterations}" in last and "3/3 converged" in last  # k + one guard


def test_progress_lines_are_throttled(capfd, monkeypatch):
    monkeypatch.setattr(_monitor, "INTERVAL", 3600.0)
    A, _, _ = wells_csr(N)
    eigrad.eigsh(A, 2, progress=True)
    lines = capfd.readouterr()[1].splitlines()
    assert len(lines) == 1 and lines[0].endswith("(done)")  # only the closing line


def test_funm_on_an_operator_reports_progress(capfd):
    A, _, vals = wells_csr(N)
    v = vals.clone().requires_grad_()
    F = eigrad.funm(wells_csr(N, v)[0], torch.exp, 2, solver="arpack", progress=True)
    (F * F).sum().backward()
    err = capfd.readouterr()[1]
    assert "eigrad forward [arpack]" in err and "eigrad backward [minres]" in err


class _FakeTqdm:
    bars: list = []

    def __init__(self, desc=None, **kwargs):
        self.desc, self.n, self.postfix, self.closed = desc, 0, "", False
        _FakeTqdm.bars.append(self)

    def update(self, d):
        self.n += d

    def set_postfix_str(self, s, refresh=True):
        self.postfix = s

    def refresh(self):
        pass

    def close(self):
        self.closed = True


def test_progress_uses_tqdm_when_installed(capfd, monkeypatch):
    fake = types.ModuleType("tqdm")
    fake.tqdm = _FakeTqdm
    auto = types.ModuleType("tqdm.auto")
    auto.tqdm = _FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm", fake)
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    monkeypatch.setattr(_FakeTqdm, "bars", [])
    A, _, vals = wells_csr(N)
    v = vals.clone().requires_grad_()
    L, X, info = eigrad.eigsh_ex(wells_csr(N, v)[0], 2, solver=eigrad.solvers.LOBPCG(rtol=1e-9), progress=True)
    x4(L, X).backward()
    fwd, bwd = _FakeTqdm.bars
    assert fwd.desc == "eigrad forward [lobpcg]" and fwd.closed and fwd.n == info.iterations
    assert "3/3 converged" in fwd.postfix and "worst residual" in fwd.postfix
    assert bwd.desc == "eigrad backward [minres]" and bwd.closed and bwd.n == info.backward[0].iterations
    assert capfd.readouterr()[1] == ""  # the bar replaces the stderr lines
