# Velocity Previews: every entry point a developer or CI uses.
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv

.PHONY: setup run test check lock bench

setup:  ## install everything the project needs (idempotent)
	bash scripts/setup

run: setup  ## the orchestrator with a live preview of the bundled example
	$(VENV)/bin/velocity up

test: setup  ## the whole test suite, with the static checks
	bash scripts/test

check:  ## format, lint, types, import contracts
	bash scripts/check

lock:  ## re-pin Python dependencies after editing pyproject.toml
	$(UV) pip compile pyproject.toml --extra dev -o requirements.lock -p $(PY) -q
	$(UV) pip sync requirements.lock -p $(PY) -q
	$(UV) pip install -e . --no-deps -p $(PY) -q

bench: setup
	$(PY) -m bench.startup
