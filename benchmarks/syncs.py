"""How often does a training run make the host wait for the GPU? Counts the synchronizing CUDA calls of
optbench's training loop (torch.cuda.set_sync_debug_mode("warn") from the first to the last training
batch) against its optimizer steps, and names where they come from.

    python benchmarks/syncs.py                                        # digits/MLP on the GPU
    python benchmarks/syncs.py --json syncs.json data=cifar10 model=resnet18 data.prepared=/tmp/cifar10.pt

A loop without a host sync per step makes far fewer syncs than steps: only the logging steps
(trainer.log_every_n_steps) and each epoch's end read numbers back. On a CPU nothing synchronizes, and
the count is 0 by construction (the script still runs the same training, to check itself).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch

from optbench.core.config import compose_config
from optbench.training.train import train


class SyncCounter(L.Callback):
    """Records every synchronizing-call warning torch emits while training batches run."""

    def __init__(self) -> None:
        self.sites: collections.Counter[str] = collections.Counter()
        self._catcher: Any = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._catcher = warnings.catch_warnings(record=True)
        self._records = self._catcher.__enter__()
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
        for record in self._records:
            if "synchroniz" in str(record.message):
                self.sites[f"{Path(record.filename).name}:{record.lineno}"] += 1
        self._catcher.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="gpu")
    parser.add_argument("--json", type=Path, help="also write the counts to this JSON file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the training run (default digits/mlp)")
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="optbench-syncs-") as tmp:
        cfg = compose_config(
            "data=digits",
            "model=mlp",
            f"trainer={'gpu' if args.accelerator == 'gpu' else 'cpu'}",
            "logger=none",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "checkpoint.enabled=false",
            f"metrics_path={tmp}/metrics.json",
            *args.overrides,
        )
        counter = SyncCounter()
        metrics = train(cfg, callbacks=[counter])
    steps = int(metrics["train/steps"])
    syncs = sum(counter.sites.values())
    result = {
        "benchmark": "syncs",
        "accelerator": args.accelerator,
        "overrides": args.overrides,
        "log_every_n_steps": cfg.trainer.log_every_n_steps,
        "epochs": cfg.trainer.max_epochs,
        "steps": steps,
        "syncs": syncs,
        "syncs_per_step": syncs / steps,
        "top_sites": counter.sites.most_common(8),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
