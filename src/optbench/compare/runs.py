"""Training runs, their curves and tuning trials, read back from MLflow's search API (never local files).

The training runs are the FINISHED runs of an experiment with no parent run and no optbench.kind tag,
filtered by optimizer, seed, data, model and epochs (trainer.max_epochs); of several runs of one (optimizer, seed, data,
model) the most recent counts.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Sequence
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, ListConfig

from optbench.core.errors import ConfigError
from optbench.tracking import TAG_PREFIX, open_store

KIND_TAG, OUTCOME_TAG, PARENT_TAG = TAG_PREFIX + "kind", TAG_PREFIX + "outcome", "mlflow.parentRunId"
# Final values read from each run (search_runs holds the last logged value of every metric).
RUN_METRICS = {
    "val_acc_best": "val/acc_best",
    "test_acc": "test/acc",
    "train_loss": "train/loss",
    "state_to_param_ratio": "optimizer/state_to_param_ratio",
    "samples_per_sec": "train/samples_per_sec",
}
WORKLOAD = ("data", "model", "epochs", "data_fingerprint", "val_check_interval", "check_val_every_n_epoch")
CURVE_METRICS = ("val/acc", "time/train_s", "train/loss", "train/samples_per_sec")


def open_client(tracking_uri: str | None = None) -> MlflowClient:
    """A client for the store; a SQLite file that does not exist is an error, not a new empty store."""
    return open_store(tracking_uri, create=False)


def find_experiment(client: MlflowClient, name: str):
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment
        names = sorted(e.name for e in client.search_experiments())
    except MlflowException as err:
        raise ConfigError(f"cannot read the MLflow store at {client.tracking_uri}: {err}") from None
    raise ConfigError(
        f"no MLflow experiment named {name} in {client.tracking_uri}; experiments there: "
        f"{', '.join(names) or '(none)'}. Set experiment=<name>."
    )


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str = "") -> list:
    """Every active run matching `filter_string`, newest first: mlflow.search_runs pages through them."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        return mlflow.search_runs(
            experiment_ids,
            filter_string,
            ViewType.ACTIVE_ONLY,
            order_by=["attributes.start_time DESC"],
            output_format="list",
        )
    finally:
        mlflow.set_tracking_uri(previous)


def as_list(value: Any) -> list | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


def option_name(node: Any) -> str | None:
    """data/model of the config: a selected conf/data or conf/model option (its name), a string, or None."""
    if isinstance(node, DictConfig):
        return str(node.name)
    return None if node is None else str(node)


def _param_filters(data: str | None, model: str | None, epochs: int | None) -> list[str]:
    pairs = {"data.name": data, "model.name": model, "trainer.max_epochs": epochs}
    return [f"params.`{key}` = '{value}'" for key, value in pairs.items() if value is not None]


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _seed(value: Any) -> int:
    number = _number(value)
    return int(number) if math.isfinite(number) else -1  # a run logged without a seed


