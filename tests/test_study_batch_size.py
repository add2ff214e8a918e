"""The batch_size_scaling study: its test preset runs end to end, every verdict is the rule applied to the
recorded numbers, and the numbers mean what they say (one full-batch step per epoch, distances that fall,
the linear rule's lr is k times the base lr)."""

from __future__ import annotations

import math

import pytest
from conftest import runs_of
from study_checks import check_well_formed

from optbench.core.config import compose_config
from optbench.core.errors import ConfigError
from optbench.stats import censoring_guard, claim_test
from optbench.studies.config import load_study
from optbench.studies.kinds.batch_size import CONVEX_METRICS, FULL, check_config, judge, variant_overrides
from optbench.studies.run import run_study

NAME = "batch_size_scaling"
WORDS = ("supported", "refuted", "inconclusive")


@pytest.fixture(scope="module")
def study(tracking_uri, tmp_path_factory):
    """The test preset, run once for the whole module: (cfg, verdict, output dir)."""
    out = tmp_path_factory.mktemp("batch_size_scaling")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        cfg = load_study(NAME, "test")
        verdict = run_study(cfg, out)
    return cfg, verdict, out


def test_every_claim_has_a_well_formed_verdict_in_the_report(study):
    cfg, verdict, out = study
    check_well_formed(verdict, cfg, out, WORDS)
    n_factors = len(cfg.factors)
    scaling_claims = [c for c in cfg.claims.values() if c.better in ("linear", "sqrt", "retuned")]
    assert verdict["n_cases"] == len(cfg.claims) + (n_factors - 1) * len(scaling_claims)
    report = (out / "report.md").read_text()
    assert f"eps = {cfg.eps:g}" in report and "equivalence 0.02" in report
    assert (out / "batch_size.png").stat().st_size > 10_000


def test_each_verdict_is_the_rule_applied_to_the_recorded_interval(study):
    cfg, verdict, _ = study
    convex, scaling = verdict["results"]["convex"], verdict["results"]["scaling"]
    for claim in verdict["cases"]:
        if "factor" in claim:
            rules = scaling[f"x{claim['factor']}"]["rules"]
            a, b = rules[claim["better"]]["runs"], rules[claim["than"]]["runs"]
        else:
            a, b = convex[claim["better"]]["runs"], convex[claim["than"]]["runs"]
        assert [r["seed"] for r in a] == [r["seed"] for r in b]  # paired by seed
        metric = claim["metric"]
        sign = 1 if metric == "test_acc" else -1  # fewer steps, examples or seconds is better
        mean_a, mean_b = (sum(r[metric] for r in runs) / len(runs) for runs in (a, b))
        assert claim["advantage"]["diff"] == pytest.approx(sign * (mean_a - mean_b))
        assert claim["censored"] == [sum(not r.get("reached", True) for r in runs) for runs in (a, b)]
        tested = claim_test(
            [r[metric] for r in a],
            [r[metric] for r in b],
            test=claim["test"],
            margin=claim["margin"],
            lower_is_better=metric in CONVEX_METRICS,
            confidence=cfg.confidence,
        )
        assert claim["p_value"] == tested["p_value"] or math.isnan(tested["p_value"])
        before = claim.get("verdict_unadjusted", claim["verdict"])
        assert before == censoring_guard(tested["verdict"], claim["test"], *claim["censored"])


def test_full_batch_takes_one_step_per_epoch_and_the_others_one_per_batch(study):
    _, verdict, _ = study
    convex = verdict["results"]["convex"]
    for run in convex["full_batch"]["runs"]:
        assert run["steps"] == run["epochs"] >= 2
    n_train = convex["full_batch"]["runs"][0]["examples"] // convex["full_batch"]["runs"][0]["epochs"]
    for run in convex["batch_1"]["runs"]:
        assert run["steps"] == run["examples"] == run["epochs"] * n_train  # the same examples for every variant
    batch = convex["mini_batch"]["batch_size"]
    for run in convex["mini_batch"]["runs"]:
        assert run["steps"] == run["epochs"] * math.ceil(n_train / batch) and run["examples"] == run["epochs"] * n_train


def test_distances_fall_and_the_crossing_of_eps_is_where_the_curve_says(study):
    cfg, verdict, _ = study
    for name, r in verdict["results"]["convex"].items():
        for run in r["runs"]:
            steps, examples, seconds, distances = zip(*run["curve"], strict=True)
            assert distances[-1] < distances[0] / 2, name
            assert list(steps) == sorted(steps) and list(seconds) == sorted(seconds)
            assert run["final_dist"] == distances[-1] and steps[-1] == run["steps"]
            if run["reached"]:  # the first step at or below eps: not after any plotted point below it
                assert run["steps_to_eps"] <= min(s for s, d in zip(steps, distances, strict=True) if d <= cfg.eps)
                assert run["seconds_to_eps"] <= run["clock_s"]
            else:
                assert (run["steps_to_eps"], run["examples_to_eps"]) == (run["steps"], run["examples"])
    for run in verdict["results"]["convex"]["full_batch"]["runs"]:  # gradient descent on a quadratic
        distances = [point[3] for point in run["curve"]]
        assert all(b < a for a, b in zip(distances, distances[1:]))


