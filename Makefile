# Two entry points for a fresh machine with Python 3.11 + pip: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test lint venv clean

$(BIN)/hydrovisor: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/hydrovisor

run: venv
	HYDROVISOR_DEV_MODE=$${HYDROVISOR_DEV_MODE:-1} $(BIN)/hydrovisor run

test: venv
	$(BIN)/ruff check hydrovisor tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
