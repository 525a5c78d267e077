# Two commands matter: `make run` (set everything up, start the app) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1

.PHONY: setup run test bench default-model clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip -q
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

run: setup
	$(PY) app.py

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_routing.py

default-model: setup
	$(PY) -m model.train.default_model

clean:
	rm -rf $(VENV)
