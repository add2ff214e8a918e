"""strategy=ddp on SLURM: hydra/launcher=slurm asks for one srun task per rank, Lightning's SLURM environment
picks the ranks up, rank 0 logs the only MLflow run, and the result is the one ddp_spawn gives on one machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from optbench.studies.measures import relative_distance

TRAIN = [  # float64 on the CPU with gloo: the two launches differ only in who starts the ranks
    "data=digits",
    "model=mlp",
    "optimizer=momentum",
    "precision=64-true",
    "scheduler=constant",
    "trainer=cpu",
    "trainer.max_steps=8",
    "trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
    "batch_size=16",
    "seed=0",
]
TRAIN_CLI = [str(Path(sys.executable).with_name("optbench-train"))]
# Jobs sized for the test cluster's one 2-core node (the launcher's defaults are for a real cluster's nodes).
SMALL_JOB = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]


def job_logs(cwd: Path) -> str:
    """The SLURM jobs' own logs (submitit's <job>_log.out), for a failure's message."""
    return "\n".join(p.read_text()[-3000:] for p in sorted(cwd.glob("multirun/*/*/.submitit/*/*_log.out")))


def optbench_train(cwd: Path, *overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run([*TRAIN_CLI, *overrides], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"optbench-train did not finish in {timeout} s; the jobs' logs:\n{job_logs(cwd)}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + job_logs(cwd)
    return result


def test_a_two_task_ddp_job_over_srun_logs_one_run_and_equals_ddp_spawn(slurm, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    ddp = ["strategy.devices=2", *TRAIN]
    # A multirun of one job: Hydra hands jobs to a launcher only in multirun mode.
    optbench_train(
        tmp_path,
        "-m",
        "hydra/launcher=slurm",
        *SMALL_JOB,
        "strategy=ddp",
        *ddp,
        "experiment=srun",
        "params_path=srun.pt",
    )
    optbench_train(tmp_path, "strategy=ddp_spawn", *ddp, "experiment=spawn", "params_path=spawn.pt")

    distance = relative_distance(torch.load(tmp_path / "srun.pt"), torch.load(tmp_path / "spawn.pt"))
    assert distance < 1e-12

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("srun").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["optbench.slurm_job_id"].isdigit()
    assert run.data.tags["optbench.world_size"] == "2"
    assert run.data.tags["optbench.slurm_ntasks"] == "2"
    assert run.data.params["strategy.name"] == "ddp"
    assert run.data.metrics["train/steps"] == 8
