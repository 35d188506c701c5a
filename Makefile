# Two commands from a fresh clone:
#   make demo   - set up .venv, stream a program in the terminal on the embedded demo LM (no key needed),
#                 then open the quickstart notebook in JupyterLab (NO_LAB=1 skips that step)
#   make test   - set up .venv with the test tools (and Debian's chromium), run the Python suite
#                 (engine, real kernel, real browser) and the widget's front-end unit tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test venv bench lab clean chromium frontend-test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jupyter-stream run "question -> reasoning, answer" \
		--input question="Why is the sky blue?"
	@if [ -z "$(NO_LAB)" ] && [ -z "$(CI)" ]; then $(MAKE) --no-print-directory lab; fi

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/01_quickstart.ipynb

test: $(STAMP) chromium frontend-test
	$(PY) -m pytest -q

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
	benchmarks/.venv/bin/python benchmarks/run.py --dspy --only e2e,parser,ttft,concurrency

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# The reliability scenarios of tests/reliability at full size; prints the figures, writes benchmarks/SOAK.md.
soak: $(STAMP)
	$(PY) benchmarks/soak.py
