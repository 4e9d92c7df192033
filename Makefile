# The commands the README gives; .ci/run calls `make test` and `make lint`.
PYTHON ?= python3
# Four workers on 2 cores (the suite waits on gateways, pace windows and kill harnesses more than
# it computes), each test module whole on one of them (its module fixtures, a gateway, set up once).
PYTEST_WORKERS ?= -n 4 --dist loadfile
PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore

.PHONY: install demo test lint bench bench-sqlite

install:
	$(PIP) -e '.[test]'
	$(PYTHON) -m compileall -q session_manager.py run_skill.py

demo:
	$(PIP) .
	$(PYTHON) -m compileall -q session_manager.py run_skill.py
	$(PYTHON) examples/demo.py

bench:
	$(PIP) -e .
	$(PYTHON) bench/run.py

bench-sqlite:
	$(PIP) -e .
	$(PYTHON) bench/sqlite.py

test: install
	bash .ci/ensure_postgres.sh
	$(PYTHON) -m pytest $(PYTEST_WORKERS)

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy
