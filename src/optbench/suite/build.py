"""The suite's numbers from finished training runs, read back from MLflow's search API (compare/runs.py, as
optbench-compare does): per workload the newest run of each optimizer x seed, its validation curve of the
target metric and its time curve; then the per-workload tables and the scores across workloads."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from optbench.compare.runs import load_curves, load_runs, open_client
from optbench.core.errors import ConfigError
from optbench.suite.inputs import BOUNDS, Workload, read_params, read_target, select_workloads, split_list
from optbench.suite.scoring import (
    TIME_COLUMNS,
    problem_times,
    run_times,
    score_table,
    scores,
    workload_median_times,
    workload_table,
)

log = logging.getLogger("optbench.suite")


@dataclass
class Suite:
    """Everything the report is made of."""

    experiment: str
    tracking_uri: str
    workloads: list[Workload]
    optimizers: list[str]
    seeds: list[int]
    runs: pd.DataFrame  # one row per run: workload, optimizer, seed, final, test, times to target, horizons
    tables: dict[str, pd.DataFrame]  # workload name -> workload_table
    ratios: pd.DataFrame  # problems (workload/seed) x optimizers
    workload_ratios: pd.DataFrame  # workloads x optimizers (median over seeds)
    scores: pd.DataFrame  # one row per optimizer
    r_max: float
    profile_time: str
    confidence: float
    notes: list[str] = field(default_factory=list)


def check_config(cfg: DictConfig) -> None:
    if cfg.profile_time not in TIME_COLUMNS:
        raise ConfigError(f"profile_time must be one of {', '.join(TIME_COLUMNS)}, got {cfg.profile_time!r}.")
    r_max = cfg.profile_max_ratio
    if isinstance(r_max, bool) or not isinstance(r_max, (int, float)) or not r_max > 1:
        raise ConfigError(f"profile_max_ratio must be a number above 1 (AlgoPerf: 4), got {r_max!r}.")
    if not 0 < cfg.confidence < 1:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {cfg.confidence}.")


def workload_runs(client, experiment: str, workload: Workload, optimizers, seeds) -> pd.DataFrame:
    """The workload's runs with their final and test metric and times to target; an empty selection is an
    error that says which command makes the runs."""
    try:
        runs = load_runs(
            client, experiment, optimizers=optimizers, seeds=seeds, data=workload.data, model=workload.model,
            epochs=workload.epochs,
        )  # fmt: skip
    except ConfigError as err:
        raise ConfigError(
            f"workload {workload.name} (data={workload.data} model={workload.model} epochs={workload.epochs}): {err} "
            "Train the suite first: `dvc repro pipelines/suite/dvc.yaml` (or its stage "
            f"`dvc repro pipelines/suite/dvc.yaml:train@{workload.name}`), or point experiment= and "
            "tracking_uri= at the store that holds the runs."
        ) from None
    curve = load_curves(client, runs, workload.metric)
    clock = load_curves(client, runs, "time/train_s")
    test = load_curves(client, runs, workload.test_metric).groupby("run_id").value.last()
    empty = curve.iloc[:0]
    by_run, clock_by_run = dict(tuple(curve.groupby("run_id"))), dict(tuple(clock.groupby("run_id")))
    rows = [
        run_times(by_run.get(r, empty), clock_by_run.get(r, empty), workload.target, workload.direction)
        for r in runs.run_id
    ]
    runs = pd.concat([runs.reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    runs["test"] = runs.run_id.map(test).astype(float)
    runs.insert(0, "workload", workload.name)
    keep = ["workload", "optimizer", "seed", "run_id", "diverged", "final", "test", *rows[0].keys()] if rows else []
    return runs[list(dict.fromkeys(keep))] if keep else runs


def build_suite(cfg: DictConfig) -> Suite:
    """Select the runs `cfg` names and compute every number; nothing is written."""
    check_config(cfg)
    params = read_params(cfg.params_file)
    workloads = select_workloads(params, split_list(cfg.workloads))
    workloads = [read_target(w, cfg.targets_dir) for w in workloads]
    optimizers = [
        str(o) for o in split_list(cfg.optimizers if cfg.optimizers is not None else params.get("optimizers")) or []
    ]
    seeds = [int(s) for s in split_list(cfg.seeds if cfg.seeds is not None else params.get("seeds")) or []]
    if not optimizers or not seeds:
        raise ConfigError("the suite needs optimizers and seeds: set them in params_file or on the command line.")
    client = open_client(cfg.tracking_uri)
    frames, tables, notes = [], {}, []
    for workload in workloads:
        runs = workload_runs(client, cfg.experiment, workload, optimizers, seeds)
        frames.append(runs)
        tables[workload.name] = workload_table(runs, optimizers, BOUNDS[workload.metric], cfg.confidence)
        for name in optimizers:
            have = set(runs.seed[runs.optimizer == name].astype(int))
            lacking = [s for s in seeds if s not in have]
            if lacking:
                notes.append(
                    f"{workload.name}: {name} has no finished run for seed(s) {lacking} (counted as not solved)."
                )
        if not runs.reached.any():
            notes.append(f"{workload.name}: no run reaches the target {workload.target:.4g} ({workload.metric}).")
    runs = pd.concat(frames, ignore_index=True)
    r_max = float(cfg.profile_max_ratio)
    times = problem_times(runs, cfg.profile_time, optimizers)
    ratios, per_problem = scores(times, r_max)
    workload_ratios, per_workload = scores(workload_median_times(times), r_max)
    for workload in workloads:
        log.info("%s: target %s %s %.4g", workload.name, workload.metric, workload.direction, workload.target)
    return Suite(
        experiment=cfg.experiment,
        tracking_uri=client.tracking_uri,
        workloads=workloads,
        optimizers=optimizers,
        seeds=seeds,
        runs=runs,
        tables=tables,
        ratios=ratios,
        workload_ratios=workload_ratios,
        scores=score_table(per_problem, per_workload, ratios, r_max),
        r_max=r_max,
        profile_time=cfg.profile_time,
        confidence=float(cfg.confidence),
        notes=notes,
    )


def finite_or_none(value: Any) -> Any:
    """A plain JSON value: numpy scalars as Python ones, and None for inf and NaN, which JSON lacks (the
    report's text says 'not reached')."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
