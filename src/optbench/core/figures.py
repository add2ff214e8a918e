"""Figures drawn straight onto matplotlib's Agg canvas: no pyplot, no display, no global backend switch
(pyplot's state machine is for interactive sessions; a figure written to a PNG needs none of it)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def subplots(*args: Any, **kwargs: Any) -> tuple[Figure, Any]:
    """(figure, axes) like pyplot.subplots, for a figure that is only saved to a file."""
    size = kwargs.pop("figsize", None)
    fig = Figure(figsize=size)
    return fig, fig.subplots(*args, **kwargs)


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """Lay out and write `fig`; no version stamp in the PNG, so the same numbers give the same bytes."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    return path


# How each trial outcome is marked in a sensitivity plot (tuning plots and the comparison report).
OUTCOME_MARKERS = {"completed": "o", "pruned": "v", "diverged": "x"}


def plot_trials(
    points: list[tuple[str, str, float, float]], xlabel: str, ylabel: str, title: str, path: Path | None = None
):
    """Every tuning trial as (group, outcome, setting, metric): colour per group (per outcome when there
    is one group), marker per outcome, log x-axis for a learning rate. Drawn by hand because Optuna's slice
    plot shows completed trials only; pruned and diverged trials are what tell how wide the good range is."""
    import matplotlib

    fig, ax = subplots(figsize=(7, 4))
    finite = [(g, o, x, y) for g, o, x, y in points if math.isfinite(x) and math.isfinite(y) and x > 0]
    groups = sorted({g for g, *_ in finite})
    cmap = matplotlib.colormaps["tab10"]
    by_outcome = len(groups) <= 1
    outcomes = [*OUTCOME_MARKERS, *sorted({o for _, o, *_ in finite} - set(OUTCOME_MARKERS))]
    for i, group in enumerate(groups):
        for j, outcome in enumerate(outcomes):
            chosen = [(x, y) for g, o, x, y in finite if g == group and o == outcome]
            if not chosen:
                continue
            xs, ys = zip(*chosen)
            label = f"{outcome} ({len(chosen)})" if by_outcome else f"{group} {outcome} ({len(chosen)})"
            color = cmap(j % 10) if by_outcome else cmap(i % 10)
            ax.scatter(xs, ys, color=color, marker=OUTCOME_MARKERS.get(outcome, "s"), label=label, alpha=0.8)
    if xlabel.endswith("lr"):
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig if path is None else save_figure(fig, path, dpi=110)
