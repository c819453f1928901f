# Quick start: `make demo` and `make test` work on a fresh machine.
# The venv reuses a torch already installed on the system when it satisfies
# torch>=2.4 (--system-site-packages); otherwise it installs the CPU build
# torch==2.13.0 that this environment provides, never an unpinned (CUDA) torch.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0

.PHONY: venv demo test test-fast test-full test-mpi bench examples docs clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv --system-site-packages $(VENV)
	$(BIN)/python -c "import torch, sys; v=tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(0 if v >= (2, 4) else 1)" 2>/dev/null \
	  || $(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q matplotlib scikit-fem xitorch || echo "optional packages (matplotlib, scikit-fem, xitorch) not installed"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m eigrad demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

# test-mpi: eigrad.petsc (PETSc/SLEPc under MPI, docs/scaleout.md) on 1 and 2 ranks over loopback.
# Debian's petsc4py/slepc4py/mpi4py (installed when absent; root on CI) import only into Debian's own
# Python with its .pth files, hence a venv from /usr/bin/python3.11 with --system-site-packages, and
# numpy<2 (petsc4py is built against numpy 1.x). tests_mpi/ is not in pytest's testpaths: `make test`
# never sees it. Each mpirun is bounded by `timeout` (a rank stuck in a collective fails, not hangs).
MPI_PY ?= /usr/bin/python3.11
MPI_VENV := .venv-mpi
MPI_STAMP := $(MPI_VENV)/.installed
MPI_DEBS := python3-petsc4py python3-slepc4py python3-mpi4py openmpi-bin libopenmpi-dev
MPI_TIMEOUT ?= 300
PETSC_DIR ?= /usr/lib/petscdir/petsc3.18/x86_64-linux-gnu-real
SLEPC_DIR ?= /usr/lib/slepcdir/slepc3.18/x86_64-linux-gnu-real
MPI_ENV := PETSC_DIR=$(PETSC_DIR) SLEPC_DIR=$(SLEPC_DIR) OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
  OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=lo OMP_NUM_THREADS=1
MPI_PYTEST := $(MPI_VENV)/bin/python -m pytest -q -p no:cacheprovider --color=no tests_mpi

$(MPI_STAMP): pyproject.toml Makefile
	@if ! dpkg -s $(MPI_DEBS) >/dev/null 2>&1; then \
	  echo "installing $(MPI_DEBS)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(MPI_DEBS); \
	fi
	test -d $(PETSC_DIR) && test -d $(SLEPC_DIR) || { echo "PETSC_DIR=$(PETSC_DIR) or SLEPC_DIR=$(SLEPC_DIR) missing: pass the real-float64 PETSc/SLEPc 3.18 directories"; exit 1; }
	test -x $(MPI_VENV)/bin/python || $(MPI_PY) -m venv --system-site-packages $(MPI_VENV)
	$(MPI_VENV)/bin/python -m pip install -q "$(TORCH_PIN)" "numpy<2" "scipy<1.16" "pytest>=7"
	$(MPI_VENV)/bin/python -m pip install -q --no-deps -e .
	env $(MPI_ENV) $(MPI_VENV)/bin/python -c "import eigrad.petsc, torch; from petsc4py import PETSc; print('eigrad.petsc: PETSc', PETSc.Sys.getVersion(), 'torch', torch.__version__)"
	touch $@

test-mpi: $(MPI_STAMP)
	@set -e; for np in 1 2; do echo "== mpirun -n $$np pytest tests_mpi"; \
	  env $(MPI_ENV) timeout -k 10 $(MPI_TIMEOUT) mpirun -n $$np sh tests_mpi/rank.sh $(MPI_PYTEST); done

bench: $(STAMP)
	$(BIN)/python benchmarks/dense_partial.py

# examples: every script in examples/ in its --fast mode (plots to examples/out/)
$(VENV)/.examples-installed: $(STAMP)
	$(BIN)/python -m pip install -q "matplotlib>=3.6" "scikit-fem>=9"
	touch $@

examples: $(VENV)/.examples-installed
	@set -e; for f in examples/*.py; do echo "== $$f --fast"; MPLBACKEND=Agg $(BIN)/python $$f --fast; done

# docs: the mkdocs-material site in site/, built offline (no fonts or CDN fetched)
$(VENV)/.docs-installed: $(STAMP)
	$(BIN)/python -m pip install -q "mkdocs-material>=9" "mkdocstrings[python]>=0.24"
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

clean:
	rm -rf $(VENV) $(MPI_VENV) build dist src/*.egg-info .pytest_cache
