"""Rendering of an optimizer comparison (compare.py): table cells, plots, curve tables and the report files.

Files written to the output directory:
    summary.json                   target and its source, n_runs, and per optimizer a flat dict of numbers
                                   (and its budget_curve list)
    metrics/<optimizer>.json       DVC metrics, one row per optimizer in `dvc metrics show`: HEADLINE numbers
    report.md, report.html         the table, the target and its source, ranking notes, performance profile
                                   and budget curves, and the plots (HTML: embedded)
    learning_curves.png            train/loss and val/acc against step and seconds, mean and min-max band
    time_to_target.png             Kaplan-Meier median seconds to target; every run, unreached ones at their end
    performance_profile.png        rho(tau) per optimizer (profiles.py), with its AlgoPerf score
    budget_curves.png              expected best val/acc_best after k tuning trials (tune_experiment)
    lr_sensitivity.png             val/acc_best of every tuning trial against optimizer.lr (tune_experiment)
    curves/<metric>_<axis>.csv     DVC plot data: optimizer, step[, seconds], value_mean, value_low, value_high, n_runs
    runs.csv                       one row per selected run (final metrics, steps and seconds to target)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from optbench.compare.analysis import Comparison
from optbench.compare.page import html_page
from optbench.compare.profiles import plot_budget_curves, plot_profile
from optbench.compare.styles import colors, line_style
from optbench.core.figures import plot_trials, save_figure, subplots

# The numbers of `dvc metrics show`: few enough for one terminal line per optimizer (summary.json has all).
HEADLINE = ("rank", "test_acc", "val_acc_best", "train_loss", "steps_to_target", "profile_score", "n_diverged")
BAND = "min-max over seeds"  # what the shaded band of a learning curve is
SECONDS_X = "mean over seeds of time/train_s at each step"  # where a point sits on the seconds axis
CURVES = {"train_loss": "train/loss", "val_acc": "val/acc"}
AXES = {"step": "step", "seconds": "training seconds (time/train_s)"}
# Table columns: (header, column of the per-optimizer table, number format, kind)
COLUMNS = [
    ("Best val acc", "val_acc_best", ".4f", "ci"),
    ("Test acc", "test_acc", ".4f", "ci"),
    ("Final train loss", "train_loss", ".4g", "ci"),
    ("Steps to target", "steps_to_target", ".0f", "median"),
    ("Seconds to target", "seconds_to_target", ".1f", "median"),
    ("Diverged", "n_diverged", "d", "count"),
    ("Opt. state / params", "state_to_param_ratio", ".2f", "mean"),
    ("Samples/s", "samples_per_sec", ".0f", "mean"),
]


# --- table cells ------------------------------------------------------------------------------------------


def _cell(row: pd.Series, column: str, spec: str, kind: str) -> str:
    if row["missing"]:
        return "missing"
    if kind == "count":
        return f"{int(row[column])}/{int(row['n_runs'])}"
    reached = f"{int(row['reached'])}/{int(row['n_runs'])}"
    if kind == "median":
        if row["reached"] == 0:
            return f"not reached ({reached})"
        if math.isinf(row[column]):
            return f"not reached by half ({reached})"
        return f"{row[column]:{spec}} (reached {reached})"
    if row[f"{column}_n"] == 0:
        return "missing"
    text = format(row[f"{column}_mean"], spec)
    if kind == "ci":
        low, high = row[f"{column}_low"], row[f"{column}_high"]
        text += " [n/a]" if math.isnan(low) else f" [{low:{spec}}, {high:{spec}}]"
    return text


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The per-optimizer table as display strings: mean [CI low, high], "n/a" for one seed, "missing"."""
    rows = []
    for name, row in table.iterrows():
        rank = "" if pd.isna(row["rank"]) else str(int(row["rank"]))
        cells = {"Rank": rank, "Optimizer": name, "Runs": str(int(row["n_runs"]))}
        cells.update({header: _cell(row, column, spec, kind) for header, column, spec, kind in COLUMNS})
        rows.append(cells)
    return pd.DataFrame(rows)


