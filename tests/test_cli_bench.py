"""``eigrad bench``: the report (tables with ratios), the plot (a PNG), peers, caps and usage errors.

Tiny sizes and one thread keep it short; the timings themselves are not
asserted (shared machine), only their consistency: every ratio in a table is
its row's time over the reference row's time.
"""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from eigrad._bench import BenchConfig, _common, _runner
from eigrad.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table of ``text`` as a list of {header: cell} rows."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, (c.strip() for c in row.strip("|").split("|")))))
            tables.append(rows)
    return tables


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc, stdout, _ = _run([
        "bench", "--quick", "--suite", "all", "--sizes", "40,64", "--grid-sizes", "6,7", "--repeats", "1",
        "--threads", "1", "--in-process", "--methods", "eigrad,torch,arpack-scipy,eigrad-arpack,eigrad-lobpcg",
        "--out", str(out),
    ])
    assert rc == 0 and "report.md" in stdout
    return out


def test_report_tables_have_consistent_ratios(report_dir):
    text = (report_dir / "report.md").read_text()
    assert "## Dense partial eigendecomposition" in text and "## Matrix-free forward solvers" in text
    dense, mf = _tables(text)
    assert {(r["n"], r["method"]) for r in dense} == {(n, m) for n in ("40", "64") for m in ("eigrad", "torch")}
    for r in dense:
        ref = next(t for t in dense if t["n"] == r["n"] and t["method"] == "torch")
        ratio = float(r["fwd+bwd s"]) / float(ref["fwd+bwd s"])
        assert float(r["fwd+bwd / torch"]) == pytest.approx(ratio, rel=0.02, abs=2e-3)
        assert float(r["grad rel. diff vs torch"]) < 1e-10  # eigrad's gradient agrees with torch's
    assert {r["method"] for r in mf} == {"arpack-scipy", "eigrad-arpack", "eigrad-lobpcg"}
    for r in mf:
        ref = next(t for t in mf if t["N"] == r["N"] and t["method"] == "arpack-scipy")
        assert float(r["× arpack-scipy"]) == pytest.approx(float(r["wall s"]) / float(ref["wall s"]), rel=0.02, abs=2e-3)
        assert float(r["max rel. residual"]) <= 1e-8
        assert float(r["max rel. Δλ vs ref"]) < 1e-8
    assert "![time against n, log-log](plot.png)" in text


def test_plot_is_a_png(report_dir):
    width, height = _png_size(report_dir / "plot.png")
    assert width > 2 * height > 0  # two panels side by side: dense and matrix-free


@pytest.mark.slow  # ~10 s: a child process's imports, then the cap
def test_child_process_and_cap(tmp_path):
    """The default route (a child per method) reports a size that exceeds --cap and skips the larger ones."""
    rc, _, _ = _run(["bench", "--suite", "matrix-free", "--grid-sizes", "6,32,40", "--methods", "torch-lobpcg",
                     "--cap", "1", "--threads", "1", "--out", str(tmp_path)])
    assert rc == 0
    text = (tmp_path / "report.md").read_text()
    (rows,) = _tables(text)
    by = {r["N"]: r for r in rows}
    assert float(by["6"]["max rel. residual"]) <= 1e-8  # torch.lobpcg over 120 s at 32³ on 2 cores
    assert by["32"]["wall s"].startswith("see note") and by["40"]["wall s"].startswith("see note")
    assert re.search(r"N=32 `torch-lobpcg`: > 1 s \(cap\)", text)
    assert "N=40 `torch-lobpcg`: skipped (stopped at N = 32)" in text


def test_missing_peer_is_skipped_with_a_note(monkeypatch):
    monkeypatch.setattr(_common.importlib.util, "find_spec", lambda name: None)
    methods, notes = _runner._select(["torch", "xitorch", "primme"], BenchConfig())
    assert methods == ["torch"]
    assert len(notes) == 2 and "`xitorch` is not installed" in notes[0] and "pip install primme" in notes[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--suite", "sparse"], "unknown suite 'sparse'"),
        (["--methods", "eigrad,magma"], "unknown method(s) ['magma']"),
        (["--suite", "dense", "--sizes", "10"], "dense sizes must exceed 2·k = 16"),
        (["--suite", "matrix-free", "--grid-sizes", "2"], "grid sizes N need N³ > 2·k"),
    ],
)
def test_usage_errors(argv, message, tmp_path):
    rc, _, err = _run(["bench", *argv, "--out", str(tmp_path / "r")])
    assert rc == 2 and message in err
    assert not (tmp_path / "r").exists()  # rejected before anything ran or was written


