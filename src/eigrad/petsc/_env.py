"""The optional imports of :mod:`eigrad.petsc` (petsc4py, slepc4py, mpi4py), with the recipe when missing."""

from __future__ import annotations

RECIPE = (
    "eigrad.petsc needs petsc4py, slepc4py and mpi4py (real float64 PETSc/SLEPc). On Debian/Ubuntu:\n"
    "  apt-get install python3-petsc4py python3-slepc4py python3-mpi4py openmpi-bin libopenmpi-dev\n"
    "  /usr/bin/python3 -m venv --system-site-packages .venv-mpi   # Debian's own Python: its .pth files\n"
    "  .venv-mpi/bin/pip install torch==2.13.0 'numpy<2' 'scipy<1.16' && .venv-mpi/bin/pip install -e .\n"
    "  export PETSC_DIR=/usr/lib/petscdir/petsc3.18/x86_64-linux-gnu-real\n"
    "  export SLEPC_DIR=/usr/lib/slepcdir/slepc3.18/x86_64-linux-gnu-real\n"
    "(`make test-mpi` does all of this). With numpy 2: pip install petsc petsc4py slepc slepc4py mpi4py "
    "(source builds, ~20 min; docs/scaleout.md)."
)


def import_backend():
    """``(PETSc, SLEPc, MPI)``, or ImportError with the install recipe."""
    try:
        from mpi4py import MPI
        from petsc4py import PETSc
        from slepc4py import SLEPc
    except ImportError as err:
        raise ImportError(f"{err}. {RECIPE}") from err
    if PETSc.ScalarType().dtype.kind != "f" or PETSc.ScalarType().dtype.itemsize != 8:
        raise ImportError(
            f"eigrad.petsc needs a real float64 PETSc build; this petsc4py has scalars of type "
            f"{PETSc.ScalarType.__name__}. Point PETSC_DIR/SLEPC_DIR at the real builds "
            "(e.g. /usr/lib/petscdir/petsc3.18/x86_64-linux-gnu-real)."
        )
    return PETSc, SLEPc, MPI
