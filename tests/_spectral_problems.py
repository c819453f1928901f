"""Planted spectra for the spectral-function tests (dense and operator inputs)."""

from __future__ import annotations

import torch

DT = torch.float64


def _orth(n, g):
    Q, R = torch.linalg.qr(torch.randn(n, n, dtype=DT, generator=g))
    return Q * torch.sign(torch.diagonal(R))


def planted(vals, seed=0, generalized=False):
    """``A`` with eigenvalues ``vals`` (of ``A x = λ B x`` with SPD ``B`` when generalized) and ``B`` or None."""
    g = torch.Generator().manual_seed(seed)
    n = len(vals)
    Q = _orth(n, g)
    A = Q @ torch.diag(torch.tensor(vals, dtype=DT)) @ Q.T
    B = None
    if generalized:
        M = torch.randn(n, n, dtype=DT, generator=g)
        Lc = torch.linalg.cholesky(M @ M.T / n + torch.eye(n, dtype=DT))
        A, B = Lc @ A @ Lc.T, Lc @ Lc.T
        B = 0.5 * (B + B.T)
    return 0.5 * (A + A.T), B
