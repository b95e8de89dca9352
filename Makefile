# The two commands a newcomer needs: `make up` (install + run the local stack) and
# `make test` (install + lint + type-check + the whole test suite). Both are idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NPM_STAMP := hardhat_local/node_modules/.installed

.PHONY: up test install lint typecheck pytest clean-state abi client-check

up: install
	$(BIN)/consent up

test: install lint typecheck pytest

install: $(STAMP) $(NPM_STAMP)

$(STAMP): pyproject.toml requirements-slither.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python >= 3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-slither.txt
	touch $@

$(NPM_STAMP): hardhat_local/package.json hardhat_local/package-lock.json
	@command -v node >/dev/null || { echo "error: node not found; install Node.js 20 and npm"; exit 1; }
	@command -v npm >/dev/null || { echo "error: npm not found; install Node.js 20 and npm"; exit 1; }
	npm ci --prefix hardhat_local --no-audit --no-fund --loglevel=error
	touch $@

lint:
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest

# Rewrite the registry ABI shipped in the package after a contract's interface changed.
abi: install
	$(BIN)/python -m ledger.chain.abi

# Prove that `pip install .` (no dev extras) gives a `consent` client that runs without node,
# npm or solc: a fresh venv runs `consent audit run` and other client commands against a stack.
client-check: install
	$(BIN)/python bench/client_check.py

clean-state:
	rm -rf .consent
