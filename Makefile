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
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
