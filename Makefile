# README's two commands: `make demo` (the main job on the embedded default) and `make test`.
# Both create or reuse .venv and install what they need from nothing on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the builds available locally; override for other platforms.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TF_SPEC ?= tensorflow-cpu==2.21.0
PYTEST_ARGS ?=
# `make bench`: the seed loop vs Pipeline benchmark, with ../shared's calibrated R101-FPN weights when
# they are beside the clone (generated once into .bench/), else the project's synthetic weights.
SHARED ?= ../shared
BENCH_WEIGHTS ?= .bench/model_final_faster.pkl
BENCH_ARGS ?=

.PHONY: demo test lint docs bench install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-core: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[train]"
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-core
	$(BIN)/pip install --quiet -e ".[test,train,keras-cpu,ray,serve,export]" $(TORCH_SPEC)
	touch $@

$(VENV)/.installed-lint: pyproject.toml $(VENV)/.installed-test
	$(BIN)/pip install --quiet -e ".[lint]"
	touch $@

$(VENV)/.installed-docs: pyproject.toml $(VENV)/.installed-core
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $@

install: $(VENV)/.installed-core
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed-core
	$(BIN)/vehicle-cls demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (lint + format) and mypy on the package, as .ci/run runs them before the tests
lint: $(VENV)/.installed-lint
	$(BIN)/ruff check vehicle_cls
	$(BIN)/ruff format --check vehicle_cls
	$(BIN)/mypy

# the documentation site (mkdocs.yml, docs/); --strict: a warning (broken link, bad docstring) is an error
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(VENV)/.installed-core
	@if [ ! -f $(BENCH_WEIGHTS) ] && [ -f $(SHARED)/weights/weights.py ]; then \
		mkdir -p $(dir $(BENCH_WEIGHTS)) && $(BIN)/python $(SHARED)/weights/weights.py faster $(BENCH_WEIGHTS); fi
	$(BIN)/python benchmarks/bench_seed_loop.py $$( [ -f $(BENCH_WEIGHTS) ] && echo --weights $(BENCH_WEIGHTS) ) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .bench site
