# vpnrouter: `make demo` and `make test` set everything up on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
# Debian's own Python, the one the appliance and every user run, whatever else is first on PATH.
PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every Debian package the code calls (router/lab/tools.py names the programs), the tests and the bench need.
DEBS := python3 python3-venv python3-dev gcc iproute2 nftables iperf3 iputils-ping tcpdump ethtool procps kmod \
        util-linux mount openssl tshark tmux valgrind pptpd pptp-linux xl2tpd strongswan-charon strongswan-swanctl \
        libcharon-extra-plugins libstrongswan-standard-plugins libstrongswan-extra-plugins coturn openvpn \
        wireguard-tools wireguard-go

.PHONY: demo test unit tui integration bench soak fuzz deps debs venv-python clean
FUZZ_TARGET ?= all
FUZZ_SECONDS ?= 600

demo: deps
	$(VENV)/bin/vpnrouter lab demo

# Every test: the appliance's last (it builds the image, cached, boots it under QEMU and runs `vagrant up`).
# The unit suite runs twice: with the fast path in front of the Python data plane (the default), and without.
test: deps image-deps
	$(PY) -m pytest tests/unit tests/tui tests/integration tests/appliance $(PYTEST_ARGS)
	VPNROUTER_TEST_DATAPLANE=python $(PY) -m pytest tests/unit $(PYTEST_ARGS)

unit: deps
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)
	VPNROUTER_TEST_DATAPLANE=python $(PY) -m pytest tests/unit $(PYTEST_ARGS)

tui: deps
	$(PY) -m pytest tests/tui $(PYTEST_ARGS)

integration: deps
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

bench: deps
	$(PY) -m tests.perf.bench $(BENCH_ARGS)

# Long fuzzing campaigns: atheris on every target in turn (make test runs a bounded one); a failing input is
# kept in tests/data/fuzz/<target>/ and replayed by the tests from then on.
fuzz: deps
	$(PY) -m tests.fuzz $(FUZZ_TARGET) --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)

# The soak test for half an hour (make test runs it for a minute); SOAK_SECONDS=... to choose.
soak: deps
	SOAK_SECONDS=$${SOAK_SECONDS:-1800} $(PY) -m pytest tests/integration/test_soak.py -s $(PYTEST_ARGS)

deps: debs venv-python $(STAMP)

# A virtual environment made from another interpreter is made again from Debian's.
venv-python:
	@if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print(sys.base_prefix)')" != /usr ]; then \
		echo "$(VENV) was made from $$($(PY) -c 'import sys; print(sys.base_prefix)'), not $(PYTHON): making it again"; \
		rm -rf $(VENV); \
	fi

# Debian packages: installed only when one is missing, from the mirror apt is configured with.
debs:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml setup.py router/fastpath/_flowcache.c
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
include images/image.mk
