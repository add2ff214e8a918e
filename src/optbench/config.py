"""Checks on a composed config that run before any data is loaded or any MLflow run is created.

Hydra already rejects unknown options and keys; this module rejects bad values and combinations that
would fail (or silently mean something else) minutes into a run.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict

from optbench.errors import ConfigError
from optbench.optim import check_optimizer


def config_dir() -> str:
    """Where the Hydra configs are: $OPTBENCH_CONFIG_DIR, else ./conf when it holds train.yaml (running
    inside an optbench experiment repo), else the conf/ of the source tree optbench was installed from."""
    if os.environ.get("OPTBENCH_CONFIG_DIR"):
        return str(Path(os.environ["OPTBENCH_CONFIG_DIR"]).resolve())
    if (Path.cwd() / "conf" / "train.yaml").is_file():
        return str(Path.cwd() / "conf")
    return str(Path(__file__).resolve().parents[2] / "conf")


CONFIG_DIR = config_dir()


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    """Compose conf/<config_name>.yaml as the command line would, for use from Python (tests, benchmarks,
    notebooks): Hydra's compose API, with HydraConfig set so ${hydra:...} interpolations resolve."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        try:
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
        except HydraException as err:  # an unknown option or a malformed override: one paragraph, no traceback
            message = " ".join(str(err).split("Config search path")[0].split())
            raise ConfigError(f"Cannot compose {config_name}.yaml with {' '.join(overrides)}: {message}") from None
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # the task function never sees the hydra node
    return cfg


