# Two commands set everything up on a fresh machine: `make train` and `make test`.
# Both create .venv on first use and install the project into it.
#
# torch: by default the CPU build pinned below (a small wheel, quick to install). GPU users pick a CUDA
# build once, e.g.  make install TORCH="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128
# The project itself only asks for torch>=2.2, so whatever torch .venv holds is kept.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The default experiment: the classic PyTorch word_language_model settings on PTB.
train: $(STAMP)
	$(BIN)/nslm-train experiment=ptb_example $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/python -m pytest $(ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

# nslm-bench: the default grid (throughput, time split, memory; ~5 min on a 2-core CPU).
bench: $(STAMP)
	$(BIN)/nslm-bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
