"""Accuracy of eigrad's derivatives of complex Hermitian problems, per dense route (docs/math.md).

The problems and losses of tests/test_complex_dense.py (complex128, n = 10,
k = 7, a planted double and triple eigenvalue inside k, B = I and a random
Hermitian positive definite B, smallest and largest): for each route
(``eigsh(solver="lapack")``, ``eigsh(solver="dense")``, ``eigh``) the largest
relative error over random Hermitian directions and cluster-splitting ones of

* the VJP and the JVP against five-point central differences (h = 1e-4) of the
  gauge-invariant loss ``Σ (λ² + sin λ) + Σ_g Re tr(W P_g)/(1+g) + Σ |x_iᴴ c|²``;
* the gradient and JVP against ``torch.linalg.eigh``'s complex autograd
  (Cholesky + eigh for B ≠ I) at a simple spectrum (k = n);
* the Hessian-vector product at the clusters (forward-over-reverse) against
  central differences (h = 1e-3) of eigrad's gradient;
* complex64 against complex128 (the gradient of the same loss).

    python benchmarks/complex_accuracy.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_complex_dense as t  # noqa: E402


def _rel(a, b, floor=1.0):
    return abs(float(a) - float(b)) / max(abs(float(a)), abs(float(b)), floor)


def fd_errors(method, with_B, largest):
    vals = [-v for v in t.SPECTRUM] if largest else t.SPECTRUM
    A0, B0, X0 = t.planted(vals, with_B=with_B, seed=3 + 2 * largest + with_B)
    gen = t._gen(40 + with_B)
    W, c = t.random_hermitian(t.N, gen), torch.randn(t.N, dtype=t.CT, generator=gen)
    clusters = [sorted(t.K - 1 - i for i in g) for g in t.CLUSTERS] if largest else t.CLUSTERS

    def loss(A, B):
        L, X = t.decompose(method, A, B, t.K, largest)
        return t.invariant_loss(L, X, clusters, W, c)

    A = A0.clone().requires_grad_(True)
    B = B0.clone().requires_grad_(True) if with_B else None
    grads = torch.autograd.grad(loss(A, B), [A] + ([B] if with_B else []))
    BX0 = X0 if B0 is None else B0 @ X0
    offset = t.N - t.K if largest else 0
    multi = [[offset + i for i in g] for g in clusters if len(g) > 1]
    dirs = [(t.random_hermitian(t.N, gen), None) for _ in range(2)]
    dirs += [(t.cluster_direction(BX0, g, gen), None) for g in multi]
    if with_B:
        dirs += [(None, 0.2 * t.random_hermitian(t.N, gen)), (None, 0.2 * t.cluster_direction(BX0, multi[-1], gen))]
    e_vjp = e_jvp = 0.0
    for EA, EB in dirs:
        ref = t.fd(loss, [A0, B0], [EA, EB])
        vjp = (0 if EA is None else t.inner(grads[0], EA)) + (0 if EB is None else t.inner(grads[1], EB))
        zA = torch.zeros_like(A0) if EA is None else EA
        if with_B:
            jvp = torch.func.jvp(loss, (A0, B0), (zA, torch.zeros_like(B0) if EB is None else EB))[1]
        else:
            jvp = torch.func.jvp(lambda A: loss(A, None), (A0,), (zA,))[1]
        e_vjp, e_jvp = max(e_vjp, _rel(vjp, ref)), max(e_jvp, _rel(jvp, ref))
    return e_vjp, e_jvp


def torch_errors(method, with_B):
    n = 8
    gen = t._gen(14)
    A0 = t.random_hermitian(n, gen)
    B0 = t.random_hpd(n, gen) if with_B else None
    w = torch.randn(n, dtype=torch.float64, generator=gen)
    Cm = torch.randn(n, n, dtype=t.CT, generator=gen)

    def torch_eigh(A, B):
        if B is None:
            return torch.linalg.eigh(A)
        Lc = torch.linalg.cholesky(B)
        C = torch.linalg.solve_triangular(Lc, torch.linalg.solve_triangular(Lc, A, upper=False).mH, upper=False)
        L, V = torch.linalg.eigh(C)
        return L, torch.linalg.solve_triangular(Lc.mH, V, upper=True)

    def loss(eig, A):
        L, X = eig(A, B0)
        return (L * w).sum() + ((X.mH @ Cm).abs() ** 2).sum()

    ours = lambda A, B: t.decompose(method, A, B, n)  # noqa: E731
    g1, g2 = torch.func.grad(lambda A: loss(ours, A))(A0), torch.func.grad(lambda A: loss(torch_eigh, A))(A0)
    V = t.random_hermitian(n, gen)
    j1 = torch.func.jvp(lambda A: loss(ours, A), (A0,), (V,))[1]
    j2 = torch.func.jvp(lambda A: loss(torch_eigh, A), (A0,), (V,))[1]
    return float((g1 - g2).abs().max() / g2.abs().max()), _rel(j1, j2)


def hvp_error(method, with_B):
    A0, B0, _ = t.planted(t.SPECTRUM, with_B=with_B, seed=30 + with_B)
    gen = t._gen(31)
    W, c = t.random_hermitian(t.N, gen), torch.randn(t.N, dtype=t.CT, generator=gen)

    def loss(A):
        L, X = t.decompose(method, A, B0, t.K)
        return t.invariant_loss(L, X, t.CLUSTERS, W, c) + L[3:6].sum() ** 2

    grad = torch.func.grad(loss)
    V = t.random_hermitian(t.N, gen)
    ref = t.fd(grad, [A0], [V], h=1e-3)
    hv = torch.func.jvp(grad, (A0,), (V,))[1]
    return float((hv - ref).abs().max() / ref.abs().max())


def complex64_error(method):
    A0, B0, _ = t.planted(t.SPECTRUM, with_B=True, seed=70)
    gen = t._gen(71)
    W, c = t.random_hermitian(t.N, gen), torch.randn(t.N, dtype=t.CT, generator=gen)

    def g(dtype):
        A = A0.to(dtype).requires_grad_(True)
        L, X = t.decompose(method, A, B0.to(dtype), t.K)
        return torch.autograd.grad(t.invariant_loss(L, X, t.CLUSTERS, W.to(dtype), c.to(dtype)), A)[0]

    g32, g64 = g(torch.complex64), g(t.CT)
    return float((g32.to(t.CT) - g64).abs().max() / g64.abs().max())


def main():
    print("complex128, n=10, k=7, double + triple eigenvalue inside k; relative errors")
    print(f"{'route':8} {'B':4} {'end':9} {'VJP vs FD':>10} {'JVP vs FD':>10}")
    for method in t.SOLVERS:
        for with_B in (False, True):
            for largest in (False, True):
                ev, ej = fd_errors(method, with_B, largest)
                print(f"{method:8} {'B' if with_B else 'I':4} {'largest' if largest else 'smallest':9} "
                      f"{ev:10.1e} {ej:10.1e}")
    print("\nsimple spectrum (n=8, k=n) against torch.linalg.eigh autograd; HVP at the clusters vs FD")
    print(f"{'route':8} {'B':4} {'grad':>9} {'JVP':>9} {'HVP':>9}")
    for method in t.SOLVERS:
        for with_B in (False, True):
            eg, ej = torch_errors(method, with_B)
            eh = hvp_error(method, with_B) if method != "eigh" else float("nan")
            print(f"{method:8} {'B' if with_B else 'I':4} {eg:9.1e} {ej:9.1e} {eh:9.1e}")
    print("\ncomplex64 vs complex128 gradient (B ≠ I, clusters):",
          ", ".join(f"{m} {complex64_error(m):.1e}" for m in t.SOLVERS))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
