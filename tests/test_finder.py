"""optbench-lr-find and optbench-bs-find: Lightning's Tuner on real data, a real SQLite MLflow store, the CLI."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import compose_config, runs_of
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from optbench.core.errors import ConfigError
from optbench.training.finder import batch_size_find, lr_find
from optbench.training.module import OptbenchModule

LR_FIND = str(Path(sys.executable).parent / "optbench-lr-find")
# The default trainer, not trainer=fast: the finders set their own lengths (find.num_training steps).
SMALL = ["data=digits", "model=mlp", "find.num_training=20"]


def compose_find(*overrides: str) -> DictConfig:
    """Compose conf/find.yaml as optbench-lr-find / optbench-bs-find would."""
    return compose_config(*overrides, config_name="find")


@pytest.fixture
def make_find_cfg(
    tmp_path: Path, tracking_uri: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., DictConfig]:
    """find.yaml on the small problem, the session's SQLite store, outputs in tmp_path, one experiment per test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    experiment = re.sub(r"[^\w.-]+", "_", request.node.name)

    def make(*overrides: str) -> DictConfig:
        base = [
            *SMALL,
            f"find.output_dir={tmp_path / 'out'}",
            f"metrics_path={tmp_path / 'metrics.json'}",
            f"experiment={experiment}",
        ]
        return compose_find(*base, *overrides)

    make.experiment = experiment  # type: ignore[attr-defined]
    return make


def test_find_config_composes_train_and_the_find_node():
    cfg = compose_find("find.output_dir=/tmp/x", "metrics_path=/tmp/x/m.json", "optimizer=sgd")
    assert cfg.experiment == "optbench-find"
    assert cfg.optimizer.name == "sgd" and cfg.model.name == "cnn" and cfg.data.name == "mnist5k"
    assert cfg.find.min_lr == 1e-7 and cfg.find.max_lr == 10 and cfg.find.num_training == 100
    assert cfg.find.mode == "exponential" and cfg.find.early_stop_threshold == 4.0
    assert cfg.find.batch_size.mode == "power"


def test_lr_find_plot_suggestion_and_finished_mlflow_run(make_find_cfg, mlflow_client, tmp_path):
    cfg = make_find_cfg("optimizer=adamw")
    result = lr_find(cfg)

    plot = tmp_path / "out" / "lr_find.png"
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "out" / "lr_find.json").read_text())
    suggestion = saved["suggestion"]
    assert suggestion == result["suggestion"]
    assert suggestion is not None and math.isfinite(suggestion)
    assert cfg.find.min_lr <= suggestion <= cfg.find.max_lr
    assert len(saved["lr"]) == len(saved["loss"]) == saved["steps"] <= 20
    assert saved["lr"] == sorted(saved["lr"]) and saved["lr"][0] == pytest.approx(1e-7)
    assert not list((tmp_path / "out").glob("*.ckpt"))  # Lightning's snapshot of the start is cleaned up

    runs = runs_of(mlflow_client, make_find_cfg.experiment)
    assert len(runs) == 1  # the Tuner's fits log nothing of their own
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_id == result["run_id"]
    assert run.data.tags["optbench.kind"] == "lr_find"
    assert run.data.tags["optbench.outcome"] == "completed"
    assert run.data.metrics["lr_find/suggestion"] == pytest.approx(suggestion)
    assert run.data.params["optimizer.name"] == "adamw" and run.data.params["find.num_training"] == "20"
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"lr_find.png", "lr_find.json", "config.yaml"} <= artifacts


def test_lr_find_completes_when_the_loss_diverges(make_find_cfg, mlflow_client):
    # No early stop and a huge max_lr: the loss goes NaN, OptbenchModule skips the step and stops the loop.
    cfg = make_find_cfg("optimizer=sgd", "find.max_lr=1e8", "find.early_stop_threshold=null")
    result = lr_find(cfg)

    assert result["stopped_early"] and result["loss"][-1] is None
    assert result["suggestion"] is not None and math.isfinite(result["suggestion"])
    assert cfg.find.min_lr <= result["suggestion"] <= cfg.find.max_lr
    (run,) = runs_of(mlflow_client, make_find_cfg.experiment)
    assert run.info.status == "FINISHED"


