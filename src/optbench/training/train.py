"""train(cfg) -> metrics: one training run as a config describes it, tracked in MLflow.

Reads top to bottom as the pipeline: apply tuned settings, validate, build data, model and module, open
the MLflow run, build the Trainer, fit, test, write metrics.json. optbench-train (optbench.cli.train) is
the command-line wrapper.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from optbench.core import timings
from optbench.core.errors import ConfigError, RunInterrupted
from optbench.core.files import write_json
from optbench.training.callbacks import SaveFinalParams, save_params
from optbench.training.checks import apply_best, validate
from optbench.training.console import ProgressBar
from optbench.training.data import Dataset, TensorDataModule, load_dataset
from optbench.training.models import build_model, num_parameters
from optbench.training.module import OptbenchModule
from optbench.training.resume import plan_resume
from optbench.training.schema import OPTBENCH_TRAINER_KEYS

if TYPE_CHECKING:
    from optbench.tracking import TrackedRun

log = logging.getLogger("optbench.training.train")


def train(
    cfg: DictConfig, *, callbacks: Sequence[Callback] = (), tags: dict[str, str] | None = None
) -> dict[str, float]:
    """Train one model as `cfg` says, test it, and return the final metrics (also in metrics.json).

    `callbacks` join the Trainer's (the tuner passes Optuna's pruning callback); `tags` join the MLflow
    run's (the tuner makes each trial a child of its study's run).
    """
    timings.begin()
    cfg = apply_best(cfg)
    validate(cfg)
    check_writable(cfg.metrics_path, cfg.get("params_path"))
    resume = plan_resume(cfg)
    data, datamodule, module = build_components(cfg)
    if cfg.get("params_path"):
        callbacks = [*callbacks, SaveFinalParams(cfg.params_path)]
    if resume is not None:
        callbacks = [*callbacks, *resume.callbacks(cfg)]
    signals = SignalsStopTheRun()
    callbacks = [*callbacks, signals]
    with (
        signals.installed(),
        tracking(cfg, data.fingerprint, tags, run_id=resume.run_id if resume else None) as run,
    ):
        if resume is not None:
            resume.started(run.run_id if run is not None else None)
        trainer = build_trainer(cfg, run, callbacks)
        with timings.phase("compute"):
            fit(trainer, module, datamodule, resume.ckpt_path if resume else None)
        signals.raise_pending()
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
        with timings.phase("compute"):
            trainer.test(module, datamodule=datamodule, verbose=False)  # resets callback_metrics
        metrics.update({key: float(value) for key, value in trainer.callback_metrics.items()})
        diverged = metrics.get("train/diverged", 0.0) > 0
        if run is not None:
            run.outcome = "diverged" if diverged else "completed"
            metrics["run_id"] = run.run_id  # type: ignore[assignment]
            if cfg.logger.get("log_model", False):
                with timings.phase("tracking"):
                    log_final_model(run, module)
    if diverged:
        log.warning("The loss became NaN or infinite: the run stopped and is recorded as diverged.")
    if rank_zero_only.rank == 0:
        write_json(cfg.metrics_path, metrics)
    if resume is not None:
        resume.finished()
    return metrics


def tracking(
    cfg: DictConfig, fingerprint: str, tags: dict[str, str] | None, run_id: str | None
) -> AbstractContextManager[TrackedRun | None]:
    """The run's MLflow run (optbench.tracking.run_for), or None without importing MLflow at all when the
    config logs elsewhere: MLflow takes over a second to import, a short run with logger=none does not."""
    if cfg.logger.name != "mlflow":
        return nullcontext(None)
    with timings.phase("tracking"):
        from optbench.tracking import run_for

    return timings.timed_context(run_for(cfg, fingerprint, tags, run_id=run_id), "tracking")


class SignalsStopTheRun(Callback):
    """Ctrl-C (SIGINT) and SIGTERM end the run KILLED (exit 130 / 143) whenever they arrive. While a trainer
    fits, the run stops at the next batch boundary (Lightning's own SIGTERM handler, which calls this one
    after its own, does so for SIGTERM; this callback for SIGINT), so a checkpoint is written; at any other
    moment, or at a second Ctrl-C, it stops at once.

    Hand-written because Python raises KeyboardInterrupt wherever the main thread happens to be, and one
    that lands in a finalizer or a library's cleanup is printed and dropped: the run then finishes as if
    nobody had pressed Ctrl-C."""

    def __init__(self) -> None:
        self.fitting = False
        self.pending: RunInterrupted | None = None
        self.preemption = preemption_signal()
        self.preempted = False

    @contextmanager
    def installed(self) -> Iterator[SignalsStopTheRun]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        signums = (signal.SIGINT, signal.SIGTERM, *([self.preemption] if self.preemption else []))
        previous = {signum: signal.signal(signum, self._handler) for signum in signums}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self.preempted and callable(previous.get(self.preemption)):
                log.warning("Preempted: the checkpoint is written; the job requeues itself and resumes this run.")
                previous[self.preemption](self.preemption, None)  # submitit's: `scontrol requeue`, then exit

    def _handler(self, signum: int, frame: Any) -> None:
        if signum == self.preemption:
            # A time limit or preemption is near (SLURM sends the signal submitit asked for): stop at the next
            # batch boundary with a checkpoint, exactly as on SIGTERM, then let submitit requeue the job.
            self.preempted = True
            signum = signal.SIGTERM
            if self.fitting:
                signal.raise_signal(signal.SIGTERM)  # Lightning's handler and this one: stop at a batch boundary
                return
        stop = RunInterrupted("SIGINT", 130) if signum == signal.SIGINT else RunInterrupted("SIGTERM", 143)
        if self.fitting and self.pending is None:
            self.pending = stop  # SIGTERM: Lightning's handler has flagged it too; the fit loop raises first
            return
        raise stop

    def _stop_if_signalled(self, *args: Any) -> None:
        if self.pending is not None and self.pending.signal_name == "SIGINT":
            raise self.pending

    on_train_batch_end = on_validation_batch_end = on_train_epoch_end = _stop_if_signalled

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fitting = True
        self._stop_if_signalled()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.fitting = False

    def raise_pending(self) -> None:
        """A signal that arrived after the fit loop's last batch boundary stops the run now."""
        if self.pending is not None:
            raise self.pending


