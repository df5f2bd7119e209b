# One entry point for a fresh Debian 12 machine: `make test`, `make demo`, `make docker-test`.
VENV        ?= .venv
PYTHON      ?= /usr/bin/python3
APT_PACKAGES = zookeeper postgresql-15 postgresql-15-repmgr haproxy pgbouncer prometheus python3-venv systemd openssl nftables iproute2
DOCKER_PACKAGES = docker.io docker-compose debootstrap
SUDO        := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup system venv lint test bench demo docker-test

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

# matplotlib draws the failover benchmark's pictures; the suite does not need it.
bench: setup $(VENV)/.bench-installed
	$(VENV)/bin/python -m tools.bench.run $(BENCH)
$(VENV)/.bench-installed: pyproject.toml
	$(VENV)/bin/pip install -q -e '.[bench]'
	touch $@

demo: setup
	$(VENV)/bin/python -m tools.demo

# docker/compose.yaml built from nothing, failed over and torn down (docker/topology.py);
# it starts dockerd if none runs, and stops it and removes the images it made at the end.
docker-test: venv
	@dpkg -s $(DOCKER_PACKAGES) >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(DOCKER_PACKAGES); }
	$(SUDO) $(VENV)/bin/python docker/topology.py test
