"""optbench-train: one training run, configured by Hydra, tracked in MLflow.

    optbench-train optimizer=sgd optimizer.lr=0.1 scheduler=cosine seed=3
    optbench-train -m optimizer=sgd,adam,adamw seed=0,1,2
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import hydra
import lightning.pytorch as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

from optbench.config import CONFIG_DIR, validate
from optbench.data import Dataset, TensorDataModule, load_dataset
from optbench.errors import ConfigError, OptbenchError, fail
from optbench.files import atomic_path, write_json
from optbench.models import build_model, num_parameters
from optbench.module import OptbenchModule
from optbench.tracking import TrackedRun, tracked_run

log = logging.getLogger("optbench.train")
# Lightning 2.6 calls a torch API that torch 2.15 deprecated; nothing a user can act on.
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


def train(
    cfg: DictConfig, *, callbacks: Sequence[Callback] = (), tags: dict[str, str] | None = None
) -> dict[str, float]:
    """Train one model as `cfg` says, test it, and return the final metrics (also in metrics.json).

    `callbacks` join the Trainer's (the tuner passes Optuna's pruning callback); `tags` join the MLflow
    run's (the tuner makes each trial a child of its study's run).
    """
    cfg = apply_best(cfg)
    validate(cfg)
    data, datamodule, module = build_components(cfg)
    if cfg.get("params_path"):
        callbacks = [*callbacks, SaveFinalParams(cfg.params_path)]
    with _tracking(cfg, data.fingerprint, tags) as run:
        trainer = build_trainer(cfg, run, callbacks)
        trainer.fit(module, datamodule=datamodule)
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
        trainer.test(module, datamodule=datamodule, verbose=False)  # resets callback_metrics
        metrics.update({key: float(value) for key, value in trainer.callback_metrics.items()})
        diverged = metrics.get("train/diverged", 0.0) > 0
        if run is not None:
            run.outcome = "diverged" if diverged else "completed"
            metrics["run_id"] = run.run_id  # type: ignore[assignment]
    if diverged:
        log.warning("The loss became NaN or infinite: the run stopped and is recorded as diverged.")
    if rank_zero_only.rank == 0:
        write_json(cfg.metrics_path, metrics)
    return metrics


def build_components(cfg: DictConfig) -> tuple[Dataset, TensorDataModule, OptbenchModule]:
    """Seed, then build the data split, its data module and the LightningModule that `cfg` describes."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = load_dataset(cfg.data)
    log.info("Data: %s, %d/%d/%d train/val/test examples", data.name, len(data.train), len(data.val), len(data.test))
    batch_size = len(data.train) if cfg.optimizer.get("full_batch", False) else cfg.batch_size
    datamodule = TensorDataModule(data, batch_size, seed=cfg.seed, augment=cfg.data.get("augment", False))
    model = build_model(cfg.model, data)
    log.info("Model: %s, %d parameters", cfg.model.name, num_parameters(model))
    module = OptbenchModule(
        model,
        cfg.optimizer,
        cfg.scheduler,
        num_classes=data.num_classes,
        loss_scale=cfg.loss_scale,
        optimum=data.optimum,
    )
    log.info("Optimizer: %s, lr %s; scheduler: %s", cfg.optimizer.name, cfg.optimizer.lr, cfg.scheduler.name)
    return data, datamodule, module


def _tracking(cfg: DictConfig, fingerprint: str, tags: dict[str, str] | None):
    # Only rank 0 owns the MLflow run; other ranks (re-launched by strategy=ddp or SLURM) log nothing.
    if cfg.logger.name == "mlflow" and rank_zero_only.rank == 0:
        return tracked_run(cfg, fingerprint, tags)
    return nullcontext(None)


def apply_best(cfg: DictConfig) -> DictConfig:
    """`cfg` with the best settings of a tuning study (best=path/to/best.json) filled in."""
    if not cfg.get("best"):
        return cfg
    path = Path(cfg.best)
    try:
        best = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"best={cfg.best}: cannot read the tuning result ({err}).") from None
    if best.get("optimizer") != cfg.optimizer.name:
        raise ConfigError(
            f"best={cfg.best} holds settings tuned for optimizer={best.get('optimizer')}, but this run uses "
            f"optimizer={cfg.optimizer.name}. Pass the matching best.json, or the matching optimizer."
        )
    cfg = cfg.copy()
    for key, value in best["best_params"].items():
        OmegaConf.update(cfg, key, value, merge=False)
    log.info("Tuned settings from %s: %s", path, best["best_params"])
    return cfg


def build_trainer(cfg: DictConfig, run: TrackedRun | None, callbacks: Sequence[Callback] = ()) -> L.Trainer:
    """Lightning's Trainer from the trainer, precision, strategy and logger groups."""
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    precision, plugins = cfg.precision.name, []
    if precision == "16-mixed-unscaled":
        # fp16 autocast with a disabled GradScaler: no loss scaling (scale 1), and Lightning creates no
        # default scaler when it is handed one.
        accelerator = options["accelerator"]
        on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        device = "cuda" if on_gpu else "cpu"
        scaler = torch.amp.GradScaler(device, enabled=False)
        precision, plugins = None, [MixedPrecision("16-mixed", device=device, scaler=scaler)]
    elif precision == "16-mixed" and options["accelerator"] == "cpu":
        # Lightning would silently turn 16-mixed into bf16-mixed on CPU; torch has real fp16 autocast and a
        # GradScaler there, so hand Lightning that plugin and keep the run what it says it is.
        precision, plugins = None, [MixedPrecision("16-mixed", device="cpu")]
    strategy = cfg.strategy
    if strategy.name in ("ddp", "ddp_spawn"):
        strategy_obj = DDPStrategy(
            start_method="spawn" if strategy.name == "ddp_spawn" else "popen",
            process_group_backend=strategy.process_group_backend,
            find_unused_parameters=strategy.find_unused_parameters,
        )
    else:
        strategy_obj = strategy.name
    if run is not None:
        logger = run.logger
    elif cfg.logger.name == "csv":
        logger = CSVLogger(save_dir=str(Path(cfg.metrics_path).parent), name="csv")
    else:
        logger = False
    return L.Trainer(
        **options,
        precision=precision,
        plugins=plugins,
        strategy=strategy_obj,
        devices=strategy.devices,
        num_nodes=strategy.num_nodes,
        logger=logger,
        callbacks=list(callbacks),
    )


def save_params(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """The model's final state_dict, on the CPU, written atomically like write_json (params_path=...)."""
    with atomic_path(path) as tmp:
        torch.save({key: value.detach().cpu() for key, value in model.state_dict().items()}, tmp)


class SaveFinalParams(Callback):
    """Saves the final parameters on rank 0 where training ran. Not after fit in the calling process:
    under ddp_spawn that process only gets the weights copied back into its own module, which was never
    cast to the run's precision (a 64-true run would come back rounded to float32)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            save_params(self.path, pl_module.model)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except (OptbenchError, MisconfigurationException) as err:
        fail(err)
    return metrics.get("val/acc_best", metrics.get("val/loss"))


if __name__ == "__main__":
    main()