def legend(comparison: Comparison) -> list[str]:
    level = f"{comparison.confidence:.0%}"
    return [
        f"Cells: mean over seeds [{level} t-interval: mean ± t(n-1) s/sqrt(n), clipped to the metric's range]; n/a: a single seed or no spread, no interval; "
        "missing: no run (or no such metric).",
        "Best val acc: final val/acc_best. Test acc: test/acc at the end. Final train loss: last train/loss.",
        f"Steps / seconds to target: first validated step where val/acc >= {comparison.target:.4f}, and "
        "time/train_s (training wall clock, validation excluded) at that step. Kaplan-Meier median over every "
        "run: a run that never reaches the target is censored at its last validated step, never dropped; "
        "'not reached by half' when fewer than half are known to reach it. Reached k/n counts every run. "
        f"Resolution: {comparison.resolution.get('text', 'validation interval unknown')}.",
        "Diverged: runs whose loss became NaN/infinite (train/diverged = 1 or outcome diverged), kept in the table.",
        "Opt. state / params: optimizer-state memory over parameter memory. Samples/s: mean training throughput.",
    ]


# --- curves -----------------------------------------------------------------------------------------------


def curve_band(curve: pd.DataFrame, x: str = "step") -> pd.DataFrame:
    """Mean and min-max band over seeds per optimizer and step; with x="seconds" each point sits at the mean
    over seeds of time/train_s at that step. Runs are interpolated linearly onto the union of their
    optimizer's steps, inside each run's own range only; n_runs says how many runs make each point."""
    frames = []
    fields = ["value"] + ([x] if x != "step" else [])
    curve = curve.dropna(subset=["step", *fields])
    for optimizer, group in curve.groupby("optimizer", sort=False):
        grid = np.unique(group.step.to_numpy(float))
        stacks: dict[str, list] = {f: [] for f in fields}
        for _, run in group.groupby("run_id"):
            run = run.sort_values("step").drop_duplicates("step", keep="last")
            for f in fields:
                stacks[f].append(np.interp(grid, run.step.to_numpy(float), run[f].to_numpy(float), np.nan, np.nan))
        values = np.vstack(stacks["value"])
        frame = pd.DataFrame({"optimizer": optimizer, "step": grid})
        if x != "step":
            frame[x] = np.nanmean(np.vstack(stacks[x]), axis=0)
        frame["value_mean"] = np.nanmean(values, axis=0)
        frame["value_low"], frame["value_high"] = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        frame["n_runs"] = (~np.isnan(values)).sum(axis=0)
        frames.append(frame)
    columns = ["optimizer", "step", *([x] if x != "step" else []), "value_mean", "value_low", "value_high", "n_runs"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def curve_tables(curves: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """{"val_acc_step": band table, "val_acc_seconds": ..., "train_loss_step": ..., ...}."""
    return {f"{name}_{axis}": curve_band(curves[metric], axis) for name, metric in CURVES.items() for axis in AXES}


def plot_learning_curves(
    curves: dict[str, pd.DataFrame],
    target: float | None = None,
    order: list[str] | None = None,
    path: Path | None = None,
):
    """train/loss and val/acc against step and against training seconds: mean line and min-max band."""
    tables = curve_tables(curves)
    names = order or sorted(set(curves["val/acc"].optimizer) | set(curves["train/loss"].optimizer))
    color = colors(names)
    fig, axes = subplots(2, 2, figsize=(11, 7.5))
    for i, (name, metric) in enumerate(CURVES.items()):
        for j, (axis, label) in enumerate(AXES.items()):
            ax, band = axes[i, j], tables[f"{name}_{axis}"]
            for k, optimizer in enumerate(names):
                b = band[band.optimizer == optimizer]
                if b.empty:
                    continue
                style = line_style(k, len(b))
                ax.plot(b[axis], b.value_mean, color=color[optimizer], label=optimizer, lw=1.5, **style)
                ax.fill_between(b[axis], b.value_low, b.value_high, color=color[optimizer], alpha=0.2, lw=0)
            if metric == "val/acc" and target is not None:
                ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:.4f}")
            if metric == "train/loss" and (band.value_low > 0).all() and not band.empty:
                ax.set_yscale("log")
            ax.set(xlabel=label, ylabel=metric)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].legend(fontsize=8)
    fig.suptitle(f"Learning curves: mean over seeds, band = {BAND}; seconds = {SECONDS_X}", fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def plot_time_to_target(runs: pd.DataFrame, table: pd.DataFrame, target: float, path: Path | None = None):
    """Kaplan-Meier median seconds to target per optimizer (bar), every run as a point: a dot where it
    reached the target, a caret at its last validated second where it never did (censored)."""
    fig, ax = subplots(figsize=(max(5, 1.2 * len(table) + 2), 4))
    color = colors(list(table.index))
    xs = np.arange(len(table))
    heights = np.concatenate([runs.seconds_to_target.to_numpy(float), runs.horizon_seconds.to_numpy(float), [1.0]])
    top = np.nanmax(heights[np.isfinite(heights)])
    for x, (name, row) in zip(xs, table.iterrows()):
        group = runs[runs.optimizer == name]
        median = row.seconds_to_target
        if row.missing or not math.isfinite(median):
            label = "missing" if row.missing else f"median not reached\n({row.reached}/{row.n_runs})"
            ax.text(x, 0.02 * top, label, ha="center", va="bottom", fontsize=8, color="tab:red")
        else:
            ax.bar(x, median, color=color[name], alpha=0.5)
            ax.text(x, median + 0.02 * top, f"{row.reached}/{row.n_runs}", ha="center", fontsize=8)
        hit, miss = group[group.reached], group[~group.reached]
        ax.scatter(np.full(len(hit), x), hit.seconds_to_target, color=color[name], s=14, zorder=3)
        ax.scatter(np.full(len(miss), x), miss.horizon_seconds, color=color[name], marker="^", s=24, zorder=3)
    ax.set_xticks(xs, list(table.index))
    ax.set_ylim(0, top * 1.2)
    ax.set_ylabel("training seconds to target")
    ax.set_title(
        f"Seconds to val/acc >= {target:.4f}: Kaplan-Meier median (bar),\n"
        "runs that reach it (dots), runs that never do (^ at their end)",
        fontsize=9,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _finish(fig, path)


def plot_lr_sensitivity(trials: pd.DataFrame, path: Path | None = None):
    """val/acc_best of every tuning trial against optimizer.lr: one colour per optimizer, marker per outcome."""
    points = [
        (t.optimizer, t.outcome, float(t.lr), float(t.val_acc_best))
        for t in trials.dropna(subset=["optimizer"]).itertuples()
    ]
    title = "Learning-rate sensitivity: every tuning trial"
    return plot_trials(points, "optimizer.lr", "val/acc_best", title, path)


def _finish(fig, path: Path | None):
    if path is None:
        return fig
    return save_figure(fig, path, dpi=110)


# --- files ------------------------------------------------------------------------------------------------


def _number(value: Any) -> float | int | None:
    if value is None or pd.isna(value):
        return None
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


def _finite(value: Any) -> float | int | None:
    """A number for JSON, null where undefined or infinite (a median time to target not reached)."""
    number = _number(value)
    return number if number is not None and math.isfinite(number) else None


def summary_dict(comparison: Comparison) -> dict[str, Any]:
    """summary.json: the target and where it came from, n_runs, the time-to-target and profile settings, and
    per optimizer a dict of numbers (null where undefined) with its budget_curve (a list, when tuned)."""
    summary: dict[str, Any] = {
        "target": comparison.target,
        "target_source": comparison.target_source,
        "n_runs": len(comparison.runs),
        "confidence": comparison.confidence,
        "time_to_target": "Kaplan-Meier median; unreached runs censored at their last validated step",
        "val_check_interval": comparison.resolution.get("val_check_interval"),
        "val_every_steps": _finite(comparison.resolution.get("val_every_steps")),
        "profile_time": comparison.profile_axis,
        "profile_max_ratio": comparison.r_max,
        "profile_problems": 0 if comparison.ratios is None else len(comparison.ratios),
    }
    for name, row in comparison.table.iterrows():
        entry = {key: _number(row[key]) for key in ("rank", "n_runs", "n_diverged", "reached")}
        for column in ("val_acc_best", "test_acc", "train_loss"):
            entry.update(
                {
                    column: _number(row[f"{column}_mean"]),
                    f"{column}_low": _number(row[f"{column}_low"]),
                    f"{column}_high": _number(row[f"{column}_high"]),
                }
            )
        entry["steps_to_target"] = _finite(row["steps_to_target"])
        entry["seconds_to_target"] = _finite(row["seconds_to_target"])
        entry["state_to_param_ratio"] = _number(row["state_to_param_ratio_mean"])
        entry["samples_per_sec"] = _number(row["samples_per_sec_mean"])
        entry["profile_score"] = _number(comparison.profile_scores.get(str(name)))
        if str(name) in comparison.budget:
            entry["budget_curve"] = [round(v, 6) for v in comparison.budget[str(name)]]
        summary[str(name)] = entry
    return summary


def flat_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """summary.json as MLflow metric names (adam/val_acc_best), numbers only (no text, no lists)."""
    flat = {}
    for key, value in summary.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, number in items:
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                flat[f"{key}/{sub}" if sub else key] = float(number)
    return flat


def profile_lines(comparison: Comparison) -> list[str]:
    """The performance-profile and budget-curve paragraphs of the report (plain text, Markdown-safe)."""
    if comparison.ratios is None:
        return []
    axis = comparison.profile_axis
    ranked = [(str(name), comparison.profile_scores.get(str(name), 0.0)) for name in comparison.table.index]
    scores = sorted(ranked, key=lambda item: -item[1])  # ties keep the table's order
    lines = [
        f"Performance profile (Dolan-Moré) over {len(comparison.ratios)} problems (seeds, or workload x seed), "
        f"by {axis} to target: r = an optimizer's {axis} to target / the fastest optimizer's on that problem "
        f"(infinite when it never reaches the target); rho(tau) = fraction of problems with r <= tau. "
        f"Score (AlgoPerf) = integral of rho over [1, {comparison.r_max:g}] / {comparison.r_max - 1:g}: "
        "1 = fastest on every problem, 0 = never within the ratio.",
        "Scores: " + ", ".join(f"{name} {score:.3f}" for name, score in scores) + ".",
    ]
    if comparison.budget:
        trials = comparison.trials if comparison.trials is not None else pd.DataFrame(columns=["optimizer", "study"])
        studies = trials.groupby("optimizer").study.nunique()
        lines.append(
            "Budget curves (tunability): expected best val/acc_best after k tuning trials, the exact expectation "
            "of the best of k trials drawn without replacement from each optimizer's trials, all its tuning "
            "studies pooled: "
            + "; ".join(
                f"{name} k=1 {curve[0]:.4f}, k={len(curve)} {curve[-1]:.4f} ({int(studies.get(name, 1))} studies)"
                for name, curve in comparison.budget.items()
            )
            + "."
        )
    if comparison.trials is not None and "space" in comparison.trials and comparison.trials.space.any():
        spaces = comparison.trials.groupby("optimizer").space.agg(lambda s: sorted(set(s) - {""}))
        lines.append(
            "Search spaces (log scale unless marked; 1 − x: x sampled as 1 − x): "
            + "; ".join(f"{name}: {' | '.join(space)}" for name, space in spaces.items() if space)
            + "."
        )
    return lines


def _notes(comparison: Comparison) -> list[str]:
    notes = list(comparison.notes)
    if comparison.trials is not None and comparison.trials.empty:
        notes.append("LR sensitivity: the tuning experiment holds no finished trial matching the filters; no plot.")
    return notes


def workload(comparison: Comparison) -> str:
    """What was compared, from the runs themselves: "mnist5k, cnn, 4 epochs"."""
    runs = comparison.runs

    def values(column: str) -> list[str]:
        found = runs[column].dropna() if column in runs else []
        shown = {f"{v:g}" if isinstance(v, float) else str(v) for v in found if v != "" and v == v}
        return sorted(shown) or ["?"]

    return f"{'/'.join(values('data'))}, {'/'.join(values('model'))}, {'/'.join(values('epochs'))} epochs"


def markdown(comparison: Comparison, images: list[str]) -> str:
    """report.md; report.html is this text rendered (page.py), so the two never differ in content."""
    shown = format_table(comparison.table)
    lines = [
        f"# Optimizer comparison: {workload(comparison)}",
        "",
        f"{len(comparison.runs)} finished training runs of MLflow experiment {comparison.experiment} "
        f"({comparison.tracking_uri}), {comparison.runs.optimizer.nunique()} optimizers, "
        f"seeds {sorted(set(comparison.runs.seed))}.",
        "",
        f"**Target** val/acc = {comparison.target:.4f}: {comparison.target_rule}. Source: {comparison.target_source}.",
        "",
        "| " + " | ".join(shown.columns) + " |",
        "|" + "|".join("---" for _ in shown.columns) + "|",
    ]
    for row in shown.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    lines += ["", *[f"- {line}" for line in legend(comparison)], "", "## Ranking", ""]
    ranked = comparison.table[comparison.table["rank"].notna()].sort_values("rank")
    lines.append(" > ".join(f"{name} ({row.test_acc_mean:.4f})" for name, row in ranked.iterrows()))
    lines += ["", "by mean test accuracy (held out: validation accuracy picked the tuned settings).", ""]
    lines += ["## Performance profile and budget curves", "", *[f"{line}\n" for line in profile_lines(comparison)]]
    lines += ["## Notes", "", *[f"- {note}" for note in _notes(comparison)], ""]
    lines += [f"![{Path(image).stem}]({image})" for image in images]
    return "\n".join(lines) + "\n"


def write_report(comparison: Comparison, out: Path) -> tuple[dict[str, Any], list[Path]]:
    """Write every file of the report to `out`; return (summary, files written)."""
    (out / "curves").mkdir(parents=True, exist_ok=True)
    order = list(comparison.table.index[~comparison.table.missing])
    images = [
        plot_learning_curves(comparison.curves, comparison.target, order, out / "learning_curves.png"),
        plot_time_to_target(comparison.runs, comparison.table, comparison.target, out / "time_to_target.png"),
    ]
    if comparison.ratios is not None:
        profile, axis = out / "performance_profile.png", comparison.profile_axis
        images.append(plot_profile(comparison.ratios, comparison.profile_scores, axis, comparison.r_max, profile))
    sensitivity, budget = out / "lr_sensitivity.png", out / "budget_curves.png"
    for stale in (sensitivity, budget):
        stale.unlink(missing_ok=True)  # never leave a previous comparison's plot behind
    if comparison.trials is not None and not comparison.trials.empty:
        images.append(plot_lr_sensitivity(comparison.trials, sensitivity))
    if comparison.budget:
        images.append(plot_budget_curves(comparison.budget, budget))
    files = list(images)
    for name, band in curve_tables(comparison.curves).items():
        band.to_csv(out / "curves" / f"{name}.csv", index=False, float_format="%.6g")
        files.append(out / "curves" / f"{name}.csv")
    comparison.runs.drop(columns=["start_time"]).to_csv(out / "runs.csv", index=False, float_format="%.6g")
    summary = summary_dict(comparison)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    files += write_headline_metrics(summary, out / "metrics")
    text = markdown(comparison, [p.name for p in images])
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(html_page(text, out, f"Optimizer comparison: {workload(comparison)}"))
    files += [out / name for name in ("runs.csv", "summary.json", "report.md", "report.html")]
    return summary, files


def write_headline_metrics(summary: dict[str, Any], folder: Path) -> list[Path]:
    """metrics/<optimizer>.json: the HEADLINE numbers of each optimizer (undefined ones left out), one file
    per optimizer so that `dvc metrics show` prints one narrow row each. Files of optimizers no longer
    compared are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json"):
        stale.unlink()
    files = []
    for name, entry in summary.items():
        if isinstance(entry, dict):
            path = folder / f"{name}.json"
            path.write_text(json.dumps({k: entry[k] for k in HEADLINE if entry.get(k) is not None}, indent=2) + "\n")
            files.append(path)
    return files


def print_table(comparison: Comparison, console: Console | None = None) -> None:
    shown = format_table(comparison.table)
    title = f"{workload(comparison)} ({comparison.experiment}): target val/acc {comparison.target:.4f}"
    table = Table(title=title, show_lines=False)
    for column in shown.columns:
        table.add_column(column, justify="left" if column == "Optimizer" else "right")
    for row in shown.itertuples(index=False):
        table.add_row(*[Text(str(v)) for v in row])  # Text: "[n/a]" is not rich markup
    if console is None:  # a pipe or a log file gets wide lines rather than cells cut to fit 80 columns
        console = Console() if Console().is_terminal else Console(width=240)
    console.print(table)
    console.print(Text(f"Target: {comparison.target_rule}. Source: {comparison.target_source}."))
    for line in profile_lines(comparison):
        console.print(Text(line))
    for note in _notes(comparison):
        console.print(Text(f"- {note}"))
