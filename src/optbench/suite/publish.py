"""publish(cfg): build the suite's numbers, write the report files and log them to one MLflow run (tag
optbench.kind=suite) of `suite_experiment`, away from the training runs' table."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from optbench.compare.runs import KIND_TAG
from optbench.suite.build import build_suite
from optbench.suite.report import summary, write_report
from optbench.tracking import TAG_PREFIX, log_values, open_run

log = logging.getLogger("optbench.suite")


def publish(cfg: DictConfig) -> dict[str, Any]:
    """Write the report to `output_dir`, log it to MLflow and print the scores; returns summary.json's content."""
    suite = build_suite(cfg)
    out = Path(cfg.output_dir)
    client = MlflowClient(suite.tracking_uri)
    names = [w.name for w in suite.workloads]
    tags = {KIND_TAG: "suite", TAG_PREFIX + "compared_experiment": suite.experiment}
    tags["mlflow.note.content"] = f"Optimizer suite over {', '.join(names)}: runs of experiment {suite.experiment}."
    with open_run(client, cfg.suite_experiment, f"suite-{time.strftime('%Y%m%d-%H%M%S')}", tags) as run_id:
        files = write_report(suite, out)
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{column}/{name}", float(value), now, 0)
            for name, row in suite.scores.iterrows()
            for column, value in row.items()
        ]
        params = {"workloads": ",".join(names), "optimizers": ",".join(suite.optimizers), "r_max": suite.r_max}
        params.update(seeds=",".join(map(str, suite.seeds)), profile_time=suite.profile_time)
        params.update({f"target.{w.name}": f"{w.metric} {w.direction} {w.target:.6g}" for w in suite.workloads})
        log_values(client, run_id, params=params, metrics=metrics)
        for path in files:
            client.log_artifact(run_id, str(path))
    for name, row in suite.scores.iterrows():
        log.info(
            "%-10s AlgoPerf score %.3f (workload-median %.3f), target reached on %d/%d problems, fastest on %d",
            name, row.algoperf_score, row.workload_median_score, row.solved, row.problems, row.fastest,
        )  # fmt: skip
    log.info("Report: %s (MLflow run %s in experiment %s)", out / "report.md", run_id, cfg.suite_experiment)
    return summary(suite)
