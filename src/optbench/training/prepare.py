"""prepare(cfg): build a dataset's fixed train/val/test split once and save it as a versioned file.

    optbench-prepare data=mnist5k        # -> data/prepared/mnist5k.pt and results/data/mnist5k.json

For a problem with a known optimum (data=regression, data=quadratic) the JSON also holds the loss of each
split at the optimum (optimal_loss).

Later stages load the file (data.prepared=...), so every run of a pipeline sees the same bytes, and the
fingerprint in the JSON is the MLflow tag optbench.data_fingerprint of each of those runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from optbench.core import timings
from optbench.core.files import write_json
from optbench.training.data import load_dataset, save_prepared
from optbench.training.synthetic import optimal_losses

log = logging.getLogger("optbench.training.prepare")


def prepare(cfg: DictConfig) -> dict:
    """Save the split of `cfg.data` to `cfg.output`, and its description to `cfg.info`."""
    with timings.phase("data"):
        data = load_dataset(cfg.data)
        save_prepared(data, Path(cfg.output))
    info = {
        "data": data.name,
        "fingerprint": data.fingerprint,
        "train": len(data.train),
        "val": len(data.val),
        "test": len(data.test),
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "file": str(cfg.output),
    }
    if data.optimum is not None:  # a known optimum: the loss of each split there, the floor of any target
        info["optimal_loss"] = optimal_losses(data)
    write_json(cfg.info, info)
    log.info(
        "Prepared %s: %d/%d/%d train/val/test, fingerprint %s -> %s",
        data.name,
        info["train"],
        info["val"],
        info["test"],
        info["fingerprint"],
        cfg.output,
    )
    return info
