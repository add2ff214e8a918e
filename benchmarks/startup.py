"""How long optbench's commands take to start, as ratios of `python -c "import torch"` measured side by side.

    .venv/bin/python benchmarks/startup.py               # 5 rounds, interleaved
    .venv/bin/python benchmarks/startup.py --rounds 9

Each round runs every command once, in rotating order, as a fresh process; the table shows each
command's median wall time over rounds and its ratio to the median `import torch` process. The commands:

* help          optbench-train --help          (no torch, Lightning or MLflow should load)
* cfg job       optbench-train --cfg job       (composes the config, prints it)
* config error  optbench-train batch_size=0    (a bad value: one paragraph, exit 2)
* import lightning  python -c "import lightning.pytorch": the floor of any command that trains (Lightning
                imports torchmetrics, which imports scipy.signal and torchvision.models whether used or not)
* one step      optbench-train with one training step, logger=none, no validation: process start to exit,
                everything a run pays before and after its computation

It is a benchmark, not a test: it exits 0 whatever it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def commands(workdir: Path) -> dict[str, list[str]]:
    train = str(BIN / "optbench-train")
    out = f"hydra.run.dir={workdir}/run"
    return {
        "import torch": [sys.executable, "-c", "import torch"],
        "import lightning": [sys.executable, "-c", "import lightning.pytorch"],
        "help": [train, "--help"],
        "cfg job": [train, "--cfg", "job"],
        "config error": [train, "batch_size=0", out],
        "one step": [
            train,
            "data=digits",
            "model=mlp",
            "logger=none",
            "trainer.max_steps=1",
            "trainer.max_epochs=-1",
            "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false",
            out,
        ],
    }


def run(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=False, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the measurement to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        todo = commands(Path(tmp))
        names = list(todo)
        times: dict[str, list[float]] = {name: [] for name in names}
        for name in names:  # warm the file cache once
            run(todo[name])
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(run(todo[name]))
    reference = statistics.median(times["import torch"])
    print(f"{'command':<18}{'median s':>10}{'min s':>8}{'max s':>8}{'ratio to import torch':>24}")
    for name in names:
        median = statistics.median(times[name])
        print(f"{name:<18}{median:>10.2f}{min(times[name]):>8.2f}{max(times[name]):>8.2f}{median / reference:>24.2f}")
    if args.json:
        result = {
            "benchmark": "startup",
            "date": time.strftime("%Y-%m-%d"),
            "rounds": args.rounds,
            "machine": {"cpus": os.cpu_count()},
            "seconds": times,
            "median": {name: statistics.median(times[name]) for name in names},
            "ratio": {name: statistics.median(times[name]) / reference for name in names},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written: {args.json}")


if __name__ == "__main__":
    main()
