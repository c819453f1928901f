"""Cost of a Hessian-vector product relative to a gradient (dense partial problem, or the matrix-free one).

Dense (default): the k smallest eigenpairs of a random symmetric (GOE) float64
matrix ``A`` (n x n), loss ``f(A) = sum(Λ²) + tr(Xᵀ W X)`` (gauge-invariant,
simple spectrum), HVP along a random symmetric ``V``.

Matrix-free (``--problem matrix-free``): the benchmark problem of
``eigrad._bench._matrix_free`` (3D 7-point Dirichlet Laplacian on ``N³``
points plus a potential ``v ~ U(0, 100)``, seed 0), ``A(v) = L + diag(v)`` an
:class:`eigrad.FunctionOperator` of ``v``, the k smallest pairs by one of its
forward+backward setups (``--setup``, :data:`FWD_BWD`: forward solver,
forward and backward preconditioners), loss ``f(v) = Σλ² + <w, Σ_i x_i²>``
(a density loss, gauge-invariant; ``w ~ N(0, 1)``), HVP along ``V ~ N(0, 1)``.
The random potential makes the spectrum simple; the smallest relative gap
among the k + 1 smallest eigenvalues (scipy ARPACK on the CSR matrix, outside
the timing) is printed.

Times, the minimum of ``--repeats`` after one warm-up (machines shared with
other jobs): the forward; the first-order backward alone (fast path); the
backward with ``create_graph=True`` (differentiable path); the second
backward ``grad(<g, V>)`` alone; and totals: forward + backward, an HVP
by reverse-over-reverse and by forward-over-reverse
(``torch.func.jvp(torch.func.grad(f), (A,), (V,))``). The HVP is checked
against central differences of the gradient (relative error printed; step
``--fd-step``, default ``1e-6`` for the dense problem and ``1e-3`` for the
matrix-free one, whose potential is O(100) and whose forward and backward
are iterative, solved to ``rtol = 1e-8`` and ``1e-10``: the gradient's error
is about rtol / (relative gap), so the differences' noise grows like
1 / h below ~1e-3). ``--check-rtol 1e-12`` repeats the check with the
forward (and so the backward) solved tighter and prints how far the timed
HVP is from that one.

Usage::

    python benchmarks/hvp_cost.py --n 1000 --k 8 --solver lapack --threads 2
    python benchmarks/hvp_cost.py --problem matrix-free --grid 16 --threads 1 --check-rtol 1e-12
    python benchmarks/hvp_cost.py --n 1000 --k 8 --degenerate 3   # at a triple eigenvalue
"""

from __future__ import annotations

import argparse
import os
import time


def _timed(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)  # shared machines: the least-disturbed run


def _fd_errors(loss, param, V, h):
    """Relative errors of the HVPs of ``loss`` at ``param`` along ``V`` (reverse-over-reverse,
    forward-over-reverse) against central differences of its gradient with step ``h``, and the
    forward-over-reverse HVP."""
    import torch

    ap, am = (param + h * V).requires_grad_(), (param - h * V).requires_grad_()
    gp = torch.autograd.grad(loss(ap), ap)[0]
    gm = torch.autograd.grad(loss(am), am)[0]
    fd = (gp - gm) / (2 * h)
    a = param.clone().requires_grad_()
    (g1,) = torch.autograd.grad(loss(a), a, create_graph=True)
    rr = torch.autograd.grad((g1 * V).sum(), a)[0]
    fr = torch.func.jvp(torch.func.grad(loss), (param,), (V,))[1]
    return ((rr - fd).norm() / fd.norm()).item(), ((fr - fd).norm() / fd.norm()).item(), fr


