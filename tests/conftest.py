"""Shared fixtures for the eigrad test suite.

Problem generators live in :mod:`eigrad.testing` (public, reused by examples
and later tests); this file holds only pytest plumbing.
"""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config):
    # The test problems are small (n <= ~40): intra-op threads only add synchronization, which
    # on a loaded 2-core machine costs ~1 ms per tiny matmul (measured: 7 µs with 1 thread,
    # 1 ms with 2 under load, making eigsh at n=24 20x slower). EIGRAD_TEST_THREADS overrides.
    torch.set_num_threads(int(os.environ.get("EIGRAD_TEST_THREADS", "1")))
    # PyTorch's own forward-AD decompositions call torch.jit.script on first use of torch.func.jvp
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script` is deprecated:DeprecationWarning")

#: the dense forward solvers of ``eigrad.eigsh`` (plus the full ``eigrad.eigh``)
DENSE_SOLVERS = ("lapack", "dense")


@pytest.fixture(params=DENSE_SOLVERS)
def solver(request) -> str:
    """Each dense forward solver in turn."""
    return request.param


@pytest.fixture
def assert_fd_close():
    """``assert_fd_close(analytic, fd, rtol, what)``: scalar directional derivatives agree.

    The tolerance is relative to ``max(|fd|, |analytic|, floor)``, with
    ``floor`` (default 1) the size of the loss's typical derivative, so that
    a direction with a near-zero derivative is not held to a relative bound
    on rounding noise.
    """

    def check(analytic, fd, rtol, what="", floor=1.0):
        a, f = float(analytic), float(fd)
        scale = max(abs(a), abs(f), floor)
        err = abs(a - f) / scale
        assert err <= rtol, (
            f"{what}: analytic {a:.12g} vs finite differences {f:.12g} (rel. err {err:.2e} > {rtol:.0e})"
        )
        return err

    return check


@pytest.fixture
def gen():
    """A fresh seeded ``torch.Generator`` (never the global RNG)."""
    return torch.Generator().manual_seed(1234)
