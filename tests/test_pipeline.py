"""The DVC pipeline, end to end with real `dvc repro`, on a tiny preset in a temporary git repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from optbench.core.config import compose_config
from optbench.training.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
STUDY = "grad_accumulation"  # the fastest claim study
TINY = {
    "data": "digits",
    "model": "mlp",
    "optimizers": ["sgd", "adam"],
    "seeds": [0, 1],
    "epochs": 1,
    "batch_size": 128,
    "trainer": "cpu",
    "precision": "32-true",
    "experiment": "tiny",
    "tune": {"space": "full", "n_studies": 2, "n_trials": 1, "n_jobs": 1},
    "target": None,
    "target_rule": "best_optimizer_median",  # no targets file for digits-mlp: the named fallback
    "launcher": "local",
}


def test_every_params_preset_sets_the_same_knobs_as_params_yaml_with_valid_options():
    knobs = yaml.safe_load((ROOT / "params.yaml").read_text())
    presets = sorted((ROOT / "pipelines" / "presets").glob("*.yaml"))
    assert presets
    for preset in presets:
        params = yaml.safe_load(preset.read_text())
        assert params.keys() == knobs.keys(), preset.name
        assert params["tune"].keys() == knobs["tune"].keys(), preset.name
        for group in ("data", "model", "trainer", "precision"):
            assert (ROOT / "conf" / group / f"{params[group]}.yaml").is_file(), f"{preset.name}: {group}"
        assert all((ROOT / "conf/optimizer" / f"{o}.yaml").is_file() for o in params["optimizers"])


def run(repo: Path, *args: str, default_store: bool = False) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    if default_store:  # as a user runs it: no MLFLOW_TRACKING_URI, the default sqlite:///mlflow.db
        del env["MLFLOW_TRACKING_URI"]
    result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repository holding the project's pipeline and configs, with the tiny preset in params.yaml."""
    repo = tmp_path_factory.mktemp("pipeline")
    for name in ("conf", "src"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    study = repo / "pipelines" / STUDY  # one claim study's pipeline beside the main one, test-sized
    study.mkdir(parents=True)
    shutil.copy(ROOT / "pipelines" / STUDY / "dvc.yaml", study / "dvc.yaml")
    study_config = repo / "conf" / "study" / f"{STUDY}.yaml"  # the study's one source, test-sized here
    settings = yaml.safe_load(study_config.read_text())
    study_config.write_text(yaml.safe_dump({**settings, "steps": 2, "micro_batch": 16, "accumulate": 2}))
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "test@example.invalid")
    run(repo, "git", "config", "user.name", "optbench tests")
    run(repo, sys.executable, "-m", "dvc", "init", "-q")
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")  # the project's DVC plot template
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "tiny pipeline")
    return repo


@pytest.fixture(scope="module")
def first_repro(repo: Path) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "-m", "dvc", "repro", "-P")  # every pipeline: the main one and the study


@pytest.mark.slow
def test_repro_runs_every_stage_and_writes_every_output(repo, first_repro):
    assert stages_run(first_repro.stdout) >= {
        "prepare",
        "tune@sgd",
        "tune@adam",
        "train@sgd-0",
        "train@adam-1",
        f"pipelines/{STUDY}/dvc.yaml:run",
    }
    info = json.loads((repo / "results/data/digits.json").read_text())
    expected = load_dataset(compose_config("data=digits").data)
    assert info["train"] == len(expected.train) and info["fingerprint"] == expected.fingerprint
    for optimizer in TINY["optimizers"]:
        best = json.loads((repo / f"results/tune/{optimizer}/best.json").read_text())
        assert best["n_finished"] == TINY["tune"]["n_studies"] * TINY["tune"]["n_trials"]  # the same for each
        assert best["n_studies"] == TINY["tune"]["n_studies"] and best["selection"] == "median_of_study_bests"
        for seed in TINY["seeds"]:
            metrics = json.loads((repo / f"results/train/{optimizer}-s{seed}.json").read_text())
            assert "test/acc" in metrics
    summary = json.loads((repo / "results/compare/summary.json").read_text())
    assert {"sgd", "adam"} <= set(summary)
    assert "| sgd |" in (repo / "results/compare/report.md").read_text()
    assert (repo / "dvc.lock").exists()
    verdict = json.loads((repo / "pipelines" / STUDY / "results/verdict.json").read_text())
    assert verdict["settings"]["steps"] == 2 and verdict["verdicts"]["no_batch_norm"] == "equivalent"
    assert (repo / "pipelines" / STUDY / "dvc.lock").exists()


@pytest.mark.slow
def test_second_repro_has_nothing_to_do(repo, first_repro):
    output = run(repo, sys.executable, "-m", "dvc", "repro", "-P").stdout
    assert stages_run(output) == set()
    assert "Data and pipelines are up to date" in output


@pytest.mark.slow
def test_changing_the_epochs_reruns_tuning_and_training_at_the_new_horizon_but_not_preparation(repo, first_repro):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["epochs"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    ran = stages_run(run(repo, sys.executable, "-m", "dvc", "repro").stdout)

    # one horizon: tuning trials train as long as the final runs, so both rerun
    assert {"tune@sgd", "tune@adam", "train@sgd-0", "train@sgd-1", "train@adam-0", "train@adam-1", "compare"} <= ran
    assert "prepare" not in ran


@pytest.mark.slow
def test_editing_one_optimizer_config_reruns_only_that_optimizer(repo, first_repro):
    config = repo / "conf/optimizer/adam.yaml"
    config.write_text(config.read_text().replace("eps: 1.0e-8", "eps: 1.0e-7"))

    ran = stages_run(run(repo, sys.executable, "-m", "dvc", "repro").stdout)

    assert {"tune@adam", "train@adam-0", "train@adam-1", "compare"} <= ran
    assert not ran & {"prepare", "tune@sgd", "train@sgd-0", "train@sgd-1"}


@pytest.mark.slow
def test_editing_the_report_code_reruns_only_the_comparison(repo, first_repro):
    report = repo / "src" / "optbench" / "compare" / "report.py"
    original = report.read_text()
    report.write_text(original + "\n# an edit\n")
    try:
        status = json.loads(run(repo, sys.executable, "-m", "dvc", "status", "--json").stdout)
    finally:
        report.write_text(original)
    assert set(status) == {"compare"}


@pytest.mark.slow
def test_queued_experiments_run_in_parallel_log_to_the_workspace_store(repo, first_repro):
    # dvc exp run --queue runs each experiment in a temporary copy of the repository: the default store
    # must still be the workspace's mlflow.db (DVC_ROOT), or the runs vanish with the copy.
    for seed in (5, 6):
        run(repo, sys.executable, "-m", "dvc", "exp", "run", "--queue", "-S", f"seeds=[{seed}]", "-n", f"seed{seed}")
    run(repo, sys.executable, "-m", "dvc", "exp", "run", "--run-all", "-j", "2", default_store=True)

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(TINY["experiment"])
    runs = client.search_runs([experiment.experiment_id], "tags.`optbench.dvc_experiment` != ''")
    training = [r for r in runs if "optbench.kind" not in r.data.tags]  # not the experiments' comparison runs
    by_experiment = {(r.data.tags["optbench.dvc_experiment"], r.data.params["seed"]) for r in training}
    assert {("seed5", "5"), ("seed6", "6")} <= by_experiment
    assert {r.info.status for r in runs} == {"FINISHED"}
