"""How much does optbench (Hydra config + Lightning + its metrics) cost over a hand-written PyTorch loop?

    .venv/bin/python benchmarks/overhead.py                     # cnn on mnist5k, adamw, 3 epochs x 3 repeats
    .venv/bin/python benchmarks/overhead.py --epochs 4 --repeats 5 --model mlp --data digits

Three loops train the same model (optbench.training.models.build_model from the same composed config), on the same
tensors (optbench.training.data.load_dataset), with the same optimizer (optbench.training.optim.build_optimizer), batch size,
seed, batch order, number of optimizer steps and torch.use_deterministic_algorithms setting:

* plain     per epoch: randperm, one gather x[perm], slice batches, forward, cross-entropy, zero_grad,
            backward, step. The reference: what optbench's IndexBatches feeds Lightning, without Lightning.
* optbench  optbench.training.train.train(cfg) itself (logger=none, no progress bar). Training time is optbench's
            own clock (RunClock: validation paused out; time/train_s at the end), split into epochs at
            each on_train_epoch_start, so Lightning's work between epochs counts too.
* loader    the naive alternative to slicing: DataLoader(TensorDataset(x, y), batch_size, shuffle=True).

The first epoch of every run is warm-up and left out (with --epochs 1 it is kept), and one warm-up run of
each loop precedes the measurements. The loops then run interleaved, in rotating order, --repeats times.
Two estimates of each loop's time over the measured epochs, both compared as ratios to plain:

* train s   the median over repeats of the measured epochs' wall time (for optbench: from time/train_s).
* steps s   step by step: the time from one step's loss to the next step's loss, for every step of the
            measured epochs, the median over repeats of each step, summed. A burst of load from another
            process spoils a few steps of one repeat and the per-step median drops them, where it would
            move a whole total; every step (logging steps too) still counts. This is the headline. It
            leaves out once-per-epoch work (the reshuffle, Lightning's epoch hooks), which train s keeps.

    ratio = plain seconds / loop seconds   (1.0 = as fast as plain; 0.95 = 5% slower than plain)

It is a benchmark, not a test: it exits 0 whatever the ratio.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait (libgomp's default) collapse when another process wants the same
# cores: on a busy 2-core machine the same CNN epoch took 2 to 20 s, against 1.8-2.1 s waiting passively.
# It applies to every loop alike. Must be set before torch loads; OMP_WAIT_POLICY=ACTIVE overrides.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import ctypes  # noqa: E402
import ctypes.util  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import lightning.pytorch as L  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import optbench.training.module  # noqa: E402
import optbench.training.train  # noqa: E402
from optbench.core.config import compose_config  # noqa: E402
from optbench.core.logs import quiet_known_warnings  # noqa: E402
from optbench.training.data import Dataset, load_dataset  # noqa: E402
from optbench.training.models import build_model  # noqa: E402
from optbench.training.optim import build_optimizer  # noqa: E402

GOAL = 0.95  # CPU, the default CNN
GOAL_GPU = 0.95  # CUDA, CIFAR-10/ResNet-18
console = Console(highlight=False)


# --- configuration ----------------------------------------------------------------------------------


def benchmark_config(args: argparse.Namespace, out_dir: Path) -> DictConfig:
    return compose_config(
        *[
            f"model={args.model}",
            f"data={args.data}",
            f"optimizer={args.optimizer}",
            "scheduler=constant",
            "precision=32-true",
            "strategy=auto",
            f"trainer={'gpu' if args.accelerator == 'gpu' else 'cpu'}",
            f"trainer.compile={str(args.compile).lower()}",
            f"trainer.channels_last={str(args.channels_last).lower()}",
            "logger=none",
            f"batch_size={args.batch_size}",
            f"seed={args.seed}",
            f"trainer.max_epochs={args.epochs}",
            "trainer.enable_progress_bar=false",
            f"metrics_path={out_dir / 'metrics.json'}",
            *args.override,
        ]
    )


def check_supported(cfg: DictConfig) -> None:
    """The plain loops reproduce the default training path only; refuse what they would not match."""
    problems = []
    if cfg.trainer.accelerator not in ("cpu", "gpu"):
        problems.append(f"trainer.accelerator={cfg.trainer.accelerator} (the loops run on cpu or gpu)")
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        problems.append("--accelerator gpu without a CUDA device")
    if cfg.trainer.accumulate_grad_batches != 1 or cfg.trainer.gradient_clip_val is not None:
        problems.append("gradient accumulation or clipping")
    if cfg.optimizer.get("full_batch", False) or cfg.optimizer.name == "lbfgs":
        problems.append(f"optimizer={cfg.optimizer.name} (closure / full batch)")
    if cfg.scheduler.name != "constant" or cfg.precision.name != "32-true" or cfg.strategy.name != "auto":
        problems.append("a scheduler, precision or strategy other than constant / 32-true / auto")
    if cfg.data.get("augment", False):
        problems.append("data.augment=true")
    if cfg.trainer.limit_train_batches is not None or cfg.trainer.max_steps not in (-1, None):
        problems.append("trainer.limit_train_batches / max_steps")
    if problems:
        sys.exit("overhead.py compares the default training path only; unsupported: " + "; ".join(problems))


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap instead of handing it back to the kernel after every step.

    With glibc's defaults, the tens of MB of activations a CNN step allocates and frees are trimmed from
    the heap and page-faulted in again on the next step (measured here: 350k-900k minor page faults and
    1-2 s of system time per 3-epoch run; about 3,500 with this). How much depends on what the process
    allocated before, so in one process a loop run after another gets a different heap: it moved the
    comparison by 5-20% either way. Fixed thresholds (what MALLOC_MMAP_THRESHOLD_=33554432 and
    MALLOC_TRIM_THRESHOLD_=1073741824 set) put every loop on the same terms. False where it cannot apply.
    """
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or not name:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):  # musl
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30))


