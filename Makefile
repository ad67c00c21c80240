# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
# Another checkout's environment may be used (VENV=/path/to/.venv): the newcomer test does.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run demo doctor keys usage test test-fast lint redis-server chromium bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

# The Redis server binary: the tests and `make run` start a private one.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's redis-server package"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
	      || { echo "could not install redis-server: run 'sudo apt-get install redis-server'" >&2; exit 1; }; \
	  else \
	    echo "redis-server is missing: run 'sudo apt-get install redis-server' (or 'brew install redis')" >&2; exit 1; \
	  fi; }

# The browser tests drive Debian's chromium with playwright-core (npm): chromium, node and npm.
# Only what is missing is installed (a machine may have Node.js from elsewhere).
chromium:
	@need=""; command -v chromium >/dev/null 2>&1 || need="chromium"; \
	{ command -v node && command -v npm; } >/dev/null 2>&1 || need="$$need nodejs npm"; \
	[ -z "$$need" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's packages:$$need"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null) \
	      || { echo "could not install them: run 'sudo apt-get install$$need'" >&2; exit 1; }; \
	  else \
	    echo "missing for the tests: run 'sudo apt-get install$$need'" >&2; exit 1; \
	  fi; }

run: install redis-server
	$(PY) -m devtools.run

demo: install redis-server
	$(PY) -m devtools.run --demo

# Operator commands. Against the `make run` or `make demo` running from this checkout (they read
# the .run/gateway.json it writes), or against REDIS_URL and DECOPY_BASE_URL when those are set;
# each says first which Redis and which upstream it talks to. ARGS: the command's arguments.
doctor: install
	@$(PY) -m devtools.running && $(PY) -m worker doctor $(ARGS)

keys: install
	@$(PY) -m devtools.running && $(PY) -m api keys $(or $(ARGS),list)

usage: install
	@$(PY) -m devtools.running && $(PY) -m api usage $(ARGS)

# ruff: lint (E, F, I) and the formatter's check, before the tests (configured in pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install redis-server chromium lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The in-process unit tests only (tests/unit: one private Redis, no API or worker processes), in seconds.
test-fast: install redis-server
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

# Benchmark (docs/benchmark.md): needs the `bench` extra (aiohttp load client, matplotlib plot).
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) redis-server
	$(PY) -m bench $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP) redis-server
	$(PY) -m bench --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
