# One entry point for a fresh Debian 12 machine: `make test`, `make demo`.
VENV        ?= .venv
PYTHON      ?= /usr/bin/python3
APT_PACKAGES = zookeeper postgresql-15 postgresql-15-repmgr haproxy pgbouncer prometheus python3-venv nftables
SUDO        := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup system venv lint test bench demo

setup: system venv

# Debian's packages (about 25 s); skipped when they are all there already.
system:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); }

# Debian's python3, so that a process running as `postgres` (repmgr's event hook) can run it.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,dev]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup
	$(VENV)/bin/pytest

bench: setup
	$(VENV)/bin/python -m tools.bench.run $(BENCH)

demo: setup
	$(VENV)/bin/python -m tools.demo
