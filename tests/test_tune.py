"""optbench-tune with real Optuna storage and a real MLflow store in a temporary directory."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import compose_config, runs_of
from omegaconf import OmegaConf
from optuna.trial import FixedTrial, TrialState

from optbench.core.config import group_options
from optbench.core.errors import ConfigError
from optbench.training.checks import validate
from optbench.training.train import train
from optbench.tuning.replicate import median_study, spread
from optbench.tuning.spaces import parse_search_space
from optbench.tuning.tune import tune

OPTBENCH_TUNE = str(Path(sys.executable).parent / "optbench-tune")
SMALL = ("data=digits", "model=mlp", "trainer=fast", "trainer.max_epochs=2", "optimizer=sgd")


@pytest.fixture
def tune_cfg(tmp_path, tracking_uri, monkeypatch, request):
    """Compose conf/tune.yaml for a tiny study whose storage and outputs live in tmp_path."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    experiment = "tune-" + request.node.name.replace("[", "-").replace("]", "")

    def make(*overrides: str):
        return compose_config(
            *SMALL,
            f"experiment={experiment}",
            f"tune.storage=sqlite:///{tmp_path / 'optuna.db'}",
            f"tune.output_dir={tmp_path / 'tune'}",
            f"metrics_path={tmp_path / 'metrics.json'}",
            *overrides,
            config_name="tune",
        )

    return make


def load(cfg) -> optuna.Study:
    return optuna.load_study(study_name="sgd-mlp-digits-lr", storage=cfg.tune.storage)


def test_a_study_completes_the_requested_trials_and_writes_best_json_and_plots(tune_cfg, tmp_path):
    cfg = tune_cfg("tune.n_trials=3", "tune.pruner.name=none")
    summary = tune(cfg)

    assert len(load(cfg).get_trials(states=[TrialState.COMPLETE])) == 3
    out = tmp_path / "tune" / "sgd-mlp-digits-lr"
    best = json.loads((out / "best.json").read_text())
    assert best == summary
    assert best["n_trials"] == {"completed": 3}
    low, high = cfg.tune.search_space.lr.low, cfg.tune.search_space.lr.high
    assert low <= best["best_params"]["optimizer.lr"] <= high
    assert best["overrides"] == [f"optimizer.lr={best['best_params']['optimizer.lr']}"]
    assert best["space"] == {"optimizer.lr": {"low": low, "high": high, "log": True, "transform": None}}
    assert (out / "s0" / "optimization_history.png").stat().st_size > 0  # each study's own plots
    assert (out / "sensitivity_optimizer_lr.png").stat().st_size > 0  # every trial of every study


def test_rerunning_with_a_larger_budget_resumes_without_losing_or_duplicating_trials(tune_cfg):
    tune(tune_cfg("tune.n_trials=2", "tune.pruner.name=none"))
    first = [(t.number, t.params["optimizer.lr"]) for t in load(tune_cfg()).trials]

    tune(tune_cfg("tune.n_trials=4", "tune.pruner.name=none"))
    trials = load(tune_cfg()).trials

    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [(t.number, t.params["optimizer.lr"]) for t in trials[:2]] == first  # the old trials, untouched
    assert len({t.params["optimizer.lr"] for t in trials}) == 4  # Sobol continued, no repeated point


def test_journal_file_storage_holds_and_resumes_a_study(tune_cfg, tmp_path):
    journal = tmp_path / "shared" / "optuna.log"
    storage = f"tune.storage=journal://{journal}"
    tune(tune_cfg(storage, "tune.n_trials=1", "tune.pruner.name=none"))
    tune(tune_cfg(storage, "tune.n_trials=2", "tune.pruner.name=none"))

    backend = optuna.storages.journal.JournalFileBackend(str(journal))
    study = optuna.load_study(study_name="sgd-mlp-digits-lr", storage=optuna.storages.JournalStorage(backend))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert not (tmp_path / "optuna.db").exists()


def test_rerunning_a_finished_study_runs_no_trial(tune_cfg):
    tune(tune_cfg("tune.n_trials=2", "tune.pruner.name=none"))
    tune(tune_cfg("tune.n_trials=2", "tune.pruner.name=none"))
    assert len(load(tune_cfg()).trials) == 2


