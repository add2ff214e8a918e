"""lr_find(cfg) and batch_size_find(cfg): Lightning's Tuner on the run that optbench-train would train.

    optbench-lr-find optimizer=adamw               # learning-rate range test: lr_find.png, lr_find.json
    optbench-bs-find trainer=gpu model=resnet18 data=cifar10   # largest batch that fits: batch_size_find.json

Both take every group and override of optbench-train (conf/find.yaml includes conf/train.yaml) plus the
`find` node, build the same data, model and optimizer as a training run, and log one MLflow run (tag
optbench.kind = lr_find or batch_size_find) that always ends FINISHED, FAILED or KILLED. The Tuner's own
trial fits log nothing: their Trainer has no logger.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as L
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig, open_dict
from torch.optim import LBFGS

from optbench.core.errors import ConfigError
from optbench.core.files import write_json
from optbench.training.checks import apply_best, is_number, require, validate
from optbench.training.data import IndexBatches, TensorDataModule
from optbench.training.optim import optimizer_class
from optbench.training.train import build_components, build_trainer, tracking

if TYPE_CHECKING:
    from optbench.tracking import TrackedRun

log = logging.getLogger("optbench.training.finder")

KIND_TAG = "optbench.kind"
LR_MODES = ("exponential", "linear")
BATCH_SIZE_MODES = ("power", "binsearch")
# Lightning's suggestion skips the first 10 and the last recorded step and needs 2 points in between.
MIN_LR_STEPS = 13


# --- checks, before any data is loaded or any MLflow run is created ------------------------------------


def _is_count(value: object, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_single_process(cfg: DictConfig, what: str, why: str) -> None:
    s = cfg.strategy
    if s.name != "auto" or s.devices != 1 or s.num_nodes != 1:
        raise ConfigError(
            f"{what} runs in one process, and strategy={s.name} with strategy.devices={s.devices}, "
            f"strategy.num_nodes={s.num_nodes} asks for several: {why} Run it with strategy=auto (the default)."
        )


def check_lr_find(cfg: DictConfig) -> None:
    """Raise ConfigError for a `find` node or a run that the learning-rate range test cannot handle."""
    f = cfg.find
    if issubclass(optimizer_class(cfg.optimizer), LBFGS):
        raise ConfigError(
            f"optimizer={cfg.optimizer.name} cannot be range-tested: the LR range test takes one step per batch "
            "at a learning rate that grows from step to step and reads the loss after each, but L-BFGS takes up "
            "to optimizer.max_iter inner iterations per step with a line search, so its lr is a step-length "
            "scale and the curve would say nothing about a learning rate. Keep L-BFGS at optimizer.lr=1 with "
            "its line search, or run the range test with another optimizer."
        )
    _check_single_process(
        cfg,
        "The LR range test",
        "under strategy=ddp every rank would re-run this command and log its own curve, and under ddp_spawn "
        "the result stays in the worker processes. A DDP run steps on devices x batch_size examples; to test "
        "that batch, pass batch_size=<devices x batch_size>.",
    )
    require(is_number(f.min_lr) and f.min_lr > 0, f"find.min_lr must be a positive number, got {f.min_lr!r}.")
    require(
        is_number(f.max_lr) and f.max_lr > f.min_lr,
        f"find.max_lr must be a number larger than find.min_lr ({f.min_lr}), got {f.max_lr!r}.",
    )
    require(
        _is_count(f.num_training, MIN_LR_STEPS),
        f"find.num_training must be an integer of at least {MIN_LR_STEPS}, got {f.num_training!r}: the "
        "suggestion skips the first 10 and the last step of the curve and needs two points in between.",
    )
    require(f.mode in LR_MODES, f"find.mode must be one of {', '.join(LR_MODES)}, got {f.mode!r}.")
    require(
        f.early_stop_threshold is None or (is_number(f.early_stop_threshold) and f.early_stop_threshold > 1),
        "find.early_stop_threshold must be a number above 1 (stop once the smoothed loss exceeds that many times "
        f"its best) or null (never stop early), got {f.early_stop_threshold!r}.",
    )


def check_batch_size_find(cfg: DictConfig) -> None:
    """Raise ConfigError for a `find.batch_size` node or a run that the batch-size finder cannot handle."""
    b = cfg.find.batch_size
    if cfg.optimizer.get("full_batch", False):
        raise ConfigError(
            f"optimizer={cfg.optimizer.name} runs full batch (optimizer.full_batch=true): every step sees the "
            "whole training split, so there is no batch size to find. Set optimizer.full_batch=false to find "
            "the largest mini-batch that fits."
        )
    _check_single_process(
        cfg,
        "The batch-size finder",
        "Lightning's batch-size finder does not support distributed strategies. Under DDP each process holds "
        "batch_size examples, so the largest batch that fits on one GPU is also the per-process answer.",
    )
    require(b.mode in BATCH_SIZE_MODES, f"find.batch_size.mode must be power or binsearch, got {b.mode!r}.")
    for key in ("steps_per_trial", "init_val", "max_trials"):
        require(_is_count(b[key]), f"find.batch_size.{key} must be a positive integer, got {b[key]!r}.")
    require(
        _is_count(b.max_val) and b.max_val > b.init_val,
        f"find.batch_size.max_val must be an integer larger than find.batch_size.init_val ({b.init_val}), "
        f"got {b.max_val!r}.",
    )
    require(
        is_number(b.margin) and 0 <= b.margin < 1,
        f"find.batch_size.margin must be a fraction in [0, 1), got {b.margin!r}.",
    )


# --- shared pieces ---------------------------------------------------------------------------------------


def _tuner_trainer(cfg: DictConfig, output_dir: Path, **trainer_options: Any) -> L.Trainer:
    """build_trainer's Trainer for the Tuner's trial fits: no logger, no checkpoints, temp files in output_dir."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.logger = {"name": "none"}  # the Tuner's fits must not log (nor open MLflow runs)
        cfg.checkpoint.enabled = False  # nor leave checkpoints to resume
        cfg.trainer.update(
            default_root_dir=str(output_dir),  # Lightning saves (and removes) a checkpoint of the start here
            enable_model_summary=False,
            **trainer_options,
        )
    return build_trainer(cfg, None)


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _log_results(run: TrackedRun | None, metrics: dict[str, float], files: list[Path]) -> None:
    if run is None:
        return
    run.log_metrics(metrics, step=0)
    for path in files:
        run.client.log_artifact(run.run_id, str(path))


