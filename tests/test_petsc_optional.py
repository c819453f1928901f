"""eigrad.petsc is optional: eigrad never imports it, and without petsc4py it says how to install it.

The MPI tests of eigrad.petsc itself are in tests_mpi/ (``make test-mpi``).
"""

import importlib.util
import subprocess
import sys

import pytest
import torch

import eigrad

HAVE_PETSC = all(importlib.util.find_spec(m) is not None for m in ("petsc4py", "slepc4py", "mpi4py"))


def test_core_never_imports_the_petsc_backend():
    code = "import eigrad, sys; eigrad.eigsh(__import__('torch').eye(3, dtype=__import__('torch').float64), 1); " \
           "print(any(m.startswith('eigrad.petsc') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(HAVE_PETSC, reason="petsc4py/slepc4py/mpi4py are installed here")
def test_missing_petsc_raises_import_error_with_the_recipe():
    with pytest.raises(ImportError, match=r"(?s)apt-get install python3-petsc4py .*make test-mpi"):
        importlib.import_module("eigrad.petsc")
    with pytest.raises(ImportError, match="PETSC_DIR"):
        eigrad.eigsh(torch.eye(4, dtype=torch.float64), 2, solver="slepc")
