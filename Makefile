# patronbot: `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/lock.txt pyproject.toml | cksum | cut -d' ' -f1)
# The machine's global pip config may name mirror folders that do not exist; pip warns once per package.
QUIET_PIP := sed "/is ignored: it is neither a file nor a directory/d"

.PHONY: help
help:  ## list the targets, one line each
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements/lock.txt pyproject.toml
	@echo "installing patronbot into $(VENV) from requirements/lock.txt (first time: a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q "pip==$$(sed -n 's/^# pip==//p' requirements/lock.txt)" 2>&1 | $(QUIET_PIP)
	@$(BIN)/python -m pip install -q --no-deps --ignore-requires-python -r requirements/lock.txt 2>&1 | $(QUIET_PIP)
	@$(BIN)/python -m pip install -q --no-deps -e . 2>&1 | $(QUIET_PIP)
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)
	@echo "installed: $$($(BIN)/patronbot --version)"

# The web chat widget (rasa-webchat from the npm registry, integrity-checked), served by the bot.
WEBCHAT := connectors/static/webchat/vendor/rasa-webchat.json
$(WEBCHAT): scripts/fetch_webchat.py | $(STAMP)
	@$(BIN)/python scripts/fetch_webchat.py
	@touch $@

# The staff console's browser libraries (htmx from the npm registry, integrity-checked).
CONSOLE_ASSETS := console/static/vendor/assets.json
$(CONSOLE_ASSETS): scripts/fetch_console_assets.py | $(STAMP)
	@$(BIN)/python scripts/fetch_console_assets.py
	@touch $@

.PHONY: install
install: $(STAMP) $(WEBCHAT) $(CONSOLE_ASSETS)  ## create .venv and install the locked dependencies (only when the lock changed)

.PHONY: lock
lock:  ## regenerate requirements/lock.txt from requirements/*.in (needs the package registry)
	$(PYTHON) scripts/lock.py

.PHONY: train
train: install  ## train the Rasa model if the training data changed
	$(BIN)/patronbot train

.PHONY: run
run: install  ## install if needed, train if needed, and start the whole bot (SQLite, no external services)
	$(BIN)/patronbot run

.PHONY: chat
chat: install  ## talk to the running bot in the terminal
	$(BIN)/patronbot chat

.PHONY: lint
lint: install  ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: format
format: install  ## format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: test
test: install  ## install if needed, lint, and run the whole test suite
	$(MAKE) --no-print-directory lint
	$(BIN)/rasa data validate --fail-on-warnings --domain domain.yml --data data nlu 2>&1 | tail -n 5
	$(BIN)/pytest

.PHONY: bench
bench: install  ## run the benchmarks; figures go to benchmarks/results.json and docs/benchmarks.md
	$(BIN)/python -m benchmarks

.PHONY: clean
clean:  ## remove the venv, trained models and local data
	rm -rf $(VENV) models var .pytest_cache .mypy_cache .ruff_cache
