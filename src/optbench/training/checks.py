"""Checks on a composed training config that run before any data is loaded or any MLflow run is created.

Hydra already rejects unknown options and keys; this module rejects bad values and combinations that
would fail (or silently mean something else) minutes into a run. `check_values` needs no torch (the
command line runs it before Lightning is imported, so a typo is reported in about a second); `validate`
adds the checks that do: the optimizer's own argument checks, and what the GPU can do.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from optbench.core.errors import ConfigError
from optbench.training.schema import OPTBENCH_TRAINER_KEYS, check_schema

log = logging.getLogger("optbench.training.checks")

PRECISIONS = ("32-true", "64-true", "bf16-mixed", "16-mixed", "16-mixed-unscaled", "bf16-true")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp")


def check_values(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad value or combination in `cfg` (torch is imported only where
    the config asks for a GPU)."""
    check_schema(cfg)
    _check_run_knobs(cfg)
    _check_scheduler(cfg)
    _check_precision(cfg)
    _check_strategy(cfg)


def validate(cfg: DictConfig) -> None:
    """Every check: `check_values`, then the optimizer built on a dummy parameter with its settings."""
    from optbench.training.optim import check_optimizer  # imports torch

    check_values(cfg)
    check_optimizer(cfg.optimizer)
    _check_trainer_keys(cfg)


def _check_trainer_keys(cfg: DictConfig) -> None:
    """trainer.* are Lightning Trainer arguments: a key it does not take is refused here, not by a
    TypeError after the MLflow run was created."""
    import inspect

    import lightning.pytorch as L

    known = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    unknown = sorted(set(cfg.trainer) - known - set(OPTBENCH_TRAINER_KEYS))
    if unknown:
        raise ConfigError(
            f"trainer has no setting {', '.join(unknown)}: trainer.* are arguments of Lightning's Trainer "
            "(https://lightning.ai/docs/pytorch/stable/common/trainer.html#trainer-flags), besides optbench's "
            f"own {', '.join(OPTBENCH_TRAINER_KEYS)}."
        )


def _cuda():
    import torch

    return torch.cuda


def apply_best(cfg: DictConfig) -> DictConfig:
    """`cfg` with the best settings of a tuning study (best=path/to/best.json) filled in."""
    if not cfg.get("best"):
        return cfg
    path = Path(cfg.best)
    try:
        best = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"best={cfg.best}: cannot read the tuning result ({err}).") from None
    if best.get("optimizer") != cfg.optimizer.name:
        raise ConfigError(
            f"best={cfg.best} holds settings tuned for optimizer={best.get('optimizer')}, but this run uses "
            f"optimizer={cfg.optimizer.name}. Pass the matching best.json, or the matching optimizer."
        )
    params = best.get("best_params")
    if not isinstance(params, dict):
        raise ConfigError(f"best={cfg.best}: no best_params mapping in it (not a best.json of optbench-tune).")
    searched = best.get("searched")
    for key, value in params.items():
        parent, _, leaf = str(key).rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        problem = None
        if any(part.startswith("_") for part in str(key).split(".")) or not _has_leaf(node, leaf):
            problem = "it is not a setting of this run's config"
        elif searched is not None and key not in searched:
            problem = f"the study searched only {', '.join(searched)}"
        elif not isinstance(value, (int, float, str, bool)):
            problem = f"its value {value!r} is not a plain number or string"
        if problem:
            raise ConfigError(f"best={cfg.best} sets {key}, which a tuning result may not set: {problem}.")
    cfg = cfg.copy()
    for key, value in params.items():
        OmegaConf.update(cfg, key, value, merge=False)
    log.info("Tuned settings from %s: %s", path, best["best_params"])
    return cfg


