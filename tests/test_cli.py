"""The command line: ``eigrad demo`` (its numbers, its warning, its exit codes) and ``--help``."""

from __future__ import annotations

import contextlib
import io
import math
import runpy
import sys

import pytest

from eigrad._demo import run_demo
from eigrad.cli import main


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _table_rows(text: str) -> list[tuple[str, list[float]]]:
    """Lines ending in five numbers: eigrad, finite diff., torch, err eigrad, err torch."""
    rows = []
    for line in text.splitlines():
        toks = line.split()
        if len(toks) < 6:
            continue
        try:
            nums = [float(t) for t in toks[-5:]]
        except ValueError:
            continue
        rows.append((" ".join(toks[:-5]), nums))
    return rows


@pytest.fixture(scope="module")
def demo_output():
    return _run(["demo"])


def test_demo_eigrad_column_matches_finite_differences(demo_output):
    rc, out, err = demo_output
    assert rc == 0, err
    rows = _table_rows(out)
    # standard: 2 directions + 2 grid points; generalized: the same + a direction of B
    assert len(rows) == 9, out
    assert any("B + t" in label for label, _ in rows)
    for label, (ours, fd, _torch, err_ours, _err_torch) in rows:
        assert math.isfinite(ours) and math.isfinite(fd) and fd != 0, label
        assert abs(ours - fd) / abs(fd) < 1e-6, (label, ours, fd)
        assert err_ours < 1e-6, label


def test_demo_prints_gauge_warning_and_how_to_read(demo_output):
    _, out, _ = demo_output
    assert "eigrad.GaugeWarning says:" in out
    quoted = " ".join(line[len("    | ") :] for line in out.splitlines() if line.startswith("    | "))
    assert quoted.startswith("eigrad: the gradient does not exist at a degenerate eigenvalue.")
    assert "Degenerate cluster at positions [1, 2]" in quoted
    assert "condition 1 (basis invariance) fails" in quoted
    assert "How to read: err = |value − finite diff.| / |finite diff.|" in out
    assert "Docs:" in out


def test_run_demo_data_small_grid_dense_path():
    # n = 100 < 192: eigsh(solver="auto") takes the dense route here, the CLI default the LAPACK one
    report = run_demo(grid=10, seed=3)
    assert [len(c.rows) for c in report.cases] == [4, 5]
    for case in report.cases:
        vals = case.eigenvalues
        scale = max(abs(v) for v in vals)
        i, j = case.pair
        assert abs(vals[i] - vals[j]) <= 1e-12 * scale  # an exactly degenerate pair
        assert vals[case.k] - vals[case.k - 1] > 1e-3 * scale  # k cuts no level
        for row in case.rows:
            assert row.rel_eigrad < 1e-6, (case.title, row)
    assert "basis invariance" in report.gauge_warning
    assert report.max_rel_eigrad() < 1e-6


def test_run_demo_rejects_bad_grid():
    with pytest.raises(ValueError, match=r"grid must be an int in \[8, 48\]; received 3"):
        run_demo(grid=3)


def test_help_lists_demo(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "usage: eigrad" in out
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    assert "--grid" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert "usage: eigrad" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    rc, _, err = _run(["demo", "--grid", "3"])
    assert rc == 2 and "grid must be an int in [8, 48]" in err


def test_demo_exit_1_when_check_fails():
    # no relative error is below 0: the self-check must fail and say so
    rc, out, err = _run(["demo", "--grid", "8", "--rtol", "0"])
    assert rc == 1
    assert "FAILED: eigrad differs from finite differences" in err
    assert len(_table_rows(out)) == 9


def test_python_m_eigrad_runs_main(monkeypatch, capsys):
    # what `python -m eigrad --help` executes, in process (a subprocess would re-import torch)
    monkeypatch.setattr(sys, "argv", ["eigrad", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("eigrad", run_name="__main__")
    assert exc.value.code == 0
    assert "usage: eigrad" in capsys.readouterr().out
