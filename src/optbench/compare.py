"""optbench-compare: the comparison report of finished training runs, read back from MLflow.

    optbench-compare
    optbench-compare optimizers=[sgd,adam] data=mnist5k max_epochs=5 tune_experiment=optbench-tune

Runs come from MLflow's search API, never from local files: the FINISHED training runs of `experiment`
(no parent run, no optbench.kind tag), filtered by optimizer, seed, data, model and max_epochs; of
several runs of one (optimizer, seed) the most recent counts. Per optimizer: means with t-distribution
confidence intervals over seeds, steps and seconds to a target validation accuracy, diverged runs,
optimizer-state memory and throughput. report.py renders the files; this module selects and computes.

The same functions make up the Python API (notebooks/compare_optimizers.ipynb):

    client = open_client("sqlite:///mlflow.db")
    runs = load_runs(client, "optbench-default")
    curves = load_all_curves(client, runs)
    target, rule = choose_target(runs)
    table = aggregate(runs, curves, target)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from mlflow.entities import Metric, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, ListConfig, OmegaConf
from scipy import stats
import yaml

import optbench
from optbench.config import CONFIG_DIR
from optbench.errors import ConfigError, OptbenchError, fail
from optbench.tracking import TAG_PREFIX, ends_run, git_state, log_batched, resolve_tracking_uri

log = logging.getLogger("optbench.compare")

KIND_TAG, OUTCOME_TAG, PARENT_TAG = TAG_PREFIX + "kind", TAG_PREFIX + "outcome", "mlflow.parentRunId"
# Final values read from each run (search_runs holds the last logged value of every metric).
RUN_METRICS = {
    "val_acc_best": "val/acc_best",
    "test_acc": "test/acc",
    "train_loss": "train/loss",
    "state_to_param_ratio": "optimizer/state_to_param_ratio",
    "samples_per_sec": "train/samples_per_sec",
}
CURVE_METRICS = ("val/acc", "time/train_s", "train/loss", "train/samples_per_sec")
# Per-run values summarized per optimizer as mean, confidence interval and count over seeds.
STAT_COLUMNS = (
    "val_acc_best", "test_acc", "train_loss", "steps_to_target", "seconds_to_target",
    "state_to_param_ratio", "samples_per_sec",
)  # fmt: skip


@dataclass
class Comparison:
    """Everything a report is made of: the runs, their curves, the per-optimizer table and the notes."""

    experiment: str
    tracking_uri: str
    runs: pd.DataFrame  # one row per selected run, with steps/seconds to target
    curves: dict[str, pd.DataFrame]  # metric -> long table (run_id, optimizer, seed, step, value[, seconds])
    table: pd.DataFrame  # one row per optimizer (index), ranked
    target: float
    target_rule: str
    confidence: float
    notes: list[str] = field(default_factory=list)
    trials: pd.DataFrame | None = None  # tuning trials for the LR-sensitivity plot; None = not asked for


# --- reading MLflow ---------------------------------------------------------------------------------------


def open_client(tracking_uri: str | None = None) -> MlflowClient:
    """A client for the store; a SQLite file that does not exist is an error, not a new empty store."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise ConfigError(f"no MLflow store at {uri[len('sqlite:///'):]} (tracking_uri={uri}): train runs first.")
    return MlflowClient(uri)


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
    """Every run matching `filter_string`, newest first, across search_runs pages."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string, ViewType.ACTIVE_ONLY, max_results=1000,
            order_by=["attributes.start_time DESC"], page_token=token,
        )  # fmt: skip
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _as_list(value: Any) -> list | None:
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


def _param_filters(data: str | None, model: str | None, max_epochs: int | None) -> list[str]:
    pairs = {"data.name": data, "model.name": model, "trainer.max_epochs": max_epochs}
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
    max_epochs: int | None = None,
) -> pd.DataFrame:
    """One row per selected training run: optimizer, seed, run_id, start_time, diverged and final metrics.

    The MLflow filter string does status, tags and params; pandas does the optimizer and seed lists and
    keeps the newest run of each (optimizer, seed). `attrs["superseded"]` counts the older runs dropped.
    """
    exp = find_experiment(client, experiment)
    clauses = ["attributes.status = 'FINISHED'", f"tags.`{PARENT_TAG}` IS NULL", f"tags.`{KIND_TAG}` IS NULL"]
    found = search_all(client, [exp.experiment_id], " AND ".join(clauses + _param_filters(data, model, max_epochs)))
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
        }
        row.update({column: metrics.get(key, math.nan) for column, key in RUN_METRICS.items()})
        rows.append(row)
    columns = ["optimizer", "seed", "run_id", "run_name", "start_time", "outcome", "diverged", *RUN_METRICS]
    runs = pd.DataFrame(rows, columns=columns)
    if optimizers is not None:
        runs = runs[runs.optimizer.isin([str(o) for o in optimizers])]
    if seeds is not None:
        runs = runs[runs.seed.isin([int(s) for s in seeds])]
    newest = runs.sort_values("start_time", ascending=False).drop_duplicates(["optimizer", "seed"], keep="first")
    newest = newest.sort_values(["optimizer", "seed"]).reset_index(drop=True)
    newest.attrs["superseded"] = len(runs) - len(newest)
    if newest.empty:
        chosen = {"optimizers": optimizers, "seeds": seeds, "data": data, "model": model, "max_epochs": max_epochs}
        filters = ", ".join(f"{k}={v}" for k, v in chosen.items() if v is not None) or "no filters"
        every = search_all(client, [exp.experiment_id], " AND ".join(clauses))
        raise ConfigError(
            f"no FINISHED training runs in MLflow experiment {experiment} ({client.tracking_uri}) match {filters}; "
            f"it holds {len(every)} finished training run(s){_describe(every)}. Check the filters, or train first."
        )
    return newest


def _describe(runs: list) -> str:
    """": data mnist5k; model cnn; ..." : the values that the runs' params take, for error messages."""
    keys = {"data": "data.name", "model": "model.name", "max_epochs": "trainer.max_epochs",
            "optimizers": "optimizer.name", "seeds": "seed"}  # fmt: skip
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


