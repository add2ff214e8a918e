"""The comparison of finished training runs, read back from MLflow: selection and numbers, nothing written.

Runs come from MLflow (runs.py). Per optimizer: means with t-distribution
confidence intervals over seeds, steps and seconds to a target validation accuracy, diverged runs,
optimizer-state memory and throughput. report.py renders the files; publish.py writes and logs them.

The same functions make up the Python API (notebooks/compare_optimizers.ipynb):

    client = open_client("sqlite:///mlflow.db")
    runs = load_runs(client, "optbench-default")
    curves = load_all_curves(client, runs)
    target, rule = choose_target(runs)
    table = aggregate(runs, curves, target)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import DictConfig

from optbench.compare.runs import (
    as_list,
    load_all_curves,
    load_runs,
    load_trials,
    open_client,
    option_name,
    seconds_at,
)
from optbench.core.errors import ConfigError, OptbenchError
from optbench.stats import first_crossing, mean_ci

log = logging.getLogger("optbench.compare")

# Per-run values summarized per optimizer as mean, confidence interval and count over seeds.
STAT_COLUMNS = (
    "val_acc_best",
    "test_acc",
    "train_loss",
    "steps_to_target",
    "seconds_to_target",
    "state_to_param_ratio",
    "samples_per_sec",
)


@dataclass
class Comparison:
    """Everything a report is made of: the runs, their curves, the per-optimizer table and the notes."""

    experiment: str
    tracking_uri: str
    runs: pd.DataFrame  # one row per selected run, with steps/seconds to target
    curves: dict[str, pd.DataFrame]  # metric -> long table (run_id, optimizer, seed, step, value[, seconds])
    table: pd.DataFrame  # one row per optimizer (index), ranked
    target: float
    target_rule: str
    confidence: float
    notes: list[str] = field(default_factory=list)
    trials: pd.DataFrame | None = None  # tuning trials for the LR-sensitivity plot; None = not asked for


# --- numbers ----------------------------------------------------------------------------------------------


def time_to_target(val_acc: pd.DataFrame, times: pd.DataFrame, target: float) -> tuple[float, float]:
    """(step, seconds) of one run's first logged val/acc >= target, or (nan, nan) when it never gets there."""
    step = first_crossing(zip(val_acc.step, val_acc.value), target)
    if step is None:
        return math.nan, math.nan
    return step, float(seconds_at(times, [step])[0])


def choose_target(runs: pd.DataFrame, target: float | None = None) -> tuple[float, str]:
    """The target validation accuracy and a sentence on how it was chosen."""
    if target is not None:
        return float(target), f"given in the config (target={target})"
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
        f"median over seeds of the best optimizer's best validation accuracy: {best} has the highest mean "
        f"val/acc_best, and the median of its {len(values)} run(s) is {value:.4f}"
    )


def per_run(runs: pd.DataFrame, curves: dict[str, pd.DataFrame], target: float) -> pd.DataFrame:
    """`runs` with steps_to_target, seconds_to_target, reached, and throughput as the mean over epochs."""
    runs = runs.copy()
    val = dict(tuple(curves["val/acc"].groupby("run_id")))
    times = dict(tuple(curves["time/train_s"].groupby("run_id")))
    empty = curves["val/acc"].iloc[:0]
    hits = [time_to_target(val.get(r, empty), times.get(r, empty), target) for r in runs.run_id]
    runs["steps_to_target"] = [h[0] for h in hits]
    runs["seconds_to_target"] = [h[1] for h in hits]
    runs["reached"] = runs.steps_to_target.notna()
    throughput = curves.get("train/samples_per_sec")
    if throughput is not None and not throughput.empty:
        mean = throughput[throughput.value > 0].groupby("run_id").value.mean()
        runs["samples_per_sec"] = runs.run_id.map(mean).fillna(runs.samples_per_sec)
    return runs


