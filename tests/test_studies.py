"""Claim studies (optbench-study): the exact studies in their test-sized form reach the verdicts the mathematics
predicts, every other study runs on its tiny preset and produces a well-formed verdict computed from its
numbers, everything is logged to MLflow, and train() can save the final parameters."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
import yaml
from conftest import runs_of
from scipy import stats
from study_checks import check_mlflow, check_well_formed

from optbench.core.errors import ConfigError
from optbench.stats import median_time_to_target
from optbench.studies.config import load_study, study_names
from optbench.studies.kinds.sweeps import stable_range_verdict, unanimous
from optbench.studies.measures import EQUIVALENT, NOT_EQUIVALENT, verdict_of
from optbench.studies.report import claim_tests, protocol_lines
from optbench.studies.run import KIND, run_study
from optbench.studies.verdict import FAILS, HOLDS, correct, preregistration
from optbench.training.data import load_dataset
from optbench.training.models import build_model
from optbench.training.train import train

ROOT = Path(__file__).resolve().parents[1]
EXACT = ("loss_vs_lr_scale", "grad_accumulation", "ddp_equivalence")
TUNED = ("adam_vs_sgd", "momentum", "schedules", "layerwise_lr")
STUDIES = (
    *EXACT,
    *TUNED,
    "adamw_vs_adam_l2",
    "grad_clipping",
    "batch_size_scaling",
    "precision",
    "optimizer_memory",
    "large_batch",
    "warmup_stability",
    "adaptive_lr_decay",
    "lbfgs_convex",
)


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
        assert all(run["run_id"] and math.isfinite(run["test_acc"]) for run in case["runs"].values())
    return verdict


def test_loss_vs_lr_scale_test_preset_reaches_the_predicted_verdicts(
    tracking_uri, mlflow_client, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("loss_vs_lr_scale", "test")
    assert set(cfg.run_cases) >= {"sgd", "sgd_wd", "adam"}
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
    check_mlflow(mlflow_client, "loss_vs_lr_scale", verdict, n_children=3 * 3)


def test_grad_accumulation_test_preset_reaches_the_predicted_verdicts(
    tracking_uri, mlflow_client, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("grad_accumulation", "test")
    run_study(cfg, tmp_path)
    verdict = _check_verdict_file(tmp_path / "verdict.json", cfg)
    assert verdict["verdicts"] == {"no_batch_norm": EQUIVALENT, "batch_norm": NOT_EQUIVALENT}
    assert verdict["values"]["no_batch_norm"] < 1e-12 and verdict["values"]["batch_norm"] > 1e-4
    check_mlflow(mlflow_client, "grad_accumulation", verdict, n_children=2 * 2)


def test_study_config_applies_the_preset_then_the_overrides():
    cfg = load_study("loss_vs_lr_scale", "test", ["steps=7"])
    assert cfg.steps == 7 and cfg.preset == "test" and list(cfg.run_cases) == ["sgd", "sgd_wd", "adam"]
    study = yaml.safe_load((ROOT / "conf/study/loss_vs_lr_scale.yaml").read_text())
    assert load_study("loss_vs_lr_scale").steps == study["steps"] != 7
    with pytest.raises(ConfigError, match="Unknown study 'nope'"):
        load_study("nope")
    assert verdict_of(1e-9, 1e-9) == NOT_EQUIVALENT and verdict_of(float("nan"), 1e-9) == NOT_EQUIVALENT


def test_a_study_that_fails_marks_its_verdict_run_failed(tracking_uri, mlflow_client, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("grad_accumulation", "test", ["micro_batch=10000"])
    with pytest.raises(ConfigError, match=r"exceeds the \d+ training examples"):
        run_study(cfg, tmp_path)
    (failed,) = [r for r in runs_of(mlflow_client, "study-grad_accumulation") if r.info.status == "FAILED"]
    assert failed.data.tags["optbench.kind"] == KIND
    assert not (tmp_path / "verdict.json").exists()


@pytest.mark.parametrize("name", STUDIES)
def test_each_study_has_a_pipeline_that_tracks_its_config_as_params(name):
    stage = yaml.safe_load((ROOT / "pipelines" / name / "dvc.yaml").read_text())["stages"]["run"]
    assert stage["cmd"] == f"OPTBENCH_CONFIG_DIR=conf optbench-study run {name}" and stage["wdir"] == "../.."
    assert stage["params"] == [{f"conf/study/{name}.yaml": None}]  # every key, from the one source
    assert not (ROOT / "pipelines" / name / "params.yaml").exists()
    study = yaml.safe_load((ROOT / "conf/study" / f"{name}.yaml").read_text())
    kind_module = {ep.name: ep.value for ep in entry_points(group="optbench.study_kinds")}[study["kind"]]
    module_file = "src/" + kind_module.split(":")[0].replace(".", "/") + ".py"
    assert module_file in stage["deps"]  # the study's own kind, and no other kind
    assert not [
        d
        for d in stage["deps"]
        if "studies/kinds/" in d and d.endswith(".py") and d != module_file and not d.endswith("__init__.py")
    ]
    # The verdict is an output (uncached, in git), not a DVC metric: the root's dvc metrics show lists the main
    # pipeline only, and `dvc metrics show pipelines/<study>/results/verdict.json` shows a study's.
    outs = {next(iter(o)) if isinstance(o, dict) else o: o for o in stage["outs"]}
    verdict = outs[f"pipelines/{name}/results/verdict.json"]
    assert "metrics" not in stage and verdict[f"pipelines/{name}/results/verdict.json"] == {"cache": False}
    assert {"gpu", "test"} <= set(study["presets"]) or name in EXACT  # a tiny form and a GPU form
    assert load_study(name).name == name


def test_every_study_config_is_covered_here():
    assert set(study_names()) == set(STUDIES)


def test_study_list_prints_every_study_and_its_question():
    script = Path(sys.executable).parent / "optbench-study"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "optbench.cli.study"]
    result = subprocess.run(
        [*command, "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    for name in STUDIES:
        assert name in result.stdout
    assert "dividing the loss by 10" in result.stdout


@pytest.mark.slow  # two spawned DDP processes per case
def test_ddp_equivalence_test_preset_reaches_the_predicted_verdicts(tracking_uri, mlflow_client, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("ddp_equivalence", "test")
    run_study(cfg, tmp_path)
    verdict = _check_verdict_file(tmp_path / "verdict.json", cfg)
    assert verdict["verdicts"] == {"no_batch_norm": EQUIVALENT, "batch_norm": NOT_EQUIVALENT}
    # float64 end to end, also in the spawned ranks: rounding, not a float32 round trip (~1e-8)
    assert verdict["values"]["no_batch_norm"] < 1e-12 and verdict["values"]["batch_norm"] > 1e-4
    check_mlflow(mlflow_client, "ddp_equivalence", verdict, n_children=2 * 2)


# --- studies with stochastic verdicts: tiny presets, well-formed and computed verdicts ----------------------


@pytest.mark.unit
def test_holm_decides_every_tested_claim_of_a_study_on_its_adjusted_p_values():
    # Four claims, each significant alone at 0.05; after Holm (0.03, 0.06, 0.06, 0.02) two stay supported.
    # The fifth, an exact tie, is decided without a test and stays out of the family.
    ps = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}
    cases = [
        {"case": n, "test": "advantage", "p_value": p, "p_opposite": 1 - p, "verdict": "supported"}
        for n, p in ps.items()
    ]
    cases.append({"case": "tie", "p_value": math.nan, "verdict": "refuted", "reason": "a tie is not an advantage"})
    correction = correct(cases, 0.95, "unused")
    assert (
        correction["correction"] == "holm" and correction["family_size"] == 4 and "tie" in correction["correction_note"]
    )
    by_name = {c["case"]: c for c in cases}
    assert [by_name[n]["p_adjusted"] for n in ps] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [by_name[n]["verdict"] for n in ps] == ["supported", "inconclusive", "inconclusive", "supported"]
    assert by_name["b"]["verdict_unadjusted"] == "supported"
    assert by_name["tie"]["verdict"] == "refuted" and "p_adjusted" not in by_name["tie"]
    # refuted only where the opposite test survives the correction
    against = [
        {"case": n, "test": "advantage", "p_value": 0.999, "p_opposite": q, "verdict": "refuted"}
        for n, q in (("x", 0.001), ("y", 0.03), ("z", 0.04))  # adjusted: 0.003, 0.06, 0.06
    ]
    correct(against, 0.95, "unused")
    assert [c["verdict"] for c in against] == ["refuted", "inconclusive", "inconclusive"]
    untested = [{"case": "sgd", "verdict": "equivalent"}]
    assert correct(untested, None, "exact equalities") == {
        "correction": "none",
        "correction_note": "exact equalities",
        "family_size": 0,
    }
    assert set(HOLDS).isdisjoint(FAILS)


@pytest.mark.unit
def test_the_preregistration_hash_changes_with_a_margin_and_a_rerun_records_the_change(tmp_path):
    cfg = load_study("adam_vs_sgd")
    first = preregistration(cfg)
    assert first["fields"]["claims"]["adam_faster_than_sgd"] == {
        "better": "adam",
        "than": "sgd",
        "metric": "steps_to_target",
        "margin": 0.0,
        "test": "advantage",
    }
    assert first["fields"]["seeds"] == [1, 2, 3, 4, 5] and first["fields"]["confidence"] == 0.95
    assert preregistration(load_study("adam_vs_sgd"))["hash"] == first["hash"]  # canonical: the same again
    assert (
        preregistration(load_study("adam_vs_sgd", overrides=["+claims.adam_faster_than_sgd.margin=0.0"]))["hash"]
        == first["hash"]
    )  # writing out the default margin is the same protocol
    moved = load_study("adam_vs_sgd", overrides=["+claims.adam_faster_than_sgd.margin=5.0"])
    assert preregistration(moved)["hash"] != first["hash"]
    assert preregistration(load_study("adam_vs_sgd", overrides=["seeds=[1,2,3]"]))["hash"] != first["hash"]
    previous = tmp_path / "verdict.json"
    previous.write_text(json.dumps({"preset": None, "preregistration": first}))
    changed = preregistration(moved, previous)
    assert changed["changed_from"] == first["hash"]
    assert "changed_from" not in preregistration(cfg, previous)  # the same protocol: nothing to say
    previous.write_text(json.dumps({"preset": "test", "preregistration": first}))
    assert "changed_from" not in preregistration(moved, previous)  # another preset is another protocol
    report = "\n".join(protocol_lines({"preregistration": changed, "correction": "holm", "correction_note": "n"}))
    assert changed["hash"][:16] in report and "protocol changed after a run" in report
    memory = preregistration(load_study("optimizer_memory"))["fields"]["cases"]
    assert memory["adam"]["expected_ratio"] == 2  # the stated state size is part of the protocol


@pytest.mark.unit
def test_the_report_shows_each_claims_p_values_and_power_note():
    case = {
        "case": "c",
        "method": "paired t (per-seed differences)",
        "p_value": 0.01,
        "p_adjusted": 0.03,
        "p_opposite_adjusted": 1.0,
        "detectable_effect": 0.0123,
        "verdict": "supported",
        "verdict_unadjusted": "supported",
    }
    tie = {"case": "t", "p_value": math.nan, "verdict": "refuted", "reason": "a tie is not an advantage"}
    lines = "\n".join(claim_tests({"cases": [case, tie, {"case": "exact", "verdict": "equivalent"}]}))
    assert "| c | paired t (per-seed differences) | 0.01 | 0.03 | 1 | 0.0123 | **supported** (supported) |" in lines
    assert "a tie is not an advantage" in lines and "| exact |" not in lines


@pytest.mark.unit
def test_the_grid_rules_of_the_sweeps_can_be_inconclusive():
    assert unanimous(1.0, [1.0, 2.0, 1.0], 0.5)[0] == "supported"
    assert unanimous(0.0, [0.0, 0.0, 0.5], 0.5)[0] == "refuted"
    assert unanimous(1.0, [1.0, 0.0, 1.0], 0.5) == ("inconclusive", "the seeds disagree")
    assert stable_range_verdict({"no_clip": 1.0, "clip": 3.0}, top=10.0)[0] == "supported"
    assert stable_range_verdict({"no_clip": 3.0, "clip": 1.0}, top=10.0)[0] == "refuted"
    assert stable_range_verdict({"no_clip": 1.0, "clip": 1.0}, top=10.0)[0] == "inconclusive"  # grid resolution
    assert stable_range_verdict({"no_clip": 10.0, "clip": 10.0}, top=10.0)[0] == "inconclusive"  # never diverged
    assert stable_range_verdict({"no_clip": 0.0, "clip": 0.0}, top=10.0)[0] == "inconclusive"


def test_adam_vs_sgd_tunes_every_optimizer_with_the_same_budget_and_judges_each_claim(
    tracking_uri, mlflow_client, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("adam_vs_sgd", "test")
    verdict = run_study(cfg, tmp_path)
    check_well_formed(verdict, cfg, tmp_path, ("supported", "refuted", "inconclusive"))
    results = verdict["results"]
    assert set(results) == set(cfg.run_cases) == {"sgd", "adam"}
    budget = int(next(o for o in cfg.tune if o.startswith("tune.n_trials=")).split("=")[1])
    for r in results.values():
        assert len(r["trials"]) == r["tuned"]["budget"] == budget  # the same budget for every optimizer
        assert [run["seed"] for run in r["runs"]] == list(cfg.seeds)  # evaluation seeds, not the tuning seed
        for run in r["runs"]:  # a run that never reaches the target is censored, not counted as its length
            assert 0 < run["steps_to_target"] <= run["steps"] if run["reached"] else math.isinf(run["steps_to_target"])
        times = [run["steps_to_target"] for run in r["runs"]]
        assert r["steps_to_target"]["median"] == median_time_to_target(times, [run["steps"] for run in r["runs"]])
        assert r["steps_to_target"]["reached"] == r["reached"]
    for claim in verdict["cases"]:  # each advantage is computed from the recorded runs, paired by seed
        a, b = ([r[claim["metric"]] for r in results[claim[side]]["runs"]] for side in ("better", "than"))
        if claim["metric"] == "steps_to_target":
            assert claim["medians"] == [
                results[claim[side]]["steps_to_target"]["median"] for side in ("better", "than")
            ]
            assert claim["method"].startswith("Wilcoxon")
        else:
            assert claim["advantage"]["diff"] == pytest.approx(sum(x - y for x, y in zip(a, b)) / len(a))
            assert claim["method"].startswith("paired")
    parent = mlflow_client.get_run(verdict["mlflow"]["run_id"])
    assert parent.info.status == "FINISHED"
    nested = [
        r
        for r in runs_of(mlflow_client, "study-adam_vs_sgd")
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    ]
    # per optimizer: one tuning parent (its trials nest under it) and one run per evaluation seed
    assert len(nested) == len(results) * (1 + len(cfg.seeds))


@pytest.mark.parametrize("name", ("momentum", "schedules"))
def test_other_tuned_comparisons_run_their_tiny_preset_with_computed_verdicts(
    name, tracking_uri, mlflow_client, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study(name, "test")
    verdict = run_study(cfg, tmp_path)
    check_well_formed(verdict, cfg, tmp_path, ("supported", "refuted", "inconclusive"))
    assert set(verdict["results"]) == set(cfg.run_cases)
    assert verdict["correction"] == "holm" or all(c.get("reason") for c in verdict["cases"])
    if name == "schedules":  # grid cases carry the schedule's own settings
        assert verdict["results"]["momentum+cosine"]["overrides"] == ["optimizer=momentum", "scheduler=cosine"]


def test_schedules_grid_names_every_optimizer_schedule_pair_with_its_settings():
    from optbench.studies.kinds.tuned import case_overrides

    cases = case_overrides(load_study("schedules"))
    cfg = load_study("schedules")
    assert len(cases) == len(cfg.grid.optimizer) * len(cfg.grid.scheduler)
    assert cases["adamw+step"] == ["optimizer=adamw", "scheduler=step", "scheduler.step_size=4", "scheduler.gamma=0.3"]


def test_adamw_vs_adam_l2_finds_the_same_update_only_without_decay(tracking_uri, mlflow_client, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("adamw_vs_adam_l2", "test")
    verdict = run_study(cfg, tmp_path)
    check_well_formed(verdict, cfg, tmp_path, (EQUIVALENT, NOT_EQUIVALENT, "supported", "refuted", "inconclusive"))
    assert verdict["verdicts"]["same_without_decay"] == EQUIVALENT  # the mathematics: identical updates
    assert verdict["verdicts"]["same_with_decay"] == NOT_EQUIVALENT
    assert verdict["values"]["same_without_decay"] < 1e-12 < 1e-6 < verdict["values"]["same_with_decay"]
    for name, cells in verdict["grid"].items():
        assert len(cells) == len(cfg.lrs) * len(cfg.weight_decays)
        assert all(len(c["run_ids"]) == len(cfg.seeds) for c in cells)
        best = verdict["best"][name]
        assert best["val_acc_best"]["mean"] == max(c["val_acc_best"]["mean"] for c in cells)
    shift = verdict["best_wd"]["adam_l2"]["decades"] - verdict["best_wd"]["adamw"]["decades"]
    assert verdict["values"]["adamw_decouples_decay"] == pytest.approx(shift)
    decouples = next(c for c in verdict["cases"] if c["case"] == "adamw_decouples_decay")
    assert decouples["verdict"] == unanimous(shift, decouples["per_seed"], cfg.shift_margin)[0]
    assert len(decouples["per_seed"]) == len(cfg.seeds)


def test_grad_clipping_counts_divergences_and_judges_them(tracking_uri, mlflow_client, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("grad_clipping", "test")
    verdict = run_study(cfg, tmp_path)
    check_well_formed(verdict, cfg, tmp_path, ("supported", "refuted", "inconclusive"))
    sweep = verdict["sweep"]
    assert [p["lr"] for p in sweep["no_clip"]] == sorted(cfg.lrs)
    assert sweep["no_clip"][-1]["diverged"] == len(cfg.seeds)  # lr 1000 without clipping diverges on every seed
    assert sweep["no_clip"][0]["diverged"] == 0
    fewer = next(c for c in verdict["cases"] if c["case"] == "fewer_divergences")
    counted = sum(p["diverged"] for p in sweep["no_clip"]) - sum(p["diverged"] for p in sweep["clip"])
    assert fewer["value"] == counted
    n = len(cfg.seeds) * len(cfg.lrs)  # Fisher's exact test on the divergence counts, one-sided
    no_clip, clip = (sum(p["diverged"] for p in sweep[side]) for side in ("no_clip", "clip"))
    table = [[no_clip, n - no_clip], [clip, n - clip]]
    assert fewer["p_value"] == pytest.approx(stats.fisher_exact(table, alternative="greater").pvalue)
    diverged = [
        r for r in runs_of(mlflow_client, "study-grad_clipping") if r.data.tags.get("optbench.outcome") == "diverged"
    ]
    assert len(diverged) >= len(cfg.seeds)  # recorded as diverged in MLflow, FINISHED, not failed
    assert all(r.info.status == "FINISHED" for r in diverged)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["seeds=[1,2"], "study schedules: Cannot compose .* study.seeds=\\[1,2: no viable alternative"),
        (["garbage"], "Error parsing override 'study.garbage' missing EQUAL"),
        (["no_such_key=1"], "Could not override 'study.no_such_key'"),
        (["run_cases=[momentum+nosuch]"], "unknown cases momentum\\+nosuch. Cases: momentum\\+constant"),
    ],
)
def test_bad_study_overrides_are_one_paragraph_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_study("schedules", "test", overrides)


def test_a_case_naming_an_unknown_option_fails_its_verdict_run_with_the_valid_options(
    tracking_uri, mlflow_client, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = load_study("adam_vs_sgd", "test", ["cases.sgd.overrides=['optimizer=nosuch']"])
    with pytest.raises(
        ConfigError, match="Could not find 'optimizer/nosuch' Available options in 'optimizer': .*adamw"
    ):
        run_study(cfg, tmp_path)
    runs = runs_of(mlflow_client, "study-adam_vs_sgd")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert any(r.info.status == "FAILED" and r.data.tags.get("optbench.kind") == KIND for r in runs)
    assert not (tmp_path / "verdict.json").exists()
