"""What a tuning study shows while it runs: a line per finished trial (k/N, settings, value, best so far, time
left) in optbench's log format, and a rich progress bar when the terminal is interactive."""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger("optbench.tuning.tune")

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards the budget


def finished(study: optuna.Study) -> int:
    """Trials that count towards the budget."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def settings_text(params: dict[str, Any], separator: str = "  ") -> str:
    """Sampled settings as `key=value`, floats to 4 significant digits."""
    return separator.join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def rounded(value: Any) -> Any:
    """A metric value to 4 decimals for the log; anything else (None, a count) as it is."""
    return f"{value:.4f}" if isinstance(value, float) else value


class TrialProgress:
    """After each trial: trial k/N of the study, its settings, value and outcome, the best value so far and
    the time left at the pace so far, as one log line; on an interactive terminal a rich progress bar too."""

    def __init__(self, label: str, total: int, done: int) -> None:
        self.label, self.total, self.done, self.first = label, total, done, done
        self.start = time.monotonic()
        self.bar: Any = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("best {task.fields[best]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self.task = self.bar.add_task(label, total=total, completed=done, best="-")

    def __enter__(self) -> TrialProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.done = finished(study)
        params = settings_text(trial.params)
        value = rounded(trial.value) if trial.value is not None else "-"
        outcome = trial.user_attrs.get("outcome", trial.state.name.lower())
        finite = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        finite = [v for v in finite if v is not None and math.isfinite(v)]
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        best = rounded(pick(finite)) if finite else "-"
        pace = (time.monotonic() - self.start) / max(1, self.done - self.first)
        left = max(0, self.total - self.done) * pace
        log.info(
            "%s trial %d/%d: %s  value %s  %s | best %s | about %dm%02ds left",
            self.label,
            self.done,
            self.total,
            params,
            value,
            outcome,
            best,
            left // 60,
            left % 60,
        )
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, best=best)