def _has_leaf(node: Any, leaf: str) -> bool:
    """Whether `node.<leaf>` is an existing setting: a key of a mapping, or an index of a list (betas.0)."""
    if isinstance(node, ListConfig):
        return leaf.isdigit() and int(leaf) < len(node)
    return isinstance(node, DictConfig) and leaf in node


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_run_knobs(cfg: DictConfig) -> None:
    t = cfg.trainer
    require(isinstance(cfg.seed, int) and cfg.seed >= 0, f"seed must be a non-negative integer, got {cfg.seed!r}.")
    require(
        isinstance(cfg.batch_size, int) and cfg.batch_size >= 1,
        f"batch_size must be a positive integer, got {cfg.batch_size!r}.",
    )
    require(
        is_number(cfg.loss_scale) and cfg.loss_scale > 0,
        f"loss_scale must be a positive number (it multiplies the training loss), got {cfg.loss_scale!r}.",
    )
    require(
        (isinstance(t.max_epochs, int) and t.max_epochs >= 1) or (isinstance(t.max_steps, int) and t.max_steps >= 1),
        f"Set trainer.max_epochs or trainer.max_steps to a positive integer (got {t.max_epochs!r} and "
        f"{t.max_steps!r}): the run needs a length, and schedules are fitted to it.",
    )
    require(
        isinstance(t.accumulate_grad_batches, int) and t.accumulate_grad_batches >= 1,
        f"trainer.accumulate_grad_batches must be a positive integer, got {t.accumulate_grad_batches!r}.",
    )
    if t.gradient_clip_val is not None:
        require(
            is_number(t.gradient_clip_val) and t.gradient_clip_val > 0,
            f"trainer.gradient_clip_val must be a positive number or null, got {t.gradient_clip_val!r}.",
        )
        require(
            t.gradient_clip_algorithm in ("norm", "value"),
            f"trainer.gradient_clip_algorithm must be norm or value, got {t.gradient_clip_algorithm!r}.",
        )
    if cfg.optimizer.name == "lbfgs":
        require(
            t.accumulate_grad_batches == 1,
            "optimizer=lbfgs cannot accumulate gradients (trainer.accumulate_grad_batches="
            f"{t.accumulate_grad_batches}): L-BFGS re-evaluates the loss several times per step through a "
            "closure, which has to see the whole batch at once. Use a larger batch_size instead.",
        )
        require(
            t.gradient_clip_val is None,
            "optimizer=lbfgs does not support gradient clipping: its line search needs the true gradient. "
            "Remove trainer.gradient_clip_val.",
        )


def _check_scheduler(cfg: DictConfig) -> None:
    s = cfg.scheduler
    require(s.interval in ("step", "epoch"), f"scheduler.interval must be step or epoch, got {s.interval!r}.")
    if s.interval == "step" and s.name != "constant":
        # These schedules need the number of optimizer steps, which Lightning estimates from the run length.
        require(
            cfg.trainer.max_epochs not in (None, -1) or cfg.trainer.max_steps > 0,
            f"scheduler={s.name} steps every batch and needs the run's length: set trainer.max_epochs or "
            "trainer.max_steps.",
        )
    if s.name == "plateau":
        require(
            s.monitor in ("val/loss", "val/acc"),
            f"scheduler=plateau watches a validation metric: set scheduler.monitor to val/loss or val/acc "
            f"(got {s.monitor!r}).",
        )
    for key in ("start_factor",):
        if key in s:
            require(0 < s[key] <= 1, f"scheduler.{key} must be in (0, 1], got {s[key]!r}.")
    for key in ("gamma", "factor"):
        if key in s:
            require(0 < s[key] <= 1, f"scheduler.{key} must be in (0, 1], got {s[key]!r}.")


def _check_precision(cfg: DictConfig) -> None:
    name = cfg.precision.name
    require(name in PRECISIONS, f"Unknown precision '{name}'. Valid precisions: {', '.join(PRECISIONS)}.")
    if cfg.optimizer.name == "lbfgs" and name in ("16-mixed", "16-mixed-unscaled"):
        raise ConfigError(
            f"precision={name} cannot be used with optimizer=lbfgs: fp16 mixed precision scales the loss "
            "and may skip steps whose gradients overflow, but L-BFGS evaluates its closure several times per "
            "step and its line search needs unscaled, finite values (Lightning refuses the pair, and steps "
            "16-mixed-unscaled through a disabled scaler too). Use precision=32-true or bf16-mixed with L-BFGS."
        )
    on_gpu = cfg.trainer.accelerator in ("gpu", "cuda") and _cuda().is_available()
    if name in ("bf16-mixed", "bf16-true") and on_gpu and not _cuda().is_bf16_supported():
        raise ConfigError(f"precision={name} needs a GPU with bfloat16 support (Ampere or newer).")


