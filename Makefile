# Quick start: `make demo` and `make test` on a machine with only python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers. Most of the suite runs on one core (XLA compilation,
# Python), so two workers halve it even on two cores. 0 (or empty) runs
# in-process.
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS))
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: test test-tensorflow test-jax demo layers-demo sweep bench bench-small bench-proposals bench-model clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,jax,bench]"
	touch $(STAMP)

# Ops and layers are tested once per backend.
test: $(STAMP)
	$(MAKE) --no-print-directory test-tensorflow
	$(MAKE) --no-print-directory test-jax

test-tensorflow: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) -m pytest tests $(XDIST) $(PYTEST_ARGS)

test-jax: $(STAMP)
	KERAS_BACKEND=jax $(PY) -m pytest tests $(XDIST) $(PYTEST_ARGS)

demo: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) examples/train_shapes.py

layers-demo: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) examples/layers_demo.py

# The mask-size sweep behind docs/mask_size.md (about 27 minutes on 2 cores).
sweep: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) examples/mask_size_sweep.py

bench: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) benchmarks/roi_align.py

bench-small: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) benchmarks/roi_align.py --small

bench-proposals: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) benchmarks/proposals.py

bench-model: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) benchmarks/mask_rcnn.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache benchmarks/results demo_output sweep_output
