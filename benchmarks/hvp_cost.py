"""Cost of a Hessian-vector product relative to a gradient (dense partial problem).

The k smallest eigenpairs of a random symmetric (GOE) float64 matrix ``A``
(n x n), loss ``f(A) = sum(Λ²) + tr(Xᵀ W X)`` (gauge-invariant, simple
spectrum). Times, the minimum of ``--repeats`` after one warm-up (machines shared with
other jobs): the forward; the first-order backward alone (fast path); the
backward with ``create_graph=True`` (differentiable path); the second
backward ``grad(<g, V>, A)`` alone; and totals: forward + backward, an HVP
by reverse-over-reverse and by forward-over-reverse
(``torch.func.jvp(torch.func.grad(f), (A,), (V,))``). The HVP is checked against central differences of the
gradient (relative error printed).

Usage::

    python benchmarks/hvp_cost.py --n 1000 --k 8 --solver lapack --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--solver", default="lapack", choices=["lapack", "dense", "auto"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    import torch

    import eigrad

    torch.set_num_threads(args.threads)
    dt = torch.float64
    g = torch.Generator().manual_seed(0)
    n, k = args.n, args.k
    A = torch.randn(n, n, dtype=dt, generator=g)
    A = (A + A.T) / (2 * n) ** 0.5
    W = torch.randn(n, n, dtype=dt, generator=g)
    W = W + W.T
    V = torch.randn(n, n, dtype=dt, generator=g)
    V = V + V.T

    def loss(a):
        L, X = eigrad.eigsh(a, k, solver=args.solver)
        return (L**2).sum() + (W * (X @ X.T)).sum()

    def forward():
        a = A.clone().requires_grad_()
        return a, loss(a)

    a, f = forward()
    (gr,) = torch.autograd.grad(f, a, create_graph=True)

    def backward():  # the fast first-order path (graph of the forward kept, backward repeated)
        return torch.autograd.grad(f, a, retain_graph=True)[0]

    def backward_graph():
        return torch.autograd.grad(f, a, retain_graph=True, create_graph=True)[0]

    def second_backward():  # <g, V> differentiated once more: the extra cost of an HVP
        return torch.autograd.grad((gr * V).sum(), a, retain_graph=True)[0]

    def hvp_rr():
        a, f = forward()
        (g1,) = torch.autograd.grad(f, a, create_graph=True)
        return torch.autograd.grad((g1 * V).sum(), a)[0]

    def grad_total():
        a, f = forward()
        return torch.autograd.grad(f, a)[0]

    def hvp_fr():
        return torch.func.jvp(torch.func.grad(loss), (A,), (V,))[1]

    def timed(fn):
        fn()
        ts = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts)  # shared machines: the least-disturbed run

    h = 1e-6
    ap, am = (A + h * V).requires_grad_(), (A - h * V).requires_grad_()
    gp = torch.autograd.grad(loss(ap), ap)[0]
    gm = torch.autograd.grad(loss(am), am)[0]
    fd = (gp - gm) / (2 * h)
    err_rr = ((hvp_rr() - fd).norm() / fd.norm()).item()
    err_fr = ((hvp_fr() - fd).norm() / fd.norm()).item()

    t_bwd = timed(backward)
    t_tot = timed(grad_total)
    rows = [
        ("forward (eigsh + loss)", timed(lambda: forward()), None),
        ("backward (first order, fast path)", t_bwd, 1.0),
        ("backward, create_graph=True", timed(backward_graph), t_bwd),
        ("second backward (HVP part)", timed(second_backward), t_bwd),
        ("forward + backward", t_tot, None),
        ("HVP rev-over-rev, total", timed(hvp_rr), t_tot),
        ("HVP fwd-over-rev (jvp of grad), total", timed(hvp_fr), t_tot),
    ]
    print(f"n={n} k={k} solver={args.solver} threads={args.threads} repeats={args.repeats}")
    print(f"HVP vs FD of the gradient: rev-over-rev {err_rr:.1e}, fwd-over-rev {err_fr:.1e}")
    print("| computation | time (s) | ratio |")
    print("|---|---|---|")
    for name, t, ref in rows:
        ratio = "" if ref is None else (f"{t / ref:.2f} x backward" if ref is t_bwd else f"{t / ref:.2f} x fwd+bwd")
        if ref == 1.0:
            ratio = "1"
        print(f"| {name} | {t:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
