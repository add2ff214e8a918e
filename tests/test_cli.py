"""optbench-train as a user runs it: a subprocess, Hydra's command line, a real SQLite MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import runs_of
from mlflow.tracking import MlflowClient

OPTBENCH_TRAIN = str(Path(sys.executable).parent / "optbench-train")
FAST = ["trainer=fast", "data=digits", "model=mlp"]


def run_cli(tmp_path: Path, *args: str, command: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return subprocess.run(
        [*(command or [OPTBENCH_TRAIN]), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_multirun_sweep_logs_one_mlflow_run_per_job(tmp_path):
    result = run_cli(tmp_path, "-m", "optimizer=sgd,adam", "seed=0,1", "experiment=sweep", *FAST)
    assert result.returncode == 0, result.stderr

    runs = runs_of(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), "sweep")
    assert sorted((r.data.params["optimizer.name"], r.data.params["seed"]) for r in runs) == [
        ("adam", "0"),
        ("adam", "1"),
        ("sgd", "0"),
        ("sgd", "1"),
    ]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {"train/loss", "val/acc", "test/acc"} <= set(run.data.metrics)
    # Runs line up in the MLflow UI: the same optimizer gives the same parameter names, and the
    # settings every optimizer shares have one name across all runs.
    by_optimizer = {}
    for run in runs:
        by_optimizer.setdefault(run.data.params["optimizer.name"], []).append(set(run.data.params))
    assert all(names[0] == names[1] for names in by_optimizer.values())
    shared = set.intersection(*(set(r.data.params) for r in runs))
    assert {"optimizer.lr", "optimizer.weight_decay", "scheduler.name", "seed", "batch_size"} <= shared
    metrics_files = sorted((tmp_path / "multirun").rglob("metrics.json"))
    assert len(metrics_files) == 4
    assert all("test/acc" in json.loads(f.read_text()) for f in metrics_files)


def test_python_dash_m_runs_the_same_entry_point(tmp_path):
    result = run_cli(tmp_path, *FAST, "logger=none", command=[sys.executable, "-m", "optbench.cli.train"])
    assert result.returncode == 0, result.stderr
    assert "test/acc" in json.loads(next((tmp_path / "outputs").rglob("metrics.json")).read_text())


# Bad input to optbench-train and every other command: tests/test_bad_inputs.py.


@pytest.mark.slow
def test_ddp_relaunches_the_command_line_and_logs_one_run(tmp_path):
    result = run_cli(tmp_path, "strategy=ddp", "experiment=ddp", *FAST)
    assert result.returncode == 0, result.stderr
    assert "GLOBAL_RANK: 1" in result.stderr + result.stdout
    (run,) = runs_of(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), "ddp")
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy.name"] == "ddp"
