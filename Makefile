# depositd developer commands. `make dev` runs it, `make test` proves it.
VENV    := .venv
BIN     := $(VENV)/bin
PYTHON  ?= python3
STAMP   := $(VENV)/.installed-stamp
ANVIL   := node_modules/.bin/anvil
CHROMIUM := /usr/bin/chromium
NGINX   := /usr/sbin/nginx
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: dev test check lint fmt install postgres bench

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# the anvil dev chain, from npm into ./node_modules (not global); the lock pins the version
$(ANVIL): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	@touch $(ANVIL)

install: $(STAMP) $(ANVIL)

# headless Chromium for the browser tests (tests/browser): Debian's, driven by Playwright,
# which downloads no browser of its own; a CJK font so zh-CN screenshots read
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei

# nginx in front of the API replicas in the chaos soak (tests/chaos, bench/chaos.py): Debian's,
# started by the soak itself on free ports with a config of its own
$(NGINX):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq nginx

## run depositd on embedded defaults (SQLite under ./var/, demo merchant, example requests)
dev: install
	$(BIN)/depositd dev

## install what is missing, start PostgreSQL if needed, lint, type-check, run every test
test: install $(CHROMIUM) $(NGINX) postgres lint
	$(BIN)/pytest

## lint, type-check and test (PostgreSQL must be running)
check: lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

fmt: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

postgres:
	@scripts/ensure-postgres

## install the benchmark extras; then run a script under bench/ (see docs/benchmarks.md)
bench: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[bench]'
	@ls bench/*.py | grep -v '/_' | sed 's|^|  $(BIN)/python |'
