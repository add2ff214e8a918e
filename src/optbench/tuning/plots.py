"""Plots of a tuning study, saved as PNG files (no display needed)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from optbench.core.figures import plot_trials


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
    import matplotlib.pyplot as plt  # Optuna drew on pyplot's figure: release it

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


def plot_sensitivity(groups: Mapping[str, Sequence[FrozenTrial]], key: str, metric: str, path: Path) -> None:
    """The metric of every trial against one searched setting, pruned and diverged trials included; one
    colour per group (the replicate studies of a tuning)."""
    points = []
    for group, trials in groups.items():
        for trial in trials:
            outcome, value = trial_point(trial)
            if key in trial.params and value is not None:
                points.append((group, outcome, float(trial.params[key]), float(value)))
    plot_trials(points, key, metric, f"{metric} against {key}, every trial", path)
