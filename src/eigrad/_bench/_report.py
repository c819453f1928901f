"""The markdown report (tables with ratios to the reference) and the plot (time vs n, log-log)."""

from __future__ import annotations

from . import _dense, _matrix_free, _pencil
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


def pencil_section(records: list[dict], notes: list[str], k: int) -> list[str]:
    import numpy as np

    notes = list(notes)
    key = lambda r: (r["element"], r["S"])  # noqa: E731
    ref = {key(r): r for r in records if r["method"] == _pencil.REFERENCE and "error" not in r}
    rows = []
    for r in records:
        m = r["method"]
        if "error" in r:
            notes.append(f"{r['element']} S={r['S']} `{m}`: {r['error']}")
            rows.append([r["element"], str(r["S"]), str(r["n"]), m, f"see note {len(notes)}", *[""] * 8])
            continue
        t = ref.get(key(r))
        dl = "-"
        if t and len(t["eigenvalues"]) == len(r["eigenvalues"]):
            a, b = np.array(r["eigenvalues"]), np.array(t["eigenvalues"])
            dl = f"{np.max(np.abs(a - b) / np.abs(b)):.1e}"
        rows.append([
            r["element"], str(r["S"]), str(r["n"]), m, fmt(r["wall"]), fmt(r["wall"] / t["wall"]) if t else "-",
            fmt(r["forward_s"]) if "forward_s" in r else "-", fmt(r["backward_s"]) if "backward_s" in r else "-",
            str(r.get("n_matvec", "-")), str(r.get("bwd_iterations", "-")), f"{r['max_rel_residual']:.1e}", dl,
            f"{r['peak_rss_mb']:.0f}",
        ])
    methods = list(dict.fromkeys(r["method"] for r in records))
    header = ["element", "S", "n", "method", "wall s", "× scipy-si", "forward s", "backward s",
              "fwd matvecs/solves", "bwd iterations", "max rel. residual", "max rel. Δλ vs ref", "peak RSS MB"]
    return [
        "## FEM pencils",
        "",
        f"The k = {k} smallest eigenpairs of `K x = λ M x`: Laplace stiffness and consistent mass of P1 "
        "elements on S × S squares and P2 on S/2 × S/2 (scikit-fem, unit square, Dirichlet boundary condensed; "
        "n = (S-1)² both). Ratios are wall time over scipy's shift-invert forward; eigrad's row is its "
        "forward plus the backward. Peak RSS is the child process's (its sizes run in increasing order).",
        "",
        *[f"- `{m}`: {_pencil.DESCRIPTION[m]}" for m in methods],
        "",
        md_table(header, rows) if rows else "No method ran.",
        *_notes_block(notes),
    ]


#: suite -> (its section, its plot title, the plotted time of a record)
_SECTIONS = {
    "dense": (dense_section, "dense partial: forward + backward", lambda r: r["forward"] + r["backward"]),
    "matrix-free": (matrix_free_section, "matrix-free: forward, or forward+backward (wall)", lambda r: r["wall"]),
    "pencil": (pencil_section, "FEM pencils: peers' forward, eigrad forward+backward (wall)", lambda r: r["wall"]),
}


def write_report(results: dict, cfg, path: str, plot_name: str) -> str:
    """Write the markdown report of ``results`` ((suite, threads) -> (records, notes)) to ``path``."""
    counts = list(dict.fromkeys(t for _, t in results)) or [cfg.threads]
    lines = [
        "# eigrad benchmark report",
        "",
        f"Command: `{cfg.command}`",
        "",
        f"Machine: {machine_line(', '.join(map(str, counts)))}. Wall times on a shared machine are noisy; "
        "compare ratios taken in the same run.",
        "",
    ]
    for t in counts:
        for suite, (section, _, _) in _SECTIONS.items():
            if (suite, t) in results:
                part = section(*results[suite, t], k=cfg.k)
                if len(counts) > 1:
                    part[0] += f" — {t} thread{'s' if t > 1 else ''}"
                lines += part + [""]
    lines += ["## Plot", "", f"![time against n, log-log]({plot_name})", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_plot(results: dict, path: str) -> str:
    """Time against n per method (log-log), one panel per suite (every thread count in it); written with
    matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = [s for s in _SECTIONS if any(key[0] == s for key in results)] or ["dense"]
    counts = list(dict.fromkeys(t for _, t in results))
    fig, axes = plt.subplots(1, len(suites), figsize=(6 * len(suites), 4.5), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        _, title, time_of = _SECTIONS[suite]
        labelled = False
        for t in counts:
            records = [r for r in results.get((suite, t), ([], []))[0] if "error" not in r]
            for m in dict.fromkeys((r["method"], r.get("element")) for r in records):
                pts = sorted((r["n"], time_of(r)) for r in records if (r["method"], r.get("element")) == m)
                label = m[0] + (f" {m[1]}" if m[1] else "") + (f" ({t} thr)" if len(counts) > 1 else "")
                ax.loglog([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
                labelled = True
        ax.set_xlabel("n")
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if labelled:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