def preemption_signal() -> signal.Signals | None:
    """The signal SLURM sends a job that submitit started (hydra/launcher=slurm) before its time limit or a
    preemption (submitit's `--signal`, SUBMITIT_PREEMPT_SIGNAL, USR2 unless set); None outside such a job."""
    if "SUBMITIT_FOLDER" not in os.environ:
        return None
    return signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2').removeprefix('SIG')}"]


def fit(trainer: L.Trainer, module: OptbenchModule, datamodule: TensorDataModule, ckpt_path: str | None) -> None:
    """Trainer.fit, with interruptions made honest: Lightning turns Ctrl-C into sys.exit(1) and SIGTERM into
    SIGTERMException (a SystemExit); both become RunInterrupted, a KeyboardInterrupt, so the MLflow run ends
    KILLED, an Optuna trial FAIL, and the command exits 130 (SIGINT) or 143 (SIGTERM)."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        raise RunInterrupted("SIGTERM", 143) from None
    except SystemExit as exit:
        if trainer.interrupted:
            raise RunInterrupted("SIGINT", 130) from None
        raise exit


def log_final_model(run: TrackedRun, module: OptbenchModule) -> None:
    """The trained model's parameters (state_dict, CPU tensors) as the run's artifact model/final.pt."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "final.pt"
        save_params(path, module.model)
        run.client.log_artifact(run.run_id, str(path), artifact_path="model")


def check_writable(*paths: str | None) -> None:
    """Fail before training, not after, when an output file cannot be written."""
    for path in filter(None, paths):
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            probe = target.with_name(f".{target.name}.{os.getpid()}.probe")
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"cannot write {path} ({err.strerror or err}): choose a writable location.") from None


def build_components(cfg: DictConfig) -> tuple[Dataset, TensorDataModule, OptbenchModule]:
    """Seed, then build the data split, its data module and the LightningModule that `cfg` describes."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = load_dataset(cfg.data)
    log.info("Data: %s, %d/%d/%d train/val/test examples", data.name, len(data.train), len(data.val), len(data.test))
    batch_size = len(data.train) if cfg.optimizer.get("full_batch", False) else cfg.batch_size
    channels_last = cfg.trainer.get("channels_last", False)
    datamodule = TensorDataModule(
        data,
        batch_size,
        seed=cfg.seed,
        augment=cfg.data.get("augment", False),
        on_device=cfg.trainer.get("data_on_device", True),
        channels_last=channels_last,
    )
    model = build_model(cfg.model, data)
    log.info("Model: %s, %d parameters", cfg.model.name, num_parameters(model))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.trainer.get("compile", False):
        model.compile()  # in place: the state_dict keeps its keys, so checkpoints and params files do too
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


def build_trainer(cfg: DictConfig, run: TrackedRun | None, callbacks: Sequence[Callback] = ()) -> L.Trainer:
    """Lightning's Trainer from the trainer, precision, strategy and logger groups."""
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in OPTBENCH_TRAINER_KEYS:  # applied by build_components, not Lightning's
        options.pop(key, None)
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
        logger.log_metrics = timings.timed(logger.log_metrics, "tracking")  # MLflow I/O, not computation
    elif cfg.logger.name == "csv":
        logger = CSVLogger(save_dir=str(Path(cfg.metrics_path).parent), name="csv")
    else:
        logger = False
    if options.get("enable_progress_bar", True):
        callbacks = [*callbacks, ProgressBar()]  # loss and validation accuracy, not Lightning's v_num
    return L.Trainer(
        **options,
        precision=precision,
        plugins=plugins,
        strategy=strategy_obj,
        devices=strategy.devices,
        num_nodes=strategy.num_nodes,
        logger=logger,
        callbacks=list(callbacks),
        enable_checkpointing=bool(cfg.checkpoint.enabled),  # checkpoint.*: optbench's resumable checkpoints
    )
