"""Preemption on SLURM: a job that is requeued mid-training (`scontrol requeue`, what a preempting scheduler
does) or warned of its time limit (the signal submitit asks SLURM for) writes a checkpoint, runs again, and
continues the same MLflow run to the metrics an uninterrupted job reaches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

TRAIN = [
    "-m",
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",  # sized for the test cluster's one 2-core node
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
    "data=digits",
    "model=mlp",
    "optimizer=momentum",
    "trainer=cpu",
    "trainer.max_epochs=12",
    "trainer.enable_progress_bar=false",
    "batch_size=16",
    "seed=0",
    "checkpoint.every_n_train_steps=20",  # mid-epoch checkpoints: the batch order resumes exactly
]
TRAIN_CLI = str(Path(sys.executable).with_name("optbench-train"))
RESULTS = ("val/acc", "val/loss", "val/acc_best", "test/acc", "test/loss", "train/loss", "train/steps")


def submit(cwd: Path, uri: str, *overrides: str) -> subprocess.Popen:
    """optbench-train on the launcher, waiting for its job like a user's terminal does."""
    return subprocess.Popen(
        [TRAIN_CLI, *TRAIN, *overrides],
        cwd=cwd,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def jobs(*states: str) -> set[str]:
    out = subprocess.run(["squeue", "-h", "-t", ",".join(states) or "all", "-o", "%i"], capture_output=True, text=True)
    return set(out.stdout.split())


def new_running_job(before: set[str], timeout: float = 300) -> str:
    """The id of the job submitted after `before` was taken, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started := jobs("RUNNING") - before:
            return started.pop()
        time.sleep(0.5)
    pytest.fail("the job did not start running")


def wait_for_checkpoint(cwd: Path, timeout: float = 300) -> None:
    """Until training has written its first checkpoint (so the interruption lands mid-training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((cwd / "checkpoints").glob("*/last.ckpt")):
            return
        time.sleep(0.3)
    pytest.fail("training wrote no checkpoint")


def start_requeued_now(job_id: str, timeout: float = 120) -> None:
    """SLURM holds a requeued job for about two minutes (its begin time); start it now instead, so the test
    waits for the resume, not for that hold."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job_id in jobs("PENDING"):
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
            return
        time.sleep(0.3)
    pytest.fail(f"job {job_id} was not requeued")


def job_logs(cwd: Path) -> str:
    return "\n".join(p.read_text()[-4000:] for p in sorted(cwd.glob("multirun/*/*/.submitit/*/*_log.out")))


def finish(process: subprocess.Popen, cwd: Path, timeout: float = 600) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:] + job_logs(cwd)
    return out


def results(path: Path) -> dict[str, float]:
    metrics = json.loads(path.read_text())
    return {key: metrics[key] for key in RESULTS}


@pytest.fixture(scope="module")
def uninterrupted(slurm, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The metrics the same job reaches when nothing interrupts it."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    finish(submit(cwd, f"sqlite:///{cwd}/mlflow.db", "metrics_path=metrics.json"), cwd)
    return results(cwd / "metrics.json")


@pytest.mark.parametrize("interruption", ["scontrol requeue", "time-limit signal"])
def test_an_interrupted_job_requeues_and_finishes_its_run_like_an_uninterrupted_one(
    slurm, uninterrupted, tmp_path, interruption
):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    before = jobs()
    job = submit(tmp_path, uri, "experiment=interrupted", "metrics_path=metrics.json")
    job_id = new_running_job(before)
    wait_for_checkpoint(tmp_path)
    if interruption == "scontrol requeue":  # what a preempting scheduler does
        subprocess.run(["scontrol", "requeue", job_id], check=True)
    else:  # what SLURM sends `signal_delay_s` before the time limit: submitit's USR2, to the job's steps
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    start_requeued_now(job_id)
    finish(job, tmp_path)

    logs = job_logs(tmp_path)
    assert "Resuming the interrupted run" in logs, logs
    assert results(tmp_path / "metrics.json") == uninterrupted
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("interrupted").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["optbench.slurm_job_id"] == job_id
    assert run.data.tags["optbench.slurm_restart_count"] == "1"
    assert not list((tmp_path / "checkpoints").glob("*/last.ckpt"))  # a finished run deletes its folder