# --- the loops ----------------------------------------------------------------------------------------


class Result:
    """One run: per-epoch training seconds, per-epoch step marks, optimizer steps, last training loss.

    step_marks[e] holds the perf_counter readings taken right after each step's loss in epoch e;
    consecutive readings are one full step apart (backward, optimizer step, hooks, next batch, forward).
    """

    def __init__(
        self,
        epoch_seconds: list[float],
        step_marks: list[list[float]],
        steps: int,
        samples_per_epoch: int,
        last_loss: float,
    ) -> None:
        self.epoch_seconds, self.step_marks, self.steps = epoch_seconds, step_marks, steps
        self.samples_per_epoch, self.last_loss = samples_per_epoch, last_loss

    @property
    def skip(self) -> int:
        """Warm-up epochs left out: the first, unless it is the only one."""
        return 1 if len(self.epoch_seconds) > 1 else 0

    @property
    def measured_epochs(self) -> int:
        return len(self.epoch_seconds) - self.skip

    @property
    def seconds(self) -> float:
        return sum(self.epoch_seconds[self.skip :])

    @property
    def step_seconds(self) -> list[float]:
        """Step-to-step times of the measured epochs, in order."""
        return [b - a for marks in self.step_marks[self.skip :] for a, b in zip(marks, marks[1:])]


def prepare(cfg: DictConfig) -> tuple[Dataset, nn.Module, torch.optim.Optimizer, nn.Module]:
    """Seed, data, model, optimizer and loss, in the order optbench.training.train.train creates them."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(bool(cfg.trainer.deterministic))  # what Trainer(deterministic=...) sets
    torch.backends.cudnn.benchmark = bool(cfg.trainer.get("benchmark", False))
    data = load_dataset(cfg.data)
    model = build_model(cfg.model, data).to(device(cfg))
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.trainer.compile:
        model.compile()
    model.train()
    optimizer = build_optimizer(cfg.optimizer, model)
    criterion = nn.MSELoss() if data.is_regression else nn.CrossEntropyLoss()
    return data, model, optimizer, criterion


def device(cfg: DictConfig) -> torch.device:
    return torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")


def synchronize(cfg: DictConfig) -> None:
    """Wait for the GPU's queued work, so that an epoch's time is its computation's (no-op on CPU)."""
    if cfg.trainer.accelerator == "gpu":
        torch.cuda.synchronize()


