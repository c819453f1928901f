"""MPI tests of eigrad.petsc (``make test-mpi``): run on every rank by ``mpirun -n P``.

Every test is collective: each rank runs the same tests in the same order,
and verdicts are reduced over the ranks before they are asserted (a rank that
failed alone would leave the others waiting in a collective; the Makefile's
timeout bounds that case anyway).
"""

import pytest

pytest.importorskip("petsc4py", reason="eigrad.petsc needs petsc4py (make test-mpi)")
pytest.importorskip("slepc4py", reason="eigrad.petsc needs slepc4py (make test-mpi)")
pytest.importorskip("mpi4py", reason="eigrad.petsc needs mpi4py (make test-mpi)")
