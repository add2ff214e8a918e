"""MLflow naming, tagging and run lifecycle.

Every optbench run is an MLflow run whose parameters are the flattened resolved config (dot-separated
keys such as optimizer.lr; a null setting is left out, not logged as "None"), so any two runs line up
column for column in the MLflow UI. The run is created before training and always ends in a final state:
FINISHED (tag optbench.outcome = completed, diverged or pruned), FAILED, or KILLED; never left RUNNING.
MLflow's own panels (description, dataset, system metrics, experiment kind) are filled by panels.py.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import optuna
import torch
from hydra.core.hydra_config import HydraConfig
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

import optbench
from optbench.core.config import run_name
from optbench.tracking.panels import (
    NOTE_TAG,
    description,
    log_dataset,
    set_experiment_kind,
    source_tags,
    system_metrics,
)
from optbench.tracking.provenance import environment_tags
from optbench.tracking.store import open_store, owner_tag

TAG_PREFIX = "optbench."


def _artifact_root(uri: str) -> str | None:
    # Keep artifacts next to a SQLite store, not in whatever directory the first run started in.
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if it does not exist yet, tagged as model development (an
    older optbench experiment gets the tag too)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        with suppress(MlflowException):  # another process may have created it in the meantime
            client.create_experiment(name, artifact_location=_artifact_root(client.tracking_uri))
        experiment = client.get_experiment_by_name(name)
    set_experiment_kind(client, experiment)
    return experiment.experiment_id


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as {dotted.key: value}, lists kept whole ("[0.9, 0.999]")."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def run_params(cfg: DictConfig) -> dict[str, str]:
    """Parameters logged for a run: the flattened config without null settings (MLflow has no null; the
    string "None" would read as a value) and without file paths that differ per machine (and `resume`,
    which differs between an interrupted run and its continuation)."""
    skip = {"metrics_path", "params_path", "logger.tracking_uri", "data.root", "resume", "checkpoint.dir"}
    return {key: str(value) for key, value in flatten(cfg).items() if key not in skip and value is not None}


def log_values(
    client: MlflowClient, run_id: str, *, params: Mapping[str, Any] | None = None, metrics: Sequence[Metric] = ()
) -> None:
    """Log parameters (values as str, None left out) and metrics in one call; MlflowClient.log_batch splits
    it into requests within MLflow's batch limits."""
    params = [Param(key, str(value)) for key, value in (params or {}).items() if value is not None]
    client.log_batch(run_id, params=params, metrics=list(metrics))


