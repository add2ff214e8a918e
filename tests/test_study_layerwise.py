"""The layerwise_lr study: a tuned comparison (tuned.py) of one global learning rate against per-layer
rates (optimizer.layerwise_lr_decay); its test preset runs end to end, the layer-wise runs really get
layer-wise rates, and every case is tuned with the same budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from study_checks import check_mlflow, check_well_formed

from optbench.core.config import compose_config
from optbench.studies.config import load_study
from optbench.studies.kinds.tuned import case_overrides
from optbench.training.data import load_dataset
from optbench.training.models import build_model
from optbench.training.optim import build_optimizer

NAME = "layerwise_lr"
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.unit
@pytest.mark.parametrize("preset", [None, "test"])
def test_the_cases_build_one_global_rate_and_rates_that_shrink_toward_the_input(preset):
    cfg = load_study(NAME, preset)
    cases = case_overrides(cfg)
    run = {name: compose_config(*cfg.train, *cases[name], "optimizer.lr=0.01") for name in cfg.run_cases}
    model = build_model(run["global"].model, load_dataset(run["global"].data))
    assert {g["lr"] for g in build_optimizer(run["global"].optimizer, model).param_groups} == {0.01}
    decay = run["decay"].optimizer.layerwise_lr_decay
    lrs = sorted({g["lr"] for g in build_optimizer(run["decay"].optimizer, model).param_groups}, reverse=True)
    n_layers = len(run["decay"].model.hidden) + 1  # the hidden layers and the output layer
    assert lrs == pytest.approx([0.01 * decay**k for k in range(n_layers)])


@pytest.mark.unit
def test_the_gpu_preset_composes_a_resnet_with_gentler_factors():
    cfg = load_study(NAME, "gpu")
    cases = case_overrides(cfg)
    run = compose_config(*cfg.train, *cases["decay"])
    assert (run.model.name, run.trainer.accelerator, run.optimizer.layerwise_lr_decay) == ("resnet18", "gpu", 0.9)


@pytest.mark.unit
def test_the_pipeline_tracks_the_study_config_and_the_tuned_kind_only():
    stage = yaml.safe_load((ROOT / "pipelines" / NAME / "dvc.yaml").read_text())["stages"]["run"]
    assert stage["cmd"] == f"OPTBENCH_CONFIG_DIR=conf optbench-study run {NAME}" and stage["wdir"] == "../.."
    assert stage["params"] == [{f"conf/study/{NAME}.yaml": None}]
    kinds = [d for d in stage["deps"] if "studies/kinds/" in d and not d.endswith("__init__.py")]
    assert kinds == ["src/optbench/studies/kinds/tuned.py"] and "src/optbench/training" in stage["deps"]


@pytest.mark.slow
def test_the_test_preset_runs_end_to_end_with_layerwise_rates(tracking_uri, mlflow_client, monkeypatch, tmp_path):
    from optbench.studies.run import run_study

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study(NAME, "test")
    verdict = run_study(cfg, tmp_path)
    check_well_formed(verdict, cfg, tmp_path, ("supported", "refuted", "inconclusive"))
    results = verdict["results"]
    assert {len(r["trials"]) for r in results.values()} == {2}  # the same budget: tune.n_trials=2
    for case in verdict["cases"]:  # the claim's advantage: the paired mean difference of the recorded runs
        if case["metric"] == "test_acc":
            a, b = (results[case[side]]["runs"] for side in ("better", "than"))
            diff = sum(x["test_acc"] - y["test_acc"] for x, y in zip(a, b, strict=True)) / len(a)
            assert case["advantage"]["diff"] == pytest.approx(diff)
    n_runs = len(cfg.run_cases) * (1 + len(cfg.seeds))  # per case a tuning parent and a run per seed
    children = check_mlflow(mlflow_client, NAME, verdict, n_children=n_runs)
    decays = {
        r.data.tags["optbench.study_case"]: r.data.params.get("optimizer.layerwise_lr_decay")
        for r in children
        if r.data.tags.get("optbench.study_variant", "").startswith("seed")
    }
    assert decays == {"global": None, "decay": "0.5"}  # a null setting is not logged