PRECISIONS = ("32-true", "64-true", "bf16-mixed", "16-mixed", "16-mixed-unscaled", "bf16-true")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first problem found in `cfg`, with the reason."""
    _check_run_knobs(cfg)
    check_optimizer(cfg.optimizer)
    _check_scheduler(cfg)
    _check_precision(cfg)
    _check_strategy(cfg)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_run_knobs(cfg: DictConfig) -> None:
    t = cfg.trainer
    _require(isinstance(cfg.seed, int) and cfg.seed >= 0, f"seed must be a non-negative integer, got {cfg.seed!r}.")
    _require(
        isinstance(cfg.batch_size, int) and cfg.batch_size >= 1,
        f"batch_size must be a positive integer, got {cfg.batch_size!r}.",
    )
    _require(
        _is_number(cfg.loss_scale) and cfg.loss_scale > 0,
        f"loss_scale must be a positive number (it multiplies the training loss), got {cfg.loss_scale!r}.",
    )
    _require(
        (isinstance(t.max_epochs, int) and t.max_epochs >= 1) or (isinstance(t.max_steps, int) and t.max_steps >= 1),
        f"Set trainer.max_epochs or trainer.max_steps to a positive integer (got {t.max_epochs!r} and "
        f"{t.max_steps!r}): the run needs a length, and schedules are fitted to it.",
    )
    _require(
        isinstance(t.accumulate_grad_batches, int) and t.accumulate_grad_batches >= 1,
        f"trainer.accumulate_grad_batches must be a positive integer, got {t.accumulate_grad_batches!r}.",
    )
    if t.gradient_clip_val is not None:
        _require(
            _is_number(t.gradient_clip_val) and t.gradient_clip_val > 0,
            f"trainer.gradient_clip_val must be a positive number or null, got {t.gradient_clip_val!r}.",
        )
        _require(
            t.gradient_clip_algorithm in ("norm", "value"),
            f"trainer.gradient_clip_algorithm must be norm or value, got {t.gradient_clip_algorithm!r}.",
        )
    if cfg.optimizer.name == "lbfgs":
        _require(
            t.accumulate_grad_batches == 1,
            "optimizer=lbfgs cannot accumulate gradients (trainer.accumulate_grad_batches="
            f"{t.accumulate_grad_batches}): L-BFGS re-evaluates the loss several times per step through a "
            "closure, which has to see the whole batch at once. Use a larger batch_size instead.",
        )
        _require(
            t.gradient_clip_val is None,
            "optimizer=lbfgs does not support gradient clipping: its line search needs the true gradient. "
            "Remove trainer.gradient_clip_val.",
        )


def _check_scheduler(cfg: DictConfig) -> None:
    s = cfg.scheduler
    _require(s.interval in ("step", "epoch"), f"scheduler.interval must be step or epoch, got {s.interval!r}.")
    if s.interval == "step" and s.name != "constant":
        # These schedules need the number of optimizer steps, which Lightning estimates from the run length.
        _require(
            cfg.trainer.max_epochs not in (None, -1) or cfg.trainer.max_steps > 0,
            f"scheduler={s.name} steps every batch and needs the run's length: set trainer.max_epochs or "
            "trainer.max_steps.",
        )
    if s.name == "plateau":
        _require(
            s.monitor in ("val/loss", "val/acc"),
            f"scheduler=plateau watches a validation metric: set scheduler.monitor to val/loss or val/acc "
            f"(got {s.monitor!r}).",
        )
    for key in ("start_factor",):
        if key in s:
            _require(0 < s[key] <= 1, f"scheduler.{key} must be in (0, 1], got {s[key]!r}.")
    for key in ("gamma", "factor"):
        if key in s:
            _require(0 < s[key] <= 1, f"scheduler.{key} must be in (0, 1], got {s[key]!r}.")


def _check_precision(cfg: DictConfig) -> None:
    name = cfg.precision.name
    _require(name in PRECISIONS, f"Unknown precision '{name}'. Valid precisions: {', '.join(PRECISIONS)}.")
    if cfg.optimizer.name == "lbfgs" and name in ("16-mixed", "16-mixed-unscaled"):
        raise ConfigError(
            f"precision={name} cannot be used with optimizer=lbfgs: fp16 mixed precision scales the loss "
            "and may skip steps whose gradients overflow, but L-BFGS evaluates its closure several times per "
            "step and its line search needs unscaled, finite values (Lightning refuses the pair, and steps "
            "16-mixed-unscaled through a disabled scaler too). Use precision=32-true or bf16-mixed with L-BFGS."
        )
    if name in ("bf16-mixed", "bf16-true") and cfg.trainer.accelerator in ("gpu", "cuda"):
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"precision={name} needs a GPU with bfloat16 support (Ampere or newer).")


def _check_strategy(cfg: DictConfig) -> None:
    name = cfg.strategy.name
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={cfg.trainer.accelerator} (trainer=gpu) needs a CUDA GPU, and torch sees none on "
            "this machine. Use trainer=cpu (the default), or check the GPU driver and the CUDA build of torch."
        )
    _require(name in STRATEGIES, f"Unknown strategy '{name}'. Valid strategies: {', '.join(STRATEGIES)}.")
    accelerator = cfg.trainer.accelerator
    if name == "fsdp" and (accelerator == "cpu" or not torch.cuda.is_available()):
        raise ConfigError(
            "strategy=fsdp needs CUDA GPUs (it shards parameters with NCCL collectives), and "
            f"{'trainer.accelerator=cpu' if accelerator == 'cpu' else 'no GPU is visible'}. Use "
            "strategy=ddp_spawn for several CPU processes, or run on a GPU machine with trainer=gpu."
        )
    if name == "ddp" and HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        raise ConfigError(
            "strategy=ddp cannot run inside a Hydra multirun: Lightning starts the other ranks by re-running "
            "the command line, which would re-run the whole sweep. Use strategy=ddp_spawn in sweeps."
        )
    devices = cfg.strategy.devices
    if name in ("ddp", "ddp_spawn"):
        _require(
            isinstance(devices, int) and devices >= 1,
            f"strategy.devices must be a positive number of processes, got {devices!r}.",
        )
        if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
            _require(
                devices <= torch.cuda.device_count(),
                f"strategy={name} asks for {devices} GPUs but {torch.cuda.device_count()} are visible.",
            )