def normalizer(data: Dataset, cfg: DictConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-batch uint8 -> float normalization TensorDataModule applies (identity for embedded data),
    then channels_last for 4-D batches when the config asks for it, as the module does."""
    last = cfg.trainer.channels_last
    layout = (lambda x: x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x) if last else None
    if not data.mean:
        return layout or (lambda x: x)
    on = device(cfg)
    mean, std = torch.tensor(data.mean, device=on).view(-1, 1, 1), torch.tensor(data.std, device=on).view(-1, 1, 1)
    if layout:
        return lambda x: layout((x.float().div(255) - mean) / std)
    return lambda x: (x.float().div(255) - mean) / std


def run_plain(cfg: DictConfig) -> Result:
    data, model, optimizer, criterion = prepare(cfg)
    normalize, batch_size = normalizer(data, cfg), cfg.batch_size
    on = device(cfg)  # in-memory data lives there, as optbench's trainer.data_on_device puts it
    x_all, y_all, n = data.train.x.to(on), data.train.y.to(on), len(data.train)
    generator = torch.Generator().manual_seed(cfg.seed)  # IndexBatches' seed: the same batch order
    epoch_seconds, step_marks, steps, loss = [], [], 0, torch.tensor(math.nan)
    for _ in range(cfg.trainer.max_epochs):
        synchronize(cfg)
        start, marks = time.perf_counter(), []
        perm = torch.randperm(n, generator=generator).to(on)
        x, y = x_all[perm], y_all[perm]
        for i in range(0, n, batch_size):
            xb, yb = normalize(x[i : i + batch_size]), y[i : i + batch_size]
            loss = criterion(model(xb), yb)
            marks.append(time.perf_counter())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        synchronize(cfg)
        epoch_seconds.append(time.perf_counter() - start)
        step_marks.append(marks)
    return Result(epoch_seconds, step_marks, steps, n, loss.item())


def run_loader(cfg: DictConfig) -> Result:
    data, model, optimizer, criterion = prepare(cfg)
    normalize = normalizer(data, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        TensorDataset(data.train.x, data.train.y), batch_size=cfg.batch_size, shuffle=True, generator=generator
    )
    epoch_seconds, step_marks, steps, loss = [], [], 0, torch.tensor(math.nan)
    for _ in range(cfg.trainer.max_epochs):
        start, marks = time.perf_counter(), []
        for xb, yb in loader:
            loss = criterion(model(normalize(xb)), yb)
            marks.append(time.perf_counter())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        epoch_seconds.append(time.perf_counter() - start)
        step_marks.append(marks)
    return Result(epoch_seconds, step_marks, steps, len(data.train), loss.item())


class RunClockProbe:
    """Reads optbench's own training clock (RunClock) while train() runs. Instrumentation only.

    Wraps two RunClock methods; each wrapper calls the original first and changes nothing it computes:
    start_epoch (at on_train_epoch_start) to read the clock's train_seconds() at every epoch's start, and
    count (at the end of every training_step, after the loss and its logging) to mark each step.
    """

    def __init__(self) -> None:
        self.epoch_starts: list[float] = []
        self.step_marks: list[list[float]] = []
        self._originals = {name: getattr(optbench.training.module.RunClock, name) for name in ("start_epoch", "count")}

    def __enter__(self) -> RunClockProbe:
        probe, original = self, self._originals

        def start_epoch(clock: optbench.training.module.RunClock) -> None:
            original["start_epoch"](clock)
            probe.epoch_starts.append(clock._epoch_elapsed_at_start)
            probe.step_marks.append([])

        def count(clock: optbench.training.module.RunClock, samples: int) -> None:
            original["count"](clock, samples)
            probe.step_marks[-1].append(time.perf_counter())

        optbench.training.module.RunClock.start_epoch = start_epoch  # type: ignore[method-assign]
        optbench.training.module.RunClock.count = count  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._originals.items():
            setattr(optbench.training.module.RunClock, name, original)


def run_optbench(cfg: DictConfig) -> Result:
    with RunClockProbe() as probe:
        metrics = optbench.training.train.train(copy.deepcopy(cfg))
    # time/train_s is logged at the last validation, with RunClock paused: the end of training.
    boundaries = [*probe.epoch_starts, metrics["time/train_s"]]
    epoch_seconds = [b - a for a, b in zip(boundaries, boundaries[1:])]
    steps = metrics.get("train/steps", metrics.get("steps", -1))  # the key has been renamed
    return Result(epoch_seconds, probe.step_marks, int(steps), train_size(cfg), metrics.get("train/loss", math.nan))


class BareModule(L.LightningModule):
    """The least a LightningModule can be: forward, loss, return it. No logging, no metrics, no checks."""

    def __init__(self, model: nn.Module, cfg: DictConfig, criterion: nn.Module) -> None:
        super().__init__()
        self.model, self.cfg, self.criterion = model, cfg, criterion

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.criterion(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.cfg.optimizer, self.model)


class EpochTimer(L.Callback):
    """Per-epoch wall time (the GPU synchronized at both ends) and a mark after every training batch."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg, self.epoch_seconds, self.step_marks, self.loss = cfg, [], [], math.nan

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        synchronize(self.cfg)
        self.step_marks.append([])
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.step_marks[-1].append(time.perf_counter())
        self._outputs = outputs

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        synchronize(self.cfg)
        self.epoch_seconds.append(time.perf_counter() - self._start)
        self.loss = float(self._outputs["loss"])


def run_lightning(cfg: DictConfig) -> Result:
    """Lightning's own floor: BareModule in the Trainer optbench builds, fed by optbench's TensorDataModule."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data, datamodule, module = optbench.training.train.build_components(cfg)
    bare = BareModule(module.model, cfg, module.criterion)
    timer = EpochTimer(cfg)
    with open_dict(cfg):
        cfg.checkpoint.enabled = False
    trainer = optbench.training.train.build_trainer(cfg, None, [timer])
    trainer.fit(bare, datamodule=datamodule)
    return Result(timer.epoch_seconds, timer.step_marks, trainer.global_step, len(data.train), timer.loss)


_TRAIN_SIZES: dict[str, int] = {}


def train_size(cfg: DictConfig) -> int:
    key = str(cfg.data)
    if key not in _TRAIN_SIZES:
        _TRAIN_SIZES[key] = len(load_dataset(cfg.data).train)
    return _TRAIN_SIZES[key]


LOOPS: dict[str, Callable[[DictConfig], Result]] = {
    "plain": run_plain,
    "lightning": run_lightning,
    "optbench": run_optbench,
    "loader": run_loader,
}


# --- main -------------------------------------------------------------------------------------------


def quiet() -> None:
    quiet_known_warnings()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "optbench"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is warm-up (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every loop (default 3)")
    parser.add_argument("--model", default="cnn", help="model option (default cnn)")
    parser.add_argument("--data", default="mnist5k", help="data option (default mnist5k)")
    parser.add_argument("--optimizer", default="adamw", help="optimizer option (default adamw)")
    parser.add_argument("--batch-size", type=int, default=128, help="examples per optimizer step (default 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads for every loop (default 0: torch's choice)"
    )
    parser.add_argument(
        "--malloc",
        choices=("tuned", "default"),
        default="tuned",
        help="tuned (default): fixed glibc malloc thresholds, so no loop pays for another's heap; "
        "default: glibc as it comes (see tune_malloc)",
    )
    parser.add_argument("--no-loader", action="store_true", help="skip the DataLoader(TensorDataset) loop")
    parser.add_argument(
        "--accelerator", choices=("cpu", "gpu"), default="cpu", help="cpu (default) or gpu (trainer=gpu, CUDA)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in every loop")
    parser.add_argument("--channels-last", action="store_true", help="channels_last model and batches in every loop")
    parser.add_argument("--json", type=Path, help="also write the measurement to this JSON file")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="extra Hydra override (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1:
        parser.error("--epochs and --repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    malloc = "tuned" if args.malloc == "tuned" and tune_malloc() else "glibc default"
    with tempfile.TemporaryDirectory(prefix="optbench-overhead-") as tmp:
        cfg = benchmark_config(args, Path(tmp))
        check_supported(cfg)
        skip_loader = args.no_loader or args.accelerator == "gpu"  # the loader loop feeds CPU tensors
        loops = [name for name in LOOPS if not (skip_loader and name == "loader")]
        console.print(
            f"[bold]optbench overhead[/]: model={cfg.model.name} data={cfg.data.name} "
            f"optimizer={cfg.optimizer.name} batch_size={cfg.batch_size} epochs={args.epochs} "
            f"repeats={args.repeats} deterministic={cfg.trainer.deterministic} "
            f"accelerator={args.accelerator} compile={args.compile} channels_last={args.channels_last} "
            f"threads={torch.get_num_threads()} cpus={os.cpu_count()} "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} malloc={malloc}"
        )
        warmup = copy.deepcopy(cfg)
        with open_dict(warmup):
            warmup.trainer.max_epochs = 1
        for name in loops:
            LOOPS[name](warmup)

        results: dict[str, list[Result]] = {name: [] for name in loops}
        for r in range(args.repeats):
            order = loops[r % len(loops) :] + loops[: r % len(loops)]  # rotate, so no loop always goes first
            for name in order:
                results[name].append(LOOPS[name](cfg))
            line = "  ".join(f"{name} {results[name][-1].seconds:6.2f}s" for name in loops)
            console.print(f"repeat {r + 1}/{args.repeats} (train s): {line}")

    summary = report(results, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        console.print(f"written: {args.json}")
    return 0


def steps_seconds(runs: list[Result]) -> float:
    """Each step's median over the repeats, summed over the steps."""
    per_run = [run.step_seconds for run in runs]
    return sum(statistics.median(step) for step in zip(*per_run))


def report(results: dict[str, list[Result]], args: argparse.Namespace) -> dict:
    """Print the table and the ratios; return them (for --json)."""
    plain, opt = results["plain"], results["optbench"]
    train_s = {name: statistics.median(r.seconds for r in runs) for name, runs in results.items()}
    steps_s = {name: steps_seconds(runs) for name, runs in results.items()}
    n_intervals = len(plain[0].step_seconds)
    epochs = plain[0].measured_epochs
    # On a GPU a step mark only says when the step was queued; the epoch's time (synchronized) is the measure.
    headline_s = train_s if args.accelerator == "gpu" else steps_s
    headline_name = "train s" if args.accelerator == "gpu" else "steps s"

    first = args.epochs - epochs + 1
    table = Table(title=f"epochs {first}..{args.epochs} of {args.epochs}, {args.repeats} repeats")
    for column in ("loop", "train s", "samples/s", "ratio", "steps s", "ms/step", "ratio (steps)"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    for name, runs in results.items():
        samples = runs[0].samples_per_epoch * epochs
        table.add_row(
            name,
            f"{train_s[name]:.3f}",
            f"{samples / train_s[name]:,.0f}",
            f"{train_s['plain'] / train_s[name]:.3f}",
            f"{steps_s[name]:.3f}",
            f"{steps_s[name] / n_intervals * 1e3:.2f}",
            f"{steps_s['plain'] / steps_s[name]:.3f}",
        )
    console.print(table)
    console.print(
        "train s: median over repeats of the measured epochs' wall time (optbench: its time/train_s). "
        f"steps s: the {n_intervals} step-to-step times of those epochs, each the median over repeats, summed. "
        "ratio = plain / loop (1.0 = as fast as plain). plain = sliced in-memory tensors; "
        "lightning = a bare LightningModule (forward, loss) in the Trainer optbench builds: Lightning's own floor; "
        "loader = DataLoader(TensorDataset(x, y), shuffle=True)."
    )
    paired = [p.seconds / o.seconds for p, o in zip(plain, opt)]
    console.print(
        f"optbench train-s ratio within each repeat: {', '.join(f'{x:.2f}' for x in paired)} "
        f"(median {statistics.median(paired):.2f})"
    )
    if max(paired) - min(paired) > 0.1:
        console.print(
            "[yellow]noisy machine: these ratios spread by more than 0.1. Use more --repeats; --threads 1 "
            "steadies the timings when other processes compete for the cores (OpenMP workers then wait on "
            "the scheduler).[/]"
        )
    if opt[0].steps != plain[0].steps:
        console.print(f"[red]warning: optbench ran {opt[0].steps} optimizer steps, plain {plain[0].steps}[/]")
    same = opt[-1].last_loss == plain[-1].last_loss
    console.print(
        f"same work: {plain[0].steps} optimizer steps per run; last training loss optbench vs plain "
        + ("identical" if same else f"[yellow]differs ({opt[-1].last_loss!r} vs {plain[-1].last_loss!r})[/]")
    )
    per_step = {
        name: (steps_s[name] / n_intervals if args.accelerator != "gpu" else train_s[name] / _measured_steps(runs))
        * 1e3
        for name, runs in results.items()
    }
    console.print(
        f"per optimizer step over plain: optbench {per_step['optbench'] - per_step['plain']:+.2f} ms, of which "
        f"Lightning's loop (lightning - plain) {per_step['lightning'] - per_step['plain']:+.2f} ms and "
        f"optbench's own (optbench - lightning) {per_step['optbench'] - per_step['lightning']:+.2f} ms"
    )
    ratios = {name: headline_s["plain"] / headline_s[name] for name in results}
    if "loader" in results:
        console.print(f"loader ratio (DataLoader(TensorDataset) / plain throughput): {ratios['loader']:.2f}")
    goal = GOAL_GPU if args.accelerator == "gpu" else GOAL
    status = "[green]ok[/]" if ratios["optbench"] >= goal else "[red]below goal[/]"
    console.print(
        f"overhead ratio (optbench / plain throughput, {headline_name}): {ratios['optbench']:.2f}  "
        f"(goal >= {goal})  {status};  Lightning's floor (lightning / plain): {ratios['lightning']:.2f}"
    )
    return {
        "benchmark": "overhead",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "device": torch.cuda.get_device_name(0) if args.accelerator == "gpu" else platform.machine(),
        },
        "config": {
            key: getattr(args, key)
            for key in ("model", "data", "optimizer", "batch_size", "epochs", "repeats", "accelerator", "compile")
        }
        | {"channels_last": args.channels_last, "override": args.override},
        "headline": headline_name,
        "steps_per_run": plain[0].steps,
        "ratio": ratios,
        "ms_per_step": per_step,
        "paired_train_s_ratios": paired,
        "same_final_loss": same,
    }


def _measured_steps(runs: list[Result]) -> int:
    return sum(len(marks) for marks in runs[0].step_marks[runs[0].skip :])


if __name__ == "__main__":
    sys.exit(main())