def _check_strategy(cfg: DictConfig) -> None:
    name = cfg.strategy.name
    if cfg.trainer.accelerator in ("gpu", "cuda") and not _cuda().is_available():
        raise ConfigError(
            f"trainer.accelerator={cfg.trainer.accelerator} (trainer=gpu) needs a CUDA GPU, and torch sees none on "
            "this machine. Use trainer=cpu (the default), or check the GPU driver and the CUDA build of torch."
        )
    require(name in STRATEGIES, f"Unknown strategy '{name}'. Valid strategies: {', '.join(STRATEGIES)}.")
    accelerator = cfg.trainer.accelerator
    if name == "fsdp" and (accelerator == "cpu" or not _cuda().is_available()):
        raise ConfigError(
            "strategy=fsdp needs CUDA GPUs (it shards parameters with NCCL collectives), and "
            f"{'trainer.accelerator=cpu' if accelerator == 'cpu' else 'no GPU is visible'}. Use "
            "strategy=ddp_spawn for several CPU processes, or run on a GPU machine with trainer=gpu."
        )
    if name == "ddp" and _in_multirun() and not _launcher_starts_ranks():
        raise ConfigError(
            "strategy=ddp cannot run inside a Hydra multirun on this machine: Lightning starts the other ranks "
            "by re-running the command line, which would re-run the whole sweep. Use strategy=ddp_spawn in "
            "sweeps, or hydra/launcher=slurm, where srun starts one task per rank."
        )
    _check_slurm_layout(cfg)
    devices = cfg.strategy.devices
    if name in ("ddp", "ddp_spawn"):
        require(
            isinstance(devices, int) and devices >= 1,
            f"strategy.devices must be a positive number of processes, got {devices!r}.",
        )
        if accelerator in ("gpu", "cuda") and _cuda().is_available():
            require(
                devices <= _cuda().device_count(),
                f"strategy={name} asks for {devices} GPUs but {_cuda().device_count()} are visible.",
            )


def _in_multirun() -> bool:
    mode = HydraConfig.get().mode if HydraConfig.initialized() else None
    return mode is not None and mode.name == "MULTIRUN"


def _launcher_starts_ranks() -> bool:
    """hydra/launcher=slurm (submitit) runs each job as `nodes x tasks_per_node` srun tasks, one per rank."""
    return "slurm" in str(HydraConfig.get().launcher.get("_target_", "")).lower()


def _check_slurm_layout(cfg: DictConfig) -> None:
    """Under srun, strategy=ddp's ranks are SLURM's tasks (Lightning's SLURM environment reads SLURM_PROCID,
    SLURM_NNODES, SLURM_NTASKS_PER_NODE). A strategy that expects other numbers would hang waiting for ranks
    that never start, or fail deep in Lightning: say so before anything is logged."""
    env = os.environ
    # Lightning treats `salloc` shells (job name bash or interactive) as no SLURM job and starts ranks itself.
    if cfg.strategy.name != "ddp" or "SLURM_NTASKS" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return
    nodes = int(env.get("SLURM_NNODES", env.get("SLURM_JOB_NUM_NODES", "1")))
    tasks = int(env["SLURM_NTASKS"])
    num_nodes, devices = cfg.strategy.num_nodes, cfg.strategy.devices
    job = f"SLURM job {env.get('SLURM_JOB_ID', '?')} (nodes {env.get('SLURM_JOB_NODELIST', '?')})"
    if num_nodes > nodes:
        raise ConfigError(
            f"strategy.num_nodes={num_nodes} is larger than the {nodes} node(s) of {job}. Ask SLURM for as many "
            "nodes as the strategy spans: hydra/launcher=slurm takes its node and task counts from strategy, or "
            f"use sbatch --nodes={num_nodes} --ntasks-per-node={devices} with srun."
        )
    if num_nodes * devices != tasks:
        raise ConfigError(
            f"strategy=ddp expects strategy.num_nodes x strategy.devices = {num_nodes} x {devices} = "
            f"{num_nodes * devices} ranks, but srun started {tasks} task(s) in {job}. Start one task per rank "
            f"(hydra/launcher=slurm derives them from strategy; by hand: srun --ntasks-per-node={devices})."
        )
