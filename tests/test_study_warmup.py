"""The warmup_stability study: the largest stable learning rate per arm and seed, and the verdict on their
ratio, follow the rule on constructed sweeps with known answers; its test preset runs end to end."""

from __future__ import annotations

import math

import pytest
import yaml
from study_checks import check_mlflow, check_well_formed

from optbench.core.config import compose_config
from optbench.core.errors import ConfigError
from optbench.studies.config import load_study
from optbench.studies.kinds.warmup import check_config, is_stable, judge_ratio, largest_stable
from optbench.studies.run import run_study

NAME = "warmup_stability"
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
GRID = [0.01, 0.03, 0.1, 0.3]


def sweep(*largest: float) -> dict[float, list[bool]]:
    """lr -> stability per seed, where seed i is stable up to `largest[i]` (0: never) and not above."""
    return {lr: [lr <= top for top in largest] for lr in GRID}


@pytest.mark.unit
def test_the_largest_stable_lr_is_the_largest_stable_point_of_the_grid():
    assert largest_stable({0.01: True, 0.03: True, 0.1: False, 0.3: False}) == 0.03
    assert largest_stable({0.01: True, 0.03: False, 0.1: True}) == 0.1  # the largest, not the first break
    assert largest_stable({0.01: False, 0.03: False}) == 0.0


@pytest.mark.unit
def test_a_run_is_stable_only_without_divergence_and_below_the_loss_threshold():
    assert is_stable({"diverged": 0.0, "val_loss": 0.5}, "val_loss", 1.0)
    assert not is_stable({"diverged": 0.0, "val_loss": 1.5}, "val_loss", 1.0)
    assert not is_stable({"diverged": 1.0, "val_loss": 0.5}, "val_loss", 1.0)
    assert not is_stable({"diverged": 0.0, "val_loss": math.nan}, "val_loss", 1.0)


@pytest.mark.unit
def test_warmup_stable_two_grid_steps_further_on_every_seed_is_supported():
    judged = judge_ratio(sweep(0.1, 0.1, 0.3), sweep(0.01, 0.01, 0.03), margin=2.0)
    assert judged["largest_stable"] == {"arm": [0.1, 0.1, 0.3], "baseline": [0.01, 0.01, 0.03]}
    assert judged["per_seed"] == pytest.approx([10.0, 10.0, 10.0])
    assert judged["value"] == pytest.approx(10.0) and judged["verdict"] == "supported"


@pytest.mark.unit
def test_the_same_largest_stable_lr_on_every_seed_refutes_the_claim():
    judged = judge_ratio(sweep(0.03, 0.1), sweep(0.03, 0.1), margin=2.0)
    assert judged["value"] == pytest.approx(1.0) and judged["verdict"] == "refuted"


@pytest.mark.unit
def test_seeds_that_disagree_leave_the_claim_inconclusive():
    judged = judge_ratio(sweep(0.3, 0.03), sweep(0.03, 0.03), margin=2.0)
    assert judged["per_seed"] == pytest.approx([10.0, 1.0])
    assert judged["value"] == pytest.approx(math.sqrt(10.0))  # the geometric mean
    assert judged["verdict"] == "inconclusive" and judged["reason"] == "the seeds disagree"


@pytest.mark.unit
def test_a_refutation_the_grids_top_could_have_caused_is_inconclusive():
    # both arms stable at the grid's largest lr: the grid never found either limit
    judged = judge_ratio(sweep(0.3, 0.3), sweep(0.3, 0.3), margin=2.0)
    assert judged["value"] == pytest.approx(1.0) and judged["verdict"] == "inconclusive"
    assert "largest lr" in judged["reason"]


@pytest.mark.unit
def test_an_arm_without_any_stable_lr_leaves_the_claim_inconclusive():
    judged = judge_ratio(sweep(0.1, 0.1), sweep(0.0, 0.01), margin=2.0)
    assert judged["verdict"] == "inconclusive" and math.isnan(judged["value"])
    assert "no learning rate" in judged["reason"]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lrs=[0.1,0.01]", "lrs"),
        ("baseline=cosine", "baseline"),
        ("loss_metric=val_acc_best", "loss_metric"),
        ("loss_threshold=0", "loss_threshold"),
        ("threshold=0.5", "threshold"),
    ],
)
def test_a_bad_study_config_fails_before_any_run(override, message):
    cfg = load_study(NAME, "test", [override])
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


@pytest.mark.unit
@pytest.mark.parametrize("preset", [None, "test", "gpu"])
def test_every_preset_composes_a_vit_with_and_without_warmup(preset):
    cfg = load_study(NAME, preset)
    check_config(cfg)
    runs = {arm: compose_config(*cfg.train, *overrides) for arm, overrides in cfg.arms.items()}
    assert {run.model.name for run in runs.values()} == {"vit"}
    assert {run.optimizer.name for run in runs.values()} == {"adam"}
    assert runs["no_warmup"].scheduler.name == "constant" and runs["warmup"].scheduler.name == "linear_warmup"


@pytest.mark.unit
def test_the_pipeline_tracks_the_study_config_and_its_own_kind_only():
    stage = yaml.safe_load((ROOT / "pipelines" / NAME / "dvc.yaml").read_text())["stages"]["run"]
    assert stage["cmd"] == f"OPTBENCH_CONFIG_DIR=conf optbench-study run {NAME}" and stage["wdir"] == "../.."
    assert stage["params"] == [{f"conf/study/{NAME}.yaml": None}]
    kinds = [d for d in stage["deps"] if "studies/kinds/" in d and not d.endswith("__init__.py")]
    assert kinds == ["src/optbench/studies/kinds/warmup.py"] and "conf/model/vit.yaml" in stage["deps"]


@pytest.mark.slow
def test_the_test_preset_runs_end_to_end_and_judges_by_the_rule(tracking_uri, mlflow_client, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study(NAME, "test")
    verdict = run_study(cfg, tmp_path)
    check_well_formed(verdict, cfg, tmp_path, ("supported", "refuted", "inconclusive"))
    assert verdict["correction"] == "none"  # a grid measure: no test, no family
    sweep_ = verdict["sweep"]
    flags = {arm: {p["lr"]: p["stable"] for p in points} for arm, points in sweep_.items()}
    (case,) = verdict["cases"]
    recomputed = judge_ratio(flags["warmup"], flags["no_warmup"], cfg.threshold)
    assert case["verdict"] == recomputed["verdict"] and case["largest_stable"] == recomputed["largest_stable"]
    for points in sweep_.values():  # stability is what the recorded losses say
        for p in points:
            expected = [
                loss is not None and loss <= cfg.loss_threshold and not diverged
                for loss, diverged in zip(p["losses"], p["diverged"], strict=True)
            ]
            assert p["stable"] == expected
    children = check_mlflow(mlflow_client, NAME, verdict, n_children=len(cfg.arms) * len(cfg.lrs) * len(cfg.seeds))
    schedulers = {r.data.tags["optbench.study_case"]: r.data.params["scheduler.name"] for r in children}
    assert schedulers == {"no_warmup": "constant", "warmup": "linear_warmup"}
