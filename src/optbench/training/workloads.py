"""The workloads (conf/workload/<name>.yaml) as plain values, for code that plans runs over several of them.

A workload file is a Hydra config (`optbench-train +workload=<name>`); the suite and its pipeline need its
settings without composing a training config for each: which data and model, the batch size, the budget
and the target. Read here from the file itself (no torch, no Hydra composition), so each fact stays in the
one file that declares it.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from optbench.core.config import group_options, load_option
from optbench.core.errors import ConfigError


@dataclass(frozen=True)
class Workload:
    name: str
    data: str  # conf/data option
    model: str  # conf/model option
    batch_size: int
    epochs: int  # the budget: every tuning trial and compared run trains this many epochs
    tier: str  # cpu | gpu
    metric: str  # val/acc | val/loss
    direction: str  # maximize | minimize
    target_file: str  # conf/targets/<data>-<model>.yaml, relative to the repository root


def _override(option: DictConfig, group: str) -> str:
    for entry in option.defaults:
        if isinstance(entry, DictConfig) and f"override /{group}" in entry:
            return str(entry[f"override /{group}"])
    raise ConfigError(f"conf/workload/{option.workload.name}.yaml names no {group} (override /{group}: ...).")


def load_workload(name: str) -> Workload:
    """The workload conf/workload/<name>.yaml declares; an unknown name lists the valid ones."""
    option = load_option("workload", name)
    meta = option.workload
    return Workload(
        name=name,
        data=_override(option, "data"),
        model=_override(option, "model"),
        batch_size=int(option.batch_size),
        epochs=int(option.trainer.max_epochs),
        tier=str(meta.tier),
        metric=str(meta.metric),
        direction=str(meta.direction),
        target_file=str(meta.target_file),
    )


def workloads(tier: str | None = None) -> list[Workload]:
    """Every workload (of one tier: cpu or gpu), by name."""
    found = [load_workload(name) for name in group_options("workload")]
    return [w for w in found if tier is None or w.tier == tier]
