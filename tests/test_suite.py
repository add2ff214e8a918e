"""The workload suite: scores and profiles on constructed runs with known answers, the report read back from
runs logged by hand into a real SQLite MLflow store, bad input, and the DVC pipeline end to end on a tiny
preset in a temporary git repository."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import compose_config
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from optbench.core.errors import ConfigError
from optbench.suite.build import build_suite
from optbench.suite.publish import publish
from optbench.suite.report import score_section
from optbench.suite.scoring import problem_times, run_times, scores, workload_median_times
from optbench.tracking import experiment_id

ROOT = Path(__file__).resolve().parents[1]


def runs_table(times: dict[tuple[str, str, int], float]) -> pd.DataFrame:
    """Runs (workload, optimizer, seed) -> steps to target (NaN: never reached)."""
    rows = [{"workload": w, "optimizer": o, "seed": s, "steps_to_target": t} for (w, o, s), t in times.items()]
    return pd.DataFrame(rows)


# --- scores on constructed times ------------------------------------------------------------------------


@pytest.mark.unit
def test_an_optimizer_fastest_on_every_problem_scores_one_and_twice_as_slow_scores_two_thirds():
    times = {}
    for workload in ("a", "b"):
        for seed in (0, 1, 2):
            times |= {(workload, "fast", seed): 10.0 * (seed + 1), (workload, "slow", seed): 20.0 * (seed + 1)}
    ratios, score = scores(problem_times(runs_table(times), "steps", ["fast", "slow"]))
    assert len(ratios) == 6  # workload x seed problems
    assert score["fast"] == 1.0
    assert score["slow"] == pytest.approx((4 - 2) / 3)  # r = 2 on every problem: rho = 1 from tau = 2 on


@pytest.mark.unit
def test_a_censored_or_missing_run_counts_as_infinite_time_and_never_as_solved():
    times = {("a", "x", 0): 10.0, ("a", "y", 0): math.nan, ("a", "x", 1): 30.0, ("a", "y", 1): 10.0}
    times[("b", "x", 0)] = 5.0  # y has no run on b/s0 at all
    ratios, score = scores(problem_times(runs_table(times), "steps", ["x", "y"]))
    assert math.isinf(ratios.loc["a/s0", "y"]) and math.isinf(ratios.loc["b/s0", "y"])
    assert ratios.loc["a/s1", "x"] == 3.0
    assert score["x"] == pytest.approx((1 + 1 / 3 + 1) / 3)  # r = 1, 3, 1
    assert score["y"] == pytest.approx(1 / 3)  # r = inf, 1, inf


@pytest.mark.unit
def test_workload_median_score_takes_the_median_over_seeds_of_each_workload():
    # x on workload a: 10, 10, never -> median 10; y: 20, 20, 20 -> 20. On b both 5, 5, 5.
    times = {("a", "x", s): t for s, t in enumerate([10.0, 10.0, math.nan])}
    times |= {("a", "y", s): 20.0 for s in range(3)} | {(w, o, s): 5.0 for w in ("b",) for o in "xy" for s in range(3)}
    ratios, score = scores(workload_median_times(problem_times(runs_table(times), "steps", ["x", "y"])))
    assert list(ratios.index) == ["a", "b"]
    assert score == {"x": 1.0, "y": pytest.approx((1 + 2 / 3) / 2)}


@pytest.mark.unit
def test_time_to_target_of_a_minimized_metric_is_the_first_step_at_or_below_the_target():
    curve = pd.DataFrame({"step": [5, 10, 15], "value": [3.0, 0.9, 0.5]})
    clock = pd.DataFrame({"step": [5, 10, 15], "value": [1.0, 2.0, 3.0]})
    hit = run_times(curve, clock, 1.0, "minimize")
    assert (hit["steps_to_target"], hit["seconds_to_target"], hit["reached"], hit["final"]) == (10.0, 2.0, True, 0.5)
    never = run_times(curve, clock, 0.1, "minimize")
    assert math.isnan(never["steps_to_target"]) and not never["reached"]
    assert never["horizon_steps"] == 15.0 and never["horizon_seconds"] == 3.0  # censored at its end


# --- the report from runs in a real store -----------------------------------------------------------------


def log_run(client: MlflowClient, exp_id: str, data: str, model: str, optimizer: str, seed: int, metric: str, values):
    """One finished training run as optbench-train logs it: validation `metric` at steps 10, 20, 30."""
    run = client.create_run(exp_id, tags={"optbench.outcome": "completed"}, run_name=f"{optimizer}-s{seed}")
    params = {
        "optimizer.name": optimizer,
        "seed": seed,
        "data.name": data,
        "model.name": model,
        "trainer.max_epochs": 3,
    }
    metrics = []
    for step, value in zip((10, 20, 30), values):
        metrics += [Metric(metric, value, 0, step), Metric("time/train_s", step / 10, 0, step)]
    metrics.append(Metric(metric.replace("val/", "test/"), values[-1], 0, 30))
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    client.set_terminated(run.info.run_id, "FINISHED")


def write_targets(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "digits-mlp.yaml").write_text("metric: val/acc\ndirection: maximize\ntarget: 0.8\n")
    (folder / "regression-linear.yaml").write_text("metric: val/loss\ndirection: minimize\ntarget: 0.1\n")


@pytest.fixture
def suite_store(tracking_uri, tmp_path, request) -> dict:
    """Two workloads, sgd and adam, seeds 0 and 1, with known times to target: adam reaches every target
    at step 10, sgd at step 20 on digits and never on the regression."""
    client = MlflowClient(tracking_uri)
    experiment = re.sub(r"[^\w.-]+", "_", request.node.name)
    exp_id = experiment_id(client, experiment)
    for seed in (0, 1):
        log_run(client, exp_id, "digits", "mlp", "adam", seed, "val/acc", [0.85, 0.9, 0.95])
        log_run(client, exp_id, "digits", "mlp", "sgd", seed, "val/acc", [0.5, 0.8, 0.9])
        log_run(client, exp_id, "regression", "linear", "adam", seed, "val/loss", [0.05, 0.02, 0.01])
        log_run(client, exp_id, "regression", "linear", "sgd", seed, "val/loss", [2.0, 1.0, 0.5])
    params = {
        "optimizers": "sgd,adam",
        "seeds": "0,1",
        "workloads": {
            "digits_mlp": {"data": "digits", "model": "mlp", "epochs": 3},
            "regression_linear": {"data": "regression", "model": "linear", "epochs": 3},
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_targets(tmp_path / "targets")
    return {"uri": tracking_uri, "experiment": experiment, "out": tmp_path / "report"}


def suite_cfg(store: dict, *overrides: str):
    base = [
        "params_file=params.yaml",
        "targets_dir=targets",
        f"experiment={store['experiment']}",
        f"output_dir={store['out']}",
        f"tracking_uri={store['uri']}",
    ]
    return compose_config(*base, *overrides, config_name="suite")


@pytest.mark.unit
def test_the_report_scores_workload_x_seed_problems_and_writes_every_file(suite_store):
    summary = publish(suite_cfg(suite_store))
    out = suite_store["out"]
    assert summary["n_problems"] == 4
    # adam is fastest everywhere; sgd is at r = 2 on the two digits problems and never reaches the regression's.
    assert summary["scores"]["adam"]["algoperf_score"] == 1.0
    assert summary["scores"]["sgd"]["algoperf_score"] == pytest.approx(2 * (2 / 3) / 4)
    assert summary["scores"]["sgd"]["solved"] == 2
    metrics = json.loads((out / "scores.json").read_text())
    assert metrics["sgd"]["workload_median_score"] == pytest.approx((2 / 3) / 2)
    table = summary["tables"]["regression_linear"]
    assert table["adam"]["steps_to_target"] == 10.0 and table["sgd"]["steps_to_target"] is None  # inf: not reached
    assert table["adam"]["final_mean"] == pytest.approx(0.01)
    report = (out / "report.md").read_text()
    assert "| adam | 1.000 |" in report and "not reached (0/2)" in report and "val/loss minimize" in report
    for name in (
        "report.html",
        "performance_profile.png",
        "performance_profile_workloads.png",
        "profile.csv",
        "runs.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    assert "<table>" in (out / "report.html").read_text()
    quoted = score_section(out / "report.md")
    assert quoted.splitlines()[0].startswith("| Optimizer | AlgoPerf score") and len(quoted.splitlines()) == 4


@pytest.mark.unit
def test_an_unknown_workload_is_refused_with_the_valid_names(suite_store):
    with pytest.raises(ConfigError, match="unknown workload.*cifar_wrn.*digits_mlp, regression_linear"):
        build_suite(suite_cfg(suite_store, "workloads=[digits_mlp,cifar_wrn]"))


@pytest.mark.unit
def test_the_command_reports_bad_input_in_one_paragraph_and_exits_2(suite_store):
    command = [str(Path(sys.executable).parent / "optbench-suite"), "params_file=params.yaml", "workloads=[nosuch]"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown workload(s) nosuch; the suite's workloads are digits_mlp, regression_linear" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.unit
def test_no_runs_found_says_which_command_trains_them(suite_store):
    with pytest.raises(ConfigError, match=r"workload digits_mlp.*dvc repro pipelines/suite/dvc.yaml"):
        build_suite(suite_cfg(suite_store, "seeds=[7]"))


@pytest.mark.unit
def test_a_targets_file_whose_direction_does_not_fit_its_metric_is_refused(suite_store):
    Path("targets/regression-linear.yaml").write_text("metric: val/loss\ndirection: maximize\ntarget: 0.1\n")
    with pytest.raises(ConfigError, match="regression-linear.yaml: metric val/loss with direction maximize"):
        build_suite(suite_cfg(suite_store))


@pytest.mark.unit
def test_a_workload_without_a_targets_file_says_how_to_make_one(suite_store):
    Path("targets/digits-mlp.yaml").unlink()
    with pytest.raises(ConfigError, match="no targets file targets/digits-mlp.yaml.*optbench-target data=digits"):
        build_suite(suite_cfg(suite_store))


# --- the pipeline end to end ------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("preset", ["params.yaml", "gpu.yaml"])
def test_every_suite_preset_sets_the_same_knobs_with_existing_options(preset):
    knobs = yaml.safe_load((ROOT / "pipelines/suite/params.yaml").read_text())
    params = yaml.safe_load((ROOT / "pipelines/suite" / preset).read_text())
    assert params.keys() == knobs.keys()
    keys = set(next(iter(knobs["workloads"].values())))
    for name, workload in params["workloads"].items():
        assert set(workload) == keys, name
        assert (ROOT / "conf/data" / f"{workload['data']}.yaml").is_file(), name
        assert (ROOT / "conf/model" / f"{workload['model']}.yaml").is_file(), name
    assert all((ROOT / "conf/optimizer" / f"{o}.yaml").is_file() for o in params["optimizers"].split(","))
    assert len(params["seeds"].split(",")) >= 3
    for group in ("trainer", "precision"):
        assert (ROOT / "conf" / group / f"{params[group]}.yaml").is_file(), group


TINY = {
    "optimizers": "sgd,adam",
    "seeds": "0,1",
    "experiment": "tiny-suite",
    "trainer": "fast",  # 4 training batches per epoch
    "precision": "32-true",
    "tune_space": "full",
    "workloads": {
        name: {
            "data": data,
            "model": model,
            "batch_size": 64,
            "epochs": 1,
            "val_every": 2,
            "n_studies": 1,
            "n_trials": 1,
            "metric": metric,
            "direction": direction,
            "prune_on": metric.replace("_best", ""),
            "overrides": "",
        }
        for name, data, model, metric, direction in [
            ("digits_mlp", "digits", "mlp", "val/acc_best", "maximize"),
            ("regression_linear", "regression", "linear", "val/loss", "minimize"),
        ]
    },
}


def run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_the_suite_pipeline_runs_every_workload_reports_and_then_has_nothing_to_do(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("conf", "src"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    (repo / "pipelines/suite").mkdir(parents=True)
    shutil.copy(ROOT / "pipelines/suite/dvc.yaml", repo / "pipelines/suite/dvc.yaml")
    (repo / "pipelines/suite/params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    write_targets(repo / "conf/targets")  # test-sized targets (the suite's own are set a priori)
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "test@example.invalid")
    run(repo, "git", "config", "user.name", "optbench tests")
    run(repo, sys.executable, "-m", "dvc", "init", "-q")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "tiny suite")
    first = run(repo, sys.executable, "-m", "dvc", "repro", "pipelines/suite/dvc.yaml")
    ran = set(re.findall(r"Running stage 'pipelines/suite/dvc.yaml:([^']+)'", first.stdout))
    assert ran == {f"{step}@{w}" for step in ("prepare", "tune", "train") for w in TINY["workloads"]} | {"report"}
    results = repo / "pipelines/suite/results"
    for workload in TINY["workloads"]:
        best = json.loads((repo / f"pipelines/suite/tune/{workload}/adam/best.json").read_text())
        assert best["n_finished"] == 1
        assert {p.name for p in (results / "train" / workload).iterdir()} == {
            f"{o}-s{s}.json" for o in ("sgd", "adam") for s in (0, 1)
        }
    scores = json.loads((results / "report/scores.json").read_text())
    assert set(scores) == {"sgd", "adam"} and all(row["problems"] == 4 for row in scores.values())
    assert "## regression_linear" in (results / "report/report.md").read_text()
    again = run(repo, sys.executable, "-m", "dvc", "repro", "pipelines/suite/dvc.yaml")
    assert "Running stage" not in again.stdout