def test_size_list_is_parsed(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--sizes", "100,abc"])
    assert exc.value.code == 2 and "comma-separated integers" in capsys.readouterr().err


def test_forward_backward_rows(tmp_path):
    """A forward+backward setup is timed against ARPACK's forward, its split reported, its gradient checked."""
    rc, _, _ = _run(["bench", "--suite", "matrix-free", "--grid-sizes", "6", "--threads", "1", "--in-process",
                     "--methods", "arpack-scipy,eigrad-arpack-fwd+bwd+dst", "--out", str(tmp_path)])
    assert rc == 0
    mf, split = _tables((tmp_path / "report.md").read_text())
    by = {r["method"]: r for r in mf}
    row, ref = by["eigrad-arpack-fwd+bwd+dst"], by["arpack-scipy"]
    assert float(row["× arpack-scipy"]) == pytest.approx(float(row["wall s"]) / float(ref["wall s"]), rel=0.02, abs=2e-3)
    assert float(row["max rel. residual"]) <= 1e-8 and float(row["max rel. Δλ vs ref"]) < 1e-8
    (s,) = split
    assert s["method"] == "eigrad-arpack-fwd+bwd+dst"
    assert float(s["forward s"]) + float(s["backward s"]) == pytest.approx(float(row["wall s"]), rel=0.02, abs=2e-3)
    assert int(s["backward preconditioner applications"]) > 0  # MINRES ran preconditioned
    assert float(s["Hellmann–Feynman error"]) < 1e-10  # ∂Σλ/∂v = Σ_i x_i², through the operator's VJP


def test_pencil_rows_and_thread_counts(tmp_path):
    """The FEM pencil suite: eigrad's defaults forward+backward against scipy's shift-invert, once per thread count."""
    pytest.importorskip("skfem")
    rc, _, _ = _run(["bench", "--suite", "pencil", "--fem-sizes", "8,16", "--threads", "1,2", "-k", "4",
                     "--in-process", "--methods", "scipy-si,eigrad-fwd+bwd", "--out", str(tmp_path)])
    assert rc == 0
    text = (tmp_path / "report.md").read_text()
    assert "## FEM pencils — 1 thread" in text and "## FEM pencils — 2 threads" in text
    tables = _tables(text)
    assert len(tables) == 2
    for rows in tables:
        assert {(r["element"], r["S"], r["method"]) for r in rows} == {
            (e, S, m) for e in ("P1", "P2") for S in ("8", "16") for m in ("scipy-si", "eigrad-fwd+bwd")}
        for r in rows:
            ref = next(t for t in rows if (t["element"], t["S"]) == (r["element"], r["S"]) and t["method"] == "scipy-si")
            assert float(r["× scipy-si"]) == pytest.approx(float(r["wall s"]) / float(ref["wall s"]), rel=0.02, abs=2e-3)
            assert r["n"] == str((int(r["S"]) - 1) ** 2)
            assert float(r["max rel. residual"]) <= 1e-8 and float(r["max rel. Δλ vs ref"]) < 1e-10
            if r["method"] == "eigrad-fwd+bwd":  # its split is reported, and its counts above n = 200 (iterative)
                assert float(r["forward s"]) + float(r["backward s"]) == pytest.approx(float(r["wall s"]), rel=0.02,
                                                                                      abs=2e-3)
                assert int(r["n"]) <= 200 or (int(r["fwd matvecs/solves"]) > 0 and int(r["bwd iterations"]) > 0)


def test_pencil_size_errors(tmp_path):
    rc, _, err = _run(["bench", "--suite", "pencil", "--fem-sizes", "7", "--out", str(tmp_path / "r")])
    assert rc == 2 and "FEM sizes S must be even" in err
