"""Two-stage reduction (sy2sb + sb2st) and LapackSubset(reduction="two-stage")."""

import numpy as np
import pytest
import scipy.linalg
import torch

from eigrad.eigensolvers import _lapack2stage as L2

pytestmark = pytest.mark.skipif(not L2.available(), reason="scipy's OpenBLAS without dsytrd_sy2sb")


@pytest.mark.parametrize("kd", [1, 4, 16])
@pytest.mark.parametrize("n", [5, 40, 150])
def test_sy2sb_sb2st_eigenvalues_and_band(n, kd):
    kd = min(kd, n - 1)
    rng = np.random.default_rng(n + kd)
    A = rng.standard_normal((n, n))
    A = A + A.T
    refl, AB, tau = L2.sy2sb(A, kd)
    d, e = L2.sb2st(AB)
    ref = np.linalg.eigvalsh(A)
    assert np.abs(np.sort(scipy.linalg.eigvalsh_tridiagonal(d, e)) - ref).max() < 1e-12 * np.abs(ref).max()
    # the band is Q1ᵀ A Q1 with Q1 = diag(I_kd, Q') and Q' the geqrf reflectors in refl[kd:, :n-kd]
    Q = torch.eye(n, dtype=torch.float64)
    if n > kd:
        Q[kd:, kd:] = torch.ormqr(torch.from_numpy(refl)[kd:, : n - kd], torch.from_numpy(tau),
                                  torch.eye(n - kd, dtype=torch.float64))
    Bb = (Q.T @ torch.from_numpy(A) @ Q).numpy()
    for i in range(kd + 1):
        np.testing.assert_allclose(AB[i, : n - i], np.diag(Bb, -i), atol=1e-12 * np.abs(A).max())
    assert np.abs(np.tril(Bb, -kd - 1)).max(initial=0) < 1e-12 * np.abs(A).max()