def test_the_rules_scale_the_base_lr_and_retuning_uses_the_same_budget(study, mlflow_client):
    cfg, verdict, _ = study
    scaling = verdict["results"]["scaling"]
    lr0 = scaling["base"]["lr"]
    assert lr0 == scaling["base"]["tuned"]["best_params"]["optimizer.lr"]
    for k in cfg.factors:
        at = scaling[f"x{k}"]
        assert at["batch_size"] == k * cfg.base_batch
        assert at["rules"]["linear"]["lr"] == pytest.approx(k * lr0)
        assert at["rules"]["sqrt"]["lr"] == pytest.approx(math.sqrt(k) * lr0)
        retuned = at["rules"]["retuned"]
        assert retuned["lr"] in [t["params"]["optimizer.lr"] for t in retuned["tuned"]["trials"]]
        assert len(retuned["tuned"]["trials"]) == retuned["tuned"]["budget"] == scaling["base"]["tuned"]["budget"]
        for run in at["rules"]["linear"]["runs"]:  # what the run was really given
            params = mlflow_client.get_run(run["run_id"]).data.params
            assert float(params["optimizer.lr"]) == pytest.approx(k * lr0)
            assert int(params["batch_size"]) == k * cfg.base_batch
    budgets = {len(r["tuned"]["trials"]) for r in verdict["results"]["convex"].values()}
    assert len(budgets) == 1  # the same tuning budget for every batch size


def test_every_run_is_nested_under_a_finished_verdict_run(study, mlflow_client):
    cfg, verdict, _ = study
    parent = mlflow_client.get_run(verdict["mlflow"]["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["optbench.kind"] == "study_verdict"
    nested = [
        r
        for r in runs_of(mlflow_client, f"study-{NAME}")
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    ]
    n_seeds = len(cfg.seeds)
    # part A: per batch size one tuning parent and a run per seed; part B: the base likewise, and per
    # factor one retuning parent and a run per seed and rule
    expected = len(cfg.batch_sizes) * (1 + n_seeds) + (1 + n_seeds) + len(cfg.factors) * (1 + 3 * n_seeds)
    assert len(nested) == expected and all(r.info.status == "FINISHED" for r in nested)
    full = verdict["results"]["convex"]["full_batch"]["runs"][0]
    logged = mlflow_client.get_metric_history(full["run_id"], "study/dist_to_opt")
    assert [m.value for m in sorted(logged, key=lambda m: m.step)] == [point[3] for point in full["curve"]]


# --- without training ---------------------------------------------------------------------------------------


@pytest.mark.unit
def test_a_censored_side_cannot_carry_the_verdict_its_bound_would_fake():
    cfg = load_study(NAME, "test")
    claim = cfg.claims.full_batch_fewest_steps  # steps_to_eps, full_batch better than mini_batch
    fast = [{"seed": s, "steps_to_eps": 2 + s % 2, "reached": False} for s in (1, 2, 3)]  # stopped short of eps
    slow = [{"seed": s, "steps_to_eps": steps, "reached": True} for s, steps in zip((1, 2, 3), (10, 11, 13))]
    case = judge(cfg, "c", claim, fast, slow)
    assert case["p_value"] < 0.05 and case["verdict"] == "inconclusive" and case["censored"] == [3, 0]
    reached = [{**r, "reached": True} for r in fast]
    assert judge(cfg, "c", claim, slow, reached)["verdict"] == "refuted"  # the data show the claim false
    assert judge(cfg, "c", claim, reached, slow)["verdict"] == "supported"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eps=0", "eps"),
        ("seeds=[1]", "at least two seeds"),
        ("claims.linear_beats_sqrt.than=batch_1", "compares linear with batch_1"),
        ("claims.linear_beats_sqrt.metric=steps_to_eps", "metric steps_to_eps does not apply"),
        ("batch_sizes.mini_batch=0", "batch_sizes.mini_batch"),
        ("factors=[1]", "factors"),
    ],
)
def test_a_bad_study_config_fails_before_any_run(override, message):
    cfg = load_study(NAME, "test", [override])
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


@pytest.mark.parametrize("preset", [None, "test", "gpu"])
def test_every_preset_composes_into_the_runs_it_describes(preset):
    cfg = load_study(NAME, preset)
    check_config(cfg)
    full = compose_config(*cfg.train, *variant_overrides(cfg, FULL))
    assert full.optimizer.full_batch is True and full.data.name == "regression" and full.model.name == "linear"
    cnn = compose_config(*cfg.train, *cfg.scaling_train, f"batch_size={cfg.base_batch}")
    assert cnn.optimizer.name == "momentum" and cnn.scheduler.name == "linear_warmup"
    if preset == "gpu":
        assert (cnn.data.name, cnn.model.name, cnn.trainer.accelerator) == ("cifar10", "resnet18", "gpu")
