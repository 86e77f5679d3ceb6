# StyleProbe: every target bootstraps its own virtual environment from nothing.
#   make demo   the main job, embedded default (no servers)
#   make test   the whole test suite, with every server it uses installed and Redis started
# `make help` lists every target.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_PATHS := $(wildcard services tests benchmarks scripts)
BENCHMARKS := $(sort $(wildcard benchmarks/bench_*.py))

.DEFAULT_GOAL := help
.PHONY: help demo test typecheck tools redis bench lint format models evaluate docs clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{ printf "  make %-9s %s\n", $$1, $$2 }'

# The environment: created once, reinstalled when pyproject.toml, setup.py or a proto changes
# (the install's build hook, setup.py, generates the gRPC stubs from protos/). torch==2.13.0
# resolves to the CPU wheel on this disk; the check refuses a CUDA build pulled by mistake.
$(STAMP): pyproject.toml setup.py $(shell find protos -name '*.proto')
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,service]'
	$(PY) -m pip install --quiet --no-deps 'nvidia-pytriton==0.7.0'  # pyproject: triton-server
	$(PY) -c "import torch, sys; sys.exit('a CUDA build of torch was installed' if torch.version.cuda else 0)"
	touch $@

demo: $(STAMP) ## explain a phantom with the bundled models, in one process, no servers
	$(VENV)/bin/styleprobe demo

# The suite runs as two pytest processes at once, each with its own temporary folder:
# tests/e2e (mostly waiting on the servers it starts; its output follows the other's) beside
# everything else (mostly CPU). 13 min instead of 20 on 2 cores; either failing fails it.
TEST_TMP := $(or $(TMPDIR),/tmp)/styleprobe-tests
test: $(STAMP) typecheck redis ## mypy, then the whole test suite (installs and starts what it needs)
	@rm -rf $(TEST_TMP) && mkdir -p $(TEST_TMP)
	@$(PY) -m pytest -q -p no:cacheprovider --basetemp=$(TEST_TMP)/e2e tests/e2e \
		> $(TEST_TMP)/e2e.log 2>&1 & e2e=$$!; \
	$(PY) -m pytest -q -p no:cacheprovider --basetemp=$(TEST_TMP)/other --ignore=tests/e2e; \
	other=$$?; wait $$e2e; e2e_status=$$?; \
	echo "==== tests/e2e (run beside the above) ===="; cat $(TEST_TMP)/e2e.log; \
	echo "tests/e2e: exit $$e2e_status; the others: exit $$other"; \
	[ $$other -eq 0 ] && [ $$e2e_status -eq 0 ]

# mypy's settings and the files it checks (services/styleprobe) are in pyproject.toml.
typecheck: $(STAMP) ## mypy over services/ (CI runs it through make test)
	$(VENV)/bin/mypy

# System programs the tests run, as program:Debian package (or file:package): promtool and
# prometheus, Redis (a fresh redis-server per test module, and the one on 127.0.0.1:6379),
# and for the PACS tests Orthanc with its DICOMweb plugin and dcmtk's storescu/findscu.
# Installed with apt-get, which needs root, as on the development and CI machines; the S3
# server, grpcurl and tritonserver come with $(STAMP).
APT_TOOLS := promtool:prometheus prometheus:prometheus redis-server:redis-server \
	redis-cli:redis-tools Orthanc:orthanc \
	/usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb storescu:dcmtk \
	findscu:dcmtk

tools: ## install the system packages the tests use (prometheus, redis, orthanc, dcmtk)
	@missing=$$(for tool in $(APT_TOOLS); do \
		command -v $${tool%%:*} >/dev/null || [ -e $${tool%%:*} ] || echo $${tool#*:}; \
		done | sort -u); \
	if [ -n "$$missing" ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

# The tests and the defaults expect a Redis at 127.0.0.1:6379 (CI machines run one).
redis: tools ## start redis-server on 127.0.0.1:6379 if nothing answers there
	@[ "$$(redis-cli ping 2>/dev/null)" = PONG ] || { \
		redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no; \
		for i in $$(seq 20); do [ "$$(redis-cli ping 2>/dev/null)" = PONG ] && exit 0; sleep 0.5; done; \
		echo "redis-server does not answer on 127.0.0.1:6379" >&2; exit 1; }

bench: $(STAMP) ## run benchmarks/bench_*.py; results in benchmarks/results/
	mkdir -p benchmarks/results
	@set -e; for script in $(BENCHMARKS); do echo "== $$script"; $(PY) $$script; done

lint: $(STAMP) ## ruff check, then mypy
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/mypy

format: $(STAMP) ## ruff: fix what it can, then format
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

models: $(STAMP) ## retrain and export the bundled model sets (hours on a CPU)
	bash scripts/build_model_sets.sh

evaluate: $(STAMP) ## evaluate the bundled sets on held-out phantoms; regenerates docs/results.md
	$(VENV)/bin/styleprobe --threads 1 evaluate --model-set knee-oa --model-set histology-tumour --n 100 --out docs/evaluation --results-table docs/results.md

docs: $(STAMP) ## rewrite README.md's settings table from services/styleprobe/config.py
	$(PY) scripts/settings_table.py --write README.md

clean: ## remove caches and build leftovers (keeps .venv, runs/ and model_repository/)
	find services tests $(wildcard benchmarks) -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache .mypy_cache build services/*.egg-info
