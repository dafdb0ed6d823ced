# htbase: `make run` serves the all-in-one service; `make test` runs the suite.
# Each sets up what it needs first: system packages, a virtualenv, SingleFile.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8080
export PORT
# The inner loop: no Chromium, no emulators, no PostgreSQL, no Terraform, checkov or gcloud
# (tests/conftest.py marks the tests that need them).
FAST_TESTS := not browser and not emulators and not postgres and not tools

.PHONY: run test test-fast lint fmt typecheck setup setup-run system-deps test-system-deps \
	bench bench-accept bench-chaos clean stack-up stack-down

run: setup-run
	$(VENV)/bin/htbase serve

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/pytest -n auto -m "$(FAST_TESTS)" $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The packages to check are pyproject.toml's [tool.mypy] files.
typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

# What running needs; `setup` adds what developing needs (test, lint and type tools, docker-compose).
setup-run: system-deps $(VENV)/.run node_modules/.installed
setup: setup-run test-system-deps $(VENV)/.dev

# $(call apt-install,COMMAND,PACKAGE): install PACKAGE from Debian unless COMMAND is on PATH.
apt-install = command -v $(1) >/dev/null || { \
	echo "installing $(2) (apt)"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; }

# Chromium comes from Debian (Playwright's own browser download does not work offline): the
# headless shell renders the captures; the full browser is what some tests drive.
system-deps:
	@$(call apt-install,chromium,chromium)
	@$(call apt-install,chromium-headless-shell,chromium-headless-shell)

# docker-compose validates the compose files offline (tests/test_compose.py); no Docker engine needed.
test-system-deps:
	@$(call apt-install,docker-compose,docker-compose)

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.run: requirements/*.txt pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements/all-in-one.txt -c requirements/constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.run
	$(PY) -m pip install -q -r requirements/dev.txt -c requirements/constraints.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The emulator stack and every service, each its own process, the API on $(PORT); state in .stack/.
# STACK_ARGS passes more, e.g. STACK_ARGS="--database-url postgresql+pg8000://... --set ALLOW_PRIVATE_URLS=1".
stack-up: setup
	$(PY) -m emulators.stack up --root .stack --port $(PORT) $(STACK_ARGS)

stack-down:
	$(PY) -m emulators.stack down --root .stack

bench: setup
	$(PY) bench/capture.py

bench-accept: setup
	$(PY) bench/accept.py $(ACCEPT_ARGS)

# The emulator stack under kills and outages, verified from outside (CHAOS_ARGS=--reduced: make test's form).
bench-chaos: setup
	$(PY) bench/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) node_modules data

# Terraform's copy of the topology (htbase/topology.py); tests/terraform fail when it is stale.
.PHONY: terraform-topology
terraform-topology: setup
	$(PY) -m emulators.terraform_topology
