"""optbench-tune with real Optuna storage and a real MLflow store in a temporary directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import compose_config, runs_of
from optuna.trial import TrialState

from optbench.core.errors import ConfigError
from optbench.training.train import train
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
    return optuna.load_study(study_name="digits-mlp-sgd-lr", storage=cfg.tune.storage)


def test_a_study_completes_the_requested_trials_and_writes_best_json_and_plots(tune_cfg, tmp_path):
    cfg = tune_cfg("tune.n_trials=3", "tune.pruner.name=none")
    summary = tune(cfg)

    assert len(load(cfg).get_trials(states=[TrialState.COMPLETE])) == 3
    out = tmp_path / "tune" / "digits-mlp-sgd-lr"
    best = json.loads((out / "best.json").read_text())
    assert best == summary
    assert best["n_trials"] == {"completed": 3}
    low, high = cfg.tune.search_space.lr.low, cfg.tune.search_space.lr.high
    assert low <= best["best_params"]["optimizer.lr"] <= high
    assert best["overrides"] == [f"optimizer.lr={best['best_params']['optimizer.lr']}"]
    assert (out / "optimization_history.png").stat().st_size > 0
    assert (out / "sensitivity_optimizer_lr.png").stat().st_size > 0


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
    study = optuna.load_study(study_name="digits-mlp-sgd-lr", storage=optuna.storages.JournalStorage(backend))
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
    "inverted range": ("tune.search_space.lr.low=5.0", "empty or inverted range"),
    "log scale from zero": ("tune.search_space.lr.low=0", "log scale"),
    "no trials": ("tune.n_trials=0", "n_trials must be an integer of at least 1"),
    "storage that cannot be opened": ("tune.storage=sqlite:////nonexistent/dir/optuna.db", "does not exist"),
    "unknown storage scheme": ("tune.storage=nosuchdb://host/db", "cannot be opened"),
    "unknown sampler": ("tune.sampler.name=grid", "Valid samplers"),
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
    study = optuna.load_study(study_name="digits-mlp-sgd-lr", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
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
            study = optuna.load_study(study_name="digits-mlp-sgd-lr", storage=storage)
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
    states = [t.state for t in optuna.load_study(study_name="digits-mlp-sgd-lr", storage=storage).trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]
