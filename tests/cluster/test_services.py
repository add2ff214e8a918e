"""The local cluster services are the real thing: SLURM runs a 2-task step, PostgreSQL answers SQL, the MLflow
server stores runs in PostgreSQL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import services
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


def test_stop_all_stops_exactly_what_its_folder_started(slurm: dict[str, str], tmp_path: Path) -> None:
    """A second cluster beside the session's: stopping it ends its own processes and leaves the session's running."""
    second = services.start_slurm(tmp_path)
    assert second["SLURM_CONF"] != slurm["SLURM_CONF"]
    pids = [int(p.read_text()) for p in (tmp_path / "pids").glob("*.pid")]
    assert len(pids) == 3  # munged, slurmctld, slurmd
    assert sorted(services.stop_all(tmp_path)) == ["munged", "slurmctld", "slurmd"]
    assert not [pid for pid in pids if services._alive(pid)]
    assert not list((tmp_path / "pids").glob("*.pid"))
    still = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30, check=True)
    assert still.stdout.strip() == "idle"  # the session's cluster (SLURM_CONF in os.environ) is untouched
