"""examples/mpi/*.py run in-process on every rank (collective; make test-mpi)."""

import importlib.util
import pathlib


def _load(name):
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "mpi" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_potential_fit_decreases_loss_and_gradient_matches_fd():
    losses, rel = _load("potential_fit").main(N=5, k=3, steps=3)
    assert losses[-1] < losses[0], losses
    assert rel < 1e-5, rel
