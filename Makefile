# Two commands do all their own set-up on a fresh machine (python3, pip, npm, apt as root):
#   make demo    a full round trip on a temporary copy of fixtures/vault, offline
#   make test    the whole test suite
# `make lint` runs ruff and mypy; .ci/run runs `make test lint`.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# The real claude CLI, pinned, installed locally (never globally) for the tests.
CLAUDE_VERSION := 2.1.197
TOOLS  := .tools
CLAUDE := $(TOOLS)/node_modules/.bin/claude

.PHONY: demo test lint format clean tools bwrap wrk bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(CLAUDE):
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @anthropic-ai/claude-code@$(CLAUDE_VERSION)

# bubblewrap comes from the distribution; installing it needs root (CI runs as root).
bwrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  echo "installing bubblewrap (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	} || { echo "bubblewrap is missing and could not be installed: run 'apt-get install bubblewrap' as root" >&2; exit 1; }

tools: $(CLAUDE) bwrap

# wrk, the C load generator the HTTP accept benchmark posts with (bench/latency.py).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing wrk (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	} || { echo "wrk is missing and could not be installed: run 'apt-get install wrk' as root" >&2; exit 1; }

demo: $(STAMP)
	$(VENV)/bin/vaultgate demo

# pytest exits 5 when it collected nothing: for this suite that means a broken
# checkout, so it fails loudly instead of passing silently.
test: $(STAMP) tools
	@VAULTGATE_CLAUDE_BIN=$(abspath $(CLAUDE)) $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# Benchmarks print figure, value, target, met (about 12 minutes on 2 cores).
bench: $(STAMP) tools wrk
	cd bench && VAULTGATE_CLAUDE_BIN=$(abspath $(CLAUDE)) ../$(PY) -W ignore run.py $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway vault_adapter sandbox vaultgate_errors.py tests bench
	$(VENV)/bin/ruff format --check gateway vault_adapter sandbox vaultgate_errors.py tests bench
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix gateway vault_adapter sandbox vaultgate_errors.py tests bench
	$(VENV)/bin/ruff format gateway vault_adapter sandbox vaultgate_errors.py tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
