"""The comparison of finished training runs, read back from MLflow: selection and numbers, nothing written.

Runs come from MLflow (runs.py); the target from targets.py (set a priori by optbench-target). Per
optimizer: means with t-distribution confidence intervals over seeds; Kaplan-Meier median steps and
seconds to the target, a run that never reaches it counting as censored at its length (never dropped);
performance profiles and budget curves (profiles.py); diverged runs, optimizer-state memory and
throughput. report.py renders the files; publish.py writes and logs them.

The same functions make up the Python API (notebooks/compare_optimizers.ipynb):

    client = open_client("sqlite:///mlflow.db")
    runs = load_runs(client, "optbench-default")
    curves = load_all_curves(client, runs)
    target = resolve_target(runs, target=None, target_file="conf/targets/mnist5k-cnn.yaml", ...)
    runs = per_run(runs, curves, target.value)
    table = aggregate(runs, curves, target.value)
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

from optbench.compare.profiles import R_MAX, budget_curves, profile_ratios, profile_score
from optbench.compare.runs import (
    as_list,
    load_all_curves,
    load_runs,
    load_trials,
    open_client,
    option_name,
    seconds_at,
)
from optbench.compare.targets import RULES, reference_notes, resolve_target
from optbench.core.errors import ConfigError
from optbench.stats import first_crossing, mean_ci, median_time_to_target

log = logging.getLogger("optbench.compare")

# Per-run values summarized per optimizer as mean, confidence interval and count over seeds. Times to
# target are not among them: a mean over the runs that reach the target drops the slow ones.
# The range of each statistic: its intervals are clipped to it (no accuracy above 1, no loss below 0).
BOUNDS = {"val_acc_best": (0.0, 1.0), "test_acc": (0.0, 1.0)}
# Optimizers are ranked by held-out test accuracy: validation accuracy chose the tuned settings and is the
# tuning objective, so ranking by it would score each optimizer on the split its settings were picked on.
RANK_BY = "test_acc"
STAT_COLUMNS = ("val_acc_best", "test_acc", "train_loss", "state_to_param_ratio", "samples_per_sec")
TIME_AXES = {"steps": "steps_to_target", "seconds": "seconds_to_target"}


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
    target_source: str = "config"  # "<file> (sha256:...)", "config" or "fallback: best_optimizer_median"
    resolution: dict[str, Any] = field(default_factory=dict)  # how often validation ran (time-to-target grain)
    profile_axis: str = "steps"  # what the performance profile times: steps or seconds
    ratios: pd.DataFrame | None = None  # performance ratios r, problems x optimizers
    profile_scores: dict[str, float] = field(default_factory=dict)
    r_max: float = R_MAX
    budget: dict[str, list[float]] = field(default_factory=dict)  # expected best val/acc_best after k trials


# --- numbers ----------------------------------------------------------------------------------------------


def time_to_target(val_acc: pd.DataFrame, times: pd.DataFrame, target: float) -> tuple[float, float]:
    """(step, seconds) of one run's first logged val/acc >= target, or (nan, nan) when it never gets there."""
    step = first_crossing(zip(val_acc.step, val_acc.value), target)
    if step is None:
        return math.nan, math.nan
    return step, float(seconds_at(times, [step])[0])