def _hvp_rows(forward, param, loss, V, repeats):
    """The timed rows ``(name, seconds, reference)`` of one problem; ``forward() -> (leaf, f)``."""
    import torch

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
        return torch.func.jvp(torch.func.grad(loss), (param,), (V,))[1]

    t_bwd = _timed(backward, repeats)
    t_tot = _timed(grad_total, repeats)
    rows = [
        ("forward (eigsh + loss)", _timed(lambda: forward(), repeats), None),
        ("backward (first order, fast path)", t_bwd, 1.0),
        ("backward, create_graph=True", _timed(backward_graph, repeats), t_bwd),
        ("second backward (HVP part)", _timed(second_backward, repeats), t_bwd),
        ("forward + backward", t_tot, None),
        ("HVP rev-over-rev, total", _timed(hvp_rr, repeats), t_tot),
        ("HVP fwd-over-rev (jvp of grad), total", _timed(hvp_fr, repeats), t_tot),
    ]
    return rows, t_bwd


def _print_table(rows, t_bwd):
    print("| computation | time (s) | ratio |")
    print("|---|---|---|")
    for name, t, ref in rows:
        ratio = "" if ref is None else (f"{t / ref:.2f} x backward" if ref is t_bwd else f"{t / ref:.2f} x fwd+bwd")
        if ref == 1.0:
            ratio = "1"
        print(f"| {name} | {t:.3f} | {ratio} |")


def _dense(args):
    import torch

    import eigrad

    dt = torch.float64
    g = torch.Generator().manual_seed(0)
    n, k = args.n, args.k
    A = torch.randn(n, n, dtype=dt, generator=g)
    A = (A + A.T) / (2 * n) ** 0.5
    if args.degenerate > 1:  # the m smallest eigenvalues made exactly equal: the HVP at a repeated eigenvalue
        lam, Q = torch.linalg.eigh(A)
        lam[: args.degenerate] = lam[: args.degenerate].mean()
        A = (Q * lam) @ Q.T
        A = 0.5 * (A + A.T)
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

    err_rr, err_fr, _ = _fd_errors(loss, A, V, args.fd_step or 1e-6)
    rows, t_bwd = _hvp_rows(forward, A, loss, V, args.repeats)
    print(f"n={n} k={k} solver={args.solver} threads={args.threads} repeats={args.repeats}"
          + (f" degenerate={args.degenerate} (exact cluster at the bottom)" if args.degenerate > 1 else ""))
    print(f"HVP vs FD of the gradient: rev-over-rev {err_rr:.1e}, fwd-over-rev {err_fr:.1e}")
    _print_table(rows, t_bwd)


def _laplacian_apply(Lt):
    """``X -> L X`` for the constant symmetric sparse CSR ``Lt`` as an autograd Function.

    torch cannot multiply a sparse CSR tensor by the wrapped tensors of
    ``torch.func`` ("Sparse CSR tensors do not have strides"), which the
    second-order hooks of a FunctionOperator use; inside a Function the
    product sees plain tensors, and ``L`` symmetric makes the VJP and JVP
    the same product (a COO tensor works too but its products are 4-9x
    slower).
    """
    import torch

    class LaplacianApply(torch.autograd.Function):
        @staticmethod
        def forward(X):
            return Lt @ X

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, G):
            return LaplacianApply.apply(G)

        @staticmethod
        def jvp(ctx, T):
            return LaplacianApply.apply(T)

    return LaplacianApply.apply


