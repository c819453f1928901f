"""Accuracy of second derivatives at and near repeated eigenvalues (the numbers in docs/second_order.md).

Problem (as in tests/test_second_order_degenerate.py): n = 8, k = 4, a planted
triple eigenvalue ``[1, 1+g, 1+2g, 2, 3.5, 4, 5, 6.5]``, loss
``<W, X_G X_Gᵀ> + Σ_{i<k} λ_i²`` (G the triple). Reference: five-point central
differences (h = 1e-4) of the independent closed-form gradient from
``torch.linalg.eigh`` (tests/test_second_order_degenerate.py, ``_gradient_ref``).
Printed, as relative errors of the Hessian-vector product along a random
symmetric direction:

* at the exact triple: eigrad (forward-over-reverse and reverse-over-reverse),
  eigrad with the adapted frame switched off (``Q = I``: the masked formulas
  differentiated in the returned basis), and the same loss through
  ``torch.linalg.eigh``;
* the near-degenerate sweep over the gap ``g``, with and without the
  near-degenerate mask (``near_degenerate_mask``);
* the first-order gradient of the LAPACK route at a triple split by ``g``.

The ablations patch eigrad's internals for the duration of one measurement.

    python benchmarks/degenerate_accuracy.py
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
from torch.func import grad, jvp

import eigrad
import eigrad.autodiff._degenerate as _degenerate
import eigrad.autodiff._dense_function as _dense_function
import eigrad.autodiff._second_order as _second_order
from eigrad.testing import central_difference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_second_order_degenerate import K, _gradient_ref, _problem, _rel  # noqa: E402

G = [0, 1, 2]


def _spec(gap):
    return [1.0, 1.0 + gap, 1.0 + 2 * gap, 2.0, 3.5, 4.0, 5.0, 6.5]


def _loss(solver, W):
    def f(A):
        L, X = eigrad.eigsh(A, K, solver=solver)
        XG = X[:, G]
        return (W * (XG @ XG.T)).sum() + (L**2).sum()

    return f


@contextlib.contextmanager
def _patched(module_attrs):
    saved = [(m, a, getattr(m, a)) for m, a, _ in module_attrs]
    try:
        for m, a, v in module_attrs:
            setattr(m, a, v)
        yield
    finally:
        for m, a, v in saved:
            setattr(m, a, v)


def _identity_frames(T, found, k):
    return torch.diagonal(T, dim1=-2, dim2=-1), torch.eye(k, dtype=T.dtype).expand(T.shape)


NO_FRAME = [(_degenerate, "cluster_frames", _identity_frames), (_dense_function, "cluster_frames", _identity_frames)]
NO_MASK = [(_second_order, "near_degenerate_mask", lambda *a: None),
           (_dense_function, "near_degenerate_mask", lambda *a: None)]


def _hvp_errors(gap, mode="fwd-rev", solver="dense"):
    p, W, V, _ = _problem(_spec(gap), None, seed=5 if gap else 3)
    f = _loss(solver, W)
    if mode == "fwd-rev":
        _, h = jvp(grad(f), (p.A,), (V,))
    else:
        a = p.A.clone().requires_grad_()
        (g,) = torch.autograd.grad(f(a), a, create_graph=True)
        (h,) = torch.autograd.grad((g * V).sum(), a)
    ref = central_difference(lambda a: _gradient_ref(a, None, W, G, K, 2)[0], (p.A,), (V,), h=1e-4)
    return _rel(h, ref)


def main():
    torch.set_num_threads(1)
    print("HVP at the exact triple (relative error vs central differences of the closed-form gradient):")
    print(f"  eigrad, forward-over-reverse       {_hvp_errors(0.0, 'fwd-rev'):.1e}")
    print(f"  eigrad, reverse-over-reverse       {_hvp_errors(0.0, 'rev-rev'):.1e}")
    with _patched(NO_FRAME):
        print(f"  eigrad without the adapted frame   {_hvp_errors(0.0, 'fwd-rev'):.1e}")
    p, W_, V, _ = _problem(_spec(0.0), None, seed=3)

    def f_torch(A):
        L, X = torch.linalg.eigh(0.5 * (A + A.T))
        XG = X[:, G]
        return (W_ * (XG @ XG.T)).sum() + (L[:K] ** 2).sum()

    _, h = jvp(grad(f_torch), (p.A,), (V,))
    ref = central_difference(lambda a: _gradient_ref(a, None, W_, G, K, 2)[0], (p.A,), (V,), h=1e-4)
    print(f"  torch.linalg.eigh                  {_rel(h, ref):.1e}")

    gaps = [1e-2, 1e-4, 1e-6, 3e-7, 2e-7, 1e-7, 1e-8, 1e-12, 0.0]
    print("\nNear-degenerate sweep, forward-over-reverse HVP:")
    print("| gap | " + " | ".join(f"{g:.0e}" if g else "0" for g in gaps) + " |")
    print("|---|" + "---|" * len(gaps))
    with _patched(NO_MASK):
        print("| without the near-degenerate mask | " + " | ".join(f"{_hvp_errors(g):.1e}" for g in gaps) + " |")
    print("| with it | " + " | ".join(f"{_hvp_errors(g):.1e}" for g in gaps) + " |")

    print("\nFirst-order gradient, solver='lapack', triple split by the gap (relative error):")
    for gap in [2.7e-5, 1e-6, 2e-7]:
        p, W_, _, _ = _problem(_spec(gap), None, seed=21)
        a = p.A.clone().requires_grad_()
        L, X = eigrad.eigsh(a, K, solver="lapack")
        (g,) = torch.autograd.grad((W_ * (X[:, G] @ X[:, G].T)).sum() + (L**2).sum(), a)
        print(f"  gap {gap:.1e}: {_rel(g, _gradient_ref(p.A, None, W_, G, K, 2)[0]):.1e}")


if __name__ == "__main__":
    main()
