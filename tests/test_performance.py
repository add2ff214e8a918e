"""What the performance work must not lose: every metric still logged (totals once, not as curves), the
phase timings benchmarks/pipeline.py reads, start-up without MLflow for logger=none, threads shared by
tuning workers, and the trainer's device options. No timed assertions: speed lives in benchmarks/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from optbench.core.errors import ConfigError
from optbench.core.threads import available_cores, share_cores, threads_per_worker
from optbench.training.train import build_components, train
from tests.conftest import runs_of

BIN = Path(sys.executable).parent


@pytest.mark.unit
def test_workers_times_threads_never_exceed_the_cores():
    assert threads_per_worker(1, cores=8) == 8
    assert threads_per_worker(3, cores=8) == 2
    assert threads_per_worker(16, cores=8) == 1  # at least one thread each
    for workers in range(1, 10):
        assert workers * threads_per_worker(workers, cores=8) <= max(8, workers)


@pytest.mark.unit
def test_a_worker_takes_its_share_of_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert share_cores(2, "worker") == max(1, available_cores() // 2) == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_totals_are_logged_once_and_curves_every_epoch(make_cfg, mlflow_client):
    cfg = make_cfg("data=digits", "model=mlp", "trainer.max_epochs=3", "trainer.limit_train_batches=null")
    metrics = train(cfg)
    run = runs_of(mlflow_client, cfg.experiment)[-1]

    def history(key: str) -> list:
        return mlflow_client.get_metric_history(run.info.run_id, key)

    for total in ("train/steps", "train/diverged", "optimizer/state_bytes", "optimizer/state_to_param_ratio"):
        assert len(history(total)) == 1, total
        assert history(total)[0].value == pytest.approx(metrics[total])
    assert history("train/steps")[0].value == 3 * 10  # digits: 1,257 examples at batch 128 per epoch
    for curve in ("train/acc", "train/samples_per_sec", "val/acc", "val/loss", "time/train_s"):
        assert len(history(curve)) == 3, curve
    assert 0 < metrics["train/acc"] <= 1 and 0 < metrics["val/acc"] <= 1 and metrics["val/loss"] > 0


def test_validation_metrics_cover_every_example_once(make_cfg, tmp_path):
    """val/loss and val/acc from per-batch sums equal the final model's loss and accuracy on the whole split."""
    params = tmp_path / "final.pt"
    cfg = make_cfg("data=digits", "model=mlp", "logger=none", "trainer.limit_val_batches=null", f"params_path={params}")
    metrics = train(cfg)
    data, _, module = build_components(cfg)
    module.model.load_state_dict(torch.load(params, weights_only=True))
    module.eval()
    with torch.no_grad():
        out = module(data.val.x)
        loss = module.criterion(out, data.val.y).item()
        accuracy = (out.argmax(dim=-1) == data.val.y).float().mean().item()
    assert metrics["val/loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["val/acc"] == pytest.approx(accuracy, abs=1e-6)


def test_trainer_device_options_are_accepted_and_checked(make_cfg):
    metrics = train(make_cfg("data=mnist5k", "model=cnn", "logger=none", "trainer.channels_last=true"))
    assert metrics["train/steps"] > 0
    train(make_cfg("logger=none", "trainer.data_on_device=false"))
    with pytest.raises(ConfigError, match="trainer.compile"):
        train(make_cfg("logger=none", "trainer.compile=maybe"))


def run_command(*args: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "optbench-train"), *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )


def test_a_run_without_mlflow_never_imports_it(tmp_path):
    code = (
        "import sys\n"
        "from optbench.core.config import compose_config\n"
        "from optbench.training.train import train\n"
        f"train(compose_config('data=digits', 'model=mlp', 'trainer=fast', 'logger=none', "
        f"'metrics_path={tmp_path}/m.json'))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'optuna')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_each_command_reports_where_its_time_went(tmp_path):
    timings = tmp_path / "timings.jsonl"
    done = run_command(
        "data=digits",
        "model=mlp",
        "trainer=fast",
        f"hydra.run.dir={tmp_path}/run",
        env={"OPTBENCH_TIMINGS": str(timings), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = [json.loads(line) for line in timings.read_text().splitlines()]
    assert record["command"] == "optbench-train"
    phases = record["phases"]
    assert {"startup", "compute", "tracking", "other"} <= set(phases)
    assert all(seconds >= 0 for seconds in phases.values())
    assert phases["startup"] > 0 and phases["compute"] > 0 and phases["tracking"] > 0
    assert sum(phases.values()) == pytest.approx(record["wall"], rel=0.05, abs=0.5)


def test_without_the_variable_nothing_is_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPTBENCH_TIMINGS"}
    done = subprocess.run(
        [
            str(BIN / "optbench-train"),
            "data=digits",
            "model=mlp",
            "trainer=fast",
            "logger=none",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not list(tmp_path.glob("*.jsonl"))
