# Every target sets itself up: `make test` on a fresh clone creates .venv and installs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

CONFIG ?= configs/cifar10.json
ARGS   ?=

.PHONY: install test train bench bench-accuracy keys docs lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[train,demo,export,dev]"
	touch $(STAMP)

install: $(STAMP)

# The test suite never touches the network; the 30 slowest tests are listed at the end. Two workers (pytest-xdist),
# each taking whole files (a file's module fixtures are made once), slowest first (tests/conftest.py); WORKERS=0 runs
# in one process.
WORKERS ?= 2
test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 $(BIN)/python -m pytest -q --durations=30 \
		$(if $(filter-out 0,$(WORKERS)),-n $(WORKERS) --dist loadfile --no-loadscope-reorder) $(ARGS)

# One process (configs/accelerate/default.yaml: no "defaults used" block); -q: on a failure, our `error:` line and
# exit 1, without accelerate's traceback. Several GPUs: make train LAUNCH=configs/accelerate/multi_gpu.yaml
LAUNCH ?= configs/accelerate/default.yaml
train: $(STAMP)
	$(BIN)/accelerate launch -q --config_file $(LAUNCH) train.py --config $(CONFIG) $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/model_step.py
	$(BIN)/python bench/augment.py
	$(BIN)/python bench/overhead.py

# Test accuracy under a wall-clock budget (10 minutes unless ARGS says otherwise), e.g. CONFIG=configs/cifar10_cpu.json
bench-accuracy: $(STAMP)
	$(BIN)/python bench/time_to_accuracy.py --config $(CONFIG) $(ARGS)

# The config keys' snapshot (vit_scratch/config/keys.json) from the real classes, then docs/configuration.md's
# reference from it: run after upgrading transformers or changing a key.
keys: $(STAMP)
	$(BIN)/python -m vit_scratch.config.make_keys

# docs/configuration.md's generated reference from keys.json alone (standard library, no transformers).
docs: $(STAMP)
	$(BIN)/python -m vit_scratch.config.make_keys --docs

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