# --- learning-rate range test ----------------------------------------------------------------------------


def lr_find(cfg: DictConfig) -> dict[str, Any]:
    """Run the LR range test that `cfg` describes; return (and write to lr_find.json) what it found.

    The result holds `suggestion` (the learning rate where the smoothed training loss falls fastest, or
    None when the curve has too few finite points), the `lr` and `loss` arrays, and the paths written.
    """
    cfg = apply_best(cfg)
    validate(cfg)
    check_lr_find(cfg)
    f = cfg.find
    output_dir = Path(f.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data, datamodule, module = build_components(cfg)
    with tracking(cfg, data.fingerprint, {KIND_TAG: "lr_find"}, None) as run:
        # No validation (check_val_every_n_epoch beyond the last epoch): the test reads training losses only.
        # Enough epochs for num_training steps even when an epoch is a single batch; the run's own
        # scheduler is built at this length and then replaced by the test's growing learning rate.
        trainer = _tuner_trainer(
            cfg,
            output_dir,
            max_epochs=f.num_training,
            max_steps=f.num_training,
            check_val_every_n_epoch=f.num_training + 1,
        )
        finder = Tuner(trainer).lr_find(
            module,
            datamodule=datamodule,
            min_lr=float(f.min_lr),
            max_lr=float(f.max_lr),
            num_training=f.num_training,
            mode=f.mode,
            early_stop_threshold=f.early_stop_threshold,
            update_attr=False,
        )
        if finder is None:  # Lightning skips the test under fast_dev_run
            raise ConfigError("Lightning skipped the LR range test because trainer.fast_dev_run is set; remove it.")
        lrs = [float(lr) for lr in finder.results["lr"]]
        losses = [float(loss) for loss in finder.results["loss"]]
        suggestion = finder.suggestion()
        suggestion = None if suggestion is None else float(suggestion)
        stopped_early = len(lrs) < f.num_training
        plot_path = output_dir / "lr_find.png"
        _save_lr_plot(finder, cfg, datamodule.batch_size, suggestion, plot_path)
        result: dict[str, Any] = {
            "optimizer": cfg.optimizer.name,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "batch_size": datamodule.batch_size,
            "suggestion": suggestion,
            "min_lr": float(f.min_lr),
            "max_lr": float(f.max_lr),
            "num_training": f.num_training,
            "mode": f.mode,
            "early_stop_threshold": f.early_stop_threshold,
            "steps": len(lrs),
            "stopped_early": stopped_early,
            "lr": lrs,
            # smoothed training loss (times loss_scale) after each step; NaN/inf (diverged) as null
            "loss": [_finite_or_none(loss) for loss in losses],
            "plot": str(plot_path),
            "json": str(output_dir / "lr_find.json"),
            "run_id": run.run_id if run is not None else None,
        }
        write_json(output_dir / "lr_find.json", result)
        if run is not None:
            metrics = {"lr_find/steps": float(len(lrs))}
            if suggestion is not None:
                metrics["lr_find/suggestion"] = suggestion
            _log_results(run, metrics, [plot_path, output_dir / "lr_find.json"])
            from mlflow.entities import Metric  # only with a run: logger=none never imports MLflow

            from optbench.tracking import log_values

            now = int(time.time() * 1000)
            curve = [
                Metric(key, value, now, step)
                for step, (lr, loss) in enumerate(zip(lrs, losses))
                for key, value in (("lr_find/lr", lr), ("lr_find/loss", loss))
                if math.isfinite(value)
            ]
            log_values(run.client, run.run_id, metrics=curve)
    return result


def _save_lr_plot(finder: Any, cfg: DictConfig, batch_size: int, suggestion: float | None, path: Path) -> None:
    # A Figure on the Agg canvas, not pyplot: no GUI backend, no global state, nothing left open.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    finder.plot(suggest=True, ax=ax)
    ax.set_ylabel("Training loss (smoothed)")
    verdict = f"suggested lr {suggestion:.3g}" if suggestion is not None else "no suggestion"
    ax.set_title(
        f"LR range test: {cfg.optimizer.name}, {cfg.model.name} on {cfg.data.name}, batch {batch_size}: {verdict}",
        fontsize=10,
    )
    lrs = finder.results["lr"]
    if len(lrs) > 1:
        # Lightning's running average starts biased low; its suggestion ignores the first 10 steps.
        ax.axvspan(lrs[0], lrs[min(10, len(lrs) - 1)], color="grey", alpha=0.15, label="smoothing warm-up (ignored)")
    if suggestion is not None:
        ax.axvline(suggestion, color="red", linestyle="--", linewidth=0.8, label=f"suggestion {suggestion:.3g}")
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, dpi=120)


