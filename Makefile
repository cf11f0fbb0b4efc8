# Two commands do all the set-up: `make demo` and `make test`.
# Each creates or reuses .venv, installs the project, and fetches the data.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-fast bench data install clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[test]'
	touch $(STAMP)

# Fashion-MNIST: Debian's package where apt and root are available,
# otherwise `mutransfer fetch-data` (checksummed download, or one clear error).
data: $(STAMP)
	@if [ ! -e $(FMNIST)/train-images-idx3-ubyte.gz ] && [ -z "$$MUTRANSFER_DATA" ] \
	    && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	    || echo "apt-get could not install dataset-fashion-mnist; trying a download"; \
	fi
	$(VENV)/bin/mutransfer fetch-data

demo: data
	$(VENV)/bin/mutransfer demo

test: data
	$(PY) -m pytest -o addopts='--import-mode=importlib' -m 'not gpu or gpu' -q -rs

test-fast: $(STAMP)
	$(PY) -m pytest -q

bench: data
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) results
