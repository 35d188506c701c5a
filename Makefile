# Two commands from a fresh clone:
#   make demo   - set up .venv, stream a program in the terminal on the embedded demo LM (no key needed),
#                 then open the quickstart notebook in JupyterLab (NO_LAB=1 skips that step)
#   make test   - set up .venv with the test tools and DSPy 3.4 (and Debian's chromium), run the Python suite
#                 (engine, DSPy programs, real kernel, real browser) and the widget's front-end unit tests,
#                 then the DSPy suite again on the oldest supported DSPy (3.0) in .venv-dspy30
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The oldest DSPy we support, in an environment of its own (only the DSPy suite runs there).
DSPY_OLDEST ?= 3.0.4
VENV30 ?= .venv-dspy30
STAMP30 := $(VENV30)/.installed-$(DSPY_OLDEST)-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test venv bench lab clean chromium frontend-test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,dspy]'
	@rm -f $(VENV)/.installed-*; touch $@

$(STAMP30): pyproject.toml
	@test -x $(VENV30)/bin/python || $(PYTHON) -m venv $(VENV30)
	$(VENV30)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV30)/bin/python -m pip install --quiet --disable-pip-version-check -e . 'dspy==$(DSPY_OLDEST)' \
		pytest pytest-asyncio hypothesis
	@rm -f $(VENV30)/.installed-*; touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jupyter-stream run "question -> reasoning, answer" \
		--input question="Why is the sky blue?"
	@if [ -z "$(NO_LAB)" ] && [ -z "$(CI)" ]; then $(MAKE) --no-print-directory lab; fi

# JupyterLab refuses to start as root without --allow-root (a container's usual user).
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(LAB_ROOT) notebooks/01_quickstart.ipynb

# JS_REQUIRE_DSPY=1: a missing DSPy fails the DSPy suite instead of skipping it.
test: $(STAMP) $(STAMP30) chromium frontend-test
	JS_REQUIRE_DSPY=1 $(PY) -m pytest -q
	JS_REQUIRE_DSPY=1 $(VENV30)/bin/python -m pytest -q -p no:cacheprovider tests/with_dspy

# The widget's TypeScript unit tests (vitest), from the committed lockfile.
frontend-test:
	cd labextension && npm ci --no-audit --no-fund --loglevel=error && npm test

# The browser tests (tests/browser) drive Debian's chromium through Playwright (no `playwright install`).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)

# The full comparison, DSPy included, in benchmarks/.venv (made by benchmarks/setup.sh): RESULTS-dspy.md
# and the plots. `$(PY) benchmarks/run.py` alone runs ours against the transport floor (RESULTS.md).
bench: $(STAMP)
	$(PY) benchmarks/run.py
	bash benchmarks/setup.sh
	benchmarks/.venv/bin/python benchmarks/run.py --dspy --only e2e,parser,ttft,concurrency,bridge

clean:
	rm -rf $(VENV) $(VENV30) .pytest_cache .hypothesis

# The reliability scenarios of tests/reliability at full size; prints the figures, writes benchmarks/SOAK.md.
soak: $(STAMP)
	$(PY) benchmarks/soak.py
