"""The precision and optimizer_memory claim studies: their test-sized presets produce well-formed verdicts
computed from the recorded numbers, fp16 without loss scaling really runs unscaled, the gradient regimes
rescale exactly, and every optimizer's state is measured where the textbook puts it."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_config
from lightning.pytorch.plugins import MixedPrecision
from study_checks import check_mlflow, check_well_formed

from optbench.core.errors import ConfigError
from optbench.stats import claim_test
from optbench.studies.config import load_study
from optbench.studies.kinds.memory import AS_CLAIMED, NOT_AS_CLAIMED, check_knobs, state_dtype, verdict_of
from optbench.studies.kinds.precision import FP16_NORMAL_MIN, FP16_SUBNORMAL_MIN, regime_overrides, underflow_fractions
from optbench.studies.run import run_study
from optbench.training.checks import validate
from optbench.training.train import build_trainer

# --- precision ----------------------------------------------------------------------------------------------


def test_precision_16_mixed_unscaled_is_fp16_autocast_with_a_disabled_scaler():
    cfg = compose_config(
        "data=digits",
        "model=logreg",
        "optimizer=momentum",
        "trainer=fast",
        "logger=none",
        "precision=16-mixed-unscaled",
    )
    validate(cfg)
    plugin = build_trainer(cfg, None).precision_plugin
    assert isinstance(plugin, MixedPrecision) and plugin.precision == "16-mixed" and plugin.device == "cpu"
    assert not plugin.scaler.is_enabled() and plugin.scaler.get_scale() == 1.0
    scaled = build_trainer(compose_config("trainer=fast", "logger=none", "precision=16-mixed"), None).precision_plugin
    assert scaled.scaler.is_enabled()
    with pytest.raises(ConfigError, match="L-BFGS"):
        validate(compose_config("optimizer=lbfgs", "precision=16-mixed-unscaled", "trainer=fast", "logger=none"))


def test_precision_underflow_fractions_count_what_fp16_loses():
    grads = [torch.tensor([0.0, 2.0**-25, -(2.0**-20)]), torch.tensor([[1.0, 0.0], [FP16_NORMAL_MIN, 1e-3]])]
    fractions = underflow_fractions(grads)
    assert fractions["zero_grad"] == pytest.approx(2 / 7)
    assert fractions["below_fp16_subnormal"] == pytest.approx(1 / 5)  # 2^-25 < 2^-24
    assert fractions["below_fp16_normal"] == pytest.approx(2 / 5)  # 2^-25 and 2^-20; 2^-14 itself is normal
    assert FP16_SUBNORMAL_MIN > 2.0**-25 and torch.tensor(2.0**-25).half() == 0  # what the threshold means
    assert math.isnan(underflow_fractions([torch.zeros(3)])["below_fp16_subnormal"])


def test_precision_small_gradient_regime_only_rescales_sgd_without_weight_decay():
    cfg = load_study("precision", "test")
    assert regime_overrides(cfg, 0) == []
    assert regime_overrides(cfg, 16) == ["loss_scale=1.52587890625e-05", "optimizer.lr=3276.8"]  # 0.05 · 2^16
    cfg.train = [o.replace("optimizer=momentum", "optimizer=adam") for o in cfg.train]
    with pytest.raises(ConfigError, match="only for SGD or momentum"):
        regime_overrides(cfg, 16)


def test_precision_test_preset_judges_each_claim_and_fp16_unscaled_never_scales(
    tracking_uri, mlflow_client, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("precision", "test")
    verdict = run_study(cfg, tmp_path)
    check_well_formed(verdict, cfg, tmp_path, ("supported", "refuted", "inconclusive"))
    if not torch.cuda.is_available():  # what the CPU cannot measure is said, not faked
        assert verdict["skipped"] and "## Not measured on this machine" in (tmp_path / "report.md").read_text()
    results = verdict["results"]
    assert set(results) == set(cfg.regimes) and all(list(r) == list(cfg.precisions) for r in results.values())
    for claim in verdict["cases"]:  # each verdict is the rule applied to the paired per-seed differences
        first, second = (results[claim["regime"]][p]["runs"] for p in claim["compare"])
        metric = claim["metric"]
        sign = -1 if metric == "val_loss" else 1  # the first precision's advantage
        assert claim["per_seed"] == [sign * (a[metric] - b[metric]) for a, b in zip(first, second)]
        tested = claim_test(
            [a[metric] for a in first],
            [b[metric] for b in second],
            test=claim["test"],
            margin=claim["margin"],
            lower_is_better=metric == "val_loss",
            confidence=cfg.confidence,
        )
        assert claim.get("verdict_unadjusted", claim["verdict"]) == tested["verdict"]
        assert claim["method"].startswith("paired")
    for regime in results.values():
        for run in regime["16-mixed-unscaled"]["runs"]:  # a disabled scaler: scale 1 all along, nothing skipped
            assert run["loss_scale"] == 1.0 and {v for _, v in run["loss_scale_curve"]} == {1.0}
            assert run["skipped_steps"] == 0.0
            assert run["below_fp16_subnormal"] == 0.0  # gradients computed in fp16 cannot be smaller
        assert all(run["loss_scale"] > 1.0 for run in regime["16-mixed"]["runs"])  # dynamic loss scaling
        assert all("loss_scale" not in run for run in regime["32-true"]["runs"] + regime["bf16-mixed"]["runs"])
    plain, small = results["plain"], results["small_gradients"]
    # In fp32 the regime is the same run (powers of two rescale exactly), with most gradients out of fp16's range.
    for a, b in zip(plain["32-true"]["runs"], small["32-true"]["runs"]):
        assert a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]
    assert small["32-true"]["below_fp16_subnormal"] > max(0.01, 10 * plain["32-true"]["below_fp16_subnormal"])
    assert small["16-mixed-unscaled"]["zero_grad"] > small["32-true"]["zero_grad"]  # fp16 flushed them
    report = (tmp_path / "report.md").read_text()
    assert "16-mixed-unscaled" in report and "1 → 1" in report
    check_mlflow(mlflow_client, "precision", verdict, n_children=len(results) * len(cfg.precisions) * len(cfg.seeds))


# --- optimizer_memory ---------------------------------------------------------------------------------------


def test_optimizer_memory_rejects_a_case_without_its_claim():
    cfg = load_study("optimizer_memory", "test")
    check_knobs(cfg, list(cfg.run_cases))
    del cfg.cases.adam["expected_ratio"]
    with pytest.raises(ConfigError, match="case adam needs a number expected_ratio"):
        check_knobs(cfg, ["adam"])
    assert verdict_of(2.05, 2.0, 0.05) == AS_CLAIMED and verdict_of(2.051, 2.0, 0.05) == NOT_AS_CLAIMED
    assert verdict_of(math.nan, 0.0, 0.05) == NOT_AS_CLAIMED


def test_optimizer_memory_test_preset_measures_the_textbook_state_sizes(
    tracking_uri, mlflow_client, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("optimizer_memory", "test")
    verdict = run_study(cfg, tmp_path)
    check_well_formed(verdict, cfg, tmp_path, (AS_CLAIMED, NOT_AS_CLAIMED))
    cases = {c["case"]: c for c in verdict["cases"]}
    assert list(cases) == list(cfg.run_cases)
    for c in cases.values():  # computed from the measured ratio and the config's claim
        assert c["value"] == c["state_ratio"] == c["state_bytes"] / c["param_bytes"]
        claimed_dtype = c["expected_state_dtype"]
        assert c["verdict"] == verdict_of(
            c["state_ratio"], c["expected_ratio"], c["tolerance"], c["state_dtype"], claimed_dtype
        )
        assert c["step_ratio"] > 0 and c["iteration_ratio"] > 0
    assert cases["sgd"]["state_bytes"] == 0
    assert cases["momentum"]["state_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert cases["adam"]["state_ratio"] == pytest.approx(2.0, abs=1e-3)  # plus a few 0-dim step counters
    assert 0 < cases["adafactor"]["state_ratio"] < 0.05  # factored: rows + columns, not rows × columns
    lbfgs = cases["lbfgs"]
    assert 1 <= lbfgs["history_pairs"] <= 10  # history_size=10 in the case's overrides
    assert lbfgs["state_ratio"] == pytest.approx(2 + 2 * lbfgs["history_pairs"], abs=1e-3)
    assert lbfgs["evaluations_per_step"] > 1 and lbfgs["iteration_ratio"] > 2  # step() runs its closure
    assert all(c["evaluations_per_step"] == 1 for name, c in cases.items() if name != "lbfgs")
    # Mixed precision keeps float32 weights and float32 moments; bf16-true halves both.
    mixed, true = cases["adam_bf16_mixed"], cases["adam_bf16_true"]
    assert mixed["param_dtype"] == mixed["state_dtype"] == "float32"
    assert mixed["state_bytes"] == cases["adam"]["state_bytes"] and mixed["state_ratio_fp32"] == pytest.approx(
        2.0, abs=1e-3
    )
    assert true["param_dtype"] == true["state_dtype"] == "bfloat16"
    assert true["param_bytes"] * 2 == cases["adam"]["param_bytes"]
    assert true["state_ratio"] == pytest.approx(2.0, abs=1e-3) and true["state_ratio_fp32"] == pytest.approx(
        1.0, abs=1e-3
    )
    assert all(c["verdict"] == AS_CLAIMED for c in cases.values())
    children = check_mlflow(mlflow_client, "optimizer_memory", verdict, n_children=len(cases))
    for run in children:
        case = cases[run.data.tags["optbench.study_case"]]
        assert run.data.metrics["memory/state_ratio"] == pytest.approx(case["state_ratio"])
        assert run.data.params["optimizer.name"] == case["case"].split("_")[0]  # adam_bf16_true: adam


def test_optimizer_memory_a_claimed_state_dtype_must_match():
    assert verdict_of(2.0, 2.0, 0.05, "float32", "float32") == AS_CLAIMED
    assert verdict_of(2.0, 2.0, 0.05, "bfloat16", "float32") == NOT_AS_CLAIMED  # right size, wrong dtype
    assert verdict_of(2.0, 2.0, 0.05, "bfloat16", None) == AS_CLAIMED  # no dtype claimed
    adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))])
    assert state_dtype(adam) == "none"  # state is created at the first step
    adam.param_groups[0]["params"][0].grad = torch.ones(3, dtype=torch.bfloat16)
    adam.step()
    assert state_dtype(adam) == "bfloat16"  # the 0-dim float32 step counter is not a buffer
    cfg = load_study("optimizer_memory", "test")
    cfg.cases.adam_bf16_true.expected_state_dtype = "bf16"
    with pytest.raises(ConfigError, match="name a torch dtype"):
        check_knobs(cfg, ["adam_bf16_true"])