def load_trials(
    client: MlflowClient, experiment: str, *, optimizers: Sequence[str] | None = None,
    data: str | None = None, model: str | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Every finished tuning trial (child run of a study): optimizer, study, lr, val_acc_best, outcome."""
    exp = find_experiment(client, experiment)
    clauses = ["attributes.status = 'FINISHED'", f"tags.`{PARENT_TAG}` IS NOT NULL",
               f"tags.`{TAG_PREFIX}trial` IS NOT NULL"]
    found = search_all(client, [exp.experiment_id], " AND ".join(clauses + _param_filters(data, model, None)))
    rows = [
        {
            "optimizer": r.data.params.get("optimizer.name"),
            "study": r.data.tags.get(TAG_PREFIX + "study"),
            "lr": _number(r.data.params.get("optimizer.lr")),
            "val_acc_best": r.data.metrics.get("val/acc_best", math.nan),
            "outcome": r.data.tags.get(OUTCOME_TAG, ""),
            "run_id": r.info.run_id,
        }
        for r in found
    ]
    trials = pd.DataFrame(rows, columns=["optimizer", "study", "lr", "val_acc_best", "outcome", "run_id"])
    if optimizers is not None:
        trials = trials[trials.optimizer.isin([str(o) for o in optimizers])]
    return trials.reset_index(drop=True)


# --- statistics -------------------------------------------------------------------------------------------


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) over the finite values: mean ± t_{(1+c)/2, n-1} s/sqrt(n); NaN bounds when n < 2."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def time_to_target(val_acc: pd.DataFrame, times: pd.DataFrame, target: float) -> tuple[float, float]:
    """(step, seconds) of one run's first logged val/acc >= target, or (nan, nan) when it never gets there."""
    hit = val_acc[val_acc.value >= target]
    if hit.empty:
        return math.nan, math.nan
    step = float(hit.step.min())
    return step, float(seconds_at(times, [step])[0])


def choose_target(runs: pd.DataFrame, target: float | None = None) -> tuple[float, str]:
    """The target validation accuracy and a sentence on how it was chosen."""
    if target is not None:
        return float(target), f"given in the config (target={target})"
    means = runs.groupby("optimizer").val_acc_best.mean().dropna()
    if means.empty:
        raise OptbenchError(
            "none of the selected runs logged val/acc_best (regression runs?): optbench-compare ranks optimizers "
            "by validation accuracy. Select classification runs (data=...)."
        )
    best = means.idxmax()
    values = runs.loc[runs.optimizer == best, "val_acc_best"].dropna()
    value = float(values.median())
    return value, (
        f"median over seeds of the best optimizer's best validation accuracy: {best} has the highest mean "
        f"val/acc_best, and the median of its {len(values)} run(s) is {value:.4f}"
    )


def per_run(runs: pd.DataFrame, curves: dict[str, pd.DataFrame], target: float) -> pd.DataFrame:
    """`runs` with steps_to_target, seconds_to_target, reached, and throughput as the mean over epochs."""
    runs = runs.copy()
    val = dict(tuple(curves["val/acc"].groupby("run_id")))
    times = dict(tuple(curves["time/train_s"].groupby("run_id")))
    empty = curves["val/acc"].iloc[:0]
    hits = [time_to_target(val.get(r, empty), times.get(r, empty), target) for r in runs.run_id]
    runs["steps_to_target"] = [h[0] for h in hits]
    runs["seconds_to_target"] = [h[1] for h in hits]
    runs["reached"] = runs.steps_to_target.notna()
    throughput = curves.get("train/samples_per_sec")
    if throughput is not None and not throughput.empty:
        mean = throughput[throughput.value > 0].groupby("run_id").value.mean()
        runs["samples_per_sec"] = runs.run_id.map(mean).fillna(runs.samples_per_sec)
    return runs


def aggregate(
    runs: pd.DataFrame,
    curves: dict[str, pd.DataFrame],
    target: float,
    confidence: float = 0.95,
    optimizers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per optimizer (index), ranked: n_runs, n_diverged, reached, missing, rank and for each of
    STAT_COLUMNS `<col>_mean`, `<col>_low`, `<col>_high`, `<col>_n`. Listed optimizers without runs are
    rows with missing=True. Steps and seconds to target are statistics over the runs that reach it."""
    if "reached" not in runs:
        runs = per_run(runs, curves, target)
    names = list(dict.fromkeys([*(optimizers or []), *sorted(runs.optimizer.unique())]))
    rows = []
    for name in names:
        group = runs[runs.optimizer == name]
        row: dict[str, Any] = {
            "optimizer": name, "n_runs": len(group), "missing": group.empty,
            "n_diverged": int(group.diverged.sum()), "reached": int(group.reached.sum()),
        }  # fmt: skip
        for column in STAT_COLUMNS:
            mean, low, high, n = mean_ci(group[column], confidence)
            row.update({f"{column}_mean": mean, f"{column}_low": low, f"{column}_high": high, f"{column}_n": n})
        rows.append(row)
    table = pd.DataFrame(rows).set_index("optimizer")
    ranked = table[table.val_acc_best_n > 0].sort_values("val_acc_best_mean", ascending=False)
    table["rank"] = pd.Series(range(1, len(ranked) + 1), index=ranked.index, dtype="Int64")
    return table.loc[[*ranked.index, *table.index.difference(ranked.index, sort=False)]]


def overlap_notes(table: pd.DataFrame, confidence: float = 0.95) -> list[str]:
    """One line per pair of adjacent ranks whose confidence intervals of best val accuracy overlap."""
    ranked = table[table["rank"].notna()].sort_values("rank")
    notes = []
    for (upper, a), (lower, b) in zip(ranked.iterrows(), list(ranked.iterrows())[1:]):
        pair = f"#{a['rank']} {upper} and #{b['rank']} {lower}"
        if any(math.isnan(v) for v in (a.val_acc_best_low, b.val_acc_best_high)):
            notes.append(f"{pair}: no interval with a single seed, not distinguishable at {confidence:.0%}")
        elif a.val_acc_best_low <= b.val_acc_best_high:
            notes.append(f"{pair}: confidence intervals overlap, not distinguishable at {confidence:.0%}")
    return notes


# --- the command ------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def config_target(cfg: DictConfig) -> float | None:
    """`target` as a number, or None; "None" counts as null (what DVC writes for a null param)."""
    value = cfg.target
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"target must be a validation accuracy in (0, 1], or null to derive it; got {value!r}.")
    return float(value)


def check_config(cfg: DictConfig) -> None:
    if not 0 < cfg.confidence < 1:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {cfg.confidence}.")
    config_target(cfg)
    for key in ("optimizers", "seeds"):
        values = _as_list(cfg[key])
        if values is not None and not values:
            raise ConfigError(f"{key} is an empty list: give at least one, or null for every one found.")


def selection(cfg: DictConfig) -> tuple[list | None, list | None]:
    """The optimizers and seeds to compare: given directly, or read from `params_file` (the DVC pipeline
    passes params.yaml, whose lists cannot be interpolated into a stage command)."""
    optimizers, seeds = _as_list(cfg.optimizers), _as_list(cfg.seeds)
    if cfg.get("params_file"):
        path = Path(cfg.params_file)
        try:
            params = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"params_file={path}: cannot read it ({err}).") from None
        optimizers = optimizers if optimizers is not None else params.get("optimizers")
        seeds = seeds if seeds is not None else params.get("seeds")
    return optimizers, seeds


def build_comparison(cfg: DictConfig) -> Comparison:
    """Select the runs `cfg` names and compute the table; nothing is written."""
    check_config(cfg)
    client = open_client(cfg.tracking_uri)
    optimizers, seeds = selection(cfg)
    data, model = option_name(cfg.data), option_name(cfg.model)
    runs = load_runs(client, cfg.experiment, optimizers=optimizers, seeds=seeds, data=data, model=model,
                     max_epochs=cfg.max_epochs)  # fmt: skip
    trials = None
    if cfg.tune_experiment:
        trials = load_trials(client, cfg.tune_experiment, optimizers=optimizers, data=data, model=model)
    curves = load_all_curves(client, runs)
    target, rule = choose_target(runs, config_target(cfg))
    runs = per_run(runs, curves, target)
    table = aggregate(runs, curves, target, cfg.confidence, optimizers)
    notes = []
    for name in table.index[table.missing]:
        log.warning("optimizer %s is listed but has no matching finished run: reported as missing", name)
        notes.append(f"{name}: listed in optimizers, but no matching finished run (missing).")
    if runs.attrs.get("superseded"):
        superseded = runs.attrs["superseded"]
        notes.append(f"{superseded} older run(s) ignored: a newer run of the same (optimizer, seed) counts.")
    if table.reached.sum() == 0:
        notes.append(f"No run reaches the target {target:.4f}.")
    notes += overlap_notes(table, cfg.confidence)
    return Comparison(cfg.experiment, client.tracking_uri, runs, curves, table,
                      target, rule, cfg.confidence, notes, trials)  # fmt: skip


def compare(cfg: DictConfig) -> dict[str, Any]:
    """Build the comparison, write the report files to `output_dir` and log them to one MLflow run of the
    experiment (tag optbench.kind=comparison) that ends FINISHED or FAILED. Returns summary.json's content."""
    from optbench import report  # report.py imports Comparison from here

    comparison = build_comparison(cfg)
    client = MlflowClient(comparison.tracking_uri)
    exp_id = find_experiment(client, cfg.experiment).experiment_id
    commit, _ = git_state()
    run = client.create_run(
        exp_id,
        run_name=f"compare-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={KIND_TAG: "comparison", TAG_PREFIX + "version": optbench.__version__,
              TAG_PREFIX + "git_commit": commit, TAG_PREFIX + "compared_runs": ",".join(comparison.runs.run_id)},
    )  # fmt: skip
    run_id = run.info.run_id
    with ends_run(client, run_id):
        summary, files = report.write_report(comparison, Path(cfg.output_dir))
        params = {key: cfg[key] for key in ("experiment", "tune_experiment", "optimizers", "seeds", "max_epochs",
                                             "target", "confidence", "output_dir")}  # fmt: skip
        params.update(data=option_name(cfg.data), model=option_name(cfg.model), target_used=comparison.target)
        metrics = [Metric(k, v, int(time.time() * 1000), 0) for k, v in report.flat_metrics(summary).items()]
        log_batched(client, run_id, params={k: _plain(v) for k, v in params.items()}, metrics=metrics)
        for path in files:
            relative = path.parent.relative_to(Path(cfg.output_dir))
            client.log_artifact(run_id, str(path), None if str(relative) == "." else str(relative))
    report.print_table(comparison)
    log.info("Report: %s (MLflow run %s)", Path(cfg.output_dir) / "report.md", run_id)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="compare")
def main(cfg: DictConfig) -> None:
    try:
        compare(cfg)
    except OptbenchError as err:
        fail(err)


if __name__ == "__main__":
    main()
