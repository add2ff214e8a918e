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
import logging  # noqa: E402
import math  # noqa: E402
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
from optbench.training.data import Dataset, load_dataset  # noqa: E402
from optbench.training.models import build_model  # noqa: E402
from optbench.training.optim import build_optimizer  # noqa: E402

GOAL = 0.95
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
            "trainer=cpu",
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
    if cfg.trainer.accelerator != "cpu":
        problems.append(f"trainer.accelerator={cfg.trainer.accelerator} (the loops run on CPU)")
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
    data = load_dataset(cfg.data)
    model = build_model(cfg.model, data)
    model.train()
    optimizer = build_optimizer(cfg.optimizer, model)
    criterion = nn.MSELoss() if data.is_regression else nn.CrossEntropyLoss()
    return data, model, optimizer, criterion


def normalizer(data: Dataset) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-batch uint8 -> float normalization TensorDataModule applies (identity for embedded data)."""
    if not data.mean:
        return lambda x: x
    mean, std = torch.tensor(data.mean).view(-1, 1, 1), torch.tensor(data.std).view(-1, 1, 1)
    return lambda x: (x.float().div(255) - mean) / std


def run_plain(cfg: DictConfig) -> Result:
    data, model, optimizer, criterion = prepare(cfg)
    normalize, batch_size = normalizer(data), cfg.batch_size
    x_all, y_all, n = data.train.x, data.train.y, len(data.train)
    generator = torch.Generator().manual_seed(cfg.seed)  # IndexBatches' seed: the same batch order
    epoch_seconds, step_marks, steps, loss = [], [], 0, torch.tensor(math.nan)
    for _ in range(cfg.trainer.max_epochs):
        start, marks = time.perf_counter(), []
        perm = torch.randperm(n, generator=generator)
        x, y = x_all[perm], y_all[perm]
        for i in range(0, n, batch_size):
            xb, yb = normalize(x[i : i + batch_size]), y[i : i + batch_size]
            loss = criterion(model(xb), yb)
            marks.append(time.perf_counter())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        epoch_seconds.append(time.perf_counter() - start)
        step_marks.append(marks)
    return Result(epoch_seconds, step_marks, steps, n, loss.item())


def run_loader(cfg: DictConfig) -> Result:
    data, model, optimizer, criterion = prepare(cfg)
    normalize = normalizer(data)
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


_TRAIN_SIZES: dict[str, int] = {}


def train_size(cfg: DictConfig) -> int:
    key = str(cfg.data)
    if key not in _TRAIN_SIZES:
        _TRAIN_SIZES[key] = len(load_dataset(cfg.data).train)
    return _TRAIN_SIZES[key]


LOOPS: dict[str, Callable[[DictConfig], Result]] = {"plain": run_plain, "optbench": run_optbench, "loader": run_loader}


# --- main -------------------------------------------------------------------------------------------


def quiet() -> None:
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
        loops = [name for name in LOOPS if not (args.no_loader and name == "loader")]
        console.print(
            f"[bold]optbench overhead[/]: model={cfg.model.name} data={cfg.data.name} "
            f"optimizer={cfg.optimizer.name} batch_size={cfg.batch_size} epochs={args.epochs} "
            f"repeats={args.repeats} deterministic={cfg.trainer.deterministic} "
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

    report(results, args)
    return 0


def steps_seconds(runs: list[Result]) -> float:
    """Each step's median over the repeats, summed over the steps."""
    per_run = [run.step_seconds for run in runs]
    return sum(statistics.median(step) for step in zip(*per_run))


def report(results: dict[str, list[Result]], args: argparse.Namespace) -> None:
    plain, opt = results["plain"], results["optbench"]
    train_s = {name: statistics.median(r.seconds for r in runs) for name, runs in results.items()}
    steps_s = {name: steps_seconds(runs) for name, runs in results.items()}
    n_intervals = len(plain[0].step_seconds)
    epochs = plain[0].measured_epochs

    first = args.epochs - epochs + 1
    table = Table(title=f"epochs {first}..{args.epochs} of {args.epochs}, {args.repeats} repeats")
    for column in ("loop", "train s", "samples/s", "ratio", "steps s", "ms/step", "ratio (headline)"):
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
    extra_ms = (steps_s["optbench"] - steps_s["plain"]) / n_intervals * 1e3
    console.print(f"optbench overhead per optimizer step: {extra_ms:+.2f} ms")
    if "loader" in results:
        console.print(
            f"loader ratio (DataLoader(TensorDataset) / plain throughput): {steps_s['plain'] / steps_s['loader']:.2f}"
            f"  (train s: {train_s['plain'] / train_s['loader']:.2f})"
        )
    headline = steps_s["plain"] / steps_s["optbench"]
    status = "[green]ok[/]" if headline >= GOAL else "[red]below goal[/]"
    console.print(
        f"overhead ratio (optbench / plain throughput): {headline:.2f}  (goal >= {GOAL})  {status}"
        f"  (train s: {train_s['plain'] / train_s['optbench']:.2f})"
    )


if __name__ == "__main__":
    sys.exit(main())
