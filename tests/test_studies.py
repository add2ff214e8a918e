"""Claim studies (optbench-study): the exact studies in their test-sized form reach the verdicts the mathematics
predicts, their verdict.json is well-formed and logged to MLflow, and train() can save the final parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import runs_of
from optbench.data import load_dataset
from optbench.errors import ConfigError
from optbench.models import build_model
from optbench.study import EQUIVALENT, KIND, NOT_EQUIVALENT, load_study, run_study, study_names, verdict_of
from optbench.train import train

ROOT = Path(__file__).resolve().parents[1]
EXACT = ("loss_vs_lr_scale", "grad_accumulation")


def test_params_path_saves_the_final_state_dict_loadable_into_the_model(make_cfg, tmp_path):
    path = tmp_path / "params" / "final.pt"
    cfg = make_cfg("data=digits", "model=mlp", "optimizer=sgd", "logger=none", f"params_path={path}")
    train(cfg)
    state = torch.load(path, weights_only=True)
    model = build_model(cfg.model, load_dataset(cfg.data))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)  # strict: the same keys and shapes
    assert all(v.device.type == "cpu" and not v.requires_grad for v in state.values())
    assert any(not torch.equal(state[k], initial[k]) for k in state)  # trained, not the initialization
    assert not list(path.parent.glob("*.tmp"))


def _check_verdict_file(path: Path, cfg) -> dict:
    verdict = json.loads(path.read_text())
    assert verdict["study"] == cfg.name and verdict["question"] == cfg.question
    assert verdict["threshold"] == cfg.threshold
    for case in verdict["cases"]:
        assert {"case", "distance", "verdict", "expected", "runs"} <= case.keys()
        assert case["verdict"] == verdict_of(case["distance"], cfg.threshold)  # computed, not written
        assert verdict["verdicts"][case["case"]] == case["verdict"]
        assert all(run["run_id"] and 0.0 <= run["test_acc"] <= 1.0 for run in case["runs"].values())
    return verdict


def _check_mlflow(client, name: str, verdict: dict, n_runs: int) -> None:
    parent = client.get_run(verdict["mlflow"]["run_id"])
    assert parent.data.tags["optbench.kind"] == KIND and parent.info.status == "FINISHED"
    runs = runs_of(client, f"study-{name}")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"verdict.json", "report.md"} <= artifacts
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == n_runs and all(r.info.status == "FINISHED" for r in children)


def test_loss_vs_lr_scale_test_preset_reaches_the_predicted_verdicts(
    tracking_uri, mlflow_client, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("loss_vs_lr_scale", "test", params=False)
    assert set(cfg.optimizers) >= {"sgd", "sgd_wd", "adam"}
    run_study(cfg, tmp_path)
    verdict = _check_verdict_file(tmp_path / "verdict.json", cfg)
    cases = {c["case"]: c for c in verdict["cases"]}
    assert verdict["verdicts"] == {"sgd": EQUIVALENT, "sgd_wd": NOT_EQUIVALENT, "adam": NOT_EQUIVALENT}
    assert cases["sgd"]["distance"] < 1e-12
    assert cases["sgd_wd"]["distance"] > 1e-6 and cases["adam"]["distance"] > 1e-3
    # Adam is (nearly) invariant to the loss scale: loss/10 stays by the baseline, lr/10 moves away from it.
    adam = cases["adam"]
    assert adam["distance_loss_scaled_to_baseline"] < adam["distance_lr_scaled_to_baseline"] / 10
    assert verdict["as_expected"] == verdict["n_cases"] == 3
    report = (tmp_path / "report.md").read_text()
    assert "threshold 1e-09" in report and "**not equivalent**" in report
    assert f"{cases['sgd']['distance']:.3g}" in report
    _check_mlflow(mlflow_client, "loss_vs_lr_scale", verdict, n_runs=3 * 3)


def test_grad_accumulation_test_preset_reaches_the_predicted_verdicts(
    tracking_uri, mlflow_client, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("grad_accumulation", "test", params=False)
    run_study(cfg, tmp_path)
    verdict = _check_verdict_file(tmp_path / "verdict.json", cfg)
    assert verdict["verdicts"] == {"no_batch_norm": EQUIVALENT, "batch_norm": NOT_EQUIVALENT}
    assert verdict["distances"]["no_batch_norm"] < 1e-12 and verdict["distances"]["batch_norm"] > 1e-4
    _check_mlflow(mlflow_client, "grad_accumulation", verdict, n_runs=2 * 2)


def test_study_config_merges_params_file_preset_and_overrides():
    cfg = load_study("loss_vs_lr_scale", "test", ["steps=7"])
    assert cfg.steps == 7 and cfg.preset == "test" and list(cfg.optimizers) == ["sgd", "sgd_wd", "adam"]
    params = yaml.safe_load((ROOT / "pipelines/loss_vs_lr_scale/params.yaml").read_text())
    assert load_study("loss_vs_lr_scale").steps == params["steps"]
    with pytest.raises(ConfigError, match="Unknown study 'nope'"):
        load_study("nope")
    assert verdict_of(1e-9, 1e-9) == NOT_EQUIVALENT and verdict_of(float("nan"), 1e-9) == NOT_EQUIVALENT


def test_a_study_that_fails_marks_its_verdict_run_failed(tracking_uri, mlflow_client, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("grad_accumulation", "test", ["micro_batch=10000"], params=False)
    with pytest.raises(ConfigError, match="exceeds the 1257 training examples"):
        run_study(cfg, tmp_path)
    (failed,) = [r for r in runs_of(mlflow_client, "study-grad_accumulation") if r.info.status == "FAILED"]
    assert failed.data.tags["optbench.kind"] == KIND
    assert not (tmp_path / "verdict.json").exists()


@pytest.mark.parametrize("name", EXACT)
def test_each_study_has_a_pipeline_that_runs_it_with_params_it_knows(name):
    assert name in study_names()
    stage = yaml.safe_load((ROOT / "pipelines" / name / "dvc.yaml").read_text())["stages"]["run"]
    assert stage["cmd"] == f"optbench-study run {name}" and stage["wdir"] == "../.."
    (params,) = stage["params"]
    tracked = params[f"pipelines/{name}/params.yaml"]
    study = yaml.safe_load((ROOT / "conf/study" / f"{name}.yaml").read_text())
    assert set(tracked) <= set(study) and f"conf/study/{name}.yaml" in stage["deps"]
    assert f"pipelines/{name}/results/verdict.json" in [next(iter(m)) for m in stage["metrics"]]


def test_study_list_prints_every_study_and_its_question():
    script = Path(sys.executable).parent / "optbench-study"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "optbench.study"]
    result = subprocess.run(
        [*command, "list"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in EXACT:
        assert name in result.stdout
    assert "dividing the loss by 10" in result.stdout
