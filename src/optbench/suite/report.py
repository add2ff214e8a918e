"""The suite's report files, written to `output_dir`:

scores.json                    DVC metrics: per optimizer the AlgoPerf score (workload x seed problems),
                               the workload-median score, problems solved and fastest
summary.json                   every number: workloads with targets, per-workload tables, scores, notes
report.md, report.html         the scores, the profiles, one table per workload (HTML: images embedded)
performance_profile.png        rho(tau) over workload x seed problems (compare/profiles.py's plot)
performance_profile_workloads.png   rho(tau) over workloads, time = median over seeds (AlgoPerf's way)
profile.csv                    DVC plot data: tau, optimizer, rho (workload x seed problems)
runs.csv                       one row per run: final and test metric, times to target, horizons
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optbench.compare.page import html_page
from optbench.compare.profiles import plot_profile, profile
from optbench.core.files import write_json, write_text
from optbench.suite.build import Suite, finite_or_none

HEADLINE = ("algoperf_score", "workload_median_score", "solved", "fastest", "problems")


def _ci(row: pd.Series, column: str, spec: str) -> str:
    if row[f"{column}_n"] == 0:
        return "missing"
    text = format(row[f"{column}_mean"], spec)
    low, high = row[f"{column}_low"], row[f"{column}_high"]
    return text + (" [n/a]" if math.isnan(low) else f" [{low:{spec}}, {high:{spec}}]")


def _time(row: pd.Series, column: str, spec: str) -> str:
    reached = f"{int(row['reached'])}/{int(row['n_runs'])}"
    if row["n_runs"] == 0:
        return "missing"
    if row["reached"] == 0:
        return f"not reached ({reached})"
    if math.isinf(row[column]):
        return f"not reached by half ({reached})"
    return f"{row[column]:{spec}} (reached {reached})"


def table_lines(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]


def markdown(suite: Suite) -> str:
    level = f"{suite.confidence:.0%}"
    names = ", ".join(w.name for w in suite.workloads)
    lines = [
        "# Optimizer suite: performance profiles across workloads",
        "",
        f"Workloads: {names}. Optimizers: {', '.join(suite.optimizers)}. Seeds: {', '.join(map(str, suite.seeds))}. "
        f"Runs of MLflow experiment {suite.experiment} ({suite.tracking_uri}).",
        "",
        "## Scores",
        "",
        f"AlgoPerf score: the area under the performance profile rho(tau) for tau in [1, {suite.r_max:g}], divided "
        f"by {suite.r_max - 1:g} (1 = fastest to the target on every problem, 0 = never within {suite.r_max:g}x of "
        f"the fastest). Time: {suite.profile_time} to each workload's a-priori target. A problem is one workload x "
        f"seed ({len(suite.ratios)} problems); a run that never reaches its target, or is missing, counts as "
        "infinite time. Workload-median score: AlgoPerf's own aggregation, one problem per workload whose time is "
        "the median over seeds.",
        "",
    ]
    rows = [
        [
            name,
            f"{row.algoperf_score:.3f}",
            f"{row.workload_median_score:.3f}",
            f"{row.solved}/{row.problems}",
            f"{row.within_r_max}/{row.problems}",
            f"{row.fastest}/{row.problems}",
        ]
        for name, row in suite.scores.astype(object).iterrows()
    ]
    header = [
        "Optimizer",
        "AlgoPerf score",
        "Workload-median score",
        "Reached target",
        f"Within {suite.r_max:g}x",
        "Fastest",
    ]
    lines += table_lines(header, rows)
    lines += ["", "![Performance profile](performance_profile.png)", ""]
    lines += ["![Performance profile over workloads](performance_profile_workloads.png)", ""]
    lines += ["## Workloads and targets", ""]
    rows = [
        [w.name, w.data, w.model, str(w.epochs), f"{w.metric} {w.direction}", f"{w.target:.4g}", w.target_source]
        for w in suite.workloads
    ]
    lines += table_lines(["Workload", "Data", "Model", "Epochs", "Metric", "Target", "Targets file"], rows)
    for workload in suite.workloads:
        table = suite.tables[workload.name]
        lines += ["", f"## {workload.name}", ""]
        lines.append(
            f"{workload.data} x {workload.model}, {workload.epochs} epochs; target {workload.metric} "
            f"{'>=' if workload.direction == 'maximize' else '<='} {workload.target:.4g}."
        )
        lines.append("")
        spec = ".4f" if workload.metric == "val/acc" else ".4g"
        rows = [
            [
                name,
                str(int(row.n_runs)),
                _ci(row, "final", spec),
                _ci(row, "test", spec),
                _time(row, "steps_to_target", ".0f"),
                _time(row, "seconds_to_target", ".1f"),
                f"{int(row.n_diverged)}/{int(row.n_runs)}",
            ]
            for name, row in table.iterrows()
        ]
        header = [
            "Optimizer",
            "Runs",
            f"Final {workload.metric}",
            workload.test_metric,
            "Steps to target",
            "Seconds to target",
            "Diverged",
        ]
        lines += table_lines(header, rows)
    lines += ["", "## How to read this", ""]
    lines += [
        f"- Final / test metric: mean over seeds [{level} t-interval, clipped to the metric's range]; n/a: one seed or no spread.",
        "- Steps / seconds to target: the first validated step that reaches the target, and training seconds "
        "(time/train_s) there; Kaplan-Meier median over seeds, a run that never reaches it censored at its last "
        "validated step; 'not reached by half' when fewer than half are known to reach it.",
        "- Each workload's tuned settings come from the suite's tune stage: an equal budget per optimizer, tuning "
        "seeds disjoint from the evaluation seeds, at the final horizon.",
    ]
    if suite.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in suite.notes]
    return "\n".join(lines) + "\n"


def profile_curve(ratios: pd.DataFrame, r_max: float) -> pd.DataFrame:
    """rho(tau) in long form for `dvc plots`: every ratio in [1, r_max] and a grid, per optimizer."""
    taus = np.unique(np.concatenate([np.linspace(1.0, r_max, 61), ratios.to_numpy(float).ravel()]))
    taus = taus[(taus >= 1.0) & (taus <= r_max)]
    rho = profile(ratios, taus)
    return rho.reset_index().melt(id_vars="tau", var_name="optimizer", value_name="rho")


def summary(suite: Suite) -> dict[str, Any]:
    tables = {
        name: {opt: {k: finite_or_none(v) for k, v in row.items()} for opt, row in table.to_dict("index").items()}
        for name, table in suite.tables.items()
    }
    return {
        "experiment": suite.experiment,
        "optimizers": suite.optimizers,
        "seeds": suite.seeds,
        "profile_time": suite.profile_time,
        "r_max": suite.r_max,
        "n_problems": len(suite.ratios),
        "workloads": {w.name: w.describe() for w in suite.workloads},
        "scores": {
            opt: {k: finite_or_none(v) for k, v in row.items()} for opt, row in suite.scores.to_dict("index").items()
        },
        "tables": tables,
        "ratios": {
            p: {o: finite_or_none(float(v)) for o, v in row.items()} for p, row in suite.ratios.to_dict("index").items()
        },
        "notes": suite.notes,
    }


def write_report(suite: Suite, output_dir: Path) -> list[Path]:
    """Write every file listed in the module docstring; return their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    axis = suite.profile_time
    per_problem = dict(suite.scores.algoperf_score)
    per_workload = dict(suite.scores.workload_median_score)
    files = [
        plot_profile(suite.ratios, per_problem, axis, suite.r_max, output_dir / "performance_profile.png"),
        plot_profile(
            suite.workload_ratios,
            per_workload,
            f"{axis} (median over seeds)",
            suite.r_max,
            output_dir / "performance_profile_workloads.png",
        ),  # fmt: skip
    ]
    profile_curve(suite.ratios, suite.r_max).to_csv(output_dir / "profile.csv", index=False)
    suite.runs.to_csv(output_dir / "runs.csv", index=False)
    table = suite.scores.astype(object)  # counts stay integers (iterrows would make them floats)
    metrics = {opt: {k: finite_or_none(row[k]) for k in HEADLINE} for opt, row in table.iterrows()}
    write_json(output_dir / "scores.json", metrics)
    write_json(output_dir / "summary.json", summary(suite))
    text = markdown(suite)
    write_text(output_dir / "report.md", text)
    write_text(output_dir / "report.html", html_page(text, output_dir, "Optimizer suite"))
    names = ("profile.csv", "runs.csv", "scores.json", "summary.json", "report.md", "report.html")
    return [Path(f) for f in files] + [output_dir / n for n in names]


def score_section(report: Path) -> str:
    """The score table of a written report.md, as the docs quote it (for a generated part of the README:
    the docs show what the report says, never a copy typed by hand)."""
    lines = Path(report).read_text().splitlines()
    start = lines.index("## Scores")
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    block = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        block.append(line)
    return "\n".join(block) + "\n"
