# The two contract commands: `make demo` and `make test`. Each creates .venv
# and installs the project first, so both work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean mlflow-screenshot

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -c "from biohash.metrics.retrieval import warm_up; warm_up()"  # compile the metrics' kernels once
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	RAY_AUTH_MODE=disabled $(VENV)/bin/biohash demo

# MLflow servers started by tests skip MLflow's job runner (GenAI jobs, unused
# here), which would spawn several more Python processes per server.
# Two workers (pytest-xdist, work stealing): a serial run kept 2 cores ~40 % busy,
# waiting on Ray, MLflow and server start-ups; every test starts what it needs itself.
test: $(STAMP)
	RAY_AUTH_MODE=disabled MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(PY) -m pytest -q -n 2 --dist worksteal --durations=25

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

# docs/mlflow-best-runs.png: the MLflow UI filtered to the best runs, taken by
# headless Chromium (apt-get install -y chromium) from a real demo sweep in
# build/mlflow-screenshot. Not run by CI.
mlflow-screenshot: $(STAMP)
	RAY_AUTH_MODE=disabled $(PY) -m biohash.analysis.screenshot --out docs/mlflow-best-runs.png

clean:
	rm -rf $(VENV) build *.egg-info
