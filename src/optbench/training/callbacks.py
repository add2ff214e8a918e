"""Training callbacks that instrument a run without changing it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback

from optbench.core.errors import ConfigError
from optbench.core.files import atomic_path
from optbench.core.stopwatch import Stopwatch
from optbench.training.models import distance_to_optimum


class DistanceClock(Callback):
    """After every optimizer step: the distance to the optimum, the examples seen and the training seconds.

    The seconds leave out validation, the loggers' writes and this clock's own measuring. The module's
    logging would not do: it logs the distance only every trainer.log_every_n_steps steps and the time
    once an epoch, and one MLflow write costs as much as ten or more steps of the linear model, so timing
    it would time the instrument rather than the batch size. `curve` keeps [step, examples,
    seconds, distance] every `every` steps (and the first and last); the crossing of `eps` is exact."""

    def __init__(self, eps: float, every: int) -> None:
        self.eps, self.every = eps, every
        self.examples = self.epochs = 0
        self.curve: list[list[float]] = []
        self.reached: tuple[int, int, float] | None = None
        self.watch = Stopwatch()
        self.seconds, self.pause, self.resume = self.watch.seconds, self.watch.pause, self.watch.resume

    def _untimed(self, log_metrics: Callable) -> Callable:
        def log_untimed(*args: Any, **kwargs: Any) -> Any:
            self.pause()
            try:
                return log_metrics(*args, **kwargs)
            finally:
                self.resume()

        return log_untimed

    def _record(self, step: int, pl_module: L.LightningModule, last: bool = False) -> None:
        distance = float(distance_to_optimum(pl_module.model, pl_module.optimum))
        point = [step, self.examples, self.seconds(), distance]
        if self.reached is None and distance <= self.eps:
            self.reached = (step, self.examples, point[2])
        if step % self.every == 0 or last:
            self.curve.append(point)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.optimum is None:
            raise ConfigError("The convex part of batch_size_scaling needs data=regression (a known optimum).")
        for logger in trainer.loggers:
            logger.log_metrics = self._untimed(logger.log_metrics)  # this run's logger instance only
        self.watch.start()
        self.pause()
        self._record(trainer.global_step, pl_module)
        self.resume()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.pause()
        self.examples += len(batch[1])
        self._record(trainer.global_step, pl_module)
        self.resume()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs += 1

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:  # the sanity check runs before training starts the clock
            self.pause()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.resume()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pause()  # for good: the test pass that follows is not training
        if self.curve[-1][0] != trainer.global_step:
            self._record(trainer.global_step, pl_module, last=True)


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