def load_runs(
    client: MlflowClient,
    experiment: str,
    *,
    optimizers: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    data: str | None = None,
    model: str | None = None,
    epochs: int | None = None,
) -> pd.DataFrame:
    """One row per selected training run: optimizer, seed, run_id, start_time, diverged and final metrics.

    The MLflow filter string does status, tags and params; pandas does the optimizer and seed lists and
    keeps the newest run of each (optimizer, seed, data, model). `attrs["superseded"]` counts the older runs dropped.
    """
    exp = find_experiment(client, experiment)
    clauses = ["attributes.status = 'FINISHED'", f"tags.`{PARENT_TAG}` IS NULL", f"tags.`{KIND_TAG}` IS NULL"]
    found = search_all(client, [exp.experiment_id], " AND ".join(clauses + _param_filters(data, model, epochs)))
    rows = []
    for run in found:
        params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
        if PARENT_TAG in tags or KIND_TAG in tags or "optimizer.name" not in params:
            continue  # a store whose search ignores IS NULL, or a run optbench did not log
        outcome = tags.get(OUTCOME_TAG, "")
        row = {
            "optimizer": params["optimizer.name"],
            "seed": _seed(params.get("seed")),
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "start_time": run.info.start_time,
            "outcome": outcome,
            "diverged": metrics.get("train/diverged", 0.0) >= 1 or outcome == "diverged",
            "data": params.get("data.name", ""),
            "model": params.get("model.name", ""),
            "epochs": _number(params.get("trainer.max_epochs")),
            "data_fingerprint": tags.get(TAG_PREFIX + "data_fingerprint", ""),
            # the resolution of time to target: validation every N steps (None: once per epoch)
            "val_check_interval": _number(params.get("trainer.val_check_interval")),
            "check_val_every_n_epoch": _number(params.get("trainer.check_val_every_n_epoch")),
        }
        row.update({column: metrics.get(key, math.nan) for column, key in RUN_METRICS.items()})
        rows.append(row)
    columns = ["optimizer", "seed", "run_id", "run_name", "start_time", "outcome", "diverged", *WORKLOAD, *RUN_METRICS]
    runs = pd.DataFrame(rows, columns=columns)
    if optimizers is not None:
        runs = runs[runs.optimizer.isin([str(o) for o in optimizers])]
    if seeds is not None:
        runs = runs[runs.seed.isin([int(s) for s in seeds])]
    # Runs of different workloads (data, model) are different problems, never newer versions of each other.
    key = ["optimizer", "seed", "data", "model"]
    newest = runs.sort_values("start_time", ascending=False).drop_duplicates(key, keep="first")
    newest = newest.sort_values(["optimizer", "seed"]).reset_index(drop=True)
    newest.attrs["superseded"] = len(runs) - len(newest)
    if newest.empty:
        chosen = {"optimizers": optimizers, "seeds": seeds, "data": data, "model": model, "epochs": epochs}
        filters = ", ".join(f"{k}={v}" for k, v in chosen.items() if v is not None) or "no filters"
        every = search_all(client, [exp.experiment_id], " AND ".join(clauses))
        raise ConfigError(
            f"no FINISHED training runs in MLflow experiment {experiment} ({client.tracking_uri}) match {filters}; "
            f"it holds {len(every)} finished training run(s){_describe(every)}. Check the filters, or train first."
        )
    return newest


def _describe(runs: list) -> str:
    """ ": data mnist5k; model cnn; ..." : the values that the runs' params take, for error messages."""
    keys = {
        "data": "data.name",
        "model": "model.name",
        "epochs": "trainer.max_epochs",
        "optimizers": "optimizer.name",
        "seeds": "seed",
    }
    parts = []
    for label, key in keys.items():
        values = sorted({r.data.params[key] for r in runs if key in r.data.params}, key=lambda v: (len(v), v))
        if values:
            parts.append(f"{label} {', '.join(values)}")
    return (": " + "; ".join(parts)) if parts else ""


