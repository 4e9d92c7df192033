# The commands the README gives; .ci/run calls `make test` and `make lint`.
# Everything runs in a virtual environment of this checkout (.venv), so that two checkouts, or a
# system Python that refuses pip installs, never share or break one site-packages.
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
# The venv's bin first on PATH: `python3` and `aria-sessions` in the tests are the venv's.
IN_VENV = PATH="$(abspath $(VENV))/bin:$$PATH"
# Four workers on 2 cores (the suite waits on gateways, pace windows and kill harnesses more than
# it computes), each test module whole on one of them (its module fixtures, a gateway, set up once).
PYTEST_WORKERS ?= -n 4 --dist loadfile
PIP = $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test lint bench bench-sqlite skill.json

# A venv of its own, so that a system Python that refuses pip installs (PEP 668) is never asked;
# where its venv module itself is missing (Debian's python3 without python3-venv), say what to do.
$(PY):
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "make: '$(PYTHON) -m venv $(VENV)' failed, so nothing was installed. This checkout installs" >&2; \
	  echo "  into a venv of its own and never into the system Python. Install the venv module" >&2; \
	  echo "  (Debian/Ubuntu: apt-get install python3-venv) or name another Python 3.10+:" >&2; \
	  echo "  make $(MAKECMDGOALS) PYTHON=/path/to/python3" >&2; exit 1; }

# Reinstalled when pyproject.toml changes.
$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PIP) -e '.[test]'
	touch $@

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) -e .
	touch $@

install: $(VENV)/.installed-test
	$(PY) -m compileall -q session_manager.py run_skill.py

DEMO_OUTPUT ?= demo-output

demo: $(VENV)/.installed
	$(PY) -m compileall -q session_manager.py run_skill.py
	$(IN_VENV) $(PY) examples/demo.py $(DEMO_OUTPUT)

# skill.json (Aria's skill catalogue) from the functions and their PARAMETERS table;
# tests/test_schema.py fails when the committed file differs.
skill.json: $(VENV)/.installed
	$(PY) run_skill.py session_manager --schema > skill.json

bench: $(VENV)/.installed-test
	$(IN_VENV) $(PY) bench/run.py

bench-sqlite: $(VENV)/.installed-test
	$(IN_VENV) $(PY) bench/sqlite.py

test: install
	bash .ci/ensure_postgres.sh
	$(IN_VENV) $(PY) -m pytest $(PYTEST_WORKERS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
