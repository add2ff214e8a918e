"""How much training does pruning save, and what does it cost in the result?

Runs the same learning-rate study twice, side by side (same optimizer, data, Sobol seed and number of
trials): once with the median pruner, once without pruning. Prints the fraction of training epochs the
pruned study spent relative to the unpruned one, and the difference in best validation accuracy.

    python benchmarks/pruning.py                      # SGD on digits/MLP, 16 trials of 5 epochs
    python benchmarks/pruning.py --optimizer adam --trials 24 --epochs 8
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from optbench.core.config import compose_config
from optbench.tuning.tune import tune


def study_config(workdir: Path, pruner: str, args: argparse.Namespace):
    overrides = [
        f"optimizer={args.optimizer}",
        f"data={args.data}",
        f"model={args.model}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        f"tune.n_trials={args.trials}",
        f"tune.pruner.name={pruner}",
        f"tune.study_name=bench-{pruner}",
        f"tune.storage=sqlite:///{workdir / 'optuna.db'}",
        f"tune.output_dir={workdir / 'tune'}",
        f"metrics_path={workdir / 'metrics.json'}",
        "experiment=bench-pruning",
    ]
    return compose_config(*overrides, config_name="tune")


def epochs_spent(study: optuna.Study, max_epochs: int) -> int:
    """Epochs trained: all of them for a finished trial, up to its last report for a pruned one."""
    total = 0
    for trial in study.trials:
        if trial.state == TrialState.PRUNED:
            total += max(trial.intermediate_values, default=0) + 1
        elif trial.state == TrialState.COMPLETE:
            total += max_epochs
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("optbench").setLevel(logging.WARNING)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
        for pruner in ("none", "median"):
            cfg = study_config(workdir, pruner, args)
            start = time.perf_counter()
            summary = tune(cfg)
            seconds = time.perf_counter() - start
            study = optuna.load_study(study_name=f"bench-{pruner}", storage=cfg.tune.storage)
            results[pruner] = (summary, epochs_spent(study, args.epochs), seconds)

    table = Table(
        title=f"Pruning: {args.optimizer} on {args.data}/{args.model}, {args.trials} trials x {args.epochs} epochs"
    )
    for column in ("pruner", "epochs trained", "pruned trials", "best val/acc", "best lr", "seconds"):
        table.add_column(column, justify="right")
    for pruner, (summary, epochs, seconds) in results.items():
        table.add_row(
            pruner,
            str(epochs),
            str(summary["n_trials"].get("pruned", 0)),
            f"{summary['best_value']:.4f}",
            f"{summary['best_params']['optimizer.lr']:.3g}",
            f"{seconds:.0f}",
        )
    console = Console()
    console.print(table)
    (base, base_epochs, base_s), (pruned, pruned_epochs, pruned_s) = results["none"], results["median"]
    console.print(f"fraction of epochs spent with pruning: {pruned_epochs / base_epochs:.2f}")
    console.print(f"fraction of wall-clock time spent with pruning: {pruned_s / base_s:.2f}")
    console.print(f"best val/acc difference (pruned - unpruned): {pruned['best_value'] - base['best_value']:+.4f}")


if __name__ == "__main__":
    main()