def _matrix_free(args):
    import numpy as np
    import scipy.sparse.linalg as spla
    import torch

    import eigrad
    from eigrad._bench._matrix_free import FWD_BWD, build_problem, dst_preconditioner, torch_csr

    N, k = args.grid, args.k
    n = N**3
    M, L, v = build_problem(N)
    solver, sig_f, sig_b = FWD_BWD[args.setup]
    pre_f = None if sig_f is None else dst_preconditioner(N, sig_f, args.threads)
    pre_b = None if sig_b is None else dst_preconditioner(N, sig_b, args.threads)
    lap = _laplacian_apply(torch_csr(L))
    g = torch.Generator().manual_seed(0)
    w = torch.randn(n, dtype=torch.float64, generator=g)
    V = torch.randn(n, dtype=torch.float64, generator=g)
    v0 = torch.from_numpy(v)

    def matmat(X, p):  # (n, m) -> (n, m)
        return lap(X) + p.unsqueeze(-1) * X

    def make_loss(solver):
        opts = eigrad.BackwardOptions(linsolve_preconditioner=pre_b)  # MINRES rtol: 1e-2 x the forward's

        def loss(p):
            lam, X = eigrad.eigsh(eigrad.FunctionOperator(matmat, (p,), (n, n)), k, solver=solver,
                                  preconditioner=pre_f, backward=opts)
            return (lam**2).sum() + (w * (X**2).sum(-1)).sum()

        return loss

    loss = make_loss(solver)

    def forward():
        p = v0.clone().requires_grad_()
        return p, loss(p)

    lam = np.sort(spla.eigsh(M, k + 1, which="SA", tol=1e-12, v0=np.ones(n))[0])
    gap = float(np.min(np.diff(lam) / np.abs(lam[1:])))
    h = args.fd_step or 1e-3
    checks = [("default tolerances", *_fd_errors(loss, v0, V, h))]
    if args.check_rtol is not None:  # the same solver, forward and backward solved tighter
        from eigrad.eigensolvers import LOBPCG, Arpack, Primme

        cls = {"arpack": Arpack, "lobpcg": LOBPCG, "primme": Primme}.get(solver, Arpack if pre_f is None else Primme)
        tight = make_loss(cls(rtol=args.check_rtol))
        checks.append((f"forward rtol {args.check_rtol:g}", *_fd_errors(tight, v0, V, h)))
        diff = ((checks[0][3] - checks[1][3]).norm() / checks[1][3].norm()).item()
    rows, t_bwd = _hvp_rows(forward, v0, loss, V, args.repeats)
    print(f"matrix-free N={N} (n={n}) k={k} setup={args.setup} threads={args.threads} repeats={args.repeats}")
    print(f"smallest relative gap among the {k + 1} smallest eigenvalues: {gap:.1e}")
    for name, err_rr, err_fr, _ in checks:
        print(f"HVP vs FD of the gradient (h={h:g}, {name}): rev-over-rev {err_rr:.1e}, fwd-over-rev {err_fr:.1e}")
    if args.check_rtol is not None:
        print(f"HVP at default tolerances vs at forward rtol {args.check_rtol:g}: {diff:.1e}")
    _print_table(rows, t_bwd)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problem", default="dense", choices=["dense", "matrix-free"])
    p.add_argument("--n", type=int, default=1000, help="dense: matrix size")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--solver", default="lapack", choices=["lapack", "dense", "auto"], help="dense: the solver")
    p.add_argument("--degenerate", type=int, default=0,
                   help="dense: make the m smallest eigenvalues exactly equal (m <= k), an HVP at a repeated eigenvalue")
    p.add_argument("--grid", type=int, default=16, help="matrix-free: N, the grid has N³ points")
    p.add_argument("--setup", default="eigrad-arpack-fwd+bwd+dst",
                   help="matrix-free: a forward+backward setup of eigrad._bench._matrix_free.FWD_BWD")
    p.add_argument("--fd-step", type=float, default=None,
                   help="step h of the central differences (default 1e-6 dense, 1e-3 matrix-free)")
    p.add_argument("--check-rtol", type=float, default=None,
                   help="matrix-free: also check the HVP against FD with the forward solved to this rtol")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    if args.problem == "dense":
        _dense(args)
    else:
        from eigrad._bench._matrix_free import FWD_BWD

        if args.setup not in FWD_BWD:
            p.error(f"--setup {args.setup!r}: pass one of {', '.join(FWD_BWD)}")
        _matrix_free(args)


if __name__ == "__main__":
    main()
