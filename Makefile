# The two commands a newcomer needs: `make up` (install + run the local stack) and
# `make test` (install + lint + type-check + the whole test suite). Both are idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NPM_STAMP := hardhat_local/node_modules/.installed
# The portal (gateway/portal, its own npm project): packages, then the built pages in dist/.
PORTAL := gateway/portal
PORTAL_NPM_STAMP := $(PORTAL)/node_modules/.installed
PORTAL_BUILD_STAMP := $(PORTAL)/dist/.built
PORTAL_SOURCES := $(wildcard $(PORTAL)/src/*) $(PORTAL)/index.html $(PORTAL)/vite.config.ts \
	$(PORTAL)/tsconfig.json $(wildcard $(PORTAL)/public/*)
# The browser tests drive Debian's Chromium package.
CHROMIUM ?= /usr/bin/chromium
# `make lock` resolves for every platform and Python >= 3.11 (`--universal`) with uv, pinned here.
UV_VERSION := 0.13.9
LOCK_FLAGS ?=
UV_COMPILE := --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command 'make lock' $(LOCK_FLAGS)

.PHONY: up test install lint typecheck pytest clean-state abi client-check lock openapi api-contract \
	chromium portal

up: install
	$(BIN)/consent up

test: install chromium lint typecheck pytest

install: $(STAMP) $(NPM_STAMP) $(PORTAL_BUILD_STAMP)

# Every Python dependency (runtime, dev extra, slither) comes from the hashed lock. --no-deps:
# the lock is complete, and pip would refuse slither's declared web3<8 (requirements-slither.txt).
$(STAMP): pyproject.toml requirements-dev.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python >= 3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(NPM_STAMP): hardhat_local/package.json hardhat_local/package-lock.json
	@command -v node >/dev/null || { echo "error: node not found; install Node.js 20 and npm"; exit 1; }
	@command -v npm >/dev/null || { echo "error: npm not found; install Node.js 20 and npm"; exit 1; }
	npm ci --prefix hardhat_local --no-audit --no-fund --loglevel=error
	touch $@

$(PORTAL_NPM_STAMP): $(PORTAL)/package.json $(PORTAL)/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found; install Node.js 20 and npm"; exit 1; }
	npm ci --prefix $(PORTAL) --no-audit --no-fund --loglevel=error
	touch $@

# Type-check, then bundle into gateway/portal/dist (served by the gateway at /portal/).
$(PORTAL_BUILD_STAMP): $(PORTAL_NPM_STAMP) $(PORTAL_SOURCES) $(PORTAL)/package-lock.json
	npm run --prefix $(PORTAL) --silent check
	npm run --prefix $(PORTAL) --silent build
	touch $@

portal: $(PORTAL_BUILD_STAMP)

# Debian's chromium for the browser tests: installed with apt when missing and we are root (CI
# runs as root on a fresh Debian machine). Otherwise the browser tests fail under CI=true and are
# skipped elsewhere, saying why.
# fonts-noto-cjk: the zh-CN pages (and their screenshots) need a Chinese font.
chromium:
	@if [ -x "$(CHROMIUM)" ] && { ! command -v dpkg >/dev/null || dpkg -s fonts-noto-cjk >/dev/null 2>&1; }; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium and fonts-noto-cjk for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium fonts-noto-cjk >/dev/null; \
	else \
		echo "note: Chromium ($(CHROMIUM)) or fonts-noto-cjk missing and not root: the browser tests" \
			"are skipped (they fail under CI=true); run 'apt-get install chromium fonts-noto-cjk' as root"; \
	fi

lint:
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest

# Rewrite the registry ABI shipped in the package after a contract's interface changed.
abi: install
	$(BIN)/python -m ledger.chain.abi

# Rewrite docs/openapi.json after an intended change of the API (a test fails while the served
# schema differs from it).
openapi: install
	$(BIN)/python -m gateway.openapi > docs/openapi.json

# The long API contract run: schemathesis, every check and phase, five seeds, 100 cases per
# operation, against a throw-away stack (`make api-contract API_CONTRACT_FLAGS=--seeds=7,8`).
API_CONTRACT_FLAGS ?=
api-contract: install
	$(BIN)/python bench/api_contract.py $(API_CONTRACT_FLAGS)

# Prove that `pip install .` (no dev extras) gives a `consent` client that runs without node,
# npm or solc: a fresh venv runs `consent audit run` and other client commands against a stack.
client-check: install
	$(BIN)/python bench/client_check.py

# Re-resolve the hashed locks after a dependency changed in pyproject.toml or
# requirements-slither.txt; versions already locked are kept where they still fit
# (`make lock LOCK_FLAGS=--upgrade` moves everything to the newest allowed).
# requirements-dev.lock: runtime + dev extra + slither, what `make install` installs.
# requirements.lock: runtime only, at the same versions, for a client:
#   pip install --require-hashes -r requirements.lock && pip install --no-deps .
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'uv==$(UV_VERSION)'
	$(BIN)/uv pip compile pyproject.toml requirements-slither.txt --extra dev $(UV_COMPILE) \
		-o requirements-dev.lock
	$(BIN)/uv pip compile pyproject.toml -c requirements-dev.lock $(UV_COMPILE) -o requirements.lock

clean-state:
	rm -rf .consent
