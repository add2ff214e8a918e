"""The local cluster services are the real thing: SLURM runs a 2-task step, PostgreSQL answers SQL, the MLflow
server stores runs in PostgreSQL."""

from __future__ import annotations

import subprocess

import sqlalchemy
from mlflow.tracking import MlflowClient


def test_slurm_runs_a_two_task_step(slurm: dict[str, str]) -> None:
    out = subprocess.run(
        ["srun", "-n", "2", "--time", "1", "bash", "-c", "echo $SLURM_PROCID"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert sorted(out.stdout.split()) == ["0", "1"]


def test_postgres_answers_sql(postgres_url: str) -> None:
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("select 1 + 1")).scalar() == 2
    engine.dispose()


def test_mlflow_server_keeps_runs(mlflow_server: str) -> None:
    client = MlflowClient(mlflow_server)
    exp = client.create_experiment("services-check")
    run = client.create_run(exp)
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
