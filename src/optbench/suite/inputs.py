"""What the suite compares: its workloads, optimizers and seeds (the pipeline's params file, so the report
and the DVC stages read one list) and each workload's a-priori target (conf/targets/<data>-<model>.yaml).

A targets file here may set its target on val/acc (maximize) or on val/loss (minimize: regression and
the quadratic, whose optimum is known); optbench-compare's reader accepts val/acc only, so the suite
checks the file itself and reuses the rest (path, hash, how to make one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import ListConfig

from optbench.compare.targets import file_hash, how_to_make_one, targets_path
from optbench.core.errors import ConfigError

METRICS = {"val/acc": "maximize", "val/loss": "minimize"}  # target metric -> the only direction that makes sense
BOUNDS = {"val/acc": (0.0, 1.0), "val/loss": (0.0, float("inf"))}  # range of the metric, clips the intervals
REQUIRED = ("target", "metric", "direction")


@dataclass
class Workload:
    """One workload of the suite: a data x model pair, the horizon its runs trained for, and its target."""

    name: str
    data: str
    model: str
    epochs: int | None
    target: float = float("nan")
    metric: str = "val/acc"
    direction: str = "maximize"
    target_source: str = ""  # "<path> (sha256:<12 hex>)"

    @property
    def test_metric(self) -> str:
        return self.metric.replace("val/", "test/", 1)

    def describe(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "model": self.model,
            "epochs": self.epochs,
            "metric": self.metric,
            "direction": self.direction,
            "target": self.target,
            "target_source": self.target_source,
        }


def read_params(path: str | Path) -> dict[str, Any]:
    """The suite's params file (pipelines/suite/params.yaml): workloads, optimizers, seeds."""
    try:
        params = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(
            f"params_file={path}: cannot read it ({err}). Point params_file at the suite's params."
        ) from None
    if not isinstance(params.get("workloads"), dict) or not params["workloads"]:
        raise ConfigError(f"params_file={path} has no `workloads` mapping (name: {{data, model, epochs, ...}}).")
    return params


def split_list(value: Any) -> list | None:
    """A list from YAML or the command line, or a Hydra sweep string ("sgd,adam", what the stages pass)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


def select_workloads(params: dict[str, Any], names: list[str] | None) -> list[Workload]:
    """The named workloads (all of the params file's when None), in the given order; an unknown name is an
    error that lists the valid ones."""
    declared = params["workloads"]
    names = list(declared) if names is None else [str(n) for n in names]
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise ConfigError(
            f"unknown workload(s) {', '.join(unknown)}; the suite's workloads are {', '.join(declared)} "
            "(the `workloads` of params_file). Choose among them, e.g. workloads=["
            + ",".join(list(declared)[:2])
            + "]."
        )
    if not names:
        raise ConfigError("workloads is an empty list: give at least one, or null for every workload of params_file.")
    chosen = []
    for name in names:
        spec = declared[name] or {}
        missing = [key for key in ("data", "model") if key not in spec]
        if missing:
            raise ConfigError(f"workload {name} in params_file lacks {', '.join(missing)}.")
        epochs = spec.get("epochs")
        chosen.append(Workload(name, str(spec["data"]), str(spec["model"]), None if epochs is None else int(epochs)))
    return chosen


def read_target(workload: Workload, targets_dir: str | Path) -> Workload:
    """Fill the workload's target, metric and direction from conf/targets/<data>-<model>.yaml."""
    path = targets_path(targets_dir, workload.data, workload.model)
    if not path.is_file():
        raise ConfigError(
            f"workload {workload.name}: no targets file {path}. The suite measures time to a target set a priori. "
            + how_to_make_one(workload.data, workload.model).split(" To derive")[0]
        )
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"targets file {path}: cannot read it ({err}).") from None
    if not isinstance(content, dict) or any(key not in content for key in REQUIRED):
        raise ConfigError(f"targets file {path} needs the keys {', '.join(REQUIRED)} (written by optbench-target).")
    metric, direction, value = content["metric"], content["direction"], content["target"]
    if METRICS.get(metric) != direction:
        raise ConfigError(
            f"targets file {path}: metric {metric} with direction {direction}; the suite measures "
            + " or ".join(f"{m} ({d})" for m, d in METRICS.items())
            + "."
        )
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not BOUNDS[metric][0] < value <= BOUNDS[metric][1]
    ):
        raise ConfigError(f"targets file {path}: target {value!r} is outside the range of {metric}.")
    workload.target, workload.metric, workload.direction = float(value), metric, direction
    workload.target_source = f"{path} (sha256:{file_hash(path)})"
    return workload
