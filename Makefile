# vpool: two commands. `make run` starts the control plane; `make test` runs the whole suite.
# Both install what they need (Debian packages, a venv) and are fast when it is already there.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
DEBS := libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils libvirt-dev pkg-config gcc \
        python3-venv python3-dev busybox-static xz-utils dnsmasq-base nftables iproute2 util-linux \
        curl jq
TEST_DEBS := postgresql prometheus openssh-server
HOST ?= 127.0.0.1
PORT ?= 8080
LAB ?= 3

.PHONY: run test deps test-deps bench clean

run: $(STAMP)
	$(VENV)/bin/vpool serve --host $(HOST) --port $(PORT) --lab $(LAB)

test: $(STAMP) test-deps
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

deps:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test-deps:
	@missing=$$(for p in $(TEST_DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the tests: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml | deps
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
