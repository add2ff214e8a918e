# Two commands do everything:
#   make repro   set up (virtualenv + install) and run the main job: dvc repro on the embedded dataset
#   make test    set up and run the test suite
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro targets test test-cluster test-fast test-unit lint format benchmark clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

repro: setup
	@git rev-parse --git-dir >/dev/null 2>&1 || git init --quiet
	@[ -d .dvc ] || $(BIN)/dvc init --quiet
	$(BIN)/dvc repro

# The a-priori target of the main comparison, conf/targets/<data>-<model>.yaml (commit it): the reference
# optimizers adamw and momentum with the settings the pipeline tuned for them, on seeds 100-109 that no
# compared run uses (optbench-target; conf/target.yaml). Run it once per workload, before make repro.
param = $(shell $(BIN)/python -c "import yaml; print(yaml.safe_load(open('params.yaml'))['$(1)'])")
targets: setup
	@git rev-parse --git-dir >/dev/null 2>&1 || git init --quiet
	@[ -d .dvc ] || $(BIN)/dvc init --quiet
	$(BIN)/dvc repro tune@adamw tune@momentum
	OPTBENCH_CONFIG_DIR=conf $(BIN)/optbench-target data=$(call param,data) model=$(call param,model) \
	  trainer=$(call param,trainer) epochs=$(call param,epochs) experiment=$(call param,experiment)-target \
	  "best={adamw: results/tune/adamw/best.json, momentum: results/tune/momentum/best.json}" \
	  "train_overrides=['batch_size=$(call param,batch_size)','precision=$(call param,precision)','data.prepared=data/prepared/$(call param,data).pt']"

# Tests run on every core (pytest-xdist); each test runs in its own temporary directory. Then the cluster tests.
# The default suite, then the cluster tests (measured: run side by side on 2 cores they took longer than one
# after the other, since both are CPU-bound most of the time).
test: setup lint
	$(BIN)/python -m pytest -n auto --durations=15 --ignore=tests/cluster
	$(MAKE) --no-print-directory test-cluster

# The cluster path against real services on 127.0.0.1 (a one-node SLURM cluster, PostgreSQL, an MLflow server;
# tests/cluster/services.py, which installs slurm-wlm and munge when missing): one process, no xdist, because
# the services belong to the pytest session.
test-cluster: setup
	$(BIN)/python -m pytest -p no:xdist -m cluster tests/cluster --durations=10

test-fast: setup
	$(BIN)/python -m pytest -n auto -m "not slow" --ignore=tests/cluster

test-unit: setup
	$(BIN)/python -m pytest -m unit --ignore=tests/cluster

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

benchmark: setup
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/startup.py

clean:
	rm -rf outputs multirun lightning_logs

# Looking at results without a network: `dvc plots show` with the vendored Vega scripts (vendor/vega/,
# also set in .dvc/config), and `dvc exp show` narrowed to the columns that matter (each optimizer's test
# accuracy and the knobs of params.yaml, as a Markdown table) instead of every param of every pipeline.
.PHONY: plots exp-show
EXP_COLUMNS := Experiment|Created|.*:test_acc$$|(params.yaml:)?(data|model|epochs|optimizers|seeds)$$
plots: setup
	$(BIN)/dvc plots show --html-template vendor/vega/dvc_plots.html -o dvc_plots

exp-show: setup
	$(BIN)/dvc exp show --no-pager --md --drop '.*' --keep '$(EXP_COLUMNS)'
