# Continuum: the two commands a fresh machine needs are `make demo` and `make test`.
# Each target installs what it needs into .venv; `make test` also installs Debian's
# mosquitto when it is missing and we are root (CI runs as root on a fresh clone).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: test lint bench install mosquitto clean demo soak

# _spawnc.c: the forker's compiled part, built in place by the editable install.
$(STAMP): pyproject.toml edge_agent/_spawnc.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The simulator's per-task modules compiled with mypyc (simulations/build_native.py):
# same results, about a sixth fewer instructions. Rebuilt when a source it depends on changes; where
# it cannot be built the simulator runs interpreted (the stamp keeps a failed build from
# being retried until a source changes).
NATIVE := $(VENV)/.sim-native
$(NATIVE): $(STAMP) simulations/native.py simulations/build_native.py $(wildcard simulations/sim/*.py) $(shell find shared -name "*.py")
	$(PY) -m simulations.build_native --optional
	touch $@

install: $(STAMP) $(NATIVE)

# Tests start a real broker; install it when absent and we may (root + apt-get).
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing mosquitto (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; \
	else \
		echo "mosquitto is not installed and cannot be installed here (not root); broker tests will be skipped"; \
	fi

test: $(STAMP) $(NATIVE) mosquitto
	$(PY) -m pytest -q -n 3 --dist worksteal

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP) $(NATIVE) mosquitto
	$(PY) benchmarks/run_all.py

# The demo: partition-basic with 3 agents on Mosquitto, installed like `make test` does
# when we may (root + apt-get), else on the embedded pure-Python broker (amqtt with the
# testbed's fixes). Prints the broker it chose, the verdict table and the paths of
# report.json and the plots; exit 1 on any violation.
demo: $(STAMP) mosquitto
	rm -rf runs/demo
	$(VENV)/bin/continuum testbed run partition-basic --agents 3 --out runs/demo

# The testbed's goals over many runs (not part of `make test`; 80 runs, about 75 minutes at
# the defaults on 2 cores): the demo 10 times per broker, every shipped scenario with leases
# of 3-6 s, `random` over 20 seeds, with 5 % of PUBLISH packets lost/doubled/delayed on every
# link. Summary in runs/soak/<time>/summary.md. E.g. make soak SOAK_ARGS="--demo 3 --seeds 5"
# or SOAK_ARGS="--only frozen-agent,random --seeds 3" (docs/testbed.md, Soak).
SOAK_ARGS ?=
soak: $(STAMP) mosquitto
	$(PY) -m simulations.testbed.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info edge_agent/*.so simulations/sim/_native