def provenance_tags(strategy: Mapping | None = None) -> dict[str, str]:
    """The tags every run optbench opens carries: optbench version, the git state of its source, who and
    which command made it (MLflow's "Created by" and "Source"), and where it ran (provenance.py: SLURM job,
    world size, GPUs, CUDA stack; `strategy` is a training run's strategy group, for its world size)."""
    commit, dirty = git_state()
    tags = {
        **source_tags(),
        **environment_tags(strategy=strategy),
        "mlflow.source.git.commit": commit,
        TAG_PREFIX + "git_commit": commit,
        TAG_PREFIX + "git_dirty": str(dirty).lower(),
        TAG_PREFIX + "version": optbench.__version__,
    }
    if os.environ.get("DVC_EXP_NAME"):  # a run of a `dvc exp run` experiment (queued, temporary or not)
        tags[TAG_PREFIX + "dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    return tags


@contextmanager
def open_run(client: MlflowClient, experiment: str, name: str, tags: Mapping[str, str] | None = None) -> Iterator[str]:
    """A run of `experiment` (created if needed) with provenance tags and `tags`, yielded as its id and
    ended FINISHED, FAILED or KILLED by `ends_run`. For runs that are not training runs (tracked_run)."""
    run = client.create_run(
        experiment_id(client, experiment), run_name=name, tags={**provenance_tags(), **(tags or {})}
    )
    with ends_run(client, run.info.run_id):
        yield run.info.run_id


def run_for(cfg: DictConfig, data_fingerprint: str, tags: dict[str, str] | None = None, run_id: str | None = None):
    """`tracked_run` when the config logs to MLflow (logger=mlflow) on rank 0, else a context yielding None:
    other ranks (re-launched by strategy=ddp or SLURM) log nothing."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if cfg.logger.name == "mlflow" and rank_zero_only.rank == 0:
        return tracked_run(cfg, data_fingerprint, tags, run_id=run_id)
    return nullcontext(None)


def git_state(path: Path | None = None) -> tuple[str, bool]:
    """(commit, dirty) of the checkout holding `path` (default: optbench's own source), or ("unknown", False)."""
    cwd = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, bool(status.strip())


def device_description(accelerator: str) -> str:
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def run_tags(cfg: DictConfig, data_fingerprint: str) -> dict[str, str]:
    return {
        **provenance_tags(strategy=cfg.get("strategy")),
        NOTE_TAG: description(cfg, data_fingerprint),
        TAG_PREFIX + "data_fingerprint": data_fingerprint,
        TAG_PREFIX + "device": device_description(cfg.trainer.accelerator),
        TAG_PREFIX + "outcome": "running",
    }


class TrackedRun:
    """An MLflow run opened by `tracked_run`; `logger` is handed to Lightning's Trainer."""

    def __init__(self, client: MlflowClient, run_id: str, experiment_name: str) -> None:
        from lightning.pytorch.loggers import MLFlowLogger

        self.client, self.run_id = client, run_id
        self.logger = MLFlowLogger(
            experiment_name=experiment_name, tracking_uri=client.tracking_uri, run_id=run_id, log_model=False
        )
        self.outcome = "completed"

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        log_values(self.client, self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])


@contextmanager
def tracked_run(
    cfg: DictConfig, data_fingerprint: str, extra_tags: dict[str, str] | None = None, run_id: str | None = None
) -> Iterator[TrackedRun]:
    """Create the run (params, tags, config artifacts), yield it, and always give it a final status.

    `extra_tags` may hold "mlflow.parentRunId" to nest the run under another (a tuning study's) and
    "mlflow.runName" to replace the default name. `run_id`: continue that run (a resumed one) instead.
    """
    client = open_store(cfg.logger.tracking_uri)
    tags = {**run_tags(cfg, data_fingerprint), **owner_tag(), **(extra_tags or {})}
    name = tags.pop("mlflow.runName", None) or run_name(cfg)
    run = _reopen(client, run_id, tags) if run_id else None
    if run is None:
        run = client.create_run(experiment_id(client, cfg.experiment), run_name=name, tags=tags)
    tracked = TrackedRun(client, run.info.run_id, cfg.experiment)
    try:
        log_values(client, run.info.run_id, params=run_params(cfg))
        log_dataset(client, run.info.run_id, cfg.data, data_fingerprint)
        tracked.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        if HydraConfig.initialized():
            overrides = HydraConfig.get().overrides.task
            tracked.log_text(OmegaConf.to_yaml(list(overrides)), "overrides.yaml")
        with system_metrics(client, run.info.run_id, resume=run_id is not None):
            yield tracked
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM: the run was stopped, it did not fail
        _terminate(client, run.info.run_id, "KILLED", "killed")
        raise
    except optuna.TrialPruned:  # stopped early by the tuner's pruner: an orderly end, not a crash
        _terminate(client, run.info.run_id, "FINISHED", "pruned")
        raise
    except BaseException:
        _terminate(client, run.info.run_id, "FAILED", "failed")
        raise
    else:
        _terminate(client, run.info.run_id, "FINISHED", tracked.outcome)


def _reopen(client: MlflowClient, run_id: str, tags: dict[str, str]):
    """The run `run_id` set RUNNING again with fresh tags, or None when the store no longer has it."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    client.update_run(run_id, status="RUNNING")
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items() if not k.startswith("mlflow.")])
    return run


@contextmanager
def ends_run(client: MlflowClient, run_id: str) -> Iterator[None]:
    """Give `run_id` a final status whatever happens inside: KILLED on Ctrl-C, FAILED on any other
    exception (re-raised), FINISHED otherwise. For runs optbench opens itself outside `tracked_run`."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        client.set_terminated(run_id, "KILLED")
        raise
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def _terminate(client: MlflowClient, run_id: str, status: str, outcome: str) -> None:
    client.log_batch(run_id, tags=[RunTag(TAG_PREFIX + "outcome", outcome)])
    client.set_terminated(run_id, status)
