# README's two commands: `make demo` (the main job on the embedded default) and `make test`.
# Both create or reuse .venv and install what they need from nothing on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the builds available locally; override for other platforms.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TF_SPEC ?= tensorflow-cpu==2.21.0
PYTEST_ARGS ?=

.PHONY: demo test install install-test clean

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

install: $(VENV)/.installed-core
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed-core
	$(BIN)/vehicle-cls demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
