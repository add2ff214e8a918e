"""What a run shows in the terminal: a progress bar with the training loss and validation accuracy, and one
short summary when it ends (its metrics, outcome, MLflow run and output folder)."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import TQDMProgressBar

log = logging.getLogger("optbench.training.console")

# What the progress bar shows, in this order, as the short names it gives them.
BAR_METRICS = {"train/loss": "loss", "val/loss": "val_loss", "val/acc": "val_acc"}
SUMMARY_METRICS = ("val/acc", "val/acc_best", "val/loss", "test/acc", "test/loss", "train/dist_to_opt")


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar showing the latest training loss and validation metrics instead of v_num."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        latest = trainer.callback_metrics
        return {short: f"{float(latest[key]):.4g}" for key, short in BAR_METRICS.items() if key in latest}


def run_summary(
    name: str,
    metrics: dict[str, Any],
    outcome: str,
    seconds: float,
    output_dir: str | os.PathLike,
    run_url: str | None = None,
) -> str:
    """The few lines a run ends with: what it reached, how it ended, where to find it."""
    shown = [f"{key} {metrics[key]:.4f}" for key in SUMMARY_METRICS if _finite(metrics.get(key))]
    lines = [
        f"{name}: {outcome} after {int(metrics.get('train/steps', 0))} steps, {seconds:.1f} s of training",
        "  " + ("  ".join(shown) if shown else "no metrics"),
    ]
    if metrics.get("run_id"):
        lines.append(f"  MLflow run {metrics['run_id']}" + (f": {run_url}" if run_url else ""))
    lines.append(f"  output: {Path(output_dir).resolve()}")
    return "\n".join(lines)


def run_link(tracking_uri: str, run_id: str) -> str:
    """Where the run's page is: the server's URL, or how to open a local store in the MLflow UI."""
    from mlflow.tracking import MlflowClient  # only runs logged to MLflow get here: it is loaded already

    experiment = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    page = f"#/experiments/{experiment}/runs/{run_id}"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    return f"`mlflow ui --backend-store-uri {tracking_uri}`, then http://127.0.0.1:5000/{page}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
