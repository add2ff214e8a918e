"""The LightningModule: loss, metrics, logging and configure_optimizers, identical for every optimizer."""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.optim import LBFGS, Optimizer
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from optbench.core.stopwatch import Stopwatch
from optbench.training.models import distance_to_optimum
from optbench.training.optim import build_optimizer, build_scheduler, state_bytes


class OptbenchModule(L.LightningModule):
    """Trains `model` with the configured optimizer and schedule and logs what optbench compares.

    Metric names (the same for every run, so MLflow can put runs side by side):
    train/loss, train/acc (over each epoch's training batches), train/lr, train/grad_norm, train/diverged,
    train/steps, train/samples_per_sec, train/dist_to_opt (regression, on logging steps), val/loss, val/acc,
    val/acc_best, test/loss, test/acc, time/train_s, optimizer/state_bytes, optimizer/state_to_param_ratio,
    amp/loss_scale, amp/skipped_steps (fp16).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: DictConfig,
        scheduler: DictConfig,
        *,
        num_classes: int | None,
        loss_scale: float = 1.0,
        optimum: Tensor | None = None,
    ) -> None:
        super().__init__()
        # Plain containers: a DictConfig in hparams breaks checkpoint loading under torch's safe unpickler.
        self.save_hyperparameters(
            {
                "optimizer": OmegaConf.to_container(optimizer, resolve=True),
                "scheduler": OmegaConf.to_container(scheduler, resolve=True),
                "num_classes": num_classes,
                "loss_scale": loss_scale,
            },
            logger=False,
        )
        self.model = model
        self.optimizer_cfg, self.scheduler_cfg = optimizer, scheduler
        self.loss_scale = loss_scale
        self.is_regression = num_classes is None
        self.criterion = nn.MSELoss() if self.is_regression else nn.CrossEntropyLoss()
        if not self.is_regression:
            self.train_acc = MulticlassAccuracy(num_classes, average="micro")
            self.val_acc = MulticlassAccuracy(num_classes, average="micro")
            self.test_acc = MulticlassAccuracy(num_classes, average="micro")
            self.val_acc_best = MaxMetric()
            for metric in (self.train_acc, self.val_acc_best):  # in checkpoints: a resumed run continues them
                metric.persistent(True)
        self.register_buffer("optimum", optimum, persistent=False)
        self.diverged = False
        self._clock = RunClock()
        self._last_loss_scale: float | None = None
        self._skipped_steps = 0
        self._resumed_seconds = 0.0

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    # --- training -------------------------------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        x, y = batch
        out = self(x)
        loss = self.criterion(out, y)
        if self._is_diverged(loss):
            self.diverged = True
            self.trainer.should_stop = True
            self.log("train/diverged", 1.0)
            # Skip the update; L-BFGS evaluates its closure several times and needs a number back.
            return loss if isinstance(self.trainer.optimizers[0], LBFGS) else None
        logging_step = self._logging_step()
        # Only the steps Lightning hands to the logger (and each epoch's last): self.log costs ~0.3 ms a call.
        if logging_step or self.trainer.is_last_batch:
            self.log("train/loss", loss)
        if logging_step:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
            if self.optimum is not None:
                self.log("train/dist_to_opt", self._distance_to_optimum())
        if not self.is_regression:  # accumulated over the epoch, logged at its end (the train-test gap)
            self.train_acc.update(out.detach(), y)
        self._clock.count(len(y) * self.trainer.world_size)
        return loss * self.loss_scale

    def _is_diverged(self, loss: Tensor) -> bool:
        bad = not bool(torch.isfinite(loss))
        if self.trainer.world_size > 1:  # every rank must skip the same step, or DDP hangs
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        return bad

    def _logging_step(self) -> bool:
        return (self.global_step + 1) % self.trainer.log_every_n_steps == 0 or self.global_step == 0

    def _distance_to_optimum(self) -> Tensor:
        return distance_to_optimum(self.model, self.optimum)

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        # Runs after backward and after AMP unscaling, before clipping: the raw gradient norm.
        if self._logging_step():
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            if grads:
                self.log("train/grad_norm", torch.nn.utils.get_total_norm(grads))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is None:
            return
        # GradScaler halves its scale exactly when it found inf/NaN gradients and skipped the step.
        scale = float(scaler.get_scale())
        if self._last_loss_scale is not None and scale < self._last_loss_scale:
            self._skipped_steps += 1
        self._last_loss_scale = scale
        self.log("amp/loss_scale", scale)
        self.log("amp/skipped_steps", float(self._skipped_steps))

    def on_train_start(self) -> None:
        self._clock.start(self._resumed_seconds)

    # --- checkpoints: what a resumed run needs beyond weights, optimizer, schedule and scaler -------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["optbench"] = {
            "train_seconds": self._clock.train_seconds(),
            "diverged": self.diverged,
            "skipped_steps": self._skipped_steps,
            "last_loss_scale": self._last_loss_scale,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _numpy_state()},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("optbench")
        if state is None:  # a checkpoint from elsewhere: weights and optimizer only
            return
        self._resumed_seconds = state["train_seconds"]
        self.diverged, self._skipped_steps = state["diverged"], state["skipped_steps"]
        self._last_loss_scale = state["last_loss_scale"]
        torch.set_rng_state(state["rng"]["torch"])  # dropout draws continue where they stopped
        random.setstate(state["rng"]["python"])
        kind, keys, *rest = state["rng"]["numpy"]
        np.random.set_state((kind, keys.numpy(), *rest))

    def on_train_epoch_start(self) -> None:
        self._clock.start_epoch()

    def on_train_epoch_end(self) -> None:
        if not self.is_regression:
            self.log("train/acc", self.train_acc.compute())
            self.train_acc.reset()
        self.log("train/samples_per_sec", self._clock.epoch_throughput(), sync_dist=False)
        self.log("train/diverged", float(self.diverged))
        self.log("train/steps", float(self.global_step))  # read back by train(), also from spawned ranks
        optimizer = self.trainer.optimizers[0]
        param_bytes = sum(p.numel() * p.element_size() for p in self.parameters())
        held = state_bytes(optimizer)
        self.log("optimizer/state_bytes", float(held))
        self.log("optimizer/state_to_param_ratio", held / param_bytes)

    # --- evaluation -----------------------------------------------------------------------------------

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        out = self(x)
        self.log(f"{stage}/loss", self.criterion(out, y), batch_size=len(y), sync_dist=True)
        if not self.is_regression:
            accuracy = self.val_acc if stage == "val" else self.test_acc
            accuracy(out, y)
            self.log(f"{stage}/acc", accuracy, batch_size=len(y))

    def on_validation_epoch_start(self) -> None:
        self._clock.pause()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        if not self.is_regression:
            self.val_acc_best(self.val_acc.compute())
            self.log("val/acc_best", self.val_acc_best.compute())
        self.log("time/train_s", self._clock.train_seconds())
        self._clock.resume()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # --- optimizers -----------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.optimizer_cfg, self.model)
        if self.scheduler_cfg.interval == "step":
            total = int(self.trainer.estimated_stepping_batches)
        else:
            total = int(self.trainer.max_epochs)
        scheduler = build_scheduler(self.scheduler_cfg, optimizer, total)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def _numpy_state() -> tuple:
    # As a tensor, not an ndarray: checkpoints load with torch's safe (weights-only) unpickler.
    kind, keys, *rest = np.random.get_state()
    return (kind, torch.from_numpy(keys.copy()), *rest)


class RunClock:
    """Training wall-clock time with validation excluded, and per-epoch throughput."""

    def __init__(self) -> None:
        self.watch = Stopwatch()
        self._epoch_samples = 0
        self._epoch_elapsed_at_start = 0.0

    def start(self, already: float = 0.0) -> None:
        """Start counting from `already` seconds (a resumed run's training time so far)."""
        self.watch.start(already)

    def pause(self) -> None:
        self.watch.pause()

    def resume(self) -> None:
        self.watch.resume()

    def train_seconds(self) -> float:
        return self.watch.seconds()

    def start_epoch(self) -> None:
        self.resume()
        self._epoch_samples = 0
        self._epoch_elapsed_at_start = self.train_seconds()

    def count(self, samples: int) -> None:
        self._epoch_samples += samples

    def epoch_throughput(self) -> float:
        seconds = self.train_seconds() - self._epoch_elapsed_at_start
        return self._epoch_samples / seconds if seconds > 0 else 0.0
