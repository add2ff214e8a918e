"""The lbfgs_convex claim study: L-BFGS's iterate after k iterations is measured exactly, the learning rate is
chosen by the rule the study states, and the test preset produces a well-formed verdict computed from its
steps to the tolerance."""

from __future__ import annotations

import math

import pytest
import torch
from study_checks import check_mlflow, check_well_formed

from optbench.core.config import compose_config
from optbench.core.errors import ConfigError
from optbench.stats import censored_claim_test
from optbench.studies.config import load_study
from optbench.studies.kinds.lbfgs import FullBatchRun, best_lr, check_knobs, lbfgs_run
from optbench.studies.run import run_study
from optbench.training.data import load_dataset

SMALL = ("data=regression", "model=linear", "data.n_samples=200", "data.n_features=5", "seed=3")


@pytest.fixture
def small_regression():
    return load_dataset(compose_config(*SMALL).data)


@pytest.mark.unit
def test_lbfgs_iterate_after_k_iterations_is_that_of_a_run_with_max_iter_k(small_regression):
    data = small_regression
    measured = lbfgs_run(compose_config(*SMALL, "optimizer=lbfgs"), data, tolerance=1e-4, max_steps=30)
    assert measured["steps"] is not None and measured["final_distance"] <= 1e-4
    # The reported curve is the trajectory of one long step() (the evaluation budget of 30 iterations, 37).
    for k in range(1, measured["steps"] + 1):
        run = FullBatchRun(
            compose_config(*SMALL, "optimizer=lbfgs", f"optimizer.max_iter={k}", "+optimizer.max_eval=37"), data
        )
        run.optimizer.step(run.closure)
        assert run.distance() == pytest.approx(measured["curve"][k], rel=1e-6)
    assert measured["evaluations"] >= measured["steps"]  # each iteration evaluates at least once


@pytest.mark.unit
def test_gradient_descent_reaches_the_optimum_at_the_rate_its_conditioning_allows(small_regression):
    data = small_regression
    x = torch.cat([data.train.x, torch.ones(len(data.train), 1)], dim=1).double()
    hessian = 2 * x.T @ x / len(x)  # of the mean squared error
    eigenvalues = torch.linalg.eigvalsh(hessian)
    lr = float(2 / (eigenvalues[0] + eigenvalues[-1]))  # the optimal constant step for a quadratic
    run = FullBatchRun(compose_config(*SMALL, "optimizer=sgd", f"optimizer.lr={lr}"), data)
    result = run.run(tolerance=1e-4, max_steps=200)
    kappa = float(eigenvalues[-1] / eigenvalues[0])
    rate = (kappa - 1) / (kappa + 1)  # the error contracts at least this much per step
    bound = math.ceil(math.log(1e-4 / result["curve"][0]) / math.log(rate)) + 1
    assert result["steps"] <= bound and result["evaluations"] == result["steps"]
    assert all(b <= a * rate * 1.01 + 1e-7 for a, b in zip(result["curve"], result["curve"][1:]))


@pytest.mark.unit
def test_best_lr_is_the_fewest_steps_then_the_closest_end():
    def point(lr, steps, final):
        return {"lr": lr, "runs": [{"steps": s, "final_distance": f} for s, f in zip(steps, final)]}

    sweep = [
        point(0.1, [40, 50], [1e-5, 1e-5]),
        point(0.3, [12, 14], [1e-5, 1e-5]),
        point(1.0, [5, None], [1e-5, math.inf]),
    ]
    assert best_lr(sweep) == 0.3  # 1.0 fails on one seed: never counts as never, not as its other seed's 5
    never = [point(0.01, [None], [0.2]), point(0.1, [None], [0.003]), point(1.0, [None], [math.nan])]
    assert best_lr(never) == 0.1


@pytest.mark.unit
def test_lbfgs_study_refuses_tuning_on_its_evaluation_seeds_and_unknown_selections():
    cfg = load_study("lbfgs_convex", "test")
    check_knobs(cfg)
    cfg.tune_seeds = [cfg.seeds[0]]
    with pytest.raises(ConfigError, match="overlap the evaluation seeds"):
        check_knobs(cfg)
    cfg = load_study("lbfgs_convex", "test", ["run_first_order=[sgd,nadam]"])
    with pytest.raises(ConfigError, match="run_first_order names nadam"):
        check_knobs(cfg)


@pytest.mark.slow
def test_lbfgs_convex_test_preset_judges_steps_to_the_tolerance(tracking_uri, mlflow_client, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("lbfgs_convex", "test")
    verdict = run_study(cfg, tmp_path)
    check_well_formed(verdict, cfg, tmp_path, ("supported", "refuted", "inconclusive"))
    assert list(verdict["problems"]) == ["regression", "quadratic"]
    assert len(verdict["cases"]) == 2 * 2  # per problem, L-BFGS against each first-order method
    methods = verdict["problems"]["regression"]
    assert list(methods) == ["lbfgs", "sgd", "adam"]
    for method in ("sgd", "adam"):  # the chosen rate is one of the sweep's, by the stated rule
        assert methods[method]["lr"] in cfg.first_order[method].lrs
        assert [p["lr"] for p in methods[method]["sweep"]] == list(cfg.first_order[method].lrs)
    for claim in verdict["cases"]:  # each verdict is the signed-rank test of the recorded steps
        runs = verdict["problems"][claim["problem"]]
        a, b = ([r["steps"] for r in runs[m]["runs"]] for m in ("lbfgs", claim["than"]))
        horizon = [float(cfg.max_steps)] * len(a)
        tested = censored_claim_test(a, b, horizon, horizon, margin=cfg.threshold, confidence=cfg.confidence)
        assert claim.get("verdict_unadjusted", claim["verdict"]) == tested["verdict"]
    lbfgs = methods["lbfgs"]
    assert lbfgs["reached"] == len(cfg.seeds) and lbfgs["evaluations"] >= lbfgs["steps"]
    assert all(r["evaluations"] == r["steps"] for r in methods["sgd"]["runs"] if r["steps"] is not None)
    report = (tmp_path / "report.md").read_text()
    assert "line search" in report and "Learning-rate sweeps" in report
    check_mlflow(mlflow_client, "lbfgs_convex", verdict, n_children=2 * len(methods))
