# trellis: `make demo` and `make test` install everything they need, then run.
# Idempotent and quiet when already done: stamps under .make/ record what was installed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PKGS := iproute2 nftables conntrack iperf3 redis-server busybox-static \
	containernetworking-plugins containerd procps psmisc curl util-linux kmod \
	iputils-ping redis-tools tcpdump haproxy wrk openssl
PYTEST_ARGS ?=

.PHONY: all demo test deps sysdeps pydeps unit clean lab-clean bench
all: test

.make/sysdeps.stamp: Makefile
	@mkdir -p .make
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo ">> installing system packages: $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
			|| { echo "apt-get install failed for: $$missing" >&2; exit 1; }; \
	fi
	@command -v kubectl >/dev/null || echo "note: kubectl not found; the kubectl tests will be skipped"
	@touch $@

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo ">> installing Python packages into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
	@$(PY) -c 'import trellis, aiohttp, httpx, yaml, kubernetes, pytest' 
	@touch $@

sysdeps: .make/sysdeps.stamp
pydeps: $(VENV)/.installed
deps: sysdeps pydeps

demo: deps
	@$(VENV)/bin/trellis demo

test: deps
	@$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests

unit: pydeps
	@$(PY) -m pytest -q -p no:cacheprovider tests/unit

bench: deps
	@for b in bench/*.py; do $(PY) $$b || exit 1; done

lab-clean: pydeps
	@$(VENV)/bin/trellis lab down --all --mine

clean:
	rm -rf .make $(VENV) build src/*.egg-info