def per_run(runs: pd.DataFrame, curves: dict[str, pd.DataFrame], target: float) -> pd.DataFrame:
    """`runs` with steps_to_target, seconds_to_target (NaN: never reached), reached, the horizon each run was
    watched for (last validated step and its training seconds: where an unreached run is censored), and
    throughput as the mean over epochs."""
    runs = runs.copy()
    val = dict(tuple(curves["val/acc"].groupby("run_id")))
    times = dict(tuple(curves["time/train_s"].groupby("run_id")))
    empty = curves["val/acc"].iloc[:0]
    hits = [time_to_target(val.get(r, empty), times.get(r, empty), target) for r in runs.run_id]
    runs["steps_to_target"] = [h[0] for h in hits]
    runs["seconds_to_target"] = [h[1] for h in hits]
    runs["reached"] = runs.steps_to_target.notna()
    # A run without a single validation is censored at 0: it tells nothing about the time to target.
    last = [float(val[r].step.max()) if r in val else 0.0 for r in runs.run_id]
    runs["horizon_steps"] = last
    runs["horizon_seconds"] = [float(seconds_at(times.get(r, empty), [h])[0]) for r, h in zip(runs.run_id, last)]
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
    """One row per optimizer (index), ranked: n_runs, n_diverged, reached, missing, rank, for each of
    STAT_COLUMNS `<col>_mean`, `<col>_low`, `<col>_high`, `<col>_n`, and `steps_to_target` and
    `seconds_to_target`: Kaplan-Meier medians over every run, unreached ones censored at their horizon (inf
    when fewer than half are known to reach the target). Listed optimizers without runs are missing=True."""
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
            ci = mean_ci(group[column], confidence, BOUNDS.get(column, (0.0, math.inf)))
            row.update({f"{column}_{key}": ci[key] for key in ("mean", "low", "high", "n")})
        for axis, column in TIME_AXES.items():
            times, horizons = group[column].to_list(), group[f"horizon_{axis}"].fillna(0.0).to_list()
            row[column] = median_time_to_target(times, horizons) if len(group) else math.nan
        rows.append(row)
    table = pd.DataFrame(rows).set_index("optimizer")
    ranked = table[table[f"{RANK_BY}_n"] > 0].sort_values(f"{RANK_BY}_mean", ascending=False)
    table["rank"] = pd.Series(range(1, len(ranked) + 1), index=ranked.index, dtype="Int64")
    return table.loc[[*ranked.index, *table.index.difference(ranked.index, sort=False)]]


def overlap_notes(table: pd.DataFrame, confidence: float = 0.95) -> list[str]:
    """One line per pair of adjacent ranks whose confidence intervals of test accuracy (RANK_BY) overlap."""
    ranked = table[table["rank"].notna()].sort_values("rank")
    notes = []
    for (upper, a), (lower, b) in zip(ranked.iterrows(), list(ranked.iterrows())[1:]):
        pair = f"#{a['rank']} {upper} and #{b['rank']} {lower}"
        low, high = a[f"{RANK_BY}_low"], b[f"{RANK_BY}_high"]
        if any(math.isnan(v) for v in (low, high)):
            notes.append(f"{pair}: no interval with a single seed, not distinguishable at {confidence:.0%}")
        elif low <= high:
            notes.append(f"{pair}: confidence intervals overlap, not distinguishable at {confidence:.0%}")
    return notes


def problem_times(runs: pd.DataFrame, axis: str = "steps", optimizers: Sequence[str] | None = None) -> pd.DataFrame:
    """(problem, optimizer, time) for the performance profile: a problem is a seed, or workload x seed when
    the runs span several workloads; time is steps or seconds to target, NaN when never reached. Listed
    optimizers without runs get NaN (never solved) on every problem."""
    several = len(runs[["data", "model"]].drop_duplicates()) > 1 if {"data", "model"} <= set(runs) else False
    problem = runs.data + "-" + runs.model + "/s" + runs.seed.astype(str) if several else "s" + runs.seed.astype(str)
    times = pd.DataFrame({"problem": problem, "optimizer": runs.optimizer, "time": runs[TIME_AXES[axis]]})
    absent = [name for name in optimizers or [] if name not in set(runs.optimizer)]
    filler = [{"problem": p, "optimizer": name, "time": math.nan} for name in absent for p in problem.unique()]
    return pd.concat([times, pd.DataFrame(filler, columns=times.columns)], ignore_index=True)


