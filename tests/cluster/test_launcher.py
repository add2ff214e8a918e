"""hydra/launcher=slurm on a real SLURM cluster: a multirun becomes an array job, each job one MLflow run on the
tracking server, tagged with its SLURM job and array index."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

BIN = Path(sys.executable).parent
TINY = ["data=digits", "model=mlp", "trainer=fast", "seed=0"]  # the quickest real training optbench has
SMALL_JOBS = ["hydra.launcher.mem_gb=1", "hydra.launcher.cpus_per_task=1"]  # fits the one-node test cluster


@pytest.mark.slow
def test_a_two_job_sweep_runs_as_a_slurm_array_logged_on_the_server(
    slurm: dict[str, str], mlflow_server: str, tmp_path: Path
) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    args = ["-m", "hydra/launcher=slurm", *SMALL_JOBS, "optimizer=sgd,adam", *TINY, "experiment=slurm-sweep"]
    out = subprocess.run([BIN / "optbench-train", *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=540)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("slurm-sweep")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["adam-mlp-digits-s0", "sgd-mlp-digits-s0"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    tags = [r.data.tags for r in runs]
    (array_id,) = {t["optbench.slurm_array_job_id"] for t in tags}  # one array job ...
    assert sorted(t["optbench.slurm_array_task_id"] for t in tags) == ["0", "1"]  # ... of two tasks
    assert sorted(t["optbench.slurm_job_id"] for t in tags) == [f"{array_id}_0", f"{array_id}_1"]
    assert {t["optbench.world_size"] for t in tags} == {"1"}
    assert {t["optbench.slurm_cluster"] for t in tags} == {"local"}
