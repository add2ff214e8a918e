"""Where optbench-compare's target comes from: a number in the config, a versioned targets file set a
priori by optbench-target (conf/targets/<data>-<model>.yaml), or, only when asked for by name, the old
rule that derives it from the runs being compared.

Precedence: `target` (a number) > the targets file (`target_file`, or the default path when data and model
are given) > `target_rule: best_optimizer_median`. With the default `target_rule: file` a missing file is an
error that says how to make one: a target taken from the compared runs is reached by the best of them by
construction (AlgoPerf fixes its targets in advance from separate reference runs for that reason).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from optbench.core.errors import ConfigError, OptbenchError

RULES = ("file", "best_optimizer_median")
METRIC, DIRECTION = "val/acc", "maximize"  # what optbench-compare measures time to target on
REQUIRED = ("target", "metric", "direction", "reference", "provenance")


@dataclass
class Target:
    """The target value, one sentence on how it was set, and `source` for summary.json."""

    value: float
    rule: str
    source: str  # "<path> (sha256:<12 hex>)", "config" or "fallback: best_optimizer_median"
    reference: dict[str, Any] = field(default_factory=dict)  # the file's reference procedure and provenance


def targets_path(targets_dir: str | Path, data: str, model: str) -> Path:
    """The targets file of a workload: <targets_dir>/<data>-<model>.yaml."""
    return Path(targets_dir) / f"{data}-{model}.yaml"


def file_hash(path: Path) -> str:
    """sha256 of the file's bytes, first 12 hex digits: which version of the file a report used."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def read_target_file(path: Path) -> Target:
    """The target of a file written by optbench-target, checked: a number in (0, 1] on val/acc, maximized."""
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"target_file={path}: cannot read it ({err}).") from None
    if not isinstance(content, dict) or any(key not in content for key in REQUIRED):
        raise ConfigError(
            f"target_file={path} is not a targets file of optbench-target: it needs the keys {', '.join(REQUIRED)}."
        )
    value = content["target"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"target_file={path}: target must be a validation accuracy in (0, 1], got {value!r}.")
    if content["metric"] != METRIC or content["direction"] != DIRECTION:
        raise ConfigError(
            f"target_file={path} sets a target on {content['metric']} ({content['direction']}); optbench-compare "
            f"measures time to target on {METRIC} ({DIRECTION})."
        )
    reference = {"reference": content["reference"], "provenance": content["provenance"]}
    optimizer = content["reference"].get("optimizer", "?")
    rule = (
        f"set a priori in {path}: median val/acc_best of the reference optimizer {optimizer} over seeds "
        f"{content['reference'].get('seeds')} (optbench-target, commit {content['provenance'].get('git_commit')})"
    )
    return Target(float(value), rule, f"{path} (sha256:{file_hash(path)})", reference)


def best_optimizer_median(runs: pd.DataFrame) -> tuple[float, str]:
    """The old rule: the median over seeds of val/acc_best of the optimizer with the highest mean."""
    means = runs.groupby("optimizer").val_acc_best.mean().dropna()
    if means.empty:
        raise OptbenchError(
            "none of the selected runs logged val/acc_best (regression runs?): optbench-compare ranks optimizers "
            "by validation accuracy. Select classification runs (data=...)."
        )
    best = means.idxmax()
    values = runs.loc[runs.optimizer == best, "val_acc_best"].dropna()
    value = float(values.median())
    return value, (
        f"fallback best_optimizer_median, derived from the compared runs (the best optimizer reaches it by "
        f"construction): {best} has the highest mean val/acc_best, and the median of its {len(values)} run(s) "
        f"is {value:.4f}"
    )


def resolve_target(
    runs: pd.DataFrame,
    *,
    target: float | None,
    target_file: str | None,
    target_rule: str,
    targets_dir: str,
    data: str | None,
    model: str | None,
) -> Target:
    """The target by precedence: number > file > the named fallback; an error when the file is missing."""
    if target is not None:
        return Target(float(target), f"given in the config (target={target})", "config")
    if target_rule not in RULES:
        raise ConfigError(f"target_rule must be one of {', '.join(RULES)}, got {target_rule!r}.")
    path = Path(target_file) if target_file else None
    if path is None and data and model:
        path = targets_path(targets_dir, data, model)
    if path is not None and path.is_file():
        return read_target_file(path)
    if target_file:  # named explicitly: its absence is an error whatever the rule
        raise ConfigError(f"target_file={target_file}: no such file. {how_to_make_one(data, model)}")
    if target_rule == "best_optimizer_median":
        value, rule = best_optimizer_median(runs)
        return Target(value, rule, "fallback: best_optimizer_median")
    where = f"no targets file {path}" if path is not None else "no targets file (data and model are not given)"
    raise ConfigError(f"{where}, and target_rule=file needs one. {how_to_make_one(data, model)}")


def how_to_make_one(data: str | None, model: str | None) -> str:
    workload = f"data={data or '<data>'} model={model or '<model>'}"
    return (
        f"Set the target a priori from reference runs with `optbench-target {workload}` (tuned reference "
        f"optimizers, seeds 100-109, disjoint from evaluation seeds; it writes conf/targets/<data>-<model>.yaml), "
        "or pass target_file=<path>, or a number with target=<val/acc>. To derive the target from the compared "
        "runs instead (the best optimizer then reaches it by construction), choose the fallback explicitly: "
        "target_rule=best_optimizer_median."
    )


def reference_notes(target: Target, runs: pd.DataFrame, max_epochs: int | None) -> list[str]:
    """Where the compared runs differ from the reference runs behind a targets file."""
    if not target.reference:
        return []
    reference, provenance = target.reference["reference"], target.reference["provenance"]
    notes = []
    shared = sorted(set(int(s) for s in reference.get("seeds", [])) & set(int(s) for s in runs.seed))
    if shared:
        notes.append(f"Target: the reference seeds {shared} are also compared seeds; the target is not independent.")
    epochs = reference.get("epochs")
    if max_epochs is not None and epochs is not None and int(epochs) != int(max_epochs):
        notes.append(f"Target: reference runs trained {epochs} epochs, the compared runs {max_epochs}.")
    fingerprint = provenance.get("data_fingerprint")
    seen = set(runs.get("data_fingerprint", pd.Series(dtype=str)).dropna()) - {""}
    if fingerprint and seen and seen != {fingerprint}:
        notes.append(
            f"Target: the reference data split (fingerprint {fingerprint}) differs from the compared runs' "
            f"({', '.join(sorted(seen))}); the target may not transfer."
        )
    return notes


def write_target_file(path: Path, content: dict[str, Any], header: str) -> Path:
    """Write a targets file: the header as YAML comments, then the content in a stable key order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comments + yaml.safe_dump(content, sort_keys=False, default_flow_style=None, width=110))
    return path
