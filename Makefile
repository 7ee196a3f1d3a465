# The single entry point. `make test` and `make demo` set themselves up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SAM_VENV ?= .venv-sam
SAM := $(SAM_VENV)/bin/sam
SCAN_VENV ?= .venv-scan
CHECKOV := $(SCAN_VENV)/bin/checkov
# sam build needs the Lambda runtime's Python (3.13); pyenv provides it on these machines.
LAMBDA_PYENV ?= 3.13.0

.PHONY: dev lint scan scale format unit integration e2e test demo local emulator build validate deploy delete bench bench-large clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)

# ruff, and mypy: strict for the layer (pyproject.toml [tool.mypy]), checked for the handlers and the tools.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy layers/common/batchdrop functions tools

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

integration: $(STAMP)
	$(VENV)/bin/pytest tests/integration

e2e: $(STAMP)
	$(VENV)/bin/pytest tests/e2e

# checkov on template.yaml (its own venv: it pins libraries of its own). Every check the template does
# not pass carries its reason in the template (Metadata: checkov: skip).
$(CHECKOV):
	$(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install --quiet --upgrade pip
	$(SCAN_VENV)/bin/pip install --quiet checkov==3.3.30

scan: $(CHECKOV)
	$(CHECKOV) --file template.yaml --framework cloudformation --compact --quiet --skip-download

# lint and scan, then every tier: unit (no network), integration (moto + in-process emulator),
# end to end (real local sockets).
# Two workers: the burst tests (full size, on moto) take minutes each.
test: lint scan
	$(VENV)/bin/pytest tests -n 2

demo: $(STAMP)
	$(VENV)/bin/batchdrop demo

local: $(STAMP)
	$(VENV)/bin/batchdrop local

emulator: $(STAMP)
	$(VENV)/bin/batchdrop emulator

# The burst tests drained to the end at full size (1,030 files, 2,000 held shards): about 12 minutes.
scale: $(STAMP)
	$(VENV)/bin/pytest tests/integration/pipeline/test_bursts.py -m scale --timeout=1800

# Figures, each beside its reference from the same run (README "Performance"): the streaming passes
# alone, the handlers end to end on moto and the emulator in processes of their own (10 MB and 100 MB),
# a poll run over 1,000 running batches, and the handlers' import times. bench-large adds 1 GB.
bench: $(STAMP)
	$(PY) bench/bench_streaming.py
	$(PY) bench/bench_results_table.py
	$(PY) bench/bench_stack.py --sizes 10,100
	$(PY) bench/bench_poll.py
	$(PY) bench/bench_cold_start.py

bench-large: $(STAMP)
	$(PY) bench/bench_stack.py --sizes 1000

$(SAM):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet aws-sam-cli

validate: $(SAM)
	SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 $(SAM) validate --lint

build: $(SAM) validate
	SAM_CLI_TELEMETRY=0 PYENV_VERSION=$(LAMBDA_PYENV) AWS_DEFAULT_REGION=us-east-1 $(SAM) build

deploy: build
	SAM_CLI_TELEMETRY=0 $(SAM) deploy --guided

delete: $(SAM)
	SAM_CLI_TELEMETRY=0 $(SAM) delete

clean:
	rm -rf $(VENV) $(SAM_VENV) $(SCAN_VENV) .aws-sam .pytest_cache .ruff_cache