def aggregate(
    runs: pd.DataFrame,
    curves: dict[str, pd.DataFrame],
    target: float,
    confidence: float = 0.95,
    optimizers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per optimizer (index), ranked: n_runs, n_diverged, reached, missing, rank and for each of
    STAT_COLUMNS `<col>_mean`, `<col>_low`, `<col>_high`, `<col>_n`. Listed optimizers without runs are
    rows with missing=True. Steps and seconds to target are statistics over the runs that reach it."""
    if "reached" not in runs:
        runs = per_run(runs, curves, target)
    names = list(dict.fromkeys([*(optimizers or []), *sorted(runs.optimizer.unique())]))
    rows = []
    for name in names:
        group = runs[runs.optimizer == name]
        row: dict[str, Any] = {
            "optimizer": name,
            "n_runs": len(group),
            "missing": group.empty,
            "n_diverged": int(group.diverged.sum()),
            "reached": int(group.reached.sum()),
        }
        for column in STAT_COLUMNS:
            ci = mean_ci(group[column], confidence)
            row.update({f"{column}_{key}": ci[key] for key in ("mean", "low", "high", "n")})
        rows.append(row)
    table = pd.DataFrame(rows).set_index("optimizer")
    ranked = table[table.val_acc_best_n > 0].sort_values("val_acc_best_mean", ascending=False)
    table["rank"] = pd.Series(range(1, len(ranked) + 1), index=ranked.index, dtype="Int64")
    return table.loc[[*ranked.index, *table.index.difference(ranked.index, sort=False)]]


def overlap_notes(table: pd.DataFrame, confidence: float = 0.95) -> list[str]:
    """One line per pair of adjacent ranks whose confidence intervals of best val accuracy overlap."""
    ranked = table[table["rank"].notna()].sort_values("rank")
    notes = []
    for (upper, a), (lower, b) in zip(ranked.iterrows(), list(ranked.iterrows())[1:]):
        pair = f"#{a['rank']} {upper} and #{b['rank']} {lower}"
        if any(math.isnan(v) for v in (a.val_acc_best_low, b.val_acc_best_high)):
            notes.append(f"{pair}: no interval with a single seed, not distinguishable at {confidence:.0%}")
        elif a.val_acc_best_low <= b.val_acc_best_high:
            notes.append(f"{pair}: confidence intervals overlap, not distinguishable at {confidence:.0%}")
    return notes


# --- the command ------------------------------------------------------------------------------------------


def config_target(cfg: DictConfig) -> float | None:
    """`target` as a number, or None; "None" counts as null (what DVC writes for a null param)."""
    value = cfg.target
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"target must be a validation accuracy in (0, 1], or null to derive it; got {value!r}.")
    return float(value)


def check_config(cfg: DictConfig) -> None:
    if not 0 < cfg.confidence < 1:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {cfg.confidence}.")
    config_target(cfg)
    for key in ("optimizers", "seeds"):
        values = as_list(cfg[key])
        if values is not None and not values:
            raise ConfigError(f"{key} is an empty list: give at least one, or null for every one found.")


def selection(cfg: DictConfig) -> tuple[list | None, list | None]:
    """The optimizers and seeds to compare: given directly, or read from `params_file` (the DVC pipeline
    passes params.yaml, whose lists cannot be interpolated into a stage command)."""
    optimizers, seeds = as_list(cfg.optimizers), as_list(cfg.seeds)
    if cfg.get("params_file"):
        path = Path(cfg.params_file)
        try:
            params = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"params_file={path}: cannot read it ({err}).") from None
        optimizers = optimizers if optimizers is not None else params.get("optimizers")
        seeds = seeds if seeds is not None else params.get("seeds")
    return optimizers, seeds


def build_comparison(cfg: DictConfig) -> Comparison:
    """Select the runs `cfg` names and compute the table; nothing is written."""
    check_config(cfg)
    client = open_client(cfg.tracking_uri)
    optimizers, seeds = selection(cfg)
    data, model = option_name(cfg.data), option_name(cfg.model)
    runs = load_runs(
        client, cfg.experiment, optimizers=optimizers, seeds=seeds, data=data, model=model, max_epochs=cfg.max_epochs
    )
    trials = None
    if cfg.tune_experiment:
        trials = load_trials(client, cfg.tune_experiment, optimizers=optimizers, data=data, model=model)
    curves = load_all_curves(client, runs)
    target, rule = choose_target(runs, config_target(cfg))
    runs = per_run(runs, curves, target)
    table = aggregate(runs, curves, target, cfg.confidence, optimizers)
    notes = []
    for name in table.index[table.missing]:
        log.warning("optimizer %s is listed but has no matching finished run: reported as missing", name)
        notes.append(f"{name}: listed in optimizers, but no matching finished run (missing).")
    if runs.attrs.get("superseded"):
        superseded = runs.attrs["superseded"]
        notes.append(f"{superseded} older run(s) ignored: a newer run of the same (optimizer, seed) counts.")
    if table.reached.sum() == 0:
        notes.append(f"No run reaches the target {target:.4f}.")
    notes += overlap_notes(table, cfg.confidence)
    return Comparison(
        cfg.experiment, client.tracking_uri, runs, curves, table, target, rule, cfg.confidence, notes, trials
    )
