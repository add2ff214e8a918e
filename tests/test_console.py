"""What a run shows in the terminal (the progress bar, the end-of-run summary, no routine notices) and the
optional final model in MLflow: real command-line runs on a real SQLite store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient

from optbench.training.console import ProgressBar, run_summary
from optbench.training.train import train
from tests.conftest import runs_of

TRAIN = str(Path(sys.executable).parent / "optbench-train")


def test_a_run_ends_with_one_summary_naming_its_metrics_run_and_folder(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    output = tmp_path / "run"
    done = subprocess.run(
        [TRAIN, "data=digits", "model=mlp", "trainer=fast", "experiment=summary", f"hydra.run.dir={output}"],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = runs_of(MlflowClient(uri), "summary")
    lines = done.stdout.strip().splitlines()[-4:]
    assert lines[0].startswith("adamw-mlp-digits-s0: completed after 4 steps")
    assert "val/acc " in lines[1] and "test/acc " in lines[1] and "test/loss " in lines[1]
    assert lines[2].startswith(f"  MLflow run {run.info.run_id}: `mlflow ui --backend-store-uri {uri}`")
    assert f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in lines[2]
    assert lines[3] == f"  output: {output.resolve()}"
    everything = done.stdout + done.stderr
    assert "GPU available" not in everything and "Tip:" not in everything  # Lightning's routine notices


@pytest.mark.unit
def test_the_summary_shows_finite_metrics_only_and_a_server_link():
    text = run_summary(
        "sgd-cnn-mnist5k-s1",
        {"train/steps": 12.0, "val/acc": 0.5, "test/acc": float("nan"), "run_id": "abc"},
        "diverged",
        3.25,
        "/tmp/out",
        "http://tracker:5000/#/experiments/1/runs/abc",
    )
    assert text.splitlines() == [
        "sgd-cnn-mnist5k-s1: diverged after 12 steps, 3.2 s of training",
        "  val/acc 0.5000",
        "  MLflow run abc: http://tracker:5000/#/experiments/1/runs/abc",
        "  output: /tmp/out",
    ]


@pytest.mark.unit
def test_the_progress_bar_shows_the_loss_and_validation_metrics_not_v_num():
    trainer = SimpleNamespace(callback_metrics={"train/loss": torch.tensor(0.51234), "val/acc": torch.tensor(0.9)})
    assert ProgressBar().get_metrics(trainer, None) == {"loss": "0.5123", "val_acc": "0.9"}


def test_log_model_puts_the_final_parameters_in_the_run(make_cfg, mlflow_client, tmp_path):
    params = tmp_path / "final.pt"
    cfg = make_cfg("data=digits", "model=mlp", "logger.log_model=true", f"params_path={params}")
    metrics = train(cfg)
    assert [a.path for a in mlflow_client.list_artifacts(metrics["run_id"], "model")] == ["model/final.pt"]
    logged = torch.load(mlflow_client.download_artifacts(metrics["run_id"], "model/final.pt", str(tmp_path)))
    saved = torch.load(params)
    assert logged.keys() == saved.keys() and all(torch.equal(logged[k], saved[k]) for k in saved)
    run = runs_of(mlflow_client, cfg.experiment)[-1]
    assert run.data.params["logger.log_model"] == "True"
