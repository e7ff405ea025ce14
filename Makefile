# Two commands matter: `make drill` (the local end-to-end drill) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# checkov pins boto3 1.35 (and old packaging, networkx): it gets a virtualenv of its own.
CHECKOV_VENV  := $(VENV)/checkov-env
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
# aws-sam-cli pins boto3 1.43: a virtualenv of its own too.
SAM_VENV  := $(VENV)/sam-env
SAM_STAMP := $(SAM_VENV)/.installed

.PHONY: help setup redis drill test lint typecheck cfn-lint statelint sam-validate checkov bandit pip-audit layer pytest bench diagrams clean

help:
	@echo "make drill   run the local disaster-recovery drill (no AWS account needed)"
	@echo "make test    lint, type-check, validate the template and ASL, static security checks, run pytest"
	@echo "make bench   run the benchmarks in bench/ (slow; not part of make test)"

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml local/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip install --quiet --no-deps -e local/
	touch $(STAMP)

setup: $(STAMP) redis

# Debian's redis-server: installed with apt-get when missing and we are root.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing redis-server with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null; \
	  else \
	    echo "redis-server is not installed. Install it with: sudo apt-get install -y redis-server" >&2; exit 1; \
	  fi; }

drill: setup
	$(BIN)/servalsheets-backup drill $(DRILL_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

cfn-lint: $(STAMP)
	$(BIN)/cfn-lint template.yaml

# SAM CLI's own validation, offline: translation checks and its cfn-lint pass (no AWS account needed).
$(SAM_STAMP): requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet -r requirements-sam.txt
	touch $(SAM_STAMP)

sam-validate: $(SAM_STAMP)
	SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 $(SAM_VENV)/bin/sam validate --lint --template template.yaml

statelint: $(STAMP)
	@for f in statemachines/*.asl.json; do \
	  echo "statelint $$f"; $(BIN)/statelint --ignore=URI $$f || exit 1; done

# docs/*-state-machine.md from statemachines/*.asl.json (stdlib only; tests/unit/test_docs.py checks them).
diagrams:
	$(PYTHON) tools/asl_diagram.py

# Static security analysis (results and every justified exception: docs/reliability.md).
$(CHECKOV_STAMP): requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $(CHECKOV_STAMP)

# Failing checks are fixed in template.yaml or skipped with a reason: in the resource's Metadata, or in
# .checkov.yaml when the reason holds for every function.
# checkov does not expand Fn::ForEach: it scans the template as AWS::LanguageExtensions leaves it.
EXPANDED_TEMPLATE := .aws-sam/template.expanded.json
checkov: $(CHECKOV_STAMP) $(STAMP)
	$(BIN)/python -m servalsheets_backup_local.testing.language_extensions template.yaml $(EXPANDED_TEMPLATE)
	$(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml -f $(EXPANDED_TEMPLATE) --framework cloudformation --quiet --compact --skip-download

# Findings are fixed or marked `# nosec <test id>` with the reason on the line above.
bandit: $(STAMP)
	$(BIN)/bandit -q -r layers functions local

# Says NOT AUDITED (exit 0) where the vulnerability service cannot be reached; PIP_AUDIT_STRICT=1 fails then.
pip-audit: $(STAMP)
	$(BIN)/python tests/reliability/pip_audit_gate.py requirements.txt

# The Lambda layer built as sam build would, for the runtime and architecture template.yaml declares
# (wheels for manylinux2014_aarch64, python3.12): fails on a missing wheel or over 250 MB unzipped.
layer: $(STAMP)
	$(BIN)/python tools/build_layer.py

pytest: setup
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck cfn-lint sam-validate statelint bandit checkov pip-audit layer pytest

bench: setup
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .aws-sam .mypy_cache .ruff_cache