# --- batch-size finder -----------------------------------------------------------------------------------


class _SizedTensorDataModule(TensorDataModule):
    """TensorDataModule whose training batches tell Lightning the split they slice (as `.dataset`).

    Lightning's batch-size finder stops doubling once a batch holds the whole dataset, which it learns from
    the loader's `dataset`; IndexBatches has none, and without it the finder would keep "succeeding" with
    ever larger batches that are all the same full-split batch.
    """

    def train_dataloader(self) -> IndexBatches:
        batches = super().train_dataloader()
        batches.dataset = self.data.train  # type: ignore[attr-defined]
        return batches


def batch_size_find(cfg: DictConfig) -> dict[str, Any]:
    """Find the largest training batch that runs (without running out of memory); write batch_size_find.json.

    On CPU nothing runs out of memory in a way the finder can catch: it only stops at the training split's
    size, find.batch_size.max_trials or find.batch_size.max_val, and the result says nothing about memory.
    """
    cfg = apply_best(cfg)
    validate(cfg)
    check_batch_size_find(cfg)
    b = cfg.find.batch_size
    output_dir = Path(cfg.find.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data, plain_datamodule, module = build_components(cfg)
    datamodule = _SizedTensorDataModule(
        data, plain_datamodule.batch_size, seed=plain_datamodule.seed, augment=plain_datamodule.augment
    )
    n_train = len(data.train)
    with tracking(cfg, data.fingerprint, {KIND_TAG: "batch_size_find"}, None) as run:
        trainer = _tuner_trainer(cfg, output_dir)
        if trainer.num_devices * trainer.num_nodes > 1:  # e.g. strategy.devices=auto on a multi-GPU machine
            raise ConfigError(
                "The batch-size finder runs in one process; set strategy.devices=1 (Lightning picked "
                f"{trainer.num_devices} devices x {trainer.num_nodes} nodes)."
            )
        on_cpu = isinstance(trainer.accelerator, CPUAccelerator)
        warning = None
        if on_cpu:
            warning = (
                "accelerator is cpu: the batch-size finder looks for the largest batch that fits in GPU memory, "
                "and on CPU memory rarely runs out in a way it can catch (the system swaps, or kills the "
                "process, before an allocation fails), so it just doubles the batch "
                f"until the training split ({n_train} examples), find.batch_size.max_trials "
                f"({b.max_trials}) or find.batch_size.max_val ({b.max_val}) stops it. The result says "
                "nothing about memory; run with trainer=gpu on the GPU you will train on."
            )
            log.warning(warning)  # one line, next to the result (also in batch_size_find.json)
        found = Tuner(trainer).scale_batch_size(
            module,
            datamodule=datamodule,
            mode=b.mode,
            steps_per_trial=b.steps_per_trial,
            init_val=b.init_val,
            max_trials=b.max_trials,
            margin=float(b.margin),
            max_val=b.max_val,
        )
        if found is None:  # Lightning skips the search under fast_dev_run
            raise ConfigError("Lightning skipped the batch-size finder because trainer.fast_dev_run is set; remove it.")
        # Lightning stops once a batch holds the whole split and may then answer up to twice the split.
        batch_size = min(int(found), n_train)
        result: dict[str, Any] = {
            "batch_size": batch_size,
            "lightning_batch_size": int(found),
            "train_size": n_train,
            "accelerator": "cpu" if on_cpu else type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
            "mode": b.mode,
            "init_val": b.init_val,
            "max_trials": b.max_trials,
            "max_val": b.max_val,
            "steps_per_trial": b.steps_per_trial,
            "optimizer": cfg.optimizer.name,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "precision": cfg.precision.name,
            "warning": warning,
            "json": str(output_dir / "batch_size_find.json"),
            "run_id": run.run_id if run is not None else None,
        }
        write_json(output_dir / "batch_size_find.json", result)
        _log_results(run, {"batch_size_find/batch_size": float(batch_size)}, [output_dir / "batch_size_find.json"])
    return result
