"""The adaptive_lr_decay claim study: the effective step is read from torch's own optimizer state as its update
uses it, the windows average what they say, and the test preset produces a well-formed verdict computed from
its per-seed measures."""

from __future__ import annotations

import math

import pytest
import torch
from study_checks import check_mlflow, check_well_formed

from optbench.core.errors import ConfigError
from optbench.stats import claim_test
from optbench.studies.config import load_study
from optbench.studies.kinds.adaptive import check_knobs, effective_step, run_measures, window_mean
from optbench.studies.run import run_study


def _stepped(optimizer_class, grads, **options):
    param = torch.nn.Parameter(torch.zeros(len(grads[0])))
    optimizer = optimizer_class([param], **options)
    for grad in grads:
        param.grad = torch.tensor(grad)
        before = param.detach().clone()
        optimizer.step()
    return optimizer, (before - param.detach()) / param.grad  # the factor the last update applied


@pytest.mark.unit
def test_effective_step_is_the_factor_adagrad_applied_and_shrinks_as_gradients_accumulate():
    grads = [[1.0, 2.0, 0.5]] * 4
    optimizer, applied = _stepped(torch.optim.Adagrad, grads, lr=0.1, eps=1e-10)
    assert effective_step(optimizer) == pytest.approx(float(applied.median()), rel=1e-5)
    assert effective_step(optimizer) == pytest.approx(0.1 / (2 * 1.0))  # median entry: sqrt(4 · 1²)
    decayed, _ = _stepped(torch.optim.Adagrad, grads, lr=0.1, eps=1e-10, lr_decay=0.5)
    assert effective_step(decayed) == pytest.approx(0.1 / (1 + 3 * 0.5) / 2.0)  # clr at step 4


@pytest.mark.unit
def test_effective_step_of_rmsprop_is_its_update_factor_and_settles_for_constant_gradients():
    grads = [[1.0, 3.0, 0.2]] * 2000
    optimizer, applied = _stepped(torch.optim.RMSprop, grads, lr=0.01, alpha=0.9, eps=1e-8)
    assert effective_step(optimizer) == pytest.approx(float(applied.median()), rel=1e-3)  # float32 parameters ~20
    assert effective_step(optimizer) == pytest.approx(0.01 / 1.0, rel=1e-4)  # square_avg → g²: no decay
    centered, applied = _stepped(torch.optim.RMSprop, grads[:5], lr=0.01, alpha=0.9, centered=True)
    assert effective_step(centered) == pytest.approx(float(applied.median()), rel=1e-4)
    with pytest.raises(ConfigError, match="optimizer=adagrad or rmsprop"):
        effective_step(_stepped(torch.optim.Adam, grads[:1])[0])
    assert math.isnan(effective_step(torch.optim.RMSprop([torch.nn.Parameter(torch.zeros(2))])))  # no state yet


@pytest.mark.unit
def test_windows_average_their_fraction_of_the_run_and_the_measures_follow():
    values = [float(i) for i in range(100)]
    assert window_mean(values, [0.1, 0.2]) == pytest.approx(14.5)  # positions 10..19
    assert window_mean(values, [0.9, 1.0]) == pytest.approx(94.5)
    cfg = load_study("adaptive_lr_decay")
    losses = [math.exp(-i / 50) for i in range(100)]  # ln-loss falls by 0.02 a step
    measures = run_measures(cfg, losses, [(i, 2.0 if i < 50 else 0.5) for i in range(100)])
    assert measures["step_ratio"] == pytest.approx(0.25)
    assert measures["late_improvement"] == pytest.approx((94.5 - 44.5) / 50, rel=1e-3)


@pytest.mark.unit
def test_adaptive_study_refuses_overlapping_windows_and_tuning_on_evaluation_seeds():
    check_knobs(load_study("adaptive_lr_decay", "test"))
    with pytest.raises(ConfigError, match="must end before late_window"):
        check_knobs(load_study("adaptive_lr_decay", "test", ["early_window=[0.1,0.95]"]))
    with pytest.raises(ConfigError, match="overlap the evaluation seeds"):
        check_knobs(load_study("adaptive_lr_decay", "test", ["tune_seeds=[0]"]))


@pytest.mark.slow
def test_adaptive_lr_decay_test_preset_judges_the_measured_ratios(tracking_uri, mlflow_client, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("adaptive_lr_decay", "test")
    verdict = run_study(cfg, tmp_path)
    check_well_formed(verdict, cfg, tmp_path, ("supported", "refuted", "inconclusive"))
    results = verdict["results"]
    assert list(results) == ["adagrad", "rmsprop"]
    for name, res in results.items():
        assert res["lr"] in cfg.lrs[name]
        assert res["lr"] == min(res["sweep"], key=lambda p: p["final_loss"])["lr"]
        ratios = [late / early for early, late in zip(res["per_seed"]["early_step"], res["per_seed"]["late_step"])]
        assert res["per_seed"]["step_ratio"] == pytest.approx(ratios)
    # Adagrad's sum only grows, so its effective step never rises (nothing decays the accumulator).
    for curve in results["adagrad"]["curves"]:
        values = [v for _, v in curve]
        assert all(b <= a * (1 + 1e-6) for a, b in zip(values, values[1:]))
    cases = {c["case"]: c for c in verdict["cases"]}
    floor = [math.log(cfg.threshold)] * len(cfg.seeds)
    adagrad = claim_test(
        [math.log(r) for r in results["adagrad"]["per_seed"]["step_ratio"]], floor, lower_is_better=True
    )
    assert (
        cases["adagrad_step_decays"].get("verdict_unadjusted", cases["adagrad_step_decays"]["verdict"])
        == adagrad["verdict"]
    )
    late = claim_test(
        results["rmsprop"]["per_seed"]["late_improvement"],
        results["adagrad"]["per_seed"]["late_improvement"],
        margin=cfg.late_margin,
    )
    assert cases["rmsprop_improves_more_late"]["advantage"]["diff"] == pytest.approx(late["advantage"]["diff"])
    children = check_mlflow(
        mlflow_client, "adaptive_lr_decay", verdict, n_children=2 * (len(cfg.seeds) + 2 * len(cfg.tune_seeds))
    )
    assert all("study/effective_step" in run.data.metrics for run in children)
