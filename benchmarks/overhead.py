"""How much does optbench (Hydra + Lightning + metrics) cost over a hand-written PyTorch loop?

    .venv/bin/python benchmarks/overhead.py                       # cnn on mnist5k, 3 epochs x 3 repeats
    .venv/bin/python benchmarks/overhead.py --epochs 4 --repeats 5 --model mlp --data digits

Three loops train the same model (optbench.models.build_model on the same composed config), on the same
tensors (optbench.data.load_dataset), with the same optimizer (optbench.optim.build_optimizer), batch size,
seed, batch order, number of optimizer steps and torch.use_deterministic_algorithms setting:

* plain     -- per epoch: randperm, one gather x[perm], slice batches, forward, loss, zero_grad, backward,
               step. The reference: what optbench's in-memory IndexBatches does, minus Lightning.
* optbench  -- optbench.train.train(cfg) itself, with logger=none and no progress bar. Its training time
               comes from optbench's own clock (RunClock, validation excluded), split into epochs at
               each on_train_epoch_start, so Lightning's work between epochs is counted too.
* loader    -- the naive alternative to slicing: DataLoader(TensorDataset(x, y), shuffle=True).

The first epoch of every run is a warm-up and is left out (with --epochs 1 it is kept); a warm-up run of
each loop precedes the measurements. The loops run interleaved, in rotating order, --repeats times, and the
medians are compared as ratios, because on a shared machine absolute seconds drift from minute to minute.

    overhead ratio = plain seconds / optbench seconds   (1.0 = no overhead; 0.95 = optbench 5% slower)
    loader ratio   = plain seconds / loader seconds     (how much slower per-sample DataLoader batching is)

It is a benchmark, not a test: it exits 0 whatever the ratio.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait (libgomp's default) collapse when another process wants the same
# cores: on a busy 2-core machine an epoch swings between 1.5 and 15 s. Waiting passively keeps timings
# stable and applies to every loop alike. Must be set before torch loads; OMP_WAIT_POLICY=ACTIVE to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import ctypes
import ctypes.util
import logging
import math
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import optbench.module
import optbench.train
from optbench.data import Dataset, load_dataset
from optbench.models import build_model
from optbench.optim import build_optimizer

GOAL = 0.95
console = Console(highlight=False)


# --- configuration ----------------------------------------------------------------------------------


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/train.yaml composed as optbench-train would (the same steps as tests/conftest.py)."""
    with initialize_config_dir(config_dir=optbench.train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def benchmark_config(args: argparse.Namespace, out_dir: Path) -> DictConfig:
    return compose_config(
        [
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

    With glibc's defaults, the tens of MB of activations a step allocates and frees are trimmed from the
    heap and page-faulted in again on the next step (measured: 350k-900k minor page faults and 1-2 s of
    system time per 3-epoch CNN run). How often that happens depends on what the process allocated
    before, so in one process the loop that runs after another gets a different heap: it skewed the
    comparison by 5-20% either way. Fixed thresholds (what MALLOC_MMAP_THRESHOLD_ and
    MALLOC_TRIM_THRESHOLD_ set) make every loop run on the same terms. Returns False off glibc.
    """
    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or not name:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30))


# --- the loops ----------------------------------------------------------------------------------------


class Clock:
    """Wall time (perf_counter) and the main thread's CPU time (thread_time), read together."""

    @staticmethod
    def now() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()


class Result:
    """Per-epoch training seconds on both clocks, optimizer steps and the last batch's training loss.

    wall: elapsed time, what a user waits for; noisy when other processes share the cores.
    cpu:  CPU time of the thread that runs the loop (Python, Lightning, and its share of the kernels).
          Time spent descheduled, or asleep waiting for a descheduled OpenMP worker, does not count, so it
          stays within a few percent under load where wall time swings 2x. All of the framework's Python
          work runs on this thread, so if anything it weighs overhead a little more than wall time does.
    """

    def __init__(self, wall: list[float], cpu: list[float], steps: int, samples_per_epoch: int, last_loss: float):
        self.wall, self.cpu, self.steps = wall, cpu, steps
        self.samples_per_epoch, self.last_loss = samples_per_epoch, last_loss

    @property
    def epochs(self) -> int:
        return len(self.wall)

    @property
    def measured_epochs(self) -> int:
        """The epochs that count: all but the first (warm-up), unless there is only one."""
        return self.epochs - 1 if self.epochs > 1 else 1

    def seconds(self, clock: str) -> float:
        epochs = self.wall if clock == "wall" else self.cpu
        return sum(epochs[-self.measured_epochs :])


def prepare(cfg: DictConfig) -> tuple[Dataset, nn.Module, torch.optim.Optimizer, nn.Module]:
    """Seed, data, model, optimizer and loss in the order optbench.train.train creates them."""
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


def epochs_from_marks(marks: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Durations between consecutive (wall, cpu) marks, one list per clock."""
    return tuple([b[i] - a[i] for a, b in zip(marks, marks[1:])] for i in (0, 1))  # type: ignore[return-value]


def run_plain(cfg: DictConfig) -> Result:
    data, model, optimizer, criterion = prepare(cfg)
    normalize, batch_size = normalizer(data), cfg.batch_size
    x_all, y_all, n = data.train.x, data.train.y, len(data.train)
    generator = torch.Generator().manual_seed(cfg.seed)  # IndexBatches' seed: the same batch order
    steps, loss = 0, torch.tensor(float("nan"))
    marks = [Clock.now()]
    for _ in range(cfg.trainer.max_epochs):
        perm = torch.randperm(n, generator=generator)
        x, y = x_all[perm], y_all[perm]
        for i in range(0, n, batch_size):
            xb, yb = normalize(x[i : i + batch_size]), y[i : i + batch_size]
            loss = criterion(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        marks.append(Clock.now())
    return Result(*epochs_from_marks(marks), steps, n, loss.item())


def run_loader(cfg: DictConfig) -> Result:
    data, model, optimizer, criterion = prepare(cfg)
    normalize = normalizer(data)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        TensorDataset(data.train.x, data.train.y), batch_size=cfg.batch_size, shuffle=True, generator=generator
    )
    steps, loss = 0, torch.tensor(float("nan"))
    marks = [Clock.now()]
    for _ in range(cfg.trainer.max_epochs):
        for xb, yb in loader:
            loss = criterion(model(normalize(xb)), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        marks.append(Clock.now())
    return Result(*epochs_from_marks(marks), steps, len(data.train), loss.item())


class OptbenchClockProbe:
    """Reads optbench's own training clock (RunClock) at epoch starts, and runs a CPU-time twin of it.

    RunClock measures training wall time with validation paused out; start_epoch records train_seconds()
    at every epoch's start. This probe wraps RunClock's methods (instrumentation only: each wrapper calls
    the original first and changes nothing it computes), records that value at every epoch start, and keeps
    the same start / pause / resume bookkeeping on the main thread's CPU clock. Consecutive epoch starts
    and the final time/train_s split the run into epochs, Lightning's work between epochs included.
    """

    NAMES = ("start", "pause", "resume", "start_epoch")

    def __init__(self) -> None:
        self.wall_marks: list[float] = []  # train_seconds() at each epoch start
        self.cpu_marks: list[float] = []  # the CPU twin at each epoch start
        self.cpu_at_pause = math.nan  # the CPU twin when the last validation started
        self._cpu_elapsed, self._cpu_since = 0.0, None
        self._originals = {name: getattr(optbench.module.RunClock, name) for name in self.NAMES}

    def _cpu(self) -> float:
        running = time.thread_time() - self._cpu_since if self._cpu_since is not None else 0.0
        return self._cpu_elapsed + running

    def __enter__(self) -> OptbenchClockProbe:
        probe, orig = self, self._originals

        def start(clock):
            orig["start"](clock)
            probe._cpu_elapsed, probe._cpu_since = 0.0, time.thread_time()

        def pause(clock):
            orig["pause"](clock)
            if probe._cpu_since is not None:
                probe._cpu_elapsed, probe._cpu_since = probe._cpu(), None
            probe.cpu_at_pause = probe._cpu_elapsed

        def resume(clock):
            orig["resume"](clock)
            if probe._cpu_since is None:
                probe._cpu_since = time.thread_time()

        def start_epoch(clock):
            orig["start_epoch"](clock)  # calls resume() itself
            probe.wall_marks.append(clock._epoch_elapsed_at_start)
            probe.cpu_marks.append(probe._cpu())

        for name, wrapper in zip(self.NAMES, (start, pause, resume, start_epoch)):
            setattr(optbench.module.RunClock, name, wrapper)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._originals.items():
            setattr(optbench.module.RunClock, name, original)


def run_optbench(cfg: DictConfig) -> Result:
    with OptbenchClockProbe() as probe:
        metrics = optbench.train.train(copy.deepcopy(cfg))
    # time/train_s is logged when the last validation starts (RunClock paused): the end of training.
    wall_marks = [*probe.wall_marks, metrics["time/train_s"]]
    cpu_marks = [*probe.cpu_marks, probe.cpu_at_pause]
    wall = [b - a for a, b in zip(wall_marks, wall_marks[1:])]
    cpu = [b - a for a, b in zip(cpu_marks, cpu_marks[1:])]
    steps = metrics.get("train/steps", metrics.get("steps", -1))  # the key has been renamed
    return Result(wall, cpu, int(steps), train_size(cfg), metrics.get("train/loss", math.nan))


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
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="clock of the headline ratio: cpu (default; main-thread CPU time, steady on a busy machine) or "
        "wall (elapsed time, as optbench's time/train_s); the table shows both",
    )
    parser.add_argument(
        "--malloc",
        choices=("tuned", "default"),
        default="tuned",
        help="tuned (default): fixed glibc malloc thresholds, so no loop pays for another's heap; default: "
        "glibc as it comes (noisier, see tune_malloc)",
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
    malloc = "tuned" if args.malloc == "tuned" and tune_malloc() else "glibc default"
    with tempfile.TemporaryDirectory(prefix="optbench-overhead-") as tmp:
        cfg = benchmark_config(args, Path(tmp))
        check_supported(cfg)
        loops = [name for name in LOOPS if not (args.no_loader and name == "loader")]
        console.print(
            f"[bold]optbench overhead[/]: model={cfg.model.name} data={cfg.data.name} optimizer={cfg.optimizer.name} "
            f"batch_size={cfg.batch_size} epochs={args.epochs} (first is warm-up) repeats={args.repeats} "
            f"deterministic={cfg.trainer.deterministic} torch threads={torch.get_num_threads()} "
            f"cpus={os.cpu_count()} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} malloc={malloc}"
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
            line = "  ".join(
                f"{name} {results[name][-1].seconds('wall'):6.2f}s wall {results[name][-1].seconds('cpu'):6.2f}s cpu"
                for name in loops
            )
            console.print(f"repeat {r + 1}/{args.repeats}: {line}")

    report(results, args)
    return 0


def report(results: dict[str, list[Result]], args: argparse.Namespace) -> None:
    plain, opt = results["plain"], results["optbench"]
    clocks = ("wall", "cpu")
    median_s = {
        (name, clock): statistics.median(r.seconds(clock) for r in runs)
        for name, runs in results.items()
        for clock in clocks
    }
    ratio = {key: median_s[("plain", key[1])] / seconds for key, seconds in median_s.items()}
    # The same ratio within each repeat (runs seconds apart): its spread shows how noisy the machine was.
    paired = {
        name: [p.seconds(args.clock) / r.seconds(args.clock) for p, r in zip(plain, runs)]
        for name, runs in results.items()
    }
    measured_epochs = plain[0].measured_epochs
    measured_steps = plain[0].steps // plain[0].epochs * measured_epochs

    first = args.epochs - measured_epochs + 1
    table = Table(title=f"training time of epochs {first}..{args.epochs}, median of {args.repeats} repeats")
    for column in ("loop", "wall s", "samples/s", "ratio wall", "cpu s", "ratio cpu", f"{args.clock} range"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    for name, runs in results.items():
        samples = runs[0].samples_per_epoch * measured_epochs
        table.add_row(
            name,
            f"{median_s[(name, 'wall')]:.3f}",
            f"{samples / median_s[(name, 'wall')]:,.0f}",
            f"{ratio[(name, 'wall')]:.3f}",
            f"{median_s[(name, 'cpu')]:.3f}",
            f"{ratio[(name, 'cpu')]:.3f}",
            f"{min(paired[name]):.2f}-{max(paired[name]):.2f}",
        )
    console.print(table)
    console.print(
        "ratio = plain seconds / loop seconds, from the medians (1.0 = as fast as plain). cpu = CPU time of the "
        "training thread; range = that ratio within each repeat. plain = sliced in-memory tensors, "
        "loader = DataLoader(TensorDataset(x, y), shuffle=True)."
    )

    if opt[0].steps != plain[0].steps:
        console.print(f"[red]warning: optbench ran {opt[0].steps} optimizer steps, plain {plain[0].steps}[/]")
    same = opt[-1].last_loss == plain[-1].last_loss
    console.print(
        f"same work: {plain[0].steps} optimizer steps per run in each loop; last training loss optbench vs plain "
        + ("identical" if same else f"[yellow]differs ({opt[-1].last_loss!r} vs {plain[-1].last_loss!r})[/]")
    )
    extra_ms = statistics.median(
        (o.seconds(args.clock) - p.seconds(args.clock)) / measured_steps * 1e3 for p, o in zip(plain, opt)
    )
    plain_ms = median_s[("plain", args.clock)] / measured_steps * 1e3
    console.print(f"optbench overhead per optimizer step ({args.clock}): {extra_ms:+.2f} ms on a {plain_ms:.2f} ms step")
    if "loader" in results:
        console.print(
            f"loader ratio (DataLoader(TensorDataset) / plain throughput): {ratio[('loader', args.clock)]:.2f}"
            f"  ({args.clock}; {ratio[('loader', 'wall' if args.clock == 'cpu' else 'cpu')]:.2f} on the other clock)"
        )
    headline = ratio[("optbench", args.clock)]
    status = "[green]ok[/]" if headline >= GOAL else "[red]below goal[/]"
    console.print(
        f"overhead ratio (optbench / plain throughput): {headline:.2f}  (goal >= {GOAL})  {status}  "
        f"[{args.clock} clock; {ratio[('optbench', 'wall' if args.clock == 'cpu' else 'cpu')]:.2f} on the other]"
    )


if __name__ == "__main__":
    sys.exit(main())
