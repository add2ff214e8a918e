"""What fills MLflow's own panels for a training run: the experiment kind (MLflow 3 opens the experiment in
its model-training view), "Created by" and "Source", the run description, the dataset it trained on, and
system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) from MLflow's own monitor.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("optbench.tracking")

EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
NOTE_TAG = "mlflow.note.content"  # the run page's Description
# Seconds between samples of the system metrics: short runs of a few seconds still get a curve. The
# variable MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it; MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false
# turns the monitor off.
SYSTEM_METRICS_INTERVAL_S = 2.0


def command_line() -> str:
    """The command that made the run, as typed: `optbench-train optimizer=sgd seed=3`."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else ""


def source_tags() -> dict[str, str]:
    """MLflow's "Created by" and "Source" fields (its fluent API sets them; MlflowClient.create_run does not)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (some containers)
        user = "unknown"
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "optbench"
    return {"mlflow.user": user, "mlflow.source.name": name, "mlflow.source.type": "LOCAL"}


def description(cfg: DictConfig, data_fingerprint: str) -> str:
    """The run's description (Markdown): what it compares, and the command line that made it."""
    epochs = cfg.trainer.get("max_epochs")
    steps = cfg.trainer.get("max_steps")
    length = f"{epochs} epochs" if epochs not in (None, -1) else f"{steps} steps"
    return (
        f"Optimizer **{cfg.optimizer.name}** (lr {cfg.optimizer.lr}, scheduler {cfg.scheduler.name}) training "
        f"model **{cfg.model.name}** on data **{cfg.data.name}** (split fingerprint {data_fingerprint}), "
        f"seed {cfg.seed}, {length}, batch size {cfg.batch_size}, precision {cfg.precision.name}.\n\n"
        f"Command: `{command_line()}`"
    )


def set_experiment_kind(client: MlflowClient, experiment) -> None:
    """Tag an experiment as model development, unless it already has a kind (one a user chose stays)."""
    key, value = EXPERIMENT_KIND
    if key not in (experiment.tags or {}):
        # Parallel jobs (a SLURM array) may tag a new experiment at once; on a PostgreSQL store the later insert
        # fails with a unique-key violation, and the tag is set either way.
        with suppress(MlflowException):
            client.set_experiment_tag(experiment.experiment_id, key, value)


def log_dataset(client: MlflowClient, run_id: str, data: DictConfig, data_fingerprint: str) -> None:
    """The split the run trained on as a run input (MLflow's Datasets panel): named after the data option,
    with the fingerprint optbench computes from the exact split contents as its digest."""
    settings = OmegaConf.to_container(data, resolve=True)
    prepared = settings.get("prepared")
    source = {"uri": str(Path(prepared).resolve())} if prepared else {"optbench_data": data.name}
    profile = {k: v for k, v in settings.items() if k not in ("name", "prepared", "root") and _plain(v)}
    dataset = Dataset(
        name=str(data.name),
        digest=data_fingerprint,
        source_type="local" if prepared else "code",
        source=json.dumps(source),
        profile=json.dumps(profile, sort_keys=True),
    )
    inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException:
        # Parallel jobs of one sweep log the same split at once; on PostgreSQL the later insert of the shared
        # dataset row fails with a unique-key violation. The row exists now, so linking it again succeeds.
        client.log_inputs(run_id, datasets=inputs)


def _plain(value: Any) -> bool:
    return value is not None and not isinstance(value, (dict, list))


def _monitoring_enabled() -> bool:
    return os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true").strip().lower() not in ("false", "0")


@contextmanager
def system_metrics(client: MlflowClient, run_id: str, *, resume: bool = False) -> Iterator[None]:
    """MLflow's system-metrics monitor on `run_id` while the body runs (metrics system/...; a resumed run
    continues its steps). A run shorter than one sampling interval still gets the sample taken at its start."""
    if not _monitoring_enabled():
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no "started/stopped" per run
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, resume_logging=resume, tracking_uri=client.tracking_uri
    )
    monitor.start()
    try:
        yield
    finally:
        try:
            monitor.finish()
            pending = monitor.aggregate_metrics()  # samples taken since the last logged one
            if pending:
                monitor.publish_metrics(pending)
                monitor.mlflow_logger.flush()
        except Exception as err:  # the run's own outcome matters more than its system metrics
            log.warning("System metrics of run %s were not all logged: %s", run_id, err)
