"""Checkpoints and resuming: an interrupted run continues where it stopped when its command is run again.

A run's checkpoints live in checkpoint.dir/<key>/, where <key> hashes the resolved config minus what does
not shape the trajectory (output paths, logging, the checkpoint settings themselves). Lightning's
ModelCheckpoint writes last.ckpt there atomically every checkpoint.every_n_epochs epochs (and every
checkpoint.every_n_train_steps steps, if set), and once more when the run is interrupted (Ctrl-C, SIGTERM);
run.json names the MLflow run. What `resume` does:

    auto    (default) continue from last.ckpt if the same command was interrupted, in the same MLflow run;
            otherwise start afresh
    never   start afresh, whatever is there
    <path>  continue from that checkpoint file

A run that finishes deletes its folder: a completed run is never resumed, and rerunning its command trains
it again as a new run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from optbench.core.errors import ConfigError
from optbench.core.files import write_json

log = logging.getLogger("optbench.training.resume")

LAST = "last.ckpt"
# Keys that do not change what a run computes: two runs that differ only here are the same run.
NOT_IDENTITY = ("metrics_path", "params_path", "resume", "checkpoint", "logger", "best")
NOT_IDENTITY_TRAINER = ("enable_progress_bar", "enable_model_summary", "log_every_n_steps")


def run_key(cfg: DictConfig) -> str:
    """16 hex digits identifying the run `cfg` describes (its resolved settings that shape training)."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_IDENTITY:
        settings.pop(key, None)
    for key in NOT_IDENTITY_TRAINER:
        settings.get("trainer", {}).pop(key, None)
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class ResumePlan:
    """Where this run checkpoints, and what it continues (nothing for a fresh run)."""

    directory: Path
    ckpt_path: str | None = None  # handed to Trainer.fit
    run_id: str | None = None  # the MLflow run to continue

    def callbacks(self, cfg: DictConfig) -> list[Callback]:
        c = cfg.checkpoint
        every_steps = c.every_n_train_steps or None
        every = ModelCheckpoint(
            dirpath=str(self.directory),
            filename=LAST[: -len(".ckpt")],
            every_n_epochs=None if every_steps else c.every_n_epochs,
            every_n_train_steps=every_steps,
            save_top_k=1,  # no monitor: the latest only, overwritten in place
            enable_version_counter=False,
            save_on_train_epoch_end=False,
        )
        return [every, Resumable(self.directory / LAST)]

    def started(self, run_id: str | None) -> None:
        """Record the MLflow run this directory's checkpoints belong to."""
        if rank_zero_only.rank == 0:
            write_json(self.directory / "run.json", {"run_id": run_id, "status": "running"})

    def finished(self) -> None:
        """The run completed: nothing of it is ever resumed."""
        if rank_zero_only.rank == 0:
            shutil.rmtree(self.directory, ignore_errors=True)


def plan_resume(cfg: DictConfig) -> ResumePlan | None:
    """The plan for `cfg`: None when checkpointing is off (checkpoint.enabled=false)."""
    mode = str(cfg.resume)
    if not cfg.checkpoint.enabled:
        if mode not in ("auto", "never"):
            raise ConfigError(f"resume={mode} needs checkpoint.enabled=true.")
        return None
    directory = Path(cfg.checkpoint.dir) / run_key(cfg)
    if mode == "never":
        _clear(directory)
        return ResumePlan(directory)
    if mode == "auto":
        last, state = directory / LAST, _read_state(directory)
        if last.is_file() and state.get("status") == "running":
            _check_checkpoint(last)
            log.info("Resuming the interrupted run from %s (MLflow run %s)", last, state.get("run_id"))
            return ResumePlan(directory, str(last), state.get("run_id"))
        _clear(directory)
        return ResumePlan(directory)
    path = Path(mode)
    if not path.is_file():
        raise ConfigError(
            f"resume={mode}: no such checkpoint file. Use resume=auto (continue the interrupted run of this "
            "command, if any), resume=never, or the path of a .ckpt file (quote a path with '=' in it: "
            "\"resume='dir/epoch=1.ckpt'\")."
        )
    _check_checkpoint(path)
    return ResumePlan(directory, str(path), _read_state(path.parent).get("run_id"))


def _check_checkpoint(path: Path) -> None:
    """A clear error now, rather than a traceback from inside Trainer.fit, for a file that is no checkpoint.
    Loaded with torch's safe unpickler: a checkpoint cannot run code."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a truncated, foreign or unsafe file
        first = " ".join(str(err).split())[:300]
        raise ConfigError(
            f"cannot resume from {path}: it is not a readable checkpoint ({first}). Pass resume=never to start "
            "afresh, or another checkpoint."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"cannot resume from {path}: it holds no model state (not a Lightning checkpoint).")


def _read_state(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _clear(directory: Path) -> None:
    if rank_zero_only.rank == 0:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)


class Resumable(Callback):
    """What ModelCheckpoint alone leaves out of an exact resume.

    - The batch order: Lightning restores a resumable loader's state only when it builds the loader after
      restoring the loops, but a step-wise schedule asks for the run's length (estimated_stepping_batches)
      first, which builds it before. So the state is taken from the checkpoint here and handed to the
      loader when training starts; loading it twice is harmless.
    - A checkpoint on SIGTERM (a scheduler's notice before it kills the job). Lightning stops at a batch
      boundary then, so it is consistent. Not on Ctrl-C, which can land in the middle of an optimizer
      step: that run resumes from its last periodic checkpoint.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loader_states: list[dict[str, Any]] = []

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._loader_states = fit_loop.get("state_dict", {}).get("combined_loader", [])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loaders = trainer.train_dataloader
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        for loader, state in zip([lo for lo in loaders if hasattr(lo, "load_state_dict")], self._loader_states):
            loader.load_state_dict(state)
        self._loader_states = []

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path)
            log.warning("Stopped by SIGTERM: checkpoint written to %s; rerun the same command to resume.", self.path)
