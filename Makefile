# Set-up and everyday commands. Everything installs into .venv; nothing is fetched at run time.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# llama-cpp-python compiles llama.cpp on install; the multimodal part is not needed (text only).
# On a workstation with CUDA use: make CMAKE_ARGS="-DGGML_CUDA=on -DLLAVA_BUILD=OFF" install
CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
export CMAKE_ARGS

.PHONY: install run serve test test-clients lint package package-test bench soak clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## open the window, with the server running
	$(VENV)/bin/ai-service-platform

serve: $(STAMP)  ## run the server headless
	$(VENV)/bin/ai-service-platform serve

test-clients: $(STAMP)
	bash tests/clients/setup.sh

test: $(STAMP) test-clients lint  ## install what the tests need and run them all
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

# LiteLLM's proxy, in its own environment at a pinned version, is one of the systems the benchmark compares.
LITELLM_VERSION := 1.108.0
LITELLM_ENV := bench/.envs/litellm
LITELLM_STAMP := $(LITELLM_ENV)/.installed

$(LITELLM_STAMP):
	$(PYTHON) -m venv $(LITELLM_ENV)
	$(LITELLM_ENV)/bin/pip install --quiet --disable-pip-version-check 'litellm[proxy]==$(LITELLM_VERSION)'
	touch $@

bench: $(STAMP) $(LITELLM_STAMP)  ## the performance measurements, interleaved, 3 rounds (about 15 minutes)
	QT_QPA_PLATFORM=offscreen $(PY) -m bench $(BENCH_ARGS)

soak: $(STAMP)  ## the long attack runs (about 5 minutes)
	$(PY) -m pytest -m soak tests/security

PACKAGE_STAMP := $(VENV)/.installed-package

$(PACKAGE_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,package]'
	touch $(PACKAGE_STAMP)

package: $(STAMP) $(PACKAGE_STAMP)  ## build the one-folder bundle in dist/ (prints its size and build time)
	$(PY) packaging/build.py

package-test: $(STAMP) $(PACKAGE_STAMP)  ## build the bundle if its sources changed, then run it as a user would
	$(PY) packaging/build.py --if-stale
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m packaging tests/packaging

lint: $(STAMP)
	$(PY) -m ruff check server app tests bench
	$(PY) -m mypy server app bench

clean:
	rm -rf $(VENV) build dist tests/.envs tests/artifacts bench/.envs bench/results
