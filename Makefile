# Two commands do all the set-up: `make demo` and `make test`.
# Each creates or reuses .venv, installs the project, and fetches the data.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-long test-fast lint format bench data install clean ui-check fault-suite

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[test,bench]'
	touch $(STAMP)

# System packages where apt and root are available (as in CI): Fashion-MNIST (Debian's
# dataset-fashion-mnist) and iproute2 (the two-node cluster test's network namespace).
# Elsewhere `mutransfer fetch-data` finds the data, downloads it (checksummed), or says how to get it.
data: $(STAMP)
	@missing=""; \
	[ -e $(FMNIST)/train-images-idx3-ubyte.gz ] || [ -n "$$MUTRANSFER_DATA" ] || missing="dataset-fashion-mnist"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "apt-get install $$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	    || echo "apt-get could not install $$missing"; \
	fi
	$(VENV)/bin/mutransfer fetch-data

demo: data
	$(VENV)/bin/mutransfer demo

# ruff (configured in pyproject.toml) first: a lint or format finding fails the run.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: data lint
	$(PY) -m pytest -o addopts='--import-mode=importlib' -m 'not long' -q -rsx --durations=15

# Costly rows that a faster row of make test covers (marker `long`).
test-long: data
	$(PY) -m pytest -o addopts='--import-mode=importlib' -m long -q -rsx

# The MLflow UI in headless Chromium (Debian's `chromium`; no Python browser package): a small sweep,
# `mutransfer ui`, screenshots of the runs table, a trial, the parent run and report.md in ui-shots/.
ui-check: $(STAMP)
	MUTRANSFER_UI_CHECK=1 MUTRANSFER_UI_SHOTS=$(CURDIR)/ui-shots $(PY) -m pytest -o addopts='--import-mode=importlib' \
	  -m ui -q -rsx -s tests/orchestrator/cli/test_cmd_ui.py

# The fault suite's opt-in rows (minutes: a full disk under a real sweep, a verify killed in tune-base and
# rerun against an uninterrupted one); the other rows run in `make test`.
fault-suite: data
	MUTRANSFER_FAULT_SUITE=1 $(PY) -m pytest -o addopts='--import-mode=importlib' -q -rsx \
	  tests/orchestrator/test_faults_store.py tests/orchestrator/test_faults_driver.py \
	  tests/orchestrator/engine/test_session.py tests/orchestrator/test_grow.py

test-fast: $(STAMP)
	$(PY) -m pytest -q

bench: data
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) results