def load_curves(client: MlflowClient, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The full history of `metric` of every run: a long table run_id, optimizer, seed, step, value."""
    rows = [
        (run.run_id, run.optimizer, run.seed, m.step, m.value)
        for run in runs.itertuples()
        for m in client.get_metric_history(run.run_id, metric)
    ]
    curve = pd.DataFrame(rows, columns=["run_id", "optimizer", "seed", "step", "value"])
    return curve[np.isfinite(curve.value.astype(float))].sort_values(["run_id", "step"]).reset_index(drop=True)


def seconds_at(times: pd.DataFrame, steps: Iterable[float]) -> np.ndarray:
    """time/train_s at `steps`, interpolated by step from one run's history (0 s at step 0)."""
    steps = np.asarray(list(steps), dtype=float)
    if times.empty:
        return np.full(len(steps), math.nan)
    t = times.sort_values("step").drop_duplicates("step", keep="last")
    xs, ys = t.step.to_numpy(float), t.value.to_numpy(float)
    if xs[0] > 0:
        xs, ys = np.concatenate([[0.0], xs]), np.concatenate([[0.0], ys])
    return np.interp(steps, xs, ys)


def load_all_curves(client: MlflowClient, runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """CURVE_METRICS of every run; train/loss and val/acc also get a `seconds` column (time/train_s by step)."""
    curves = {metric: load_curves(client, runs, metric) for metric in CURVE_METRICS}
    times = dict(tuple(curves["time/train_s"].groupby("run_id")))
    empty = curves["time/train_s"].iloc[:0]
    for metric in ("train/loss", "val/acc"):
        curve = curves[metric]
        curve["seconds"] = np.nan
        for run_id, group in curve.groupby("run_id"):
            curve.loc[group.index, "seconds"] = seconds_at(times.get(run_id, empty), group.step)
    return curves


def _space(client: MlflowClient, parent_run_id: str) -> str:
    """The search space a tuning study's parent run logged, as one short line: params search.<key> (one
    line each, as optbench-tune logs it), or the one dict param tune.search_space of older stores."""
    try:
        params = client.get_run(parent_run_id).data.params
        logged = params.get("tune.search_space")
        space = ast.literal_eval(logged) if logged else {}
    except (MlflowException, ValueError, SyntaxError):
        return ""
    searched = [value for key, value in sorted(params.items()) if key.startswith("search.")]
    if searched:
        short = (
            line.replace("optimizer.", "").replace("scheduler.", "").replace(" in [", " [").replace("1 - ", "1 − ")
            for line in searched
        )
        return "; ".join(line.replace(" (log)", "").replace(" (linear)", " linear") for line in short)
    parts = []
    for key, spec in space.items():
        shown = key.removeprefix("optimizer.").removeprefix("scheduler.")
        if isinstance(spec, dict) and "low" in spec:
            shown = f"1 − {shown}" if spec.get("transform") == "one_minus" else shown
            parts.append(f"{shown} [{spec['low']:.3g}, {spec['high']:.3g}]{'' if spec.get('log') else ' linear'}")
        elif isinstance(spec, dict) and "choices" in spec:
            parts.append(f"{shown} in {spec['choices']}")
    return "; ".join(parts)


def load_trials(
    client: MlflowClient,
    experiment: str,
    *,
    optimizers: Sequence[str] | None = None,
    data: str | None = None,
    model: str | None = None,
) -> pd.DataFrame:
    """The finished trials (child runs) of the newest tuning of each study name: optimizer, study, lr,
    val_acc_best, outcome. A rerun tuning (`dvc repro` after a change) starts fresh studies under the same
    names, so only the newest parent run of a name counts: its older trials tuned something else."""
    exp = find_experiment(client, experiment)
    clauses = [
        "attributes.status = 'FINISHED'",
        f"tags.`{PARENT_TAG}` IS NOT NULL",
        f"tags.`{TAG_PREFIX}trial` IS NOT NULL",
    ]
    found = search_all(client, [exp.experiment_id], " AND ".join(clauses + _param_filters(data, model, None)))
    rows = [
        {
            "optimizer": r.data.params.get("optimizer.name"),
            "study": r.data.tags.get(TAG_PREFIX + "study"),
            "lr": _number(r.data.params.get("optimizer.lr")),
            "val_acc_best": r.data.metrics.get("val/acc_best", math.nan),
            "outcome": r.data.tags.get(OUTCOME_TAG, ""),
            "run_id": r.info.run_id,
            "parent": r.data.tags.get(PARENT_TAG),
            "start": r.info.start_time,
        }
        for r in found
    ]
    columns = ["optimizer", "study", "lr", "val_acc_best", "outcome", "run_id"]
    trials = pd.DataFrame(rows, columns=[*columns, "parent", "start"])
    name = trials.optimizer.fillna("") + "/" + trials.study.fillna("")
    newest = trials.assign(name=name).sort_values("start").groupby("name").parent.last()
    trials = trials[trials.parent == name.map(newest)]
    spaces = {parent: _space(client, parent) for parent in trials.parent.dropna().unique()}
    trials = trials.assign(space=trials.parent.map(spaces))[[*columns, "space"]]
    if optimizers is not None:
        trials = trials[trials.optimizer.isin([str(o) for o in optimizers])]
    return trials.reset_index(drop=True)
