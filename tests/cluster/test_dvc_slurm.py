"""The main DVC pipeline with `launcher: slurm`: `dvc repro` on a login node submits the tuning workers and the
training runs as SLURM jobs, waits for them, and a second `dvc repro` has nothing to do."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "data": "digits",
    "model": "mlp",
    "optimizers": ["sgd", "adam"],
    "seeds": [0],
    "epochs": 1,
    "batch_size": 128,
    "trainer": "cpu",
    "precision": "32-true",
    "experiment": "tiny",
    "launcher": "slurm",
    "tune": {"space": "lr", "n_studies": 1, "n_trials": 2, "n_jobs": 2},
    "target": None,
    "target_rule": "best_optimizer_median",  # no targets file for digits-mlp: the named fallback
}


def run(repo: Path, *args: str) -> str:
    env = {
        **os.environ,  # SLURM_CONF from the slurm fixture: the jobs DVC's commands submit reach the test cluster
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _small_jobs(path: Path, sizes: dict[str, str]) -> None:
    """Site settings of the one-node test cluster (2 cores, 12 GB): jobs small enough to run side by side."""
    text = path.read_text()
    for key, value in sizes.items():
        text, count = re.subn(rf"^(\s*{key}:)\s*\S+", rf"\g<1> {value}", text, count=1, flags=re.M)
        assert count == 1, f"{key} not in {path}"
    path.write_text(text)


def test_dvc_repro_on_a_login_node_submits_tuning_and_training_to_slurm_and_then_has_nothing_to_do(slurm, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("conf", "src"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    _small_jobs(repo / "conf/hydra/launcher/slurm.yaml", {"cpus_per_task": "1", "mem_gb": "2"})
    _small_jobs(repo / "conf/tune/lr.yaml", {"cpus_per_task": "1", "mem_gb": "2"})
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "test@example.invalid")
    run(repo, "git", "config", "user.name", "optbench tests")
    run(repo, sys.executable, "-m", "dvc", "init", "-q")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "tiny pipeline on SLURM")

    first = run(repo, sys.executable, "-m", "dvc", "repro")

    assert set(re.findall(r"Running stage '([^']+)'", first)) == {
        "prepare", "tune@sgd", "tune@adam", "train@sgd-0", "train@adam-0", "compare",
    }  # fmt: skip
    for optimizer in TINY["optimizers"]:
        assert json.loads((repo / f"results/tune/{optimizer}/best.json").read_text())["n_finished"] == 2
        assert "test/acc" in json.loads((repo / f"results/train/{optimizer}-s0.json").read_text())
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    for experiment in ("tiny", "tiny-tune"):
        runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        jobs = [r for r in runs if r.data.tags.get("optbench.kind") != "study"]  # trials and training runs
        assert jobs and all(r.data.tags.get("optbench.slurm_job_id") for r in jobs), experiment  # ran as jobs
    second = run(repo, sys.executable, "-m", "dvc", "repro")
    assert "Running stage" not in second and "Data and pipelines are up to date" in second
