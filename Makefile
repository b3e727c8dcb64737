# `make test` and `make demo` are the two commands a new user types: each
# creates .venv and installs the package on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

BACKENDS_STAMP := $(VENV)/.backends

.PHONY: test test-backends demo docs tutorials lint bench clean test-latest-keras test-oldest

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Two pytest workers (pytest-xdist): most of a test's time is single-threaded tracing and Python, so two
# processes on two cores take about half the time of one. A fixed 2, not "auto": each worker holds its own
# TensorFlow (about 1 GB). --dist worksteal: a worker that runs out of tests takes half of the other's
# queue, so both finish together (tests/conftest.py starts the longest modules first).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal tests --doctest-modules bagnet_keras data_tools

# JAX and PyTorch (CPU builds), the other Keras backends: test extras, never the package's own dependencies.
$(BACKENDS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,backends]"
	touch $(BACKENDS_STAMP)

# Every backend gives TensorFlow's answers: tests/test_backends.py (TensorFlow here, each other backend in a
# subprocess beside it, on the same models and images), then the tests marked `backends` under each other
# backend.
# JAX's time in tests is XLA compiling each new function and shape, not running it (small models): XLA's
# backend optimisation off halves a compilation, and a compilation cache for this run lets a function
# compiled once (the same model and shape in another test or worker) load instead of compiling again.
# The answers are the same; `bench/forward.py --backend jax` measures speed with XLA's defaults.
JAX_TEST_ENV = XLA_FLAGS=--xla_backend_optimization_level=0 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1 JAX_COMPILATION_CACHE_DIR=$(JAX_CACHE)
JAX_CACHE := $(shell mktemp -d -u /tmp/bagnet-keras-jax-cache.XXXXXX)

test-backends: $(BACKENDS_STAMP)
	$(JAX_TEST_ENV) $(BIN)/python -m pytest -q tests/test_backends.py
	$(JAX_TEST_ENV) KERAS_BACKEND=jax $(BIN)/python -m pytest -q -n 2 --dist worksteal -m backends tests
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q -n 2 --dist worksteal -m backends tests
	rm -rf $(JAX_CACHE)

demo: $(STAMP)
	$(BIN)/bagnet-keras demo

# The documentation site into site/ (mkdocs.yml; strict: a warning fails it).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

# Execute the tutorials' notebooks in place (nbmake; their outputs are what the site shows),
# printing each one's time. Two at a time, as most of a notebook's time is one core tracing: the first
# (across-a-dataset) trains the models the next ones load (fit_classifier resumes), so they run in order,
# while the notebooks that load nothing another made (TUTORIALS_ALONE) run beside them.
TUTORIALS := $(sort $(wildcard docs/tutorials/*.ipynb))
TUTORIALS_ALONE := docs/tutorials/street-city.ipynb docs/tutorials/explain-your-model.ipynb
NBMAKE := $(BIN)/python -m pytest -q --nbmake --overwrite --nbmake-timeout=900 --durations=0 -p no:cacheprovider

tutorials: $(STAMP)
	$(NBMAKE) $(filter-out $(TUTORIALS_ALONE),$(TUTORIALS)) & pid=$$!; \
	$(NBMAKE) $(TUTORIALS_ALONE); alone=$$?; wait $$pid; shared=$$?; exit $$((shared || alone))

# The suite against the newest Keras release, past pyproject.toml's upper bound, in a venv of its own.
test-latest-keras:
	$(PYTHON) -m venv .venv-latest-keras
	.venv-latest-keras/bin/python -m pip install --quiet --upgrade pip
	.venv-latest-keras/bin/python -m pip install --quiet -e ".[dev]"
	.venv-latest-keras/bin/python -m pip install --quiet --upgrade keras
	.venv-latest-keras/bin/python -m pip show keras | grep ^Version
	.venv-latest-keras/bin/python -m pytest -q -n 2 --dist worksteal tests --doctest-modules bagnet_keras data_tools

# The suite at the oldest versions pyproject.toml allows, in a venv of its own: Python 3.10 (PYTHON_OLDEST),
# TensorFlow 2.18, Keras 3.10, NumPy 2.0. keras-hub needs Python 3.11, so the transformer tests skip there;
# the documentation site is built in .venv (`make docs`): its plugins' releases for Python 3.10 clash.
PYTHON_OLDEST ?= python3.10
test-oldest:
	$(PYTHON_OLDEST) -m venv .venv-oldest
	.venv-oldest/bin/python -m pip install --quiet --upgrade pip
	.venv-oldest/bin/python -m pip install --quiet -e ".[dev]" "tensorflow==2.18.*" "keras==3.10.*" "numpy==2.0.*"
	.venv-oldest/bin/python -m pip show tensorflow keras numpy | grep -E "^(Name|Version)"
	.venv-oldest/bin/python -m pytest -q -n 2 --dist worksteal tests --doctest-modules bagnet_keras data_tools \
		--ignore tests/test_docs.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/forward.py
	$(BIN)/python bench/evidence.py
	$(BIN)/python bench/clean.py
	$(BIN)/python bench/compare.py
	$(BIN)/python bench/fit.py

clean:
	rm -rf $(VENV) .venv-latest-keras .venv-oldest build *.egg-info
