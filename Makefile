# htbase: `make run` serves the all-in-one service; `make test` runs the suite.
# Both set up what they need first (Chromium, SingleFile, a virtualenv).
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8080
export PORT

.PHONY: run test setup system-deps bench bench-accept clean stack-up stack-down

run: setup
	$(VENV)/bin/htbase serve

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

setup: system-deps $(VENV)/.installed node_modules/.installed

# Chromium comes from Debian (Playwright's own browser download does not work offline).
system-deps:
	@command -v chromium >/dev/null || { \
		echo "installing Chromium (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

$(VENV)/.installed: requirements/*.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt -c requirements/constraints.txt
	$(PY) -m pip install -q --no-deps -e .
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
	$(PY) bench/accept.py

clean:
	rm -rf $(VENV) node_modules data
