"""eigrad/_threads.py: iterative loops run small blocks with one torch thread and scipy's BLAS with one,
and always give the caller's thread counts back (also after an error and after the backward)."""

from __future__ import annotations

import pytest
import torch

import eigrad
from eigrad import _threads


@pytest.fixture
def two_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


def test_small_blocks_run_serial_and_restore(two_threads):
    with _threads.solver_threads(100, 8):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with _threads.solver_threads(_threads.SERIAL_BELOW, 1):  # large blocks keep the caller's count
        assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), _threads.solver_threads(10, 1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 2


def test_blas_limited_inside_the_loops():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg  # noqa: F401 - loads scipy's BLAS

    before = {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}
    with _threads.solver_threads(10**6, 16):
        inside = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    after = {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}
    assert inside and all(t == 1 for t in inside)
    assert after == before


def test_block_columns_counts_the_batch():
    assert _threads.block_columns((3, 4, 50, 50), 5) == 60
    assert _threads.block_columns((50, 50), 0) == 1


def test_eigsh_on_an_operator_restores_threads_after_forward_and_backward(two_threads):
    n = 60
    main = 2.0 * torch.ones(n, dtype=torch.float64)
    off = -torch.ones(n - 1, dtype=torch.float64)
    idx = torch.cat([torch.stack([torch.arange(n), torch.arange(n)]),
                     torch.stack([torch.arange(n - 1), torch.arange(1, n)]),
                     torch.stack([torch.arange(1, n), torch.arange(n - 1)])], dim=1)
    vals = torch.cat([main, off, off]).requires_grad_(True)
    A = torch.sparse_coo_tensor(idx, vals, (n, n))
    L, X = eigrad.eigsh(A, 3, solver="lobpcg")
    assert torch.get_num_threads() == 2
    L.sum().backward()
    assert torch.get_num_threads() == 2
    # Hellmann–Feynman through the stored values: d Σλ / d a_ij = Σ_k x_ik x_jk on the pattern
    Xd = torch.linalg.eigh(A.detach().to_dense())[1][:, :3]
    P = Xd @ Xd.T
    assert torch.allclose(vals.grad, P[idx[0], idx[1]], atol=1e-7)


class _FakeClock:
    """``time.perf_counter`` of eigrad/_threads.py, advanced only by the probe: deterministic timings."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


@pytest.mark.parametrize(("cost_1", "cost_2", "expected"), [(1.0, 0.5, 2), (1.0, 0.9, 1), (0.5, 1.0, 1)])
def test_large_blocks_keep_the_faster_count(two_threads, monkeypatch, cost_1, cost_2, expected):
    """Above SERIAL_BELOW a probe is timed at both counts; the caller's count is kept only when faster by
    PARALLEL_MARGIN (1.3): a 10 % gain keeps one thread."""
    clock = _FakeClock()
    monkeypatch.setattr(_threads, "time", clock)
    calls = []

    def probe():
        calls.append(torch.get_num_threads())
        clock.now += cost_2 if torch.get_num_threads() == 2 else cost_1

    with _threads.solver_threads(_threads.SERIAL_BELOW, 2, probe=probe) as chosen:
        assert chosen == expected == torch.get_num_threads()
    assert sorted(set(calls)) == [1, 2]
    assert torch.get_num_threads() == 2