def validation_resolution(runs: pd.DataFrame, curves: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """How finely time to target is measured: the first crossing is only seen at a validation, so its
    resolution is the validation interval. trainer.val_check_interval as logged (None: once per epoch or
    every check_val_every_n_epoch epochs) and the median step spacing of the logged val/acc points."""
    logged = sorted({int(v) for v in runs.get("val_check_interval", pd.Series(dtype=float)).dropna()})
    spacing = curves["val/acc"].groupby("run_id").step.apply(lambda s: s.sort_values().diff().median())
    steps = float(spacing.median()) if spacing.notna().any() else None
    where = f"trainer.val_check_interval={', '.join(map(str, logged))}" if logged else "once per epoch (Lightning)"
    return {
        "val_check_interval": logged[0] if len(logged) == 1 else (logged or None),
        "val_every_steps": steps,
        "text": (
            f"validation {where}, every {steps:.0f} steps as logged: steps to target are known to that grain"
            if steps is not None
            else f"validation {where}"
        ),
    }


# --- the command ------------------------------------------------------------------------------------------


def config_target(cfg: DictConfig) -> float | None:
    """`target` as a number, or None; "None" counts as null (what DVC writes for a null param)."""
    value = cfg.target
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(
            f"target must be a validation accuracy in (0, 1], or null for the targets file; got {value!r}."
        )
    return float(value)


def _optional_text(value: Any) -> str | None:
    """A path setting, or None; "None" counts as null (what DVC writes for a null param)."""
    return None if value is None or str(value).strip().lower() in ("", "none", "null") else str(value)


def epochs_filter(cfg: DictConfig) -> int | None:
    """`epochs` (the name params.yaml and optbench-target use), or its deprecated name `max_epochs`."""
    epochs, old = cfg.get("epochs"), cfg.get("max_epochs")
    if old is not None:
        if epochs is not None and epochs != old:
            raise ConfigError(f"epochs={epochs} and max_epochs={old} disagree: max_epochs is the old name, drop it.")
        log.warning("max_epochs is deprecated: use epochs=%s", old)
        epochs = old
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"epochs must be a positive integer or null (every epoch count), got {epochs!r}.")
    return epochs


def check_config(cfg: DictConfig) -> None:
    if not 0 < cfg.confidence < 1:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {cfg.confidence}.")
    config_target(cfg)
    epochs_filter(cfg)
    if cfg.target_rule not in RULES:
        raise ConfigError(f"target_rule must be one of {', '.join(RULES)}, got {cfg.target_rule!r}.")
    if cfg.profile_time not in TIME_AXES:
        raise ConfigError(f"profile_time must be one of {', '.join(TIME_AXES)}, got {cfg.profile_time!r}.")
    r_max = cfg.profile_max_ratio
    if isinstance(r_max, bool) or not isinstance(r_max, (int, float)) or not r_max > 1:
        raise ConfigError(f"profile_max_ratio must be a number above 1 (AlgoPerf: 4), got {r_max!r}.")
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
    epochs = epochs_filter(cfg)
    runs = load_runs(client, cfg.experiment, optimizers=optimizers, seeds=seeds, data=data, model=model, epochs=epochs)
    trials = None
    if cfg.tune_experiment:
        trials = load_trials(client, cfg.tune_experiment, optimizers=optimizers, data=data, model=model)
    curves = load_all_curves(client, runs)
    target = resolve_target(
        runs,
        target=config_target(cfg),
        target_file=_optional_text(cfg.target_file),
        target_rule=cfg.target_rule,
        targets_dir=cfg.targets_dir,
        data=data,
        model=model,
    )
    runs = per_run(runs, curves, target.value)
    table = aggregate(runs, curves, target.value, cfg.confidence, optimizers)
    names = list(table.index)
    ratios = profile_ratios(problem_times(runs, cfg.profile_time, names))
    scores = profile_score(ratios, float(cfg.profile_max_ratio))
    budget = {}
    if trials is not None:
        budget = {k: v for k, v in budget_curves(trials).items() if k in names}
    notes = reference_notes(target, runs, epochs)
    for name in table.index[table.missing]:
        log.warning("optimizer %s is listed but has no matching finished run: reported as missing", name)
        notes.append(f"{name}: listed in optimizers, but no matching finished run (missing).")
    if runs.attrs.get("superseded"):
        superseded = runs.attrs["superseded"]
        notes.append(f"{superseded} older run(s) ignored: a newer run of the same (optimizer, seed) counts.")
    if table.reached.sum() == 0:
        notes.append(f"No run reaches the target {target.value:.4f}.")
    notes += overlap_notes(table, cfg.confidence)
    return Comparison(
        cfg.experiment,
        client.tracking_uri,
        runs,
        curves,
        table,
        target.value,
        target.rule,
        cfg.confidence,
        notes,
        trials,
        target_source=target.source,
        resolution=validation_resolution(runs, curves),
        profile_axis=cfg.profile_time,
        ratios=ratios,
        profile_scores=scores,
        r_max=float(cfg.profile_max_ratio),
        budget=budget,
    )
