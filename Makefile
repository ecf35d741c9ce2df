# Set-up and everyday commands. Everything installs into .venv, exactly as the lock files in packaging/lock pin
# it; nothing is fetched at run time.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCK := packaging/lock
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
PACKAGE_STAMP := $(VENV)/.installed-package
# llama.cpp is compiled for every CPU level and the best one is loaded at run time (packaging/llama_build.py).
# A CUDA build, portable across CPUs in the same way: make CUDA=1 install (see README, GPU).
# More CMake flags for llama.cpp: make CMAKE_ARGS="..." install
CMAKE_ARGS ?=
LLAMA_ARGS := $(if $(filter 1,$(CUDA)),-DGGML_CUDA=ON) $(CMAKE_ARGS)
LLAMA_FLAGS := $(VENV)/.llama-flags
INSTALL = $(PY) packaging/install.py --cmake-args "$(strip $(LLAMA_ARGS))" --lock

.PHONY: install run serve test test-clients lint lock package package-test bench soak clean FORCE

$(PY):
	$(PYTHON) -m venv $(VENV)

# Rewritten only when the llama.cpp flags change, so that a change (CUDA=1) reinstalls llama.cpp.
$(LLAMA_FLAGS): FORCE | $(PY)
	@echo '$(strip $(LLAMA_ARGS))' | cmp -s - $@ || echo '$(strip $(LLAMA_ARGS))' > $@

INSTALLER := packaging/install.py packaging/llama_build.py pyproject.toml $(LLAMA_FLAGS)

$(STAMP): $(LOCK)/app.txt $(INSTALLER) | $(PY)
	$(INSTALL) $(LOCK)/app.txt
	touch $(STAMP)

$(TEST_STAMP): $(LOCK)/test.txt $(INSTALLER) | $(PY)
	$(INSTALL) $(LOCK)/test.txt
	touch $(STAMP) $(TEST_STAMP)

$(PACKAGE_STAMP): $(LOCK)/package.txt $(INSTALLER) | $(PY)
	$(INSTALL) $(LOCK)/package.txt
	touch $(STAMP) $(TEST_STAMP) $(PACKAGE_STAMP)

install: $(STAMP)

run: $(STAMP)  ## open the window, with the server running
	$(VENV)/bin/ai-service-platform

serve: $(STAMP)  ## run the server headless
	$(VENV)/bin/ai-service-platform serve

# The lock files, regenerated from pyproject.toml with pip-tools: versions already pinned stay unless they no
# longer satisfy pyproject.toml; `make lock UPGRADE=1` moves every package to its newest release.
LOCK_TOOLS := build/lock-tools
COMPILE = $(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links $(if $(filter 1,$(UPGRADE)),--upgrade)

lock:  ## regenerate packaging/lock/*.txt from pyproject.toml
	test -x $(LOCK_TOOLS)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_TOOLS) && \
		$(LOCK_TOOLS)/bin/pip install --quiet --disable-pip-version-check pip-tools==7.7.0)
	$(COMPILE) --output-file $(LOCK)/app.txt pyproject.toml
	$(COMPILE) --extra test --constraint $(LOCK)/app.txt --output-file $(LOCK)/test.txt pyproject.toml
	$(COMPILE) --extra test --extra package --constraint $(LOCK)/test.txt --output-file $(LOCK)/package.txt pyproject.toml

test-clients: $(TEST_STAMP)
	bash tests/clients/setup.sh

test: $(TEST_STAMP) test-clients lint  ## install what the tests need and run them all
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

# LiteLLM's proxy, in its own environment at a pinned version, is one of the systems the benchmark compares.
LITELLM_VERSION := 1.108.0
LITELLM_ENV := bench/.envs/litellm
LITELLM_STAMP := $(LITELLM_ENV)/.installed

$(LITELLM_STAMP):
	$(PYTHON) -m venv $(LITELLM_ENV)
	$(LITELLM_ENV)/bin/pip install --quiet --disable-pip-version-check 'litellm[proxy]==$(LITELLM_VERSION)'
	touch $@

bench: $(TEST_STAMP) $(LITELLM_STAMP)  ## the performance measurements, interleaved, 3 rounds (about 30 minutes on 2 cores)
	QT_QPA_PLATFORM=offscreen $(PY) -m bench $(BENCH_ARGS)

soak: $(TEST_STAMP)  ## the long attack runs (about 5 minutes)
	$(PY) -m pytest -m soak tests/security

package: $(PACKAGE_STAMP)  ## build the one-folder bundle in dist/ (prints its size and build time)
	$(PY) packaging/build.py

package-test: $(PACKAGE_STAMP)  ## build the bundle if its sources changed, then run it as a user would
	$(PY) packaging/build.py --if-stale
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m packaging tests/packaging

lint: $(TEST_STAMP)
	$(PY) -m ruff check server app tests bench packaging
	$(PY) -m ruff format --check server app tests bench packaging
	$(PY) -m mypy server app bench tests

clean:
	rm -rf $(VENV) build dist tests/.envs tests/artifacts bench/.envs bench/results