def test_a_hopeless_search_range_gets_trials_pruned(tune_cfg):
    # Half of the range is far too small to learn anything in three epochs: the median pruner stops those.
    cfg = tune_cfg(
        "tune.n_trials=8",
        "trainer.max_epochs=3",
        "tune.pruner.n_startup_trials=2",
        "tune.pruner.n_warmup_steps=0",
        "tune.search_space.lr.low=1e-7",
        "tune.search_space.lr.high=1.0",
    )
    summary = tune(cfg)
    assert summary["n_trials"].get("pruned", 0) >= 1
    assert summary["n_finished"] == 8


def test_diverging_trials_are_recorded_as_diverged_and_the_study_goes_on(tune_cfg, mlflow_client):
    cfg = tune_cfg(
        "tune.n_trials=3",
        "tune.pruner.name=none",
        "tune.search_space.lr.low=1e8",
        "tune.search_space.lr.high=1e10",
    )
    summary = tune(cfg)

    assert summary["n_trials"] == {"diverged": 3}
    assert all(t.state == TrialState.COMPLETE for t in load(cfg).trials)
    children = [r for r in runs_of(mlflow_client, cfg.experiment) if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["optbench.outcome"] for r in children) == ["diverged"] * 3


def test_each_study_is_a_parent_mlflow_run_with_one_child_run_per_trial(tune_cfg, mlflow_client):
    cfg = tune_cfg("tune.n_trials=3", "tune.pruner.name=none")
    tune(cfg)

    runs = runs_of(mlflow_client, cfg.experiment)
    (parent,) = [r for r in runs if r.data.tags.get("optbench.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 == len(runs) - 1
    assert sorted(r.data.tags["optbench.trial"] for r in children) == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.params["optimizer.name"] for r in children} == {"sgd"}
    assert "best/value" in parent.data.metrics and "best/optimizer.lr" in parent.data.metrics
    artifacts = {a.path for a in mlflow_client.list_artifacts(parent.info.run_id)}
    assert {"best.json", "optimization_history.png", "sensitivity_optimizer_lr.png"} <= artifacts


def test_tuned_settings_feed_optbench_train_through_best_json(tune_cfg, make_cfg, mlflow_client):
    summary = tune(tune_cfg("tune.n_trials=2", "tune.pruner.name=none"))
    best_json = Path(summary["output_dir"]) / "best.json"

    cfg = make_cfg("data=digits", "model=mlp", "optimizer=sgd", f"best={best_json}")
    train(cfg)
    (run,) = runs_of(mlflow_client, cfg.experiment)
    assert float(run.data.params["optimizer.lr"]) == summary["best_params"]["optimizer.lr"]

    with pytest.raises(ConfigError, match="tuned for optimizer=sgd"):
        train(make_cfg("data=digits", "model=mlp", "optimizer=adam", f"best={best_json}"))


def test_two_worker_processes_share_one_study(tune_cfg):
    cfg = tune_cfg("tune.n_trials=4", "tune.n_jobs=2", "tune.pruner.name=none")
    summary = tune(cfg)
    trials = load(cfg).trials
    assert summary["n_finished"] == 4  # exact, whichever worker gets there first
    extra = [t for t in trials if t.user_attrs.get("outcome") == "surplus"]
    assert all(t.state.name == "FAIL" for t in extra) and len(extra) <= 2  # at most one per worker, never counted
    assert len({t.number for t in trials}) == len(trials)


BAD_TUNE_INPUTS = {
    "unknown search-space parameter": ("tune.search_space.lr.key=optimizer.lrr", "optimizer.lrr"),
    "inverted range": ("tune.search_space.lr.low=50.0", "empty or inverted range"),
    "log scale from zero": ("tune.search_space.lr.low=0", "log scale"),
    "no trials": ("tune.n_trials=0", "n_trials must be an integer of at least 1"),
    "storage that cannot be opened": ("tune.storage=sqlite:////nonexistent/dir/optuna.db", "does not exist"),
    "unknown storage scheme": ("tune.storage=nosuchdb://host/db", "cannot be opened"),
    "unknown sampler": ("tune.sampler.name=grid", "Valid samplers"),
    "no studies": ("tune.n_studies=0", "n_studies must be an integer of at least 1"),
    "negative tuning seed": ("tune.seed=-1", "tune.seed must be a non-negative integer"),
    "unknown transform": ("+tune.search_space.lr.transform=log2", "transform must be one of one_minus"),
    "one_minus beyond 1": (
        "+tune.search_space.m={key: optimizer.momentum, transform: one_minus, low: 0.5, high: 2.0}",
        "0 <= low < high <= 1",
    ),
    "list index past the end": (
        "+tune.search_space.width={key: model.hidden.2, low: 8, high: 64, type: int}",
        "model.hidden is a list of 2 values",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TUNE_INPUTS))
def test_bad_tuning_input_is_rejected_before_the_storage_is_touched(tune_cfg, tmp_path, case):
    override, message = BAD_TUNE_INPUTS[case]
    with pytest.raises(ConfigError, match=message.replace(".", "\\.")):
        tune(tune_cfg(override))
    assert not (tmp_path / "optuna.db").exists()


def _tune_cli(tmp_path: Path, *args: str) -> list[str]:
    return [
        OPTBENCH_TUNE,
        *SMALL,
        "experiment=cli",
        f"tune.storage=sqlite:///{tmp_path / 'optuna.db'}",
        f"tune.output_dir={tmp_path / 'tune'}",
        *args,
    ]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}


