# The two commands a new machine needs: `make run` and `make test`.
# Everything is installed into .venv; nothing is installed system-wide.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Development defaults; the environment or .env wins.
export DEBUG ?= true

.PHONY: run test test-fast lint format install migrate superuser bench-select clean container-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when a requirements file changed.
$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

migrate: install
	$(BIN)/python manage.py migrate --no-input

superuser: migrate
	$(BIN)/python manage.py ensure_dev_superuser

# Serves on PORT (8000) with the sandbox on SANDBOX_PORT (8025), e.g.
# `PORT=8001 SANDBOX_PORT=8026 make run`. Leaves a development .env (bin/run-dev).
run: export PORT ?= 8000
run: export SANDBOX_PORT ?= 8025
# bin/run-dev also migrates, creates the superuser and the demonstration contacts,
# after the system checks it runs once for all (each command skips them).
run: install
	bin/run-dev

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The quick subset, under two minutes: everything but the tests marked slow
# (real sockets, crashes, outages, property tests) and the browser test.
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

# What CI checks before the tests: the pre-commit hooks over every tracked file
# (ruff check, ruff format --check, lint-imports, bin/check-function-length).
# pre-commit keeps its state in .venv, like everything else installed here.
lint: install
	PRE_COMMIT_HOME=$(VENV)/pre-commit $(BIN)/pre-commit run --all-files

# Rewrites files: ruff's safe fixes, then the formatter.
format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The Dockerfile and docker-compose.yml built and run with podman (web, three workers,
# the sandbox), checked, and taken down again; see bin/container-test. Needs root and
# ../shared/tools/container beside the repository. About 3 minutes once the base images exist.
container-test:
	bin/container-test

bench-select: migrate
	$(BIN)/python bench/select_100k.py

clean:
	rm -rf $(VENV) .pytest_cache
