"""The large_batch study: each claim about the accuracy drop from the smallest to the largest batch is the
paired test of the recorded per-seed numbers against its margin, shown on constructed results with known
answers; the test preset runs end to end, every (optimizer, batch) tuned with the same budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from study_checks import check_well_formed

from optbench.core.config import compose_config
from optbench.core.errors import ConfigError
from optbench.stats import claim_test
from optbench.studies.config import load_study
from optbench.studies.kinds.large_batch import check_config, claims_run, drops, judge
from optbench.studies.run import run_study

NAME = "large_batch"
ROOT = Path(__file__).resolve().parents[1]
WORDS = ("supported", "refuted", "inconclusive")


def results(**accs: tuple[list[float], list[float]]) -> dict:
    """optimizer -> (per-seed test accuracy at batch 32, at batch 1024), as the kind records them."""
    return {opt: {"32": {"test_accs": small}, "1024": {"test_accs": large}} for opt, (small, large) in accs.items()}


MEASURED = results(
    lamb=([0.95, 0.94, 0.96], [0.95, 0.935, 0.955]),  # drops 0, 0.005, 0.005
    adamw=([0.95, 0.95, 0.96], [0.80, 0.82, 0.79]),  # drops 0.15, 0.13, 0.17
    lars=([0.93, 0.94, 0.92], [0.90, 0.85, 0.93]),  # drops 0.03, 0.09, -0.01: wide
    momentum=([0.94, 0.94, 0.95], [0.74, 0.76, 0.73]),  # drops 0.2, 0.18, 0.22
)


@pytest.fixture
def cfg():
    return load_study(NAME, None, ["seeds=[1,2,3]"])


@pytest.mark.unit
def test_the_drop_is_the_small_batch_accuracy_minus_the_large_batch_accuracy_per_seed():
    assert drops(MEASURED, "adamw", [32, 1024]) == pytest.approx([0.15, 0.13, 0.17])


@pytest.mark.unit
def test_a_small_drop_on_every_seed_supports_keeping_and_refutes_losing(cfg):
    keeps = judge(cfg, "lamb_keeps_accuracy", cfg.claims.lamb_keeps_accuracy, MEASURED)
    assert keeps["value"] == pytest.approx((0 + 0.005 + 0.005) / 3)  # the mean drop
    expected = claim_test([0.95, 0.935, 0.955], [0.95, 0.94, 0.96], margin=-cfg.drop_margin)
    assert keeps["p_value"] == pytest.approx(expected["p_value"]) and keeps["verdict"] == "supported"
    loses = judge(cfg, "x", OmegaConf.create({"statement": "LAMB loses accuracy", "loses": "lamb"}), MEASURED)
    assert loses["verdict"] == "refuted"


@pytest.mark.unit
def test_a_large_drop_supports_losing_accuracy(cfg):
    loses = judge(cfg, "adamw_loses_accuracy", cfg.claims.adamw_loses_accuracy, MEASURED)
    assert loses["value"] == pytest.approx(0.15) and loses["verdict"] == "supported"
    assert judge(cfg, "m", cfg.claims.momentum_loses_accuracy, MEASURED)["verdict"] == "supported"


@pytest.mark.unit
def test_a_drop_the_seeds_disagree_on_is_inconclusive(cfg):
    assert judge(cfg, "lars_keeps_accuracy", cfg.claims.lars_keeps_accuracy, MEASURED)["verdict"] == "inconclusive"


@pytest.mark.unit
def test_comparing_drops_pairs_them_by_seed(cfg):
    better = judge(cfg, "lamb_drops_less_than_adamw", cfg.claims.lamb_drops_less_than_adamw, MEASURED)
    # adamw's drop minus lamb's, seed by seed: 0.15, 0.125, 0.165
    assert better["advantage"]["diff"] == pytest.approx((0.15 + 0.125 + 0.165) / 3)
    assert better["verdict"] == "supported" and better["better"] == "lamb" and better["than"] == "adamw"
    reversed_claim = OmegaConf.create({"statement": "AdamW drops less", "better": "adamw", "than": "lamb"})
    assert judge(cfg, "r", reversed_claim, MEASURED)["verdict"] == "refuted"


@pytest.mark.unit
def test_claims_about_optimizers_not_run_are_left_out():
    cfg = load_study(NAME, "test")
    assert set(claims_run(cfg)) == {"lamb_keeps_accuracy", "adamw_loses_accuracy", "lamb_drops_less_than_adamw"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("batch_sizes=[1024,32]", "batch_sizes"),
        ("batch_sizes=[32]", "batch_sizes"),
        ("seeds=[1]", "at least two seeds"),
        ("drop_margin=1.5", "drop_margin"),
        ("run_optimizers=[adam]", "run_optimizers"),
        ("claims.lamb_keeps_accuracy.keeps=adam", "names adam"),
        ("+claims.lamb_keeps_accuracy.loses=lamb", "must name one of"),
    ],
)
def test_a_bad_study_config_fails_before_any_run(override, message):
    cfg = load_study(NAME, None, [override])
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


@pytest.mark.unit
@pytest.mark.parametrize("preset", [None, "test", "gpu"])
def test_every_preset_composes_each_optimizer_at_each_batch(preset):
    cfg = load_study(NAME, preset)
    check_config(cfg)
    for name in cfg.run_optimizers:
        run = compose_config(*cfg.train, *cfg.optimizers[name], f"batch_size={cfg.batch_sizes[-1]}")
        assert run.optimizer.name == name and run.batch_size == cfg.batch_sizes[-1]


@pytest.mark.unit
def test_the_pipeline_tracks_the_study_config_and_its_own_kind_only():
    stage = yaml.safe_load((ROOT / "pipelines" / NAME / "dvc.yaml").read_text())["stages"]["run"]
    assert stage["cmd"] == f"OPTBENCH_CONFIG_DIR=conf optbench-study run {NAME}" and stage["wdir"] == "../.."
    assert stage["params"] == [{f"conf/study/{NAME}.yaml": None}]
    kinds = [d for d in stage["deps"] if "studies/kinds/" in d and not d.endswith("__init__.py")]
    assert kinds == ["src/optbench/studies/kinds/large_batch.py"]


@pytest.mark.slow
def test_the_test_preset_runs_end_to_end_with_equal_budgets(tracking_uri, mlflow_client, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study(NAME, "test")
    verdict = run_study(cfg, tmp_path)
    check_well_formed(verdict, cfg, tmp_path, WORDS)
    measured = verdict["results"]
    assert set(measured) == set(cfg.run_optimizers)
    points = [p for by_batch in measured.values() for p in by_batch.values()]
    assert {len(p["trials"]) for p in points} == {p["tuned"]["budget"] for p in points} == {1}  # the same trials
    for case in verdict["cases"]:
        again = judge(cfg, case["case"], cfg.claims[case["case"]], measured)
        assert case.get("verdict_unadjusted", case["verdict"]) == again["verdict"]
    for name, points in measured.items():  # what the runs were really given
        for batch, point in points.items():
            params = mlflow_client.get_run(point["run_ids"][0]).data.params
            assert (params["optimizer.name"], int(params["batch_size"])) == (name, int(batch))
            assert float(params["optimizer.lr"]) == pytest.approx(point["tuned"]["best_params"]["optimizer.lr"])
