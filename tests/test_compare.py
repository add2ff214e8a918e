"""optbench-compare on real MLflow runs in a temporary SQLite store: runs with known values (logged with
MlflowClient, no training) for the statistics, real training runs end to end, the command line, the notebook."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import nbclient
import nbformat
import pandas as pd
import pytest
import yaml
from conftest import compose_config, runs_of
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from optbench.compare.analysis import build_comparison, seconds_at
from optbench.compare.profiles import expected_best, profile, profile_ratios, profile_score
from optbench.compare.publish import compare
from optbench.compare.report import format_table
from optbench.core.errors import ConfigError
from optbench.stats import mean_ci
from optbench.tracking import experiment_id
from optbench.training.train import train

OPTBENCH_COMPARE = str(Path(sys.executable).parent / "optbench-compare")
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_optimizers.ipynb"
T_975_2 = 4.302652729911275  # t_{0.975, 2}: 95% two-sided, three seeds


class Store:
    """One MLflow experiment of the session store, named after the test, and runs logged into it by hand."""

    def __init__(self, uri: str, experiment: str, out: Path) -> None:
        self.uri, self.experiment, self.out = uri, experiment, out
        self.client = MlflowClient(uri)
        self.exp_id = experiment_id(self.client, experiment)
        self.clock = 1_700_000_000_000

    def run(
        self,
        optimizer: str,
        seed: int,
        *,
        val_acc=(0.5, 0.7, 0.9),
        steps=(10, 20, 30),
        times=(1.0, 2.0, 3.0),
        test_acc=0.8,
        train_loss=(1.0, 0.5, 0.2),
        diverged_metric=False,
        diverged_tag=False,
        params: dict | None = None,
        tags: dict | None = None,
        status="FINISHED",
        experiment_id: str | None = None,
    ) -> str:
        """Log one run the way optbench-train does (same names), with explicit steps; return its id."""
        self.clock += 1000
        tags = {"optbench.outcome": "diverged" if diverged_tag else "completed", **(tags or {})}
        run = self.client.create_run(
            experiment_id or self.exp_id, start_time=self.clock, tags=tags, run_name=f"{optimizer}-s{seed}"
        )
        all_params = {
            "optimizer.name": optimizer,
            "seed": seed,
            "data.name": "digits",
            "model.name": "mlp",
            "trainer.max_epochs": 3,
            **(params or {}),
        }
        best, metrics = -math.inf, []
        for step, acc, seconds, loss in zip(steps, val_acc, times, train_loss):
            best = max(best, acc)
            metrics += [
                Metric("val/acc", acc, self.clock, step),
                Metric("val/acc_best", best, self.clock, step),
                Metric("time/train_s", seconds, self.clock, step),
                Metric("train/loss", loss, self.clock, step),
                Metric("train/samples_per_sec", 100.0 * (1 + seed), self.clock, step),
            ]
        last = steps[-1]
        metrics += [
            Metric("test/acc", test_acc, self.clock, last),
            Metric("train/diverged", float(diverged_metric), self.clock, last),
            Metric("optimizer/state_to_param_ratio", 2.0, self.clock, last),
        ]
        self.client.log_batch(
            run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in all_params.items()]
        )
        self.client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    def cfg(self, *overrides: str):
        """The compare config for this experiment. Tests that are not about the target name the fallback rule
        explicitly (no targets file exists here); tests about the target choose their own."""
        base = [f"experiment={self.experiment}", f"output_dir={self.out}", f"tracking_uri={self.uri}"]
        if not any(o.split("=")[0] in ("target_rule", "target_file", "targets_dir") for o in overrides):
            base.append("target_rule=best_optimizer_median")
        return compose_config(*base, *overrides, config_name="compare")


@pytest.fixture
def store(tracking_uri, tmp_path, request, monkeypatch) -> Store:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    return Store(tracking_uri, "compare-" + re.sub(r"[^\w.-]+", "_", request.node.name), tmp_path / "out")


# --- statistics on runs with known values -------------------------------------------------------------------


def test_mean_and_confidence_interval_match_a_hand_computation(store):
    for seed, acc in enumerate([0.80, 0.90, 0.85]):
        store.run("adam", seed, val_acc=(0.5, acc, acc - 0.1), test_acc=acc - 0.05, train_loss=(1.0, 0.5, acc / 4))
    store.run("sgd", 0, val_acc=(0.4, 0.6, 0.7), test_acc=0.65)

    table = build_comparison(store.cfg("target=0.5")).table

    adam = table.loc["adam"]
    half = T_975_2 * 0.05 / math.sqrt(3)  # the sample std of 0.80, 0.90, 0.85 is 0.05
    assert adam.val_acc_best_mean == pytest.approx(0.85)
    assert (adam.val_acc_best_low, adam.val_acc_best_high) == pytest.approx((0.85 - half, 0.85 + half))
    assert adam.test_acc_mean == pytest.approx(0.80)
    assert (adam.test_acc_low, adam.test_acc_high) == pytest.approx((0.80 - half, 0.80 + half))
    assert adam.train_loss_mean == pytest.approx(0.85 / 4)
    assert adam.state_to_param_ratio_mean == pytest.approx(2.0)
    assert adam.samples_per_sec_mean == pytest.approx(200.0)  # 100, 200, 300 samples/s for seeds 0, 1, 2
    assert (adam.n_runs, adam.val_acc_best_n) == (3, 3)
    sgd = table.loc["sgd"]  # one seed: a mean, no interval
    assert sgd.val_acc_best_mean == pytest.approx(0.7)
    assert math.isnan(sgd.val_acc_best_low) and math.isnan(sgd.val_acc_best_high)
    assert list(table.index) == ["adam", "sgd"] and list(table["rank"]) == [1, 2]
    assert format_table(table).set_index("Optimizer").loc["sgd", "Best val acc"] == "0.7000 [n/a]"


def test_mean_ci_edge_cases():
    half = T_975_2 * 0.05 / 3**0.5
    ci = mean_ci([0.8, 0.9, 0.85])
    assert (ci["mean"], ci["low"], ci["high"], ci["n"]) == pytest.approx((0.85, 0.85 - half, 0.85 + half, 3))
    mean, low, high, n = mean_ci([0.7, float("nan")]).values()  # non-finite values do not count
    assert (mean, n) == (0.7, 1) and math.isnan(low) and math.isnan(high)
    assert mean_ci([])["n"] == 0 and math.isnan(mean_ci([])["mean"])
    # s = 1/sqrt(2), s/sqrt(n) = 0.5; t_{0.95, 1} = 6.3138 for a 90% interval
    assert mean_ci([1.0, 2.0], confidence=0.9)["high"] == pytest.approx(1.5 + 6.313751514675 * 0.5)


def test_steps_and_seconds_to_target_count_runs_that_never_reach_it(store):
    a = store.run("adam", 0, val_acc=(0.5, 0.8, 0.9), steps=(10, 20, 30), times=(1.5, 3.0, 4.5))
    b = store.run("adam", 1, val_acc=(0.6, 0.7, 0.76), steps=(10, 20, 30), times=(2.0, 4.0, 6.0))
    c = store.run("adam", 2, val_acc=(0.5, 0.6, 0.7), steps=(10, 20, 30), times=(2.0, 4.0, 7.0))  # never

    comparison = build_comparison(store.cfg("target=0.75"))

    per_run = comparison.runs.set_index("run_id")
    assert (per_run.loc[a, "steps_to_target"], per_run.loc[a, "seconds_to_target"]) == (20, 3.0)
    assert (per_run.loc[b, "steps_to_target"], per_run.loc[b, "seconds_to_target"]) == (30, 6.0)
    assert not per_run.loc[c, "reached"] and math.isnan(per_run.loc[c, "steps_to_target"])
    assert (per_run.loc[c, "horizon_steps"], per_run.loc[c, "horizon_seconds"]) == (30, 7.0)  # censored there
    adam = comparison.table.loc["adam"]
    assert (adam.reached, adam.n_runs) == (2, 3)
    # Kaplan-Meier: S(20) = 2/3; at 30 two runs are at risk and one reaches it, S(30) = 1/3 <= 1/2. The
    # mean of the reaching runs (25 steps) would pretend the third run does not exist.
    assert (adam.steps_to_target, adam.seconds_to_target) == (30, 6.0)
    cells = format_table(comparison.table).iloc[0]
    assert cells["Steps to target"] == "30 (reached 2/3)"
    assert cells["Seconds to target"] == "6.0 (reached 2/3)"


def test_a_slow_optimizer_whose_runs_mostly_never_reach_the_target_does_not_look_fast(store):
    for seed in (0, 1, 2):  # "steady" reaches 0.8 at step 30 on every seed
        store.run("steady", seed, val_acc=(0.5, 0.7, 0.85, 0.9), steps=(10, 20, 30, 40), times=(1, 2, 3, 4))
    store.run("flaky", 0, val_acc=(0.85, 0.9, 0.9, 0.9), steps=(10, 20, 30, 40), times=(1, 2, 3, 4))  # fast once
    for seed in (1, 2):  # then never within 40 steps
        store.run("flaky", seed, val_acc=(0.3, 0.4, 0.5, 0.6), steps=(10, 20, 30, 40), times=(1, 2, 3, 4))

    comparison = build_comparison(store.cfg("target=0.8"))

    table = comparison.table
    assert table.loc["steady", "steps_to_target"] == 30 and table.loc["steady", "reached"] == 3
    assert math.isinf(table.loc["flaky", "steps_to_target"]) and table.loc["flaky", "reached"] == 1
    assert format_table(table).set_index("Optimizer").loc["flaky", "Steps to target"] == "not reached by half (1/3)"
    # Profile over seeds: seed 0 flaky 10 (r=1), steady 30 (r=3); seeds 1, 2 steady r=1, flaky inf.
    # Score = mean over problems of (4 - r)/3, 0 for r > 4: steady (1/3 + 1 + 1)/3 = 7/9, flaky (1 + 0 + 0)/3.
    assert comparison.profile_scores == pytest.approx({"flaky": 1 / 3, "steady": 7 / 9})
    assert comparison.ratios.loc["s0"].to_dict() == {"flaky": 1.0, "steady": 3.0}


def test_the_time_to_target_resolution_is_the_logged_validation_interval(store):
    for seed in (0, 1):
        store.run("adam", seed, steps=(25, 50, 75), params={"trainer.val_check_interval": 25})

    summary = compare(store.cfg("target=0.6"))

    assert summary["val_check_interval"] == 25 and summary["val_every_steps"] == 25
    assert "trainer.val_check_interval=25, every 25 steps as logged" in (store.out / "report.md").read_text()


def test_seconds_are_interpolated_by_step_from_the_time_history():
    times = pd.DataFrame({"step": [10, 20], "value": [2.0, 4.0]})
    assert list(seconds_at(times, [10, 15, 20, 5])) == pytest.approx([2.0, 3.0, 4.0, 1.0])  # 0 s at step 0


def test_the_named_fallback_target_is_the_median_best_val_acc_of_the_best_optimizer(store):
    for seed, acc in enumerate([0.90, 0.94, 0.92]):
        store.run("adam", seed, val_acc=(0.5, 0.6, acc))
    for seed, acc in enumerate([0.91, 0.80, 0.85]):
        store.run("sgd", seed, val_acc=(0.5, 0.6, acc))

    comparison = build_comparison(store.cfg("target_rule=best_optimizer_median"))

    assert comparison.target == pytest.approx(0.92)  # adam has the higher mean; its median best
    assert "fallback best_optimizer_median" in comparison.target_rule and "adam" in comparison.target_rule
    assert comparison.target_source == "fallback: best_optimizer_median"
    assert comparison.table.loc["adam", "reached"] == 2 and comparison.table.loc["sgd", "reached"] == 0
    # adam 0.92 ± 0.050 and sgd 0.853 ± 0.137 overlap
    assert "#1 adam and #2 sgd: confidence intervals overlap, not distinguishable at 95%" in comparison.notes


def test_diverged_runs_are_kept_and_counted_by_metric_or_tag(store):
    store.run("adam", 0)
    store.run("adam", 1, diverged_metric=True, diverged_tag=True, val_acc=(0.3, 0.2, 0.1))
    store.run("adam", 2, diverged_metric=True)  # the metric alone counts
    store.run("sgd", 0, diverged_tag=True)  # the tag alone counts

    table = build_comparison(store.cfg()).table

    assert (table.loc["adam", "n_diverged"], table.loc["adam", "n_runs"]) == (2, 3)
    assert table.loc["sgd", "n_diverged"] == 1
    assert format_table(table).set_index("Optimizer").loc["adam", "Diverged"] == "2/3"


def test_of_several_runs_of_one_optimizer_and_seed_the_newest_counts(store):
    store.run("adam", 0, val_acc=(0.5, 0.6, 0.7))
    newest = store.run("adam", 0, val_acc=(0.5, 0.6, 0.9))

    comparison = build_comparison(store.cfg())

    assert list(comparison.runs.run_id) == [newest]
    assert comparison.table.loc["adam", "val_acc_best_mean"] == pytest.approx(0.9)
    assert any("1 older run" in note for note in comparison.notes)


def test_filters_select_runs_by_params_optimizer_and_seed(store):
    store.run("adam", 0)
    store.run("adam", 1)
    store.run("sgd", 0)
    store.run("adam", 5, params={"data.name": "mnist5k"})
    store.run("adam", 6, params={"model.name": "cnn"})
    store.run("adam", 7, params={"trainer.max_epochs": 10})

    def selected(*overrides):
        runs = build_comparison(store.cfg(*overrides)).runs
        return sorted(zip(runs.optimizer, runs.seed))

    assert selected("data=digits", "model=mlp", "max_epochs=3") == [("adam", 0), ("adam", 1), ("sgd", 0)]
    assert selected("data=mnist5k") == [("adam", 5)]
    assert selected("model=cnn") == [("adam", 6)]
    assert selected("max_epochs=10") == [("adam", 7)]
    assert selected("optimizers=[sgd]") == [("sgd", 0)]
    assert selected("seeds=[1,5]", "optimizers=[adam]") == [("adam", 1), ("adam", 5)]
    with pytest.raises(ConfigError, match="match data=cifar10.*holds 6 finished training run"):
        build_comparison(store.cfg("data=cifar10"))


def test_only_finished_training_runs_count(store, tmp_path):
    keep = store.run("adam", 0)
    store.run("adam", 1, status="FAILED")
    store.run("adam", 2, status="RUNNING")
    store.run("adam", 3, tags={"optbench.kind": "study"})
    store.run("adam", 4, tags={"mlflow.parentRunId": keep, "optbench.trial": "0"})

    assert list(build_comparison(store.cfg()).runs.run_id) == [keep]


def test_the_comparison_run_is_logged_and_excluded_from_the_next_comparison(store):
    ids = {store.run("adam", 0), store.run("adam", 1)}

    first = compare(store.cfg())
    second = compare(store.cfg())

    assert first["n_runs"] == second["n_runs"] == 2
    assert {r.info.run_id for r in runs_of(store.client, store.experiment)} == ids  # training runs only
    comparisons = runs_of(store.client, store.experiment + "-compare")
    assert len(comparisons) == 2
    for run in comparisons:
        assert run.data.tags["optbench.kind"] == "comparison"
        assert run.info.status == "FINISHED"
        assert set(run.data.tags["optbench.compared_runs"].split(",")) == ids
        assert run.data.metrics["adam/val_acc_best"] == pytest.approx(0.9)
        assert run.data.params["experiment"] == store.experiment
        artifacts = {a.path for a in store.client.list_artifacts(run.info.run_id)}
        assert {"summary.json", "report.md", "report.html", "learning_curves.png", "curves"} <= artifacts
        assert "curves/val_acc_step.csv" in {a.path for a in store.client.list_artifacts(run.info.run_id, "curves")}


def test_a_listed_optimizer_without_runs_is_a_missing_row(store, caplog):
    store.run("adam", 0)
    store.run("adam", 1)

    summary = compare(store.cfg("optimizers=[adam,lion]"))

    assert "lion is listed but has no matching finished run" in caplog.text
    assert summary["lion"]["n_runs"] == 0 and summary["lion"]["val_acc_best"] is None
    row = next(line for line in (store.out / "report.md").read_text().splitlines() if "| lion |" in line)
    assert row.count("missing") == 8  # every statistic of the row
    assert summary["adam"]["rank"] == 1 and summary["lion"]["rank"] is None


def test_optimizers_and_seeds_come_from_a_params_file(store, tmp_path):
    # How the DVC pipeline passes params.yaml's lists: DVC cannot interpolate a list into a command.
    for optimizer in ("adam", "sgd"):
        for seed in (0, 1, 2):
            store.run(optimizer, seed)
    params = tmp_path / "params.yaml"
    params.write_text("optimizers: [adam, lion]\nseeds: [0, 1]\n")

    summary = compare(store.cfg(f"params_file={params}"))

    assert summary["adam"]["n_runs"] == 2  # seed 2 is not in the list
    assert "sgd" not in summary  # not in the list, though it has runs
    assert summary["lion"]["n_runs"] == 0  # listed, no runs: a missing row


def test_a_target_no_run_reaches_is_reported_not_an_error(store):
    store.run("adam", 0)
    store.run("adam", 1)
    store.run("sgd", 0)

    summary = compare(store.cfg("target=0.99"))

    assert summary["target"] == 0.99 and summary["adam"]["reached"] == 0 and summary["adam"]["steps_to_target"] is None
    report = (store.out / "report.md").read_text()
    assert report.count("not reached (0/2)") == 2 and report.count("not reached (0/1)") == 2
    assert "No run reaches the target" in report
    assert (store.out / "time_to_target.png").stat().st_size > 0


def test_report_files_are_written(store):
    for seed in (0, 1, 2):
        store.run("adam", seed, val_acc=(0.5, 0.8, 0.85 + seed / 100), test_acc=0.85 + seed / 100)
        store.run("sgd", seed, val_acc=(0.4, 0.6, 0.7 + seed / 100), test_acc=0.7 + seed / 100)

    summary = compare(store.cfg("optimizers=[adam,sgd,lion]"))

    out = store.out
    on_disk = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert on_disk == summary
    assert {"target", "target_source", "n_runs", "confidence", "adam", "sgd", "lion"} <= set(summary)
    assert summary["n_runs"] == 6 and summary["target"] == pytest.approx(0.86)
    assert summary["target_source"] == "fallback: best_optimizer_median" and summary["profile_problems"] == 3
    assert {
        "rank",
        "n_runs",
        "n_diverged",
        "reached",
        "val_acc_best",
        "val_acc_best_low",
        "val_acc_best_high",
        "test_acc",
        "train_loss",
        "steps_to_target",
        "seconds_to_target",
        "state_to_param_ratio",
        "samples_per_sec",
        "profile_score",
    } <= set(summary["adam"])
    assert "steps_to_target_low" not in summary["adam"]  # a median with censored runs, no mean and t-interval
    # Target 0.86: adam reaches it on seeds 1 and 2 (r = 1), nobody on seed 0 (a problem no one solves).
    scores = [summary[name]["profile_score"] for name in ("adam", "sgd", "lion")]
    assert scores == pytest.approx([2 / 3, 0.0, 0.0])
    assert all(isinstance(v, (int, float)) or v is None for v in summary["adam"].values())
    report = (out / "report.md").read_text()
    assert "| Rank | Optimizer | Runs | Best val acc |" in report
    assert "missing" in report and "fallback best_optimizer_median" in report
    assert "Source: fallback: best_optimizer_median" in report and "![learning_curves](learning_curves.png)" in report
    assert "## Performance profile" in report and "Scores: adam 0.667, sgd 0.000, lion 0.000." in report
    assert "not distinguishable" not in report  # adam's and sgd's intervals are far apart
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "<table" in page and "missing" in page
    for name in ("learning_curves.png", "time_to_target.png", "performance_profile.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    band = pd.read_csv(out / "curves" / "val_acc_step.csv")
    assert list(band.columns) == ["optimizer", "step", "value_mean", "value_low", "value_high", "n_runs"]
    adam = band[band.optimizer == "adam"].set_index("step")
    assert adam.loc[30, "value_mean"] == pytest.approx(0.86) and adam.loc[30, "value_low"] == pytest.approx(0.85)
    assert adam.loc[30, "value_high"] == pytest.approx(0.87) and adam.loc[30, "n_runs"] == 3
    seconds = pd.read_csv(out / "curves" / "train_loss_seconds.csv")
    assert {"step", "seconds", "value_mean"} <= set(seconds.columns) and seconds.seconds.max() == pytest.approx(3.0)


def test_lr_sensitivity_plot_from_tuning_trials(store):
    store.run("adam", 0)
    tune_exp = experiment_id(store.client, store.experiment + "-tune")
    for optimizer in ("adam", "sgd"):
        study = store.client.create_run(tune_exp, tags={"optbench.kind": "study", "optbench.study": optimizer})
        space = {"optimizer.lr": {"low": 1e-3, "high": 0.1, "log": True, "transform": None}}
        if optimizer == "adam":
            space["optimizer.betas.0"] = {"low": 0.005, "high": 0.5, "log": True, "transform": "one_minus"}
        store.client.log_param(study.info.run_id, "tune.search_space", repr(space))  # as optbench-tune logs it
        for trial, lr in enumerate((1e-3, 1e-2, 1e-1)):
            store.run(
                optimizer,
                0,
                experiment_id=tune_exp,
                params={"optimizer.lr": lr},
                tags={
                    "mlflow.parentRunId": study.info.run_id,
                    "optbench.trial": str(trial),
                    "optbench.study": optimizer,
                },
            )

    comparison = build_comparison(store.cfg(f"tune_experiment={store.experiment}-tune"))
    assert sorted(comparison.trials.lr) == pytest.approx([1e-3, 1e-3, 1e-2, 1e-2, 1e-1, 1e-1])
    compare(store.cfg(f"tune_experiment={store.experiment}-tune"))
    assert (store.out / "lr_sensitivity.png").stat().st_size > 0
    assert "![lr_sensitivity](lr_sensitivity.png)" in (store.out / "report.md").read_text()
    report = (store.out / "report.md").read_text()
    assert "adam: lr [0.001, 0.1]; 1 − betas.0 [0.005, 0.5]; sgd: lr [0.001, 0.1]." in report

    compare(store.cfg(f"tune_experiment={store.experiment}"))  # no trials there: a note, no plot
    assert not (store.out / "lr_sensitivity.png").exists()
    assert "no finished trial" in (store.out / "report.md").read_text()


def test_budget_curves_pool_the_trials_of_every_tuning_study(store):
    store.run("adam", 0)
    store.run("sgd", 0)
    tune_exp = experiment_id(store.client, store.experiment + "-tune")
    finals = {("adam", "study-a"): (0.2, 0.9), ("adam", "study-b"): (0.5,), ("sgd", "study-a"): (0.6, 0.6)}
    for (optimizer, study_name), accs in finals.items():
        study = store.client.create_run(tune_exp, tags={"optbench.kind": "study", "optbench.study": study_name})
        for trial, acc in enumerate(accs):
            tags = {"mlflow.parentRunId": study.info.run_id, "optbench.trial": str(trial), "optbench.study": study_name}
            store.run(optimizer, 0, val_acc=(0.1, acc, acc), experiment_id=tune_exp, tags=tags)

    summary = compare(store.cfg(f"tune_experiment={store.experiment}-tune"))

    # adam: the values 0.2, 0.5, 0.9 of two studies, one pool. E[best of 1] = mean = 1.6/3; best of 2: the
    # pairs {0.2, 0.5} {0.2, 0.9} {0.5, 0.9} give 0.5, 0.9, 0.9, mean 2.3/3; best of 3 = 0.9.
    assert summary["adam"]["budget_curve"] == pytest.approx([1.6 / 3, 2.3 / 3, 0.9], abs=1e-6)
    assert summary["sgd"]["budget_curve"] == pytest.approx([0.6, 0.6])
    assert (store.out / "budget_curves.png").read_bytes()[:4] == b"\x89PNG"
    report = (store.out / "report.md").read_text()
    assert "adam k=1 0.5333, k=3 0.9000 (2 studies)" in report and "![budget_curves](budget_curves.png)" in report

    rerun = store.client.create_run(tune_exp, tags={"optbench.kind": "study", "optbench.study": "study-b"})
    tags = {"mlflow.parentRunId": rerun.info.run_id, "optbench.trial": "0", "optbench.study": "study-b"}
    store.run("adam", 0, val_acc=(0.1, 0.7, 0.7), experiment_id=tune_exp, tags=tags)  # study-b tuned afresh
    summary = compare(store.cfg(f"tune_experiment={store.experiment}-tune"))
    assert summary["adam"]["budget_curve"][-1] == pytest.approx(0.9)  # 0.2, 0.9 and the new 0.7; not the old 0.5
    assert summary["adam"]["budget_curve"][0] == pytest.approx(1.8 / 3)

    compare(store.cfg())  # no tuning experiment: no budget curves, and no stale plot left behind
    assert not (store.out / "budget_curves.png").exists()
    assert "budget_curve" not in json.loads((store.out / "summary.json").read_text())["adam"]


def test_performance_profile_and_its_score_match_a_hand_computation():
    times = pd.DataFrame(
        [
            ("p1", "a", 10.0), ("p1", "b", 20.0), ("p1", "c", 50.0),
            ("p2", "a", 30.0), ("p2", "b", 15.0), ("p2", "c", math.nan),  # c never reaches the target
            ("p3", "a", math.nan), ("p3", "b", math.nan), ("p3", "c", math.nan),  # nobody does
            ("p4", "a", 8.0), ("p4", "b", 8.0),  # c has no run on p4: not solved
        ],
        columns=["problem", "optimizer", "time"],
    )  # fmt: skip

    ratios = profile_ratios(times)

    inf = math.inf
    assert ratios.to_dict("index") == {
        "p1": {"a": 1.0, "b": 2.0, "c": 5.0},
        "p2": {"a": 2.0, "b": 1.0, "c": inf},
        "p3": {"a": inf, "b": inf, "c": inf},
        "p4": {"a": 1.0, "b": 1.0, "c": inf},
    }
    rho = profile(ratios, [1.0, 2.0, 4.0, 5.0])
    assert rho["a"].tolist() == [0.5, 0.75, 0.75, 0.75] and rho["c"].tolist() == [0.0, 0.0, 0.0, 0.25]
    # Score = mean over the 4 problems of (4 - r)/3 for r <= 4: a (3 + 2 + 0 + 3)/12, b (2 + 3 + 0 + 3)/12, c 0
    # (its r = 5 on p1 lies beyond r_max). With r_max = 6, c gets (6 - 5)/5/4 on p1.
    assert profile_score(ratios) == pytest.approx({"a": 8 / 12, "b": 8 / 12, "c": 0.0})
    assert profile_score(ratios, r_max=6)["c"] == pytest.approx(1 / 20)


def test_budget_curve_is_the_expected_best_of_k_trials_drawn_without_replacement():
    # 0.2, 0.5, 0.9: best of 1 = mean 1.6/3; best of 2 over the pairs: 0.5, 0.9, 0.9, mean 2.3/3; best of 3 = 0.9
    assert expected_best([0.9, 0.2, 0.5]) == pytest.approx([1.6 / 3, 2.3 / 3, 0.9])
    # a trial without a finite value (diverged) counts as the metric's floor: 0 for an accuracy
    assert expected_best([0.5, math.nan]) == pytest.approx([0.25, 0.5])
    assert expected_best([]) == []


# --- the target ---------------------------------------------------------------------------------------------


def write_targets_file(path: Path, value: float, seeds=(100, 101), fingerprint="abc") -> Path:
    """A targets file as optbench-target writes it (the keys optbench-compare reads)."""
    content = {
        "workload": {"data": "digits", "model": "mlp"},
        "metric": "val/acc",
        "direction": "maximize",
        "target": value,
        "reference": {"optimizer": "adamw", "optimizers": ["adamw"], "seeds": list(seeds), "epochs": 3},
        "provenance": {"git_commit": "0123abc", "data_fingerprint": fingerprint},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content))
    return path


def test_target_precedence_is_number_then_targets_file_then_the_named_fallback(store, tmp_path):
    for seed in (0, 1):
        store.run("adam", seed, val_acc=(0.5, 0.7, 0.9))
    path = write_targets_file(tmp_path / "targets" / "digits-mlp.yaml", 0.7)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    found = ("data=digits", "model=mlp", f"targets_dir={tmp_path / 'targets'}")

    by_number = build_comparison(store.cfg(*found, "target=0.6"))
    by_file = build_comparison(store.cfg(*found))
    by_path = build_comparison(store.cfg(f"target_file={path}", "target_rule=best_optimizer_median"))
    by_rule = build_comparison(store.cfg(f"targets_dir={tmp_path / 'none'}", "target_rule=best_optimizer_median"))

    assert (by_number.target, by_number.target_source) == (0.6, "config")
    assert (by_file.target, by_file.target_source) == (0.7, f"{path} (sha256:{digest})")
    assert "set a priori in" in by_file.target_rule and "seeds [100, 101]" in by_file.target_rule
    assert (by_path.target, by_path.target_source) == (0.7, f"{path} (sha256:{digest})")  # a file beats the rule
    assert (by_rule.target, by_rule.target_source) == (0.9, "fallback: best_optimizer_median")
    assert by_file.table.loc["adam", "steps_to_target"] == 20  # val/acc 0.7 at step 20
    summary = compare(store.cfg(*found))
    assert summary["target_source"] == f"{path} (sha256:{digest})"
    assert f"Source: {path} (sha256:{digest})" in (store.out / "report.md").read_text()


def test_without_a_targets_file_the_default_rule_is_a_clear_error(store, tmp_path):
    store.run("adam", 0)

    with pytest.raises(ConfigError) as error:
        build_comparison(store.cfg("data=digits", "model=mlp", f"targets_dir={tmp_path / 'targets'}"))

    message = str(error.value)
    assert f"no targets file {tmp_path / 'targets' / 'digits-mlp.yaml'}, and target_rule=file needs one" in message
    assert "optbench-target data=digits model=mlp" in message and "target_rule=best_optimizer_median" in message
    assert "\n" not in message  # one paragraph
    with pytest.raises(ConfigError, match=r"no targets file \(data and model are not given\)"):
        build_comparison(store.cfg("target_rule=file"))
    with pytest.raises(ConfigError, match="target_file=/nonexistent.yaml: no such file"):
        build_comparison(store.cfg("target_file=/nonexistent.yaml", "target_rule=best_optimizer_median"))


def test_a_targets_file_that_does_not_fit_is_refused_and_differences_are_noted(store, tmp_path):
    store.run("adam", 0)
    store.run("adam", 100)
    bad = tmp_path / "bad.yaml"
    bad.write_text("target: 0.9\n")
    with pytest.raises(ConfigError, match="not a targets file of optbench-target"):
        build_comparison(store.cfg(f"target_file={bad}"))
    loss = write_targets_file(tmp_path / "loss.yaml", 0.5)
    loss.write_text(loss.read_text().replace("metric: val/acc", "metric: val/loss"))
    with pytest.raises(ConfigError, match="sets a target on val/loss"):
        build_comparison(store.cfg(f"target_file={loss}"))

    good = write_targets_file(tmp_path / "good.yaml", 0.7, seeds=(100, 101), fingerprint="other")
    notes = build_comparison(store.cfg(f"target_file={good}", "max_epochs=3")).notes

    assert any("reference seeds [100] are also compared seeds" in note for note in notes)
    assert not any("epochs" in note for note in notes)  # both 3 epochs
    assert not any("fingerprint" in note for note in notes)  # these hand-made runs carry no fingerprint tag


# --- bad input ----------------------------------------------------------------------------------------------


def test_an_experiment_that_does_not_exist_is_a_clear_error(store):
    store.run("adam", 0)
    expected = f"no MLflow experiment named nope in sqlite:///.*experiments there: .*{store.experiment}"
    with pytest.raises(ConfigError, match=expected):
        build_comparison(store.cfg("experiment=nope"))
    with pytest.raises(ConfigError, match="no MLflow experiment named nope"):
        build_comparison(store.cfg("tune_experiment=nope"))


def test_bad_settings_are_clear_errors_and_a_null_target_may_be_spelt_none(store):
    store.run("adam", 0)
    bad = {
        "target=1.5": "target must be a validation accuracy",
        "target=abc": "target must be",
        "confidence=1": "confidence must lie",
        "optimizers=[]": "optimizers is an empty list",
        "target_rule=median": "target_rule must be one of file, best_optimizer_median",
        "profile_time=epochs": "profile_time must be one of steps, seconds",
        "profile_max_ratio=1": "profile_max_ratio must be a number above 1",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            build_comparison(store.cfg(override))
    assert build_comparison(store.cfg("target=None")).target == pytest.approx(0.9)  # DVC writes null as None


def test_an_experiment_without_finished_training_runs_is_a_clear_error(store):
    store.run("adam", 0, status="FAILED")
    with pytest.raises(ConfigError, match="no FINISHED training runs in MLflow experiment"):
        build_comparison(store.cfg())


def test_a_missing_sqlite_store_is_an_error_and_not_created(store, tmp_path):
    with pytest.raises(ConfigError, match="no MLflow store at"):
        build_comparison(store.cfg(f"tracking_uri=sqlite:///{tmp_path / 'none.db'}"))
    assert not (tmp_path / "none.db").exists()


def test_the_command_line_reports_bad_input_with_exit_status_2(tracking_uri, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    result = subprocess.run(
        [OPTBENCH_COMPARE, "experiment=nope"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "optbench: error: no MLflow experiment named nope in sqlite:///" in result.stderr
    assert not (tmp_path / "results").exists()


# --- end to end -----------------------------------------------------------------------------------------------


def test_end_to_end_on_real_training_runs(make_cfg, tmp_path):
    finals = {}
    for optimizer in ("sgd", "adam"):
        for seed in (0, 1):
            metrics = train(
                make_cfg("data=digits", "model=mlp", f"optimizer={optimizer}", f"seed={seed}", "trainer.max_epochs=2")
            )
            finals.setdefault(optimizer, []).append(metrics["val/acc_best"])
    experiment = make_cfg().experiment
    out = tmp_path / "compare"

    summary = compare(
        compose_config(
            f"experiment={experiment}",
            f"output_dir={out}",
            "data=digits",
            "model=mlp",
            "max_epochs=2",
            "target_rule=best_optimizer_median",
            config_name="compare",
        )
    )

    assert summary["n_runs"] == 4
    for optimizer, values in finals.items():
        assert summary[optimizer]["n_runs"] == 2
        assert summary[optimizer]["val_acc_best"] == pytest.approx(sum(values) / 2, rel=1e-6)
        assert summary[optimizer]["samples_per_sec"] > 0 and summary[optimizer]["state_to_param_ratio"] is not None
    best = max(finals, key=lambda o: sum(finals[o]))
    assert summary["target"] == pytest.approx(sorted(finals[best])[0] / 2 + sorted(finals[best])[1] / 2, rel=1e-6)
    assert summary[best]["reached"] >= 1 and summary[best]["seconds_to_target"] > 0
    for name in ("train_loss_step", "train_loss_seconds", "val_acc_step", "val_acc_seconds"):
        band = pd.read_csv(out / "curves" / f"{name}.csv")
        assert set(band.optimizer) == {"sgd", "adam"} and (band.value_low <= band.value_high).all()
    assert (out / "report.html").stat().st_size > 0


# --- the notebook ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_notebook_executes_against_the_store(store, tmp_path, monkeypatch):
    for seed in (0, 1):
        store.run("adam", seed, val_acc=(0.5, 0.8, 0.9 - seed / 100))
        store.run("sgd", seed, val_acc=(0.4, 0.6, 0.7 + seed / 100))
    # A kernelspec for this interpreter, found first on JUPYTER_PATH: no `ipykernel install` needed, and no
    # kernel of another Python (a user-wide python3 kernelspec) can be picked up instead.
    kernels = tmp_path / "jupyter" / "kernels" / "optbench-test"
    kernels.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "optbench test",
        "language": "python",
    }
    (kernels / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    monkeypatch.setenv("OPTBENCH_EXPERIMENT", store.experiment)
    nb = nbformat.read(NOTEBOOK, as_version=4)

    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="optbench-test", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "Best val acc" in html and "adam" in html
    assert "fallback best_optimizer_median" in "".join(o.get("text", "") for o in outputs)  # no targets file here
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # learning curves, time to target, profile


def test_accuracy_intervals_are_clipped_to_one(store):
    for seed, acc in enumerate([0.90, 0.999, 0.995]):
        store.run("adam", seed, val_acc=(0.5, acc, acc), test_acc=acc)
    adam = build_comparison(store.cfg("target=0.5")).table.loc["adam"]
    assert adam.test_acc_high == 1.0 and adam.val_acc_best_high == 1.0  # t-interval alone: above 1
    assert adam.test_acc_low < adam.test_acc_mean < 1.0
