"""MLflow for optbench: the store (store.py: where it is, opening it safely, dead runs) and the runs
(runs.py: names, parameters, provenance tags, a run's lifecycle from creation to its final status)."""

from optbench.tracking.runs import (
    TAG_PREFIX,
    TrackedRun,
    ends_run,
    experiment_id,
    flatten,
    git_state,
    log_values,
    open_run,
    provenance_tags,
    run_for,
    run_params,
    tracked_run,
)
from optbench.tracking.store import open_store, reap_dead_runs, resolve_tracking_uri

__all__ = [
    "TAG_PREFIX",
    "TrackedRun",
    "ends_run",
    "experiment_id",
    "flatten",
    "git_state",
    "log_values",
    "open_run",
    "open_store",
    "provenance_tags",
    "reap_dead_runs",
    "resolve_tracking_uri",
    "run_for",
    "run_params",
    "tracked_run",
]
