"""Plots saved as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

# How each trial outcome is drawn in sensitivity plots.
OUTCOME_STYLE = {
    "completed": dict(marker="o", color="tab:blue"),
    "pruned": dict(marker="v", color="tab:orange"),
    "diverged": dict(marker="x", color="tab:red"),
}


def save_optimization_history(study: optuna.Study, path: Path) -> None:
    """Optuna's own optimization-history plot (objective per trial and best so far)."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    ax.figure.set_size_inches(7, 4)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)


def trial_point(trial: FrozenTrial) -> tuple[str, float | None]:
    """(outcome, value) of a trial; a pruned trial is drawn at its last reported intermediate value."""
    outcome = trial.user_attrs.get("outcome", "completed")
    if trial.state == TrialState.PRUNED:
        last = max(trial.intermediate_values, default=None)
        return "pruned", trial.intermediate_values[last] if last is not None else None
    if trial.state == TrialState.COMPLETE:
        return ("diverged" if outcome == "diverged" else "completed"), trial.value
    return outcome, None


def plot_sensitivity(trials: Sequence[FrozenTrial], key: str, metric: str, path: Path) -> None:
    """The metric of every trial against one searched setting (log scale for the learning rate).

    Written by hand because Optuna's slice plot shows completed trials only; here pruned and diverged
    trials stay visible, which is what tells how wide the good range is.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for outcome, style in OUTCOME_STYLE.items():
        points = [(t.params[key], v) for t in trials if key in t.params for o, v in [trial_point(t)] if o == outcome]
        points = [(x, y) for x, y in points if y is not None and y == y and abs(y) != float("inf")]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, label=f"{outcome} ({len(points)})", alpha=0.8, **style)
    if key.endswith("lr"):
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against {key}, every trial")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