def test_bad_tuning_input_on_the_command_line_exits_nonzero_without_a_traceback(tmp_path):
    result = subprocess.run(
        _tune_cli(tmp_path, "tune.n_trials=0"), cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "n_trials" in result.stderr


@pytest.mark.slow
def test_two_tuning_processes_started_together_on_a_fresh_store_both_succeed(tmp_path):
    # A fresh SQLite store created by two processes at once crashes one of them unless creation is locked.
    procs = [
        subprocess.Popen(
            _tune_cli(tmp_path, "tune.n_trials=4", "tune.pruner.name=none"),
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    study = optuna.load_study(study_name="sgd-mlp-digits-lr", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert 4 <= len(study.get_trials(states=[TrialState.COMPLETE])) <= 5


@pytest.mark.slow
def test_a_trial_left_running_by_a_killed_process_is_failed_and_not_counted(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    slow_trials = ("trainer.max_epochs=50", "trainer.limit_train_batches=null", "tune.heartbeat.interval=1")
    proc = subprocess.Popen(
        _tune_cli(tmp_path, "tune.n_trials=2", "tune.pruner.name=none", *slow_trials),
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a trial is running, then kill the whole process group
        try:
            study = optuna.load_study(study_name="sgd-mlp-digits-lr", storage=storage)
            if study.get_trials(states=[TrialState.RUNNING]):
                break
        except KeyError:
            pass
        time.sleep(0.5)
    time.sleep(3)  # let the heartbeat thread (interval 1 s) record a beat: trials that never beat are not stale
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # longer than the grace period below: the killed trial's heartbeat is stale

    result = subprocess.run(
        _tune_cli(tmp_path, "tune.n_trials=1", "tune.pruner.name=none", "tune.heartbeat.grace_period=2"),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    states = [t.state for t in optuna.load_study(study_name="sgd-mlp-digits-lr", storage=storage).trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]


# --- search spaces: tune=full -------------------------------------------------------------------------

OPTIMIZERS = group_options("optimizer")
SCHEDULES = ("warmup_cosine", "onecycle", "constant")
BETA1, BETA2 = ("optimizer.betas.0", "one_minus"), ("optimizer.betas.1", "one_minus")
MOMENTUM, WD, EPS = ("optimizer.momentum", "one_minus"), ("optimizer.weight_decay", None), ("optimizer.eps", None)
# What each optimizer family searches besides the learning rate (key, transform).
NUISANCE = {
    "sgd": [WD],
    "momentum": [MOMENTUM, WD],
    "nesterov": [MOMENTUM, WD],
    "lars": [MOMENTUM, WD],
    **{name: [BETA1, BETA2, EPS, WD] for name in ("adam", "adamw", "nadam", "radam", "lamb")},
    "lion": [BETA1, BETA2, WD],
    "rmsprop": [("optimizer.alpha", "one_minus"), EPS, WD],
    "adagrad": [EPS, WD],
    "adafactor": [("optimizer.eps.0", None), WD],
    "lbfgs": [],
}
WARMUP = {"warmup_cosine": [("scheduler.warmup_fraction", None)], "onecycle": [("scheduler.pct_start", None)]}


def full_space(optimizer: str, scheduler: str = "constant"):
    cfg = compose_config(f"optimizer={optimizer}", f"scheduler={scheduler}", "tune=full", config_name="tune")
    return cfg, parse_search_space(cfg)


def decades(param) -> float:
    return math.log10(param.high / param.low)


@pytest.mark.unit
def test_the_table_of_nuisance_hyperparameters_covers_every_optimizer():
    assert sorted(NUISANCE) == OPTIMIZERS


@pytest.mark.unit
@pytest.mark.parametrize("scheduler", SCHEDULES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_full_space_searches_lr_and_the_family_nuisance_hyperparameters_and_every_sample_validates(
    optimizer, scheduler
):
    cfg, space = full_space(optimizer, scheduler)
    expected = [("optimizer.lr", None), *NUISANCE[optimizer], *WARMUP.get(scheduler, [])]
    assert sorted((p.key, p.transform) for p in space) == sorted(expected, key=str)
    assert all(p.log for p in space)

    # Both corners of the box and a few random points: each sampled config passes every training check.
    corners = [{p.name: p.low for p in space}, {p.name: p.high for p in space}]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for trial in [FixedTrial(corner) for corner in corners] + [study.ask() for _ in range(4)]:
        sampled = cfg.copy()
        for param in space:
            OmegaConf.update(sampled, param.key, param.suggest(trial), merge=False)
        validate(sampled)
        if isinstance(trial, optuna.Trial):
            study.tell(trial, 0.0)


@pytest.mark.unit
@pytest.mark.parametrize("tune_option", ["lr", "full"])
def test_every_optimizer_searches_the_learning_rate_over_four_decades(tune_option):
    for optimizer in OPTIMIZERS:
        cfg = compose_config(f"optimizer={optimizer}", f"tune={tune_option}", config_name="tune")
        (lr,) = [p for p in parse_search_space(cfg) if p.key == "optimizer.lr"]
        assert decades(lr) == pytest.approx(4.0), optimizer


@pytest.mark.unit
def test_a_hyperparameter_has_one_range_for_every_optimizer_that_searches_it():
    # Weight decay above all: AdamW, Adam with L2 and momentum must tune it over the same range.
    ranges: dict[tuple[str, str | None], set] = {}
    for optimizer in OPTIMIZERS:
        for p in full_space(optimizer, "warmup_cosine")[1]:
            if p.key != "optimizer.lr":
                role = ("beta1" if p.key in ("optimizer.momentum", "optimizer.betas.0") else p.key, p.transform)
                ranges.setdefault(role, set()).add((p.low, p.high))
    assert all(len(found) == 1 for found in ranges.values()), ranges
    searching_wd = {o for o in OPTIMIZERS if any(p.key == WD[0] for p in full_space(o)[1])}
    having_wd = {o for o in OPTIMIZERS if "weight_decay" in compose_config(f"optimizer={o}").optimizer}
    assert searching_wd == having_wd and {"adam", "adamw", "momentum"} <= searching_wd


@pytest.mark.unit
def test_one_minus_samples_the_distance_from_one_and_sets_the_list_element():
    cfg, space = full_space("adam")
    (beta1,) = [p for p in space if p.key == "optimizer.betas.0"]
    assert beta1.name == "1-optimizer.betas.0"
    value = beta1.suggest(FixedTrial({"1-optimizer.betas.0": 0.05}))
    assert value == pytest.approx(0.95)
    OmegaConf.update(cfg, beta1.key, value, merge=False)
    assert list(cfg.optimizer.betas) == [pytest.approx(0.95), 0.999]  # beta2 untouched


@pytest.mark.unit
def test_an_entry_set_to_null_is_not_searched():
    cfg = compose_config("optimizer=adamw", "tune=full", "tune.search_space.eps=null", config_name="tune")
    assert "optimizer.eps" not in {p.key for p in parse_search_space(cfg)}


@pytest.mark.unit
def test_tuned_list_elements_feed_a_training_config_through_the_overrides():
    overrides = ["optimizer.betas.0=0.95", "optimizer.betas.1=0.98", "optimizer.weight_decay=0.1"]
    cfg = compose_config("optimizer=adamw", *overrides)
    assert list(cfg.optimizer.betas) == [0.95, 0.98] and cfg.optimizer.weight_decay == 0.1


@pytest.mark.unit
def test_tuned_list_elements_feed_a_training_config_through_best_json(tmp_path):
    best = tmp_path / "best.json"
    params = {"optimizer.lr": 0.01, "optimizer.betas.0": 0.95}
    best.write_text(json.dumps({"optimizer": "adamw", "best_params": params, "searched": list(params)}))
    from optbench.training.checks import apply_best

    cfg = apply_best(compose_config("optimizer=adamw", f"best={best}"))
    assert list(cfg.optimizer.betas) == [0.95, 0.999] and cfg.optimizer.lr == 0.01


# --- replicated tuning --------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("bests", "direction", "chosen"),
    [
        ([0.7, 0.9, 0.8], "maximize", 2),  # the median of three
        ([0.3, 0.1, 0.2], "minimize", 2),
        ([0.9, 0.5], "maximize", 1),  # even: the worse of the middle two
        ([0.1, 0.5], "minimize", 1),
        ([None, 0.5, 0.6], "maximize", 1),  # a study without a completed trial ranks last
        ([0.8], "maximize", 0),
    ],
)
def test_the_chosen_study_is_the_one_whose_best_is_the_median(bests, direction, chosen):
    assert median_study(bests, direction) == chosen


@pytest.mark.unit
def test_the_spread_of_the_studies_bests_is_their_median_range_and_interquartile_range():
    assert spread([1.0, 2.0, 3.0, 4.0, None]) == {"median": 2.5, "min": 1.0, "max": 4.0, "iqr": 1.5, "n_with_best": 4}


@pytest.mark.slow
def test_replicated_studies_use_their_own_seeds_and_best_json_takes_the_median_study(tune_cfg, tmp_path, mlflow_client):
    cfg = tune_cfg("model=logreg", "tune.n_trials=2", "tune.n_studies=2", "tune.pruner.name=none")
    summary = tune(cfg)

    storage = cfg.tune.storage
    names = ["sgd-logreg-digits-lr", "sgd-logreg-digits-lr-s1"]
    studies = [optuna.load_study(study_name=n, storage=storage) for n in names]
    assert [len(s.get_trials(states=[TrialState.COMPLETE])) for s in studies] == [2, 2]
    first_points = {s.trials[0].params["optimizer.lr"] for s in studies}
    assert len(first_points) == 2  # different sampler seeds, different Sobol points
    per_study = summary["studies"]["per_study"]
    assert [(s["sampler_seed"], s["seed"]) for s in per_study] == [(0, 1000), (1, 1001)]
    bests = [max(t.value for t in s.trials) for s in studies]
    worse = bests.index(min(bests))  # two studies: the worse of the middle two
    assert summary["selection"] == "median_of_study_bests" and summary["best_study"] == worse
    assert summary["best_value"] == bests[worse]
    assert summary["best_params"] == per_study[worse]["best_params"]
    assert summary["studies"]["min"] == min(bests) and summary["studies"]["max"] == max(bests)
    assert summary["budget"] == summary["n_finished"] == 4
    assert json.loads((tmp_path / "tune" / "sgd-logreg-digits-lr" / "best.json").read_text()) == summary

    runs = runs_of(mlflow_client, cfg.experiment)
    parents = {r.data.tags["optbench.study_index"]: r for r in runs if r.data.tags.get("optbench.kind") == "study"}
    assert sorted(parents) == ["0", "1"]
    assert parents[str(worse)].data.tags["optbench.selected"] == "True"
    trials = [r for r in runs if "optbench.trial" in r.data.tags]
    seeds = {(r.data.tags["optbench.study_index"], r.data.params["seed"]) for r in trials}
    assert seeds == {("0", "1000"), ("1", "1001")}  # the tuning seeds, never evaluation seed 0


@pytest.mark.slow
def test_rerunning_continues_each_unfinished_study(tune_cfg):
    tune(tune_cfg("model=logreg", "tune.n_trials=1", "tune.n_studies=1", "tune.pruner.name=none"))
    summary = tune(tune_cfg("model=logreg", "tune.n_trials=2", "tune.n_studies=2", "tune.pruner.name=none"))
    assert [s["n_trials"] for s in summary["studies"]["per_study"]] == [{"completed": 2}] * 2
    study = optuna.load_study(study_name="sgd-logreg-digits-lr", storage=tune_cfg().tune.storage)
    assert len(study.trials) == 2  # study 0 kept its first trial and added one


# --- tuning workers on SLURM and shared storages: bad input is refused before anything is opened --------

BAD_CLUSTER_INPUTS = {
    "a PostgreSQL driver that is not installed": (
        ["tune.storage=postgresql+pg8000://optuna:secret@127.0.0.1:5432/optuna"],
        "the database driver 'pg8000' is not installed",
    ),
    "a gRPC proxy that is not running": (["tune.storage=grpc://127.0.0.1:{free_port}"], "no Optuna gRPC storage proxy"),
    "a gRPC URL without a port": (["tune.storage=grpc://login1"], "grpc://host:port"),
    "SLURM where sbatch is not on PATH": (
        ["tune.launcher=slurm", "tune.storage=journal://{tmp}/optuna.log"],
        "not found on PATH",
    ),
    "a SQLite file shared by SLURM jobs": (["tune.launcher=slurm"], "SQLite file on a network file system"),
    "an unknown launcher": (["tune.launcher=pbs"], "tune.launcher must be one of local, slurm"),
}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.unit
@pytest.mark.parametrize("case", list(BAD_CLUSTER_INPUTS))
def test_bad_cluster_tuning_input_is_one_paragraph_and_nothing_is_opened_submitted_or_logged(
    tune_cfg, tmp_path, mlflow_client, monkeypatch, case
):
    from optbench.tuning import storage

    monkeypatch.setattr(storage, "GRPC_READY_TIMEOUT_S", 0.5)  # nothing listens there: no need to wait 5 s
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # a PATH without sbatch, even where SLURM is installed
    overrides, message = BAD_CLUSTER_INPUTS[case]
    cfg = tune_cfg(*(o.format(free_port=_free_port(), tmp=tmp_path) for o in overrides))
    with pytest.raises(ConfigError, match=message) as err:
        tune(cfg)
    assert "\n" not in str(err.value) and "secret" not in str(err.value)  # one paragraph, no password
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "optuna.log").exists()
    assert mlflow_client.get_experiment_by_name(cfg.experiment) is None


@pytest.mark.unit
def test_slurm_tuning_without_sbatch_exits_2_on_the_command_line_without_a_traceback(tmp_path):
    env = {**_env(tmp_path), "PATH": str(tmp_path / "bin")}
    cli = _tune_cli(tmp_path, "tune.launcher=slurm", "tune.n_jobs=2", f"tune.storage=journal://{tmp_path}/j.log")
    result = subprocess.run(cli, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "sbatch" in result.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "j.log").exists()


@pytest.mark.unit
def test_the_slurm_block_becomes_submitit_parameters_and_unset_values_are_left_to_slurm():
    from optbench.cluster.workers import executor_parameters

    cfg = compose_config(
        "tune.slurm.partition=gpu", "+tune.slurm.additional_parameters.account=p42", config_name="tune"
    )
    slurm = OmegaConf.to_container(cfg.tune.slurm, resolve=True)
    assert executor_parameters(slurm) == {
        "slurm_partition": "gpu",
        "timeout_min": cfg.tune.slurm.timeout_min,
        "cpus_per_task": cfg.tune.slurm.cpus_per_task,
        "mem_gb": cfg.tune.slurm.mem_gb,
        "slurm_additional_parameters": {"account": "p42"},
    }
    with pytest.raises(ConfigError, match="unknown SLURM setting"):
        executor_parameters({**slurm, "gpus": 1})


@pytest.mark.unit
def test_storage_urls_are_shown_without_passwords_and_files_by_absolute_path(tmp_path):
    from optbench.tuning.storage import absolute, shown

    assert (
        shown("postgresql+psycopg2://optuna:secret@db:5432/optuna") == "postgresql+psycopg2://optuna:***@db:5432/optuna"
    )
    assert shown("journal:///shared/optuna.log") == "journal:///shared/optuna.log"
    assert absolute("sqlite:///optuna.db") == f"sqlite:///{tmp_path / 'optuna.db'}"  # tests run in tmp_path
    assert absolute("journal://runs/optuna.log") == f"journal://{tmp_path / 'runs' / 'optuna.log'}"
    assert absolute("grpc://login1:13000") == "grpc://login1:13000"


@pytest.mark.slow
def test_workers_share_a_study_through_the_grpc_proxy_with_exactly_the_budget(tune_cfg, tmp_path):
    # optbench-tune-proxy in front of a SQLite file here; on a cluster it fronts PostgreSQL (tests/cluster).
    port = _free_port()
    proxy = subprocess.Popen(
        [str(Path(sys.executable).parent / "optbench-tune-proxy"), "--storage", f"sqlite:///{tmp_path / 'p.db'}"]
        + ["--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port).wait_server_ready(timeout=120)  # start-up
        summary = tune(tune_cfg(f"tune.storage=grpc://127.0.0.1:{port}", "tune.n_trials=3", "tune.n_jobs=2"))
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
    assert summary["n_finished"] == 3
    study = optuna.load_study(study_name="sgd-mlp-digits-lr", storage=f"sqlite:///{tmp_path / 'p.db'}")
    counted = [t for t in study.trials if t.user_attrs.get("outcome") != "surplus"]
    assert len(counted) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in counted)
