"""Nothing lost: interrupted runs resume to the same numbers in the same MLflow run, signals end runs
KILLED, dead processes' runs do not stay RUNNING, many processes share a fresh store, tuning keeps its
budget. Real processes, real signals, a real SQLite MLflow store and real Optuna storage."""

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
from mlflow.tracking import MlflowClient

from optbench.tracking import open_store, resolve_tracking_uri

BIN = Path(sys.executable).parent
# mnist5k / MLP in batches of 32: 110 steps, about a second an epoch on a CPU, so a signal sent once the
# first epoch is done lands while five more still run; the tests wait for such progress, never a guessed time.
WORKLOAD = ["data=mnist5k", "model=mlp", "batch_size=32", "trainer.max_epochs=6"]
RUN = [*WORKLOAD, "trainer.enable_progress_bar=false", "experiment=r"]
# What may differ between an interrupted-and-resumed run and an uninterrupted one: wall clock, the run id.
CLOCK = {"time/train_s", "train/samples_per_sec", "run_id"}
pytestmark = pytest.mark.slow


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}


def _train(tmp_path: Path, *args: str, name: str) -> subprocess.Popen:
    command = [str(BIN / "optbench-train"), *RUN, *args, f"metrics_path={tmp_path / name}.json"]
    return subprocess.Popen(
        [*command, f"hydra.run.dir={tmp_path / name}"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, process: subprocess.Popen, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            pytest.fail(f"the process ended (exit {process.returncode}) before {what}: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _checkpoint(tmp_path: Path) -> Path | None:
    found = list((tmp_path / "checkpoints").glob("*/last.ckpt"))
    return found[0] if found else None


def _metrics(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in CLOCK}


def _runs(tmp_path: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("r").experiment_id])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The final metrics of the uninterrupted run."""
    tmp_path = tmp_path_factory.mktemp("reference")
    process = _train(tmp_path, "seed=3", name="reference")
    assert process.wait(timeout=600) == 0, process.stderr.read()
    return _metrics(tmp_path / "reference.json")


def test_a_run_killed_with_sigkill_resumes_to_the_same_metrics_in_the_same_mlflow_run(tmp_path, reference):
    process = _train(tmp_path, "seed=3", name="run")
    _wait_for(lambda: _checkpoint(tmp_path) is not None, process, "the first checkpoint")
    time.sleep(0.3)  # some steps past the checkpoint, which the resumed run must redo identically
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    (killed,) = _runs(tmp_path)
    assert killed.info.status == "RUNNING"  # nobody could tell MLflow: the process died at once

    open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")  # any optbench command against the store
    (reaped,) = _runs(tmp_path)
    assert reaped.info.status == "KILLED" and reaped.data.tags["optbench.outcome"] == "killed"

    again = _train(tmp_path, "seed=3", name="run")  # the same command
    assert again.wait(timeout=600) == 0, again.stderr.read()
    assert _metrics(tmp_path / "run.json") == reference  # bitwise: every final metric but wall-clock time
    (resumed,) = _runs(tmp_path)
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    assert not list((tmp_path / "checkpoints").glob("*/last.ckpt"))  # a completed run is never resumed


def test_sigterm_writes_a_checkpoint_ends_the_run_killed_and_the_rerun_finishes_it_exactly(tmp_path, reference):
    process = _train(tmp_path, "seed=3", "checkpoint.every_n_epochs=100", name="run")  # no periodic checkpoint
    _wait_for(lambda: _validated_epochs(tmp_path) >= 1, process, "the first epoch")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    assert "SIGTERM" in process.stderr.read()
    assert _checkpoint(tmp_path) is not None  # written on the way out, mid-epoch
    (killed,) = _runs(tmp_path)
    assert killed.info.status == "KILLED" and killed.data.tags["optbench.outcome"] == "killed"

    again = _train(tmp_path, "seed=3", "checkpoint.every_n_epochs=100", name="run")
    assert again.wait(timeout=600) == 0, again.stderr.read()
    assert _metrics(tmp_path / "run.json") == reference
    (resumed,) = _runs(tmp_path)
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"


def _validated_epochs(tmp_path: Path) -> int:
    """How many epochs the (only) run has validated so far; 0 before the store or the run exists."""
    if not (tmp_path / "mlflow.db").is_file():  # a client would create the store the training process creates
        return 0
    client = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")  # waits for the schema under the store's lock
    experiment = client.get_experiment_by_name("r")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return len(client.get_metric_history(runs[0].info.run_id, "val/loss")) if runs else 0


def test_ctrl_c_ends_the_run_killed_with_exit_status_130(tmp_path):
    process = _train(tmp_path, "seed=3", name="run")
    _wait_for(lambda: _checkpoint(tmp_path) is not None, process, "the first checkpoint")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    stderr = process.stderr.read()
    assert "interrupted" in stderr and "Traceback" not in stderr
    (run,) = _runs(tmp_path)
    assert run.info.status == "KILLED" and run.data.tags["optbench.outcome"] == "killed"


def test_eight_processes_starting_together_on_a_fresh_store_all_log_their_runs(tmp_path):
    assert not (tmp_path / "mlflow.db").exists()
    processes = [
        subprocess.Popen(
            [
                str(BIN / "optbench-train"),
                "trainer=fast",
                "data=digits",
                "model=logreg",
                f"seed={seed}",
                "experiment=r",
                f"hydra.run.dir={tmp_path / str(seed)}",
            ],  # fmt: skip
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(8)
    ]
    codes = [p.wait(timeout=600) for p in processes]
    assert codes == [0] * 8, [p.stderr.read()[-500:] for p in processes]
    runs = _runs(tmp_path)
    assert sorted(int(r.data.params["seed"]) for r in runs) == list(range(8))
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_two_tuning_workers_finish_exactly_the_budget(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = subprocess.run(
        [
            str(BIN / "optbench-tune"),
            "data=digits",
            "model=logreg",
            "trainer=fast",
            "tune.n_trials=6",
            "tune.n_jobs=2",
            "tune.pruner.name=none",
            f"tune.storage={storage}",
            "tune.study_name=s",
            f"tune.output_dir={tmp_path / 'tune'}",
            "experiment=t",
        ],  # fmt: skip
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    trials = optuna.load_study(study_name="s", storage=storage).trials
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 6
    summary = json.loads((tmp_path / "tune" / "s" / "best.json").read_text())
    assert summary["n_finished"] == 6 and "surplus" not in summary["n_trials"]


def test_a_trial_whose_worker_died_is_retried_once_with_the_same_parameters(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    command = [str(BIN / "optbench-tune"), *WORKLOAD, "trainer.enable_progress_bar=false",
               "tune.n_trials=2", "tune.pruner.name=none", f"tune.storage={storage}", "tune.study_name=s",
               f"tune.output_dir={tmp_path / 'tune'}", "experiment=t", "tune.heartbeat.interval=1",
               "tune.heartbeat.grace_period=2"]  # fmt: skip
    first = subprocess.Popen(command, cwd=tmp_path, env=_env(tmp_path), stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _checkpoint(tmp_path) is not None, first, "the first trial's checkpoint")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    time.sleep(3)  # past the grace period: the trial's heartbeat has stopped
    second = subprocess.run(command, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]

    trials = optuna.load_study(study_name="s", storage=storage).trials
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 2
    failed = next(t for t in trials if t.state.name == "FAIL")
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == failed.number)
    assert retry.params == failed.params and retry.state.name == "COMPLETE"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}


def test_an_unreachable_tracking_server_fails_in_seconds_not_minutes_of_retries(tmp_path):
    env = {**_env(tmp_path), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "optbench-train"), "trainer=fast", "data=digits", "model=logreg"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # optbench's bounded check answers in about 15 s plus start-up; MLflow's own retries would take minutes. The
    # bound is loose because a loaded machine slows the start-up; it still tells the two apart.
    assert result.returncode == 2 and time.monotonic() - started < 75
    assert "cannot reach the MLflow tracking server at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.unit
def test_the_default_store_of_a_dvc_stage_is_the_repository_dvc_runs_it_for(tmp_path, monkeypatch):
    # Queued and temporary `dvc exp run`s run in a copy of the repository; DVC_ROOT names the original.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}"
    monkeypatch.delenv("DVC_ROOT")
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
