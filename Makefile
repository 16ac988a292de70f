# Two commands do everything on a fresh machine with Python 3.11+:
#   make demo   create .venv, then train, gate and serve the churn example on localhost
#   make test   create .venv, then run the linters and the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-down test lint postgres chromium golden crds clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[runtime,serve,operator,s3,dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/aiml024 apply -f examples/churn/
	$(BIN)/aiml024 get experiments
	$(BIN)/aiml024 get models
	$(BIN)/aiml024 get deployments

demo-down: $(STAMP)
	$(BIN)/aiml024 delete -f examples/churn/

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy src/aiml024/api src/aiml024/compiler

# The distributed-search test starts a real PostgreSQL server (Debian's package).
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq postgresql)

# The report test renders the experiment report in headless Chromium (Debian's package).
chromium:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)

test: lint postgres chromium
	$(BIN)/pytest -q

# Regenerate checked-in outputs; only on purpose, never in CI.
golden: $(STAMP)
	AIML024_UPDATE_GOLDEN=1 $(BIN)/pytest -q tests/golden

crds: $(STAMP)
	$(BIN)/python -m aiml024.compiler.crds --out crds/

clean:
	rm -rf $(VENV) .aiml024 .pytest_cache .mypy_cache .ruff_cache
