# Quick start: `make demo` and `make test` work on a fresh machine.
# The venv reuses a torch already installed on the system when it satisfies
# torch>=2.4 (--system-site-packages); otherwise it installs the CPU build
# torch==2.13.0 that this environment provides, never an unpinned (CUDA) torch.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0

.PHONY: venv demo test test-fast test-full bench examples docs clean

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

bench: $(STAMP)
	$(BIN)/python benchmarks/dense_partial.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
