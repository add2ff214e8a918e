"""train(cfg) on real configs: every option of every group runs, results are reproducible and tracked."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import runs_of

from optbench.core.config import group_options
from optbench.core.errors import ConfigError
from optbench.training.module import OptbenchModule
from optbench.training.train import train


def options(group: str) -> list[str]:
    return group_options(group)


# A small, fast base for sweeping one group at a time; other groups keep their defaults.
FAST_BASE = ("data=digits", "model=mlp")
# Options that need a companion setting, or hardware this suite cannot assume.
COMPANIONS = {
    ("data", "regression"): ("model=linear",),
    ("model", "linear"): ("data=regression",),
    ("model", "cnn"): ("data=digits",),
    ("model", "resnet18"): ("data=digits", "batch_size=16"),
    ("model", "wide_resnet"): ("data=digits", "batch_size=16"),
    ("model", "vit_cifar"): ("data=digits", "batch_size=16"),
    ("strategy", "ddp_spawn"): ("trainer.limit_val_batches=1", "trainer.limit_test_batches=1"),
}
NEEDS_GPU = {("strategy", "fsdp"), ("trainer", "gpu")}
ELSEWHERE = {  # covered by their own tests
    ("data", name): "torchvision datasets are tested on generated files in test_data.py"
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100")
}
ELSEWHERE[("strategy", "ddp")] = "ddp re-runs the command line; tested as a subprocess in test_cli.py"


def group_option_cases() -> list:
    cases = []
    for group in ("optimizer", "scheduler", "precision", "strategy", "data", "model", "trainer", "logger"):
        for option in options(group):
            marks = []
            if (group, option) in NEEDS_GPU:
                marks.append(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))
            if (group, option) in ELSEWHERE:
                marks.append(pytest.mark.skip(reason=ELSEWHERE[(group, option)]))
            if (group, option) in {
                ("strategy", "ddp_spawn"),
                ("model", "resnet18"),
                ("model", "wide_resnet"),
                ("model", "vit_cifar"),
            }:
                marks.append(pytest.mark.slow)
            cases.append(pytest.param(group, option, marks=marks, id=f"{group}={option}"))
    return cases


@pytest.mark.parametrize(("group", "option"), group_option_cases())
def test_every_option_of_every_group_trains_a_few_steps(make_cfg, group, option):
    overrides = (*FAST_BASE, *COMPANIONS.get((group, option), ()), f"{group}={option}")
    cfg = make_cfg(*overrides)
    assert cfg[group].get("name", option) == option  # each option file carries its own name

    metrics = train(cfg)

    assert metrics["train/steps"] >= 1
    assert math.isfinite(metrics["test/loss"])
    assert metrics["train/diverged"] == 0.0


def test_same_seed_gives_identical_metrics(make_cfg):
    first = train(make_cfg(*FAST_BASE, "seed=7", "logger=none"))
    second = train(make_cfg(*FAST_BASE, "seed=7", "logger=none"))
    for key in ("train/loss", "val/loss", "val/acc", "test/loss", "test/acc"):
        assert first[key] == second[key], key


def test_different_seeds_give_different_runs(make_cfg):
    first = train(make_cfg(*FAST_BASE, "seed=0", "logger=none"))
    second = train(make_cfg(*FAST_BASE, "seed=1", "logger=none"))
    assert first["train/loss"] != second["train/loss"]


def test_run_records_config_params_metrics_tags_and_artifacts(make_cfg, mlflow_client, tmp_path):
    cfg = make_cfg(*FAST_BASE, "optimizer=sgd", "optimizer.lr=0.05", "seed=3")
    metrics = train(cfg)

    (run,) = runs_of(mlflow_client, cfg.experiment)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "sgd-mlp-digits-s3"
    params = run.data.params
    assert params["optimizer.name"] == "sgd"
    assert float(params["optimizer.lr"]) == 0.05
    assert params["scheduler.name"] == "constant"
    assert params["precision.name"] == "32-true"
    assert params["seed"] == "3"
    for metric in (
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "train/samples_per_sec",
        "val/loss",
        "val/acc",
        "test/loss",
        "test/acc",
        "time/train_s",
        "optimizer/state_to_param_ratio",
    ):
        assert metric in run.data.metrics, metric
    assert len(mlflow_client.get_metric_history(run.info.run_id, "train/loss")) == metrics["train/steps"]
    tags = run.data.tags
    assert tags["optbench.outcome"] == "completed"
    assert len(tags["optbench.data_fingerprint"]) == 16
    assert tags["optbench.git_dirty"] in ("true", "false")
    assert tags["optbench.device"].startswith("cpu")
    assert "optbench.version" in tags and "mlflow.source.git.commit" in tags
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.yaml"} <= artifacts
    assert (tmp_path / "metrics.json").exists()


def test_sgd_optimizer_state_is_empty_and_adam_state_is_twice_the_parameters(make_cfg):
    sgd = train(make_cfg(*FAST_BASE, "optimizer=sgd", "logger=none"))
    adam = train(make_cfg(*FAST_BASE, "optimizer=adam", "logger=none"))
    assert sgd["optimizer/state_to_param_ratio"] == 0.0
    assert adam["optimizer/state_to_param_ratio"] == pytest.approx(2.0, abs=1e-3)


def test_a_crash_after_the_run_started_marks_it_failed(make_cfg, mlflow_client, monkeypatch):
    def explode(self, batch, batch_idx):
        raise RuntimeError("simulated crash in the middle of training")

    monkeypatch.setattr(OptbenchModule, "training_step", explode)
    cfg = make_cfg(*FAST_BASE)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    (run,) = runs_of(mlflow_client, cfg.experiment)
    assert run.info.status == "FAILED"
    assert run.data.tags["optbench.outcome"] == "failed"


def test_invalid_config_is_rejected_before_any_run_is_created(make_cfg, mlflow_client):
    cfg = make_cfg(*FAST_BASE, "optimizer.lr=-0.1")
    with pytest.raises(ConfigError, match="learning rate"):
        train(cfg)
    assert mlflow_client.get_experiment_by_name(cfg.experiment) is None


def test_a_diverging_run_stops_and_is_recorded_as_diverged(make_cfg, mlflow_client):
    cfg = make_cfg(*FAST_BASE, "optimizer=sgd", "optimizer.lr=1e12")
    metrics = train(cfg)
    assert metrics["train/diverged"] == 1.0
    (run,) = runs_of(mlflow_client, cfg.experiment)
    assert run.info.status == "FINISHED"
    assert run.data.tags["optbench.outcome"] == "diverged"


def test_loss_scale_divides_like_the_learning_rate_for_plain_sgd(make_cfg):
    # For SGD without momentum or weight decay, loss * c and lr * c give the same updates exactly
    # (up to rounding, removed here by float64).
    common = (*FAST_BASE, "optimizer=sgd", "precision=64-true", "logger=none")
    scaled_loss = train(make_cfg(*common, "optimizer.lr=0.1", "loss_scale=0.1"))
    scaled_lr = train(make_cfg(*common, "optimizer.lr=0.01", "loss_scale=1.0"))
    assert scaled_loss["test/loss"] == pytest.approx(scaled_lr["test/loss"], rel=1e-9)
    assert scaled_loss["train/loss"] == pytest.approx(scaled_lr["train/loss"], rel=1e-9)


def test_gradient_accumulation_divides_the_optimizer_steps(make_cfg):
    metrics = train(make_cfg(*FAST_BASE, "trainer.accumulate_grad_batches=2", "logger=none"))
    assert metrics["train/steps"] == 2  # trainer=fast runs 4 batches


def test_gradient_clipping_by_norm_and_by_value_train(make_cfg):
    for algorithm in ("norm", "value"):
        clip = f"trainer.gradient_clip_algorithm={algorithm}"
        metrics = train(make_cfg(*FAST_BASE, "trainer.gradient_clip_val=0.1", clip, "logger=none"))
        assert math.isfinite(metrics["test/loss"])


def test_lbfgs_full_batch_takes_one_step_per_epoch(make_cfg):
    metrics = train(make_cfg(*FAST_BASE, "optimizer=lbfgs", "trainer.max_epochs=2", "logger=none"))
    assert metrics["train/steps"] == 2


def test_fp16_mixed_on_cpu_uses_a_loss_scaler_and_logs_it(make_cfg):
    metrics = train(make_cfg(*FAST_BASE, "precision=16-mixed", "logger=none"))
    assert metrics["amp/loss_scale"] > 1.0
    skipped = metrics["amp/skipped_steps"]  # a count of the steps the scaler skipped, out of those taken
    assert skipped.is_integer() and 0 <= skipped <= metrics["train/steps"]


def test_regression_reports_the_distance_to_the_known_optimum(make_cfg):
    cfg = make_cfg("data=regression", "model=linear", "optimizer=sgd", "optimizer.lr=0.1", "batch_size=64")
    metrics = train(cfg)
    assert 0.0 < metrics["train/dist_to_opt"] < 10.0


def test_step_schedules_are_stepped_every_optimizer_step(make_cfg, mlflow_client):
    cfg = make_cfg(*FAST_BASE, "optimizer=sgd", "scheduler=cosine", "trainer.limit_train_batches=6")
    train(cfg)
    (run,) = runs_of(mlflow_client, cfg.experiment)
    lrs = [m.value for m in sorted(mlflow_client.get_metric_history(run.info.run_id, "train/lr"), key=lambda m: m.step)]
    expected = [0.1 * (1 + math.cos(math.pi * t / 6)) / 2 for t in range(6)]
    assert lrs == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_ddp_spawn_with_two_cpu_processes_learns(make_cfg, mlflow_client):
    cfg = make_cfg(*FAST_BASE, "strategy=ddp_spawn", "trainer.max_epochs=3", "trainer.limit_train_batches=null")
    metrics = train(cfg)
    assert metrics["val/acc"] > 0.5  # ten classes: chance is 0.1
    (run,) = runs_of(mlflow_client, cfg.experiment)
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy.devices"] == "2"
