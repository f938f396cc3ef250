# Everything CI runs is a target here; .ci/run calls `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test pytest lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgresql,mysql]'
	touch $(STAMP)

# Migrate the embedded SQLite default (convostore.db), write a conversation through both
# interfaces in one process, and read it back in another.
demo: venv
	$(BIN)/alembic upgrade head
	$(BIN)/python examples/quickstart.py write
	$(BIN)/python examples/quickstart.py read

# The whole suite: lint, types, then every test on every backend that is reachable
# (with CI=true, every backend is required).
test: lint pytest

pytest: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests migrations examples
	$(BIN)/ruff format --check src tests migrations examples
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format src tests migrations examples
	$(BIN)/ruff check --fix src tests migrations examples

clean:
	rm -rf $(VENV) dist build .mypy_cache .ruff_cache .pytest_cache convostore.db*
