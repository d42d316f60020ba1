# The two commands a new machine needs: `make run` and `make test`.
# Everything is installed into .venv; nothing is installed system-wide.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Development defaults; the environment or .env wins.
export DEBUG ?= true

.PHONY: run test install migrate superuser bench-select clean

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

run: superuser
	$(BIN)/python manage.py demo_contacts --if-empty
	bin/run-dev

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench-select: migrate
	$(BIN)/python bench/select_100k.py

clean:
	rm -rf $(VENV) .pytest_cache
