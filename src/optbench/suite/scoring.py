"""Numbers of the workload suite: per-run time to target, per-workload tables, and the performance profile
and AlgoPerf score across workloads. Pure functions of tables; nothing here reads MLflow or writes files.

Performance profile (Dolan and Moré 2002) over problems = workload x seed: on each problem every optimizer
has a time to the workload's a-priori target (steps, or training seconds), infinite when its run never
reaches the target (censored) or is missing; r = time / the fastest optimizer's time on that problem.
compare/profiles.py computes the ratios and the score.

AlgoPerf score: the area under rho(tau) for tau in [1, r_max], divided by (r_max - 1), r_max = 4, as in
MLCommons AlgoPerf's scoring/performance_profile.py (github.com/mlcommons/algorithmic-efficiency, commit
2c90454f, September 2025): `compute_performance_profiles` sets a time beyond 4x the fastest to inf and
divides by the per-workload minimum, `rho = (r <= tau).sum() / NUM_BASE_WORKLOADS`, and
`compute_leaderboard_score(normalize=True)` integrates rho with the trapezoid rule over the tau grid and
divides by the grid's range. profiles.profile_score integrates the step function exactly instead.
AlgoPerf's own problem is a whole workload whose time is the median over its studies; that aggregation
is reported too (`workload_median_score`: the median over seeds per workload, one problem per workload).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from optbench.compare.profiles import R_MAX, profile_ratios, profile_score
from optbench.compare.runs import seconds_at
from optbench.stats import first_crossing, mean_ci, median_time_to_target

TIME_COLUMNS = {"steps": "steps_to_target", "seconds": "seconds_to_target"}


def higher_is_better(direction: str) -> bool:
    """maximize (an accuracy) or minimize (a loss), as a targets file says."""
    return direction == "maximize"


def run_times(curve: pd.DataFrame, times: pd.DataFrame, target: float, direction: str) -> dict[str, float | bool]:
    """One run's steps and seconds to target (NaN: never reached), its horizon (the last validated step and
    its seconds: where an unreached run is censored) and the final value of the validation metric."""
    step = first_crossing(zip(curve.step, curve.value), target, higher_is_better(direction))
    last = float(curve.step.max()) if not curve.empty else 0.0  # no validation at all: censored at 0
    final = float(curve.sort_values("step").value.iloc[-1]) if not curve.empty else math.nan
    return {
        "steps_to_target": math.nan if step is None else step,
        "seconds_to_target": math.nan if step is None else float(seconds_at(times, [step])[0]),
        "reached": step is not None,
        "horizon_steps": last,
        "horizon_seconds": float(seconds_at(times, [last])[0]) if not curve.empty else 0.0,
        "final": final,
    }


def workload_table(runs: pd.DataFrame, optimizers: Sequence[str], bounds, confidence: float = 0.95) -> pd.DataFrame:
    """One row per optimizer of one workload's runs: n_runs, reached, n_diverged, the final validation
    metric and the test metric (mean and t-interval over seeds), and Kaplan-Meier median steps and seconds
    to target (unreached runs censored at their horizon; inf when fewer than half reach it)."""
    rows = []
    for name in optimizers:
        group = runs[runs.optimizer == name]
        row: dict[str, Any] = {
            "optimizer": name,
            "n_runs": len(group),
            "reached": int(group.reached.sum()),
            "n_diverged": int(group.diverged.sum()),
        }
        for column in ("final", "test"):
            ci = mean_ci(group[column], confidence, bounds)
            row.update({f"{column}_{key}": ci[key] for key in ("mean", "low", "high", "n")})
        for axis, column in TIME_COLUMNS.items():
            times, horizons = group[column].to_list(), group[f"horizon_{axis}"].fillna(0.0).to_list()
            row[column] = median_time_to_target(times, horizons) if len(group) else math.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("optimizer")


def problem_times(runs: pd.DataFrame, axis: str, optimizers: Sequence[str]) -> pd.DataFrame:
    """(problem, optimizer, time) with a problem per workload x seed; time NaN when never reached. An
    optimizer without a run on a problem gets NaN there: missing counts as not solved."""
    problem = runs.workload + "/s" + runs.seed.astype(int).astype(str)
    times = pd.DataFrame({"problem": problem, "optimizer": runs.optimizer, "time": runs[TIME_COLUMNS[axis]]})
    grid = pd.MultiIndex.from_product([sorted(problem.unique()), list(optimizers)], names=["problem", "optimizer"])
    full = times.set_index(["problem", "optimizer"]).reindex(grid).reset_index()
    return full


def workload_median_times(times: pd.DataFrame) -> pd.DataFrame:
    """AlgoPerf's aggregation: one problem per workload, its time the median over seeds (np.median, as
    AlgoPerf's get_workloads_time_to_target does over studies), an unreached seed counting as inf."""
    frame = times.assign(workload=times.problem.str.rsplit("/", n=1).str[0], time=times.time.fillna(math.inf))
    median = frame.groupby(["workload", "optimizer"], sort=True).time.apply(lambda t: float(np.median(t)))
    out = median.reset_index().rename(columns={"workload": "problem"})
    out.loc[~np.isfinite(out.time), "time"] = math.nan  # profile_ratios: NaN = never solved
    return out


def scores(times: pd.DataFrame, r_max: float = R_MAX) -> tuple[pd.DataFrame, dict[str, float]]:
    """Performance ratios (problems x optimizers) and the AlgoPerf score of each optimizer."""
    ratios = profile_ratios(times)
    return ratios, profile_score(ratios, r_max)


def score_table(
    per_problem: dict[str, float], per_workload: dict[str, float], ratios: pd.DataFrame, r_max: float
) -> pd.DataFrame:
    """Per optimizer: both scores, problems solved (reached the target at all) and within r_max of the
    fastest, sorted by the workload x seed score (ties by name)."""
    rows = [
        {
            "optimizer": name,
            "algoperf_score": per_problem[name],
            "workload_median_score": per_workload.get(name, math.nan),
            "problems": len(ratios),
            "solved": int(np.isfinite(ratios[name]).sum()),
            "within_r_max": int((ratios[name] <= r_max).sum()),
            "fastest": int((ratios[name] == 1.0).sum()),
        }
        for name in ratios.columns
    ]
    table = pd.DataFrame(rows).set_index("optimizer")
    return table.sort_values(["algoperf_score"], ascending=False, kind="stable")
