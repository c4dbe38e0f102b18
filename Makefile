# smimekit: two commands from a fresh clone.
#   make demo   creates .venv, installs, runs the end-to-end demonstration
#   make test   also installs the system peers (openssl, gpgsm, NSS tools) and runs the suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
APT_PEERS := openssl gpgsm libnss3-tools softhsm2
PEER_COMMANDS := openssl gpgsm certutil cmsutil pk12util softhsm2-util
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install peers lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

peers:
	@missing=""; for c in $(PEER_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing interop peers (missing:$$missing)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PEERS) >/dev/null; \
	fi

demo: install
	$(BIN)/python -m smimekit.demo

lint: install
	$(BIN)/ruff check src tests $(wildcard benchmarks)

typecheck: install
	$(BIN)/mypy src

test: install peers lint typecheck
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

bench: install
	$(BIN)/python benchmarks/bench_messages.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-out
