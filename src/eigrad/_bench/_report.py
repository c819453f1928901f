"""The markdown report (tables with ratios to the reference) and the plot (time vs n, log-log)."""

from __future__ import annotations

from . import _dense, _matrix_free
from ._common import fmt, machine_line, md_table


def _notes_block(notes: list[str]) -> list[str]:
    return ["", "Notes:", "", *[f"{i}. {n}" for i, n in enumerate(notes, 1)]] if notes else []


def dense_section(records: list[dict], notes: list[str], k: int) -> list[str]:
    notes = list(notes)
    ref = {r["n"]: r for r in records if r["method"] == _dense.REFERENCE and "error" not in r}
    rows = []
    for r in records:
        n, m = r["n"], r["method"]
        if "error" in r:
            notes.append(f"n={n} `{m}`: {r['error']}")
            rows.append([str(n), m, f"see note {len(notes)}", *[""] * 6])
            continue
        f, b, t = r["forward"], r["backward"], ref.get(n)
        rows.append([
            str(n), m, fmt(f), fmt(b), fmt(f + b),
            fmt((f + b) / (t["forward"] + t["backward"])) if t else "-", fmt(f / t["forward"]) if t else "-",
            fmt(b / f), f"{r['grad_err']:.1e}" if "grad_err" in r else "-",
        ])
    methods = list(dict.fromkeys(r["method"] for r in records))
    header = ["n", "method", "forward s", "backward s", "fwd+bwd s", "fwd+bwd / torch", "fwd / torch fwd",
              "bwd / fwd", "grad rel. diff vs torch"]
    return [
        "## Dense partial eigendecomposition",
        "",
        f"The k = {k} smallest eigenpairs of a random symmetric float64 n × n matrix, forward (solver + the "
        "gauge-invariant loss Σλ + tr(Xᵀ W X)) and backward (`torch.autograd.grad` to A), median of the "
        "timed runs after a warm-up. Ratios are to `torch.linalg.eigh` (full decomposition, autograd).",
        "",
        *[f"- `{m}`: {_dense.DESCRIPTION[m]}" for m in methods],
        "",
        md_table(header, rows) if rows else "No method ran.",
        *_notes_block(notes),
    ]


def matrix_free_section(records: list[dict], notes: list[str], k: int) -> list[str]:
    import numpy as np

    notes = list(notes)
    ref = {r["N"]: r for r in records if r["method"] == _matrix_free.REFERENCE and "error" not in r}
    rows = []
    for r in records:
        N, m = r["N"], r["method"]
        if "error" in r:
            notes.append(f"N={N} `{m}`: {r['error']}")
            rows.append([str(N), str(N**3), m, f"see note {len(notes)}", *[""] * 5])
            continue
        t = ref.get(N)
        dl = "-"
        if t and len(t["eigenvalues"]) == len(r["eigenvalues"]):
            a, b = np.array(r["eigenvalues"]), np.array(t["eigenvalues"])
            dl = f"{np.max(np.abs(a - b) / np.abs(b)):.1e}"
        rows.append([
            str(N), str(N**3), m, fmt(r["wall"]), fmt(r["wall"] / t["wall"]) if t else "-", fmt(r["cpu"]),
            str(r.get("n_matvec", "-")), f"{r['max_rel_residual']:.1e}", dl,
        ])
    methods = list(dict.fromkeys(r["method"] for r in records))
    header = ["N", "n = N³", "method", "wall s", "× arpack-scipy", "cpu s", "matvecs", "max rel. residual",
              "max rel. Δλ vs ref"]
    return [
        "## Matrix-free forward solvers",
        "",
        f"The k = {k} smallest eigenpairs of the 3D 7-point Dirichlet Laplacian plus a random diagonal "
        f"potential on N³ grid points, relative residual ≤ {_matrix_free.RTOL:g} per pair (the residual column "
        "is recomputed from the returned pairs). Ratios are wall time over scipy's ARPACK on the CSR matrix; "
        "a forward+backward row (`*fwd+bwd*`) times eigrad's forward and gradient against ARPACK's forward alone.",
        "",
        *[f"- `{m}`: {_matrix_free.DESCRIPTION[m]}" for m in methods],
        "",
        md_table(header, rows) if rows else "No method ran.",
        *_fwd_bwd_block(records),
        *_notes_block(notes),
    ]


def _fwd_bwd_block(records: list[dict]) -> list[str]:
    """The forward/backward split of the forward+backward rows, if any ran."""
    rows = [
        [str(r["N"]), r["method"], fmt(r["forward_s"]), fmt(r["backward_s"]), str(r["bwd_A_applications"]),
         str(r["bwd_M_applications"]), f"{r['hellmann_feynman_err']:.0e}"]
        for r in records if r["method"] in _matrix_free.FWD_BWD and "error" not in r
    ]
    header = ["N", "method", "forward s", "backward s", "backward operator products", "backward preconditioner "
              "applications", "Hellmann–Feynman error"]
    return ["", "Forward+backward rows, split:", "", md_table(header, rows)] if rows else []


def write_report(results: dict, cfg, path: str, plot_name: str) -> str:
    """Write the markdown report of ``results`` (suite -> (records, notes)) to ``path``."""
    lines = [
        "# eigrad benchmark report",
        "",
        f"Command: `{cfg.command}`",
        "",
        f"Machine: {machine_line(cfg.threads)}. Wall times on a shared machine are noisy; compare ratios "
        "taken in the same run.",
        "",
    ]
    if "dense" in results:
        lines += dense_section(*results["dense"], k=cfg.k) + [""]
    if "matrix-free" in results:
        lines += matrix_free_section(*results["matrix-free"], k=cfg.k) + [""]
    lines += ["## Plot", "", f"![time against n, log-log]({plot_name})", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_plot(results: dict, path: str) -> str:
    """Time against n per method (log-log), one panel per suite; written with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (suite, title, key)
        for suite, title, key in (
            ("dense", "dense partial: forward + backward", lambda r: r["forward"] + r["backward"]),
            ("matrix-free", "matrix-free: forward, or forward+backward (wall)", lambda r: r["wall"]),
        )
        if suite in results
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (suite, title, key) in zip(axes[0], panels):
        records = [r for r in results[suite][0] if "error" not in r]
        for m in dict.fromkeys(r["method"] for r in records):
            pts = sorted((r["n"], key(r)) for r in records if r["method"] == m)
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], "o-", label=m)
        ax.set_xlabel("n")
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if records:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
