"""compare(cfg): build the comparison, write the report files and log them to one MLflow comparison run."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, ListConfig, OmegaConf

from optbench.compare.analysis import build_comparison, epochs_filter
from optbench.compare.report import flat_metrics, print_table, workload, write_report
from optbench.compare.runs import KIND_TAG, find_experiment, option_name
from optbench.tracking import TAG_PREFIX, log_values, open_run

log = logging.getLogger("optbench.compare")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def compare(cfg: DictConfig) -> dict[str, Any]:
    """Build the comparison, write the report files to `output_dir` and log them to one MLflow run (tag
    optbench.kind=comparison) of `comparison_experiment` (default <experiment>-compare: the training runs'
    table stays training runs only), which ends FINISHED or FAILED. Returns summary.json's content."""
    comparison = build_comparison(cfg)
    client = MlflowClient(comparison.tracking_uri)
    find_experiment(client, cfg.experiment)
    tags = {KIND_TAG: "comparison", TAG_PREFIX + "compared_runs": ",".join(comparison.runs.run_id)}
    tags[TAG_PREFIX + "compared_experiment"] = cfg.experiment
    tags["mlflow.note.content"] = f"Optimizer comparison: {workload(comparison)}, runs of experiment {cfg.experiment}."
    name = f"compare-{'-'.join(workload(comparison).replace(' epochs', 'ep').split(', '))}-{time.strftime('%Y%m%d-%H%M%S')}"
    with open_run(client, cfg.comparison_experiment, name, tags) as run_id:
        summary, files = write_report(comparison, Path(cfg.output_dir))
        keys = ("experiment", "tune_experiment", "optimizers", "seeds", "target", "confidence")
        params = {key: cfg[key] for key in (*keys, "target_rule", "profile_time", "profile_max_ratio", "output_dir")}
        params.update(data=option_name(cfg.data), model=option_name(cfg.model), epochs=epochs_filter(cfg))
        params.update({f"compared.{key}": value for key, value in compared(comparison).items()})
        params.update(target_used=comparison.target, target_source=comparison.target_source)
        metrics = [Metric(k, v, int(time.time() * 1000), 0) for k, v in flat_metrics(summary).items()]
        log_values(client, run_id, params={k: _plain(v) for k, v in params.items()}, metrics=metrics)
        for path in files:
            relative = path.parent.relative_to(Path(cfg.output_dir))
            client.log_artifact(run_id, str(path), None if str(relative) == "." else str(relative))
    print_table(comparison)
    log.info(
        "Report: %s (MLflow run %s in experiment %s)",
        Path(cfg.output_dir) / "report.md",
        run_id,
        cfg.comparison_experiment,
    )
    return summary


def compared(comparison) -> dict[str, str]:
    """The data, model and epoch count of the compared runs (params compared.data, compared.model, compared.epochs)."""
    runs = comparison.runs
    found = {key: sorted({str(v) for v in runs[key].dropna() if v != ""}) for key in ("data", "model")}
    found["epochs"] = sorted({str(int(v)) for v in runs["epochs"].dropna()})
    return {key: ",".join(values) for key, values in found.items() if values}
