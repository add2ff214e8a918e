"""Tuning workers as SLURM jobs on shared Optuna storages: the study ends with exactly the budget of finished
trials, whichever worker takes which trial, and every trial is a run on the MLflow tracking server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from optbench.core.config import compose_config
from optbench.tuning.tune import tune

STUDY = "sgd-mlp-digits-lr"
PROXY = str(Path(sys.executable).parent / "optbench-tune-proxy")


def slurm_tuning(tmp_path: Path, storage: str, *overrides: str):
    """A tiny study (digits, mlp, one epoch of a few batches) whose 2 workers are SLURM jobs small enough that
    both fit on the one-node test cluster at once (1 core, 2 GB each)."""
    return compose_config(
        "data=digits",
        "model=mlp",
        "trainer=fast",
        "trainer.max_epochs=1",
        "optimizer=sgd",
        "tune.pruner.name=none",
        "tune.launcher=slurm",
        "tune.n_jobs=2",
        "tune.slurm.cpus_per_task=1",
        "tune.slurm.mem_gb=2",
        "tune.slurm.timeout_min=10",
        f"tune.slurm.folder={tmp_path / 'slurm'}",
        f"tune.storage={storage}",
        f"tune.output_dir={tmp_path / 'tune'}",
        f"metrics_path={tmp_path / 'metrics.json'}",
        f"checkpoint.dir={tmp_path / 'checkpoints'}",
        *overrides,
        config_name="tune",
    )


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.user_attrs.get("outcome") != "surplus"]


def test_two_slurm_workers_on_postgresql_finish_exactly_the_budget_on_the_tracking_server(
    slurm, fresh_database, mlflow_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # the jobs inherit it from sbatch
    cfg = slurm_tuning(tmp_path, fresh_database, "tune.n_trials=6", "experiment=slurm-tuning-postgres")

    summary = tune(cfg)  # fresh database: its tables are created here, once, before the jobs start

    study = optuna.load_study(study_name=STUDY, storage=fresh_database)
    assert summary["n_finished"] == 6
    assert len(counted(study)) == 6 and all(t.state == TrialState.COMPLETE for t in counted(study))
    logs = sorted((tmp_path / "slurm").glob("*/*_log.err"))
    assert len(logs) == 2  # two SLURM tasks of one array job ran the trials
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    trials = [r for r in runs if "optbench.trial" in r.data.tags]
    assert sorted(int(r.data.tags["optbench.trial"]) for r in trials if r.info.status == "FINISHED") == sorted(
        t.number for t in counted(study)
    )
    assert {r.data.tags.get("optbench.slurm_job_id", "") != "" for r in trials} == {True}


def test_two_slurm_workers_share_a_study_through_the_grpc_proxy(slurm, fresh_database, tmp_path, tracking_uri):
    port = _free_port()
    proxy = subprocess.Popen(
        [PROXY, "--storage", fresh_database, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port).wait_server_ready(timeout=60)
        cfg = slurm_tuning(tmp_path, f"grpc://127.0.0.1:{port}", "tune.n_trials=4", "experiment=slurm-tuning-grpc")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", tracking_uri)
            summary = tune(cfg)
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
    assert summary["n_finished"] == 4
    study = optuna.load_study(study_name=STUDY, storage=fresh_database)  # the database behind the proxy
    assert len(counted(study)) == 4 and all(t.state == TrialState.COMPLETE for t in counted(study))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_gpu_study_is_submitted_from_a_login_node_without_a_gpu_and_checked_where_it_runs(slurm, tmp_path):
    from optbench.core.errors import ConfigError
    from optbench.tuning.tune import check_tune_config

    journal = f"journal://{tmp_path / 'optuna.log'}"
    assert check_tune_config(slurm_tuning(tmp_path, journal, "trainer=gpu"))  # this machine has no GPU
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        check_tune_config(slurm_tuning(tmp_path, journal, "trainer=gpu", "tune.launcher=local"))