def test_lr_find_refuses_lbfgs_before_logging_anything(make_find_cfg, mlflow_client):
    with pytest.raises(ConfigError, match="the LR range test takes one step per batch"):
        lr_find(make_find_cfg("optimizer=lbfgs"))
    assert mlflow_client.get_experiment_by_name(make_find_cfg.experiment) is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("find.mode=cubic", "find.mode must be one of exponential, linear"),
        ("find.min_lr=0", "find.min_lr must be a positive number"),
        ("find.max_lr=1e-8", "find.max_lr must be a number larger than find.min_lr"),
        ("find.num_training=5", "find.num_training must be an integer of at least 13"),
        ("find.early_stop_threshold=0.5", "find.early_stop_threshold must be a number above 1"),
        ("strategy=ddp_spawn", "runs in one process"),
    ],
)
def test_lr_find_rejects_bad_settings(make_find_cfg, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        lr_find(make_find_cfg(override))


def test_batch_size_find_on_cpu_stops_at_the_train_split(make_find_cfg, mlflow_client, tmp_path, caplog):
    result = batch_size_find(make_find_cfg())

    size, n_train = result["batch_size"], result["train_size"]
    assert size == n_train  # nothing runs out of memory: the search grows until one batch is the whole split
    assert result["lightning_batch_size"] >= n_train
    assert result["accelerator"] == "cpu" and "says nothing about memory" in result["warning"]
    assert "says nothing about memory" in caplog.text
    saved = json.loads((tmp_path / "out" / "batch_size_find.json").read_text())
    assert saved["batch_size"] == size

    (run,) = runs_of(mlflow_client, make_find_cfg.experiment)
    assert run.info.status == "FINISHED"
    assert run.data.tags["optbench.kind"] == "batch_size_find"
    assert run.data.metrics["batch_size_find/batch_size"] == size
    assert "batch_size_find.json" in {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}


def test_batch_size_find_backs_off_after_running_out_of_memory(make_find_cfg, monkeypatch):
    # Batches above 256 fail as torch's CPU allocator does when memory runs out.
    original = OptbenchModule.training_step

    def training_step(self, batch, batch_idx):
        if len(batch[0]) > 256:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB.")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(OptbenchModule, "training_step", training_step)
    result = batch_size_find(make_find_cfg())
    assert result["batch_size"] == 256


def test_batch_size_find_stops_at_max_trials(make_find_cfg):
    result = batch_size_find(make_find_cfg("find.batch_size.max_trials=2", "find.batch_size.init_val=16"))
    assert result["batch_size"] == 32


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("strategy=ddp_spawn", "The batch-size finder runs in one process"),
        ("optimizer=lbfgs", "there is no batch size to find"),
        ("find.batch_size.mode=linear", "find.batch_size.mode must be power or binsearch"),
        ("find.batch_size.init_val=0", "find.batch_size.init_val must be a positive integer"),
    ],
)
def test_batch_size_find_rejects_bad_settings(make_find_cfg, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        batch_size_find(make_find_cfg(override))


def _run_cli(tmp_path: Path, tracking_uri: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LR_FIND, *args],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_lr_find_command_line(tmp_path, tracking_uri):
    result = _run_cli(tmp_path, tracking_uri, *SMALL, "experiment=cli_lr_find")
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "outputs").rglob("lr_find.png"))
    assert re.search(r"lr_find: suggested learning rate \S+ for optimizer=adamw", result.stdout)
    (run,) = runs_of(MlflowClient(tracking_uri), "cli_lr_find")
    assert run.info.status == "FINISHED"


def test_lr_find_command_line_refuses_lbfgs_in_one_paragraph(tmp_path, tracking_uri):
    result = _run_cli(tmp_path, tracking_uri, *SMALL, "optimizer=lbfgs")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "the LR range test takes one step per batch" in result.stderr
