# tracegrad developer tasks.
#   make venv    create .venv and install tracegrad editable with test extras
#   make test    run the test suite        (PYTEST_ARGS="-k fusion -x" ...)
#   make demo    train the small GPT demo  (DEMO_ARGS="--steps 50" ...)
#   make bench   run the kernel benchmarks (BENCH_ARGS=...)
#   make clean   remove build outputs and caches (keeps .venv; rm -rf .venv to reset)

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_ARGS   ?=
BENCH_ARGS  ?=
# Where /opt/wheels exists it holds the CPU build of torch==2.13.0 (the test
# oracle); looking there first keeps pip from pulling the CUDA build instead.
FIND_LINKS  := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)

.PHONY: venv test demo bench clean

venv: $(VENV)/.installed

# Stamp file: reinstall only when the packaging metadata changes.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(FIND_LINKS) -e '.[test]'
	touch $@

test: venv
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

demo: venv
	$(PY) examples/train_gpt.py $(DEMO_ARGS)

bench: venv
	$(PY) benchmarks/kernels.py $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
