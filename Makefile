# smimekit: two commands from a fresh clone.
#   make demo   creates .venv from the lock file, runs the end-to-end demonstration
#   make test   also installs the system peers (openssl, gpgsm, NSS tools, SoftHSM, slapd, Postfix
#               with "No configuration": the gateway's tests start their own instances; Cyrus
#               SASL's sasldb tool and plugins for their submission login; the DejaVu font for
#               the gateway's PDF) and runs the whole suite
# Others: make lock (re-resolve requirements/lock.txt), make test-latest (the suite against the
# newest releases, in .venv-latest; not part of CI), make test-lowest (the lowest versions
# pyproject.toml allows: are its lower bounds honest?), make bench, make lint, make typecheck.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements/lock.txt
LATEST := .venv-latest
LOWEST := .venv-lowest
APT_PEERS := openssl gpgsm libnss3-tools softhsm2 wrk nginx nsd ldnsutils unbound bind9-dnsutils \
  slapd ldap-utils postfix swaks libnet-ssleay-perl libio-socket-ssl-perl sasl2-bin \
  libsasl2-modules libsasl2-modules-db chromium chromium-driver fonts-dejavu-core
PEER_COMMANDS := openssl gpgsm certutil cmsutil pk12util softhsm2-util wrk nginx nsd ldns-keygen \
  ldns-signzone unbound dig ldapsearch postfix swaks smtp-source smtp-sink saslpasswd2 \
  chromium chromedriver
# files, not commands: the gateway's encrypted PDF uses DejaVu Sans when it is there; the
# private Postfix's SASL submission (tests/postfix.py) needs Cyrus SASL's PLAIN and sasldb
# plugins (in the multiarch directory: the glob), and swaks its Perl TLS modules for STARTTLS
PEER_FILES := /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/lib/*/sasl2/libplain.so \
  /usr/lib/*/sasl2/libsasldb.so /usr/lib/*/perl5/*/Net/SSLeay.pm /usr/share/perl5/IO/Socket/SSL.pm
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?= -n 2 --dist loadfile -q
UPGRADE ?= --upgrade

.PHONY: demo test test-latest test-lowest install lock peers lint typecheck bench clean

# The venv holds exactly the locked set: it is made anew whenever the lock or pyproject.toml
# changes (pip cannot remove what an older lock installed), every file is checked against its
# hash, and smimekit itself is installed editable with the locked setuptools (no build isolation,
# so nothing unpinned is fetched to build it).
$(VENV)/.installed: $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

# Re-resolve the lock from pyproject.toml's ranges (newest versions that fit), for every
# platform and Python >= 3.11, with hashes. Review the diff and commit it with pyproject.toml.
# 'make lock UPGRADE=' keeps every existing pin and only adds what pyproject.toml gained.
lock: install
	$(BIN)/uv pip compile pyproject.toml requirements/build.in --extra test --extra lock \
	  --universal --python-version 3.11 --generate-hashes --no-header --quiet $(UPGRADE) -o $(LOCK)

peers:
	@missing=""; for c in $(PEER_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	for f in $(PEER_FILES); do [ -f $$f ] || missing="$$missing $$f"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing interop peers (missing:$$missing)"; \
	  echo "postfix postfix/main_mailer_type select No configuration" \
	    | $(SUDO) debconf-set-selections && \
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
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The suite against the newest releases that pyproject.toml allows, so that the next break
# (like cryptography 51's DSA warnings) is seen before users see it. Not part of CI.
test-latest: peers
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(LATEST)/bin/python -m pip install -q --disable-pip-version-check --upgrade \
	  --upgrade-strategy eager -e '.[test]'
	$(LATEST)/bin/python -m pip list --format=freeze
	SMIMEKIT_TEST_LATEST=1 $(LATEST)/bin/python -m pytest $(PYTEST_ARGS)

# The suite against the lowest versions that pyproject.toml's ranges allow for our direct
# dependencies (their own dependencies resolved normally), so the lower bounds stay honest.
# Not part of CI.
test-lowest: install peers
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(BIN)/uv pip compile pyproject.toml --extra test --resolution lowest-direct \
	  --python-version 3.11 --no-header --quiet -o $(LOWEST)/requirements.txt
	$(LOWEST)/bin/python -m pip install -q --disable-pip-version-check -r $(LOWEST)/requirements.txt
	$(LOWEST)/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
	$(LOWEST)/bin/python -m pip list --format=freeze
	SMIMEKIT_TEST_LATEST=1 $(LOWEST)/bin/python -m pytest $(PYTEST_ARGS)

# wrk (a peer since the OCSP load benchmark: its --quick run is a test) comes with peers.
bench: install peers
	$(BIN)/python benchmarks/bench_messages.py
	$(BIN)/python benchmarks/bench_ocsp_load.py

clean:
	rm -rf $(VENV) $(LATEST) $(LOWEST) .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-out
