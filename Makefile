# The two commands of the README: `make run` (the main job) and `make test` (the test suite).
# Both set everything up first and are safe to run again.
.PHONY: setup setup-dev run test test-integration test-all lint

PY := .venv/bin/python

setup:
	@bash scripts/setup.sh

setup-dev:
	@bash scripts/setup.sh dev

run: setup
	$(PY) -m agentrl.cli $(if $(ARGS),$(ARGS),train)

lint: setup-dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: setup-dev lint
	$(PY) -m pytest -q

# The tiny model is built (once, then cached) before pytest, outside the tests' per-test timeouts.
test-integration: setup-dev
	$(PY) -c "from agentrl.models import model_path; print('tiny model:', model_path('tiny'))"
	$(PY) -m pytest -q -m integration; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

test-all: test test-integration
