# Two commands matter: `make run` (set everything up, start the app) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The oldest transformers the library supports (vLLM's environments pin it): tests/model run there too.
VENV_TF519 ?= .venv-tf519
PY_TF519 := $(VENV_TF519)/bin/python
export HF_HUB_OFFLINE ?= 1

.PHONY: setup setup-tf519 run test test-tf519 lint bench default-model clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-model.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip -q
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

setup-tf519: $(VENV_TF519)/.installed

# Only the library's requirements, with transformers held at 5.19 (the same torch pin).
$(VENV_TF519)/.installed: requirements-model.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV_TF519)
	$(PY_TF519) -m pip install --upgrade pip -q
	$(PY_TF519) -m pip install -q -r requirements-model.txt "transformers==5.19.*" "pytest>=9.0,<10"
	touch $@

run: setup
	$(PY) app.py

# Everything on the pinned stack, then the library's tests on transformers 5.19.
test: setup setup-tf519
	$(PY) -m pytest -q
	$(PY_TF519) -m pytest -q tests/model

test-tf519: setup-tf519
	$(PY_TF519) -m pytest -q tests/model

# Formatting, lint and types, as CI checks them.
lint: setup
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: setup
	$(PY) bench/bench_routing.py

default-model: setup
	$(PY) -m model.train.default_model

clean:
	rm -rf $(VENV) $(VENV_TF519)
