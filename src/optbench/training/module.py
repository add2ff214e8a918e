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
    amp/loss_scale, amp/skipped_steps (fp16). train/steps, train/diverged and the optimizer/* sizes are logged
    once, when training ends (they are totals, not curves).

    Training-time scalars go to the loggers through `_record`, not `self.log`; see there why.
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
            self.val_acc = MulticlassAccuracy(num_classes, average="micro")
            self.test_acc = MulticlassAccuracy(num_classes, average="micro")
            self.val_acc_best = MaxMetric()
            self.val_acc_best.persistent(True)  # in checkpoints: a resumed run continues it
        self.register_buffer("optimum", optimum, persistent=False)
        # The epoch's training accuracy as two running counts on the device: a torchmetrics update costs about
        # 0.35 ms of Python a step, as much as a small model's whole step. In checkpoints (a resumed run
        # continues them mid-epoch); summed over ranks at the epoch's end.
        self._train_correct: Tensor | None = None
        self._train_seen = 0
        self._eval_loss: Tensor | None = None  # sum of loss x batch size over the evaluation's batches
        self._eval_seen = 0
        self._nonfinite: Tensor | None = None  # a non-finite loss seen since the last check (accelerators)
        self._pending: dict[str, Tensor] = {}  # recorded, not yet written to the loggers
        self._pending_step = 0
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
            # Skip the update; L-BFGS evaluates its closure several times and needs a number back.
            return loss if isinstance(self.trainer.optimizers[0], LBFGS) else None
        if self._logging_step():
            metrics = {"train/loss": loss, "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"]}
            if self.optimum is not None:
                metrics["train/dist_to_opt"] = self._distance_to_optimum()
            self._record(metrics)
        elif self.trainer.is_last_batch:
            self._record({"train/loss": loss})
        if not self.is_regression:  # the epoch's accuracy, logged at its end (the train-test gap)
            correct = (out.detach().argmax(dim=-1) == y).sum()
            self._train_correct = correct if self._train_correct is None else self._train_correct + correct
            self._train_seen += len(y)
        self._clock.count(len(y) * self.trainer.world_size)
        return loss * self.loss_scale

    def _is_diverged(self, loss: Tensor) -> bool:
        """A NaN or infinite loss: the step is skipped and the run stops. On the CPU every step is checked
        (microseconds). On an accelerator a check is a host sync, so each step only sets a flag on the
        device, read with the logged values in one transfer (`_flush`, on logging steps and each epoch's
        last): a divergence there stops the run a few steps later, still recorded as diverged. Under DDP
        the ranks agree on logging steps (a collective sync anyway)."""
        if loss.device.type == "cpu":
            bad = not bool(torch.isfinite(loss))
        else:
            nonfinite = ~torch.isfinite(loss.detach())
            self._nonfinite = nonfinite if self._nonfinite is None else self._nonfinite | nonfinite
            if self.trainer.world_size == 1 or not (self._logging_step() or self.trainer.is_last_batch):
                return False
            bad, self._nonfinite = bool(self._nonfinite), None
        if self.trainer.world_size > 1:  # every rank must skip the same step, or DDP hangs
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        return bad

    def _logging_step(self) -> bool:
        return (self.global_step + 1) % self.trainer.log_every_n_steps == 0 or self.global_step == 0

    def _record(self, metrics: dict[str, Tensor | float]) -> None:
        """Training-time scalars for the loggers (rank 0, one write per step: `_flush`) and for
        trainer.callback_metrics, which train() reads back (from ddp_spawn's ranks too: Lightning sends them).

        Written by hand because Lightning's self.log costs about 1.3 ms a call on the CPU (its
        _ResultCollection moves the whole _ResultMetric with apply_to_collection on every call): on a small
        model that was more than the step itself. What self.log would add, epoch-level reduction and
        syncing, these values do not need: each is already the value to log (train/acc is summed over the
        ranks before it comes here). Tensors stay on their device until `_flush` reads them all at once."""
        values = {
            key: value.detach() if isinstance(value, Tensor) else torch.tensor(float(value), dtype=torch.float64)
            for key, value in metrics.items()
        }
        self.trainer.callback_metrics.update(values)
        if not self._pending:
            self._pending_step = self.global_step
        self._pending.update(values)

    def _flush(self) -> None:
        """Write the recorded values to the loggers, reading them (and an accelerator's divergence flag)
        from the device in one transfer: one host sync per logging step, none on the steps between."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        keys = list(pending)
        on_device = [key for key in keys if pending[key].device.type != "cpu"]
        flag = self._nonfinite if self.trainer.world_size == 1 else None
        if on_device or flag is not None:
            tensors = [pending[key].to(torch.float64).reshape(()) for key in on_device]
            if flag is not None:
                tensors.append(flag.to(torch.float64).reshape(()))
            read = torch.stack(tensors).tolist()
            if flag is not None:
                self._nonfinite = None
                if read.pop() > 0:  # an earlier step's loss was NaN or infinite
                    self.diverged = True
                    self.trainer.should_stop = True
            pending.update({key: torch.tensor(value, dtype=torch.float64) for key, value in zip(on_device, read)})
        if self.trainer.is_global_zero:
            scalars = {key: float(pending[key]) for key in keys}
            for logger in self.loggers:
                logger.log_metrics(scalars, step=self._pending_step)

    def _distance_to_optimum(self) -> Tensor:
        return distance_to_optimum(self.model, self.optimum)

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        # Runs after backward and after AMP unscaling, before clipping: the raw gradient norm.
        if self._logging_step():
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            if grads:
                self._record({"train/grad_norm": torch.nn.utils.get_total_norm(grads)})

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._record_loss_scale()
        self._flush()

    def _record_loss_scale(self) -> None:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is None:
            return
        # GradScaler halves its scale exactly when it found inf/NaN gradients and skipped the step.
        scale = float(scaler.get_scale())
        if self._last_loss_scale is not None and scale < self._last_loss_scale:
            self._skipped_steps += 1
        self._last_loss_scale = scale
        if self._logging_step() or self.trainer.is_last_batch:
            self._record({"amp/loss_scale": scale, "amp/skipped_steps": float(self._skipped_steps)})

    def on_train_start(self) -> None:
        self._clock.start(self._resumed_seconds)

    # --- checkpoints: what a resumed run needs beyond weights, optimizer, schedule and scaler -------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["optbench"] = {
            "train_seconds": self._clock.train_seconds(),
            "diverged": self.diverged,
            "skipped_steps": self._skipped_steps,
            "last_loss_scale": self._last_loss_scale,
            "train_correct": 0 if self._train_correct is None else int(self._train_correct),
            "train_seen": self._train_seen,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _numpy_state()},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("optbench")
        if state is None:  # a checkpoint from elsewhere: weights and optimizer only
            return
        self._resumed_seconds = state["train_seconds"]
        self.diverged, self._skipped_steps = state["diverged"], state["skipped_steps"]
        self._last_loss_scale = state["last_loss_scale"]
        self._train_correct = torch.tensor(state.get("train_correct", 0), device=self.device)
        self._train_seen = state.get("train_seen", 0)
        torch.set_rng_state(state["rng"]["torch"])  # dropout draws continue where they stopped
        random.setstate(state["rng"]["python"])
        kind, keys, *rest = state["rng"]["numpy"]
        np.random.set_state((kind, keys.numpy(), *rest))

    def on_train_epoch_start(self) -> None:
        self._clock.start_epoch()

    def on_train_epoch_end(self) -> None:
        metrics = {"train/samples_per_sec": self._clock.epoch_throughput()}
        if not self.is_regression and self._train_correct is not None:
            metrics["train/acc"] = self._mean_over_ranks(self._train_correct, self._train_seen)
            self._train_correct, self._train_seen = None, 0
        self._record(metrics)
        self._flush()

    def _mean_over_ranks(self, total: Tensor, count: int) -> float:
        """sum(total) / sum(count) over every rank, read from the device once."""
        sums = torch.stack([total.double(), torch.tensor(float(count), dtype=torch.float64, device=total.device)])
        summed, counted = self.trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        return summed / counted

    def on_train_end(self) -> None:
        # Totals of the whole run, logged once: as curves they are flat lines.
        optimizer = self.trainer.optimizers[0]
        param_bytes = sum(p.numel() * p.element_size() for p in self.parameters())
        held = state_bytes(optimizer)
        self._record(
            {
                "train/steps": float(self.global_step),  # read back by train(), also from spawned ranks
                "train/diverged": float(self.diverged),
                "optimizer/state_bytes": float(held),
                "optimizer/state_to_param_ratio": held / param_bytes,
            }
        )
        self._flush()

    # --- evaluation: per-batch sums on the device, logged once per epoch ----------------------------------

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        out = self(x)
        loss = self.criterion(out, y).detach() * len(y)
        self._eval_loss = loss if self._eval_loss is None else self._eval_loss + loss
        self._eval_seen += len(y)
        if not self.is_regression:
            (self.val_acc if stage == "val" else self.test_acc).update(out, y)

    def _start_evaluation(self, stage: str) -> None:
        self._eval_loss, self._eval_seen = None, 0
        if not self.is_regression:
            (self.val_acc if stage == "val" else self.test_acc).reset()

    def _log_evaluation(self, stage: str) -> float | None:
        """Log <stage>/loss (the mean over every example, all ranks) and <stage>/acc; return the accuracy."""
        if self._eval_loss is None:
            return None
        # sync_dist: every rank holds the same mean already; it only tells Lightning so.
        loss = self._mean_over_ranks(self._eval_loss, self._eval_seen)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True)
        if self.is_regression:
            return None
        value = (self.val_acc if stage == "val" else self.test_acc).compute()  # torchmetrics syncs the ranks
        self.log(f"{stage}/acc", value, prog_bar=stage == "val", sync_dist=True)
        return value

    def on_validation_epoch_start(self) -> None:
        self._clock.pause()
        self._start_evaluation("val")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # its sums are dropped when the first real validation starts
            return
        accuracy = self._log_evaluation("val")
        if accuracy is not None:
            self.val_acc_best(accuracy)
            self.log("val/acc_best", self.val_acc_best.compute())
        self.log("time/train_s", self._clock.train_seconds())
        self._clock.resume()

    def on_test_epoch_start(self) -> None:
        self._start_evaluation("test")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

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
