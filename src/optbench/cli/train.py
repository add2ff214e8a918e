"""optbench-train: one training run, configured by Hydra, tracked in MLflow.

optbench-train optimizer=sgd optimizer.lr=0.1 scheduler=cosine seed=3
optbench-train -m optimizer=sgd,adam,adamw seed=0,1,2
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from optbench.core.config import config_path, group_options, run_name
from optbench.core.errors import user_errors
from optbench.core.logs import quiet_known_warnings

# The groups a training run is composed of (conf/ holds others, for studies and tuning, that it refuses).
GROUPS = ("workload", "data", "model", "optimizer", "scheduler", "precision", "strategy", "trainer", "logger")
HELP = """optbench-train: train one model with one optimizer, log it to MLflow, write its final metrics.

Configured by Hydra: pick an option of any group below (optimizer=sgd), override any key (optimizer.lr=0.1,
trainer.max_epochs=20), or sweep with -m. Every run is one MLflow run in experiment `optbench` (set
`experiment=...`; the store is $MLFLOW_TRACKING_URI, else ./mlflow.db), named <optimizer>-<model>-<data>-s<seed>.

Examples:
  optbench-train                                          # adamw, cnn, mnist5k: the defaults
  optbench-train optimizer=sgd optimizer.lr=0.1 scheduler=cosine seed=3
  optbench-train -m optimizer=sgd,adam,adamw seed=0,1,2   # 9 runs, then: optbench-compare
  optbench-train data=digits model=mlp logger=none trainer.max_epochs=3
  optbench-train workload=mnist5k_vit optimizer=adam      # a workload: data, model, batch size and budget
  optbench-train best=results/tune/adam/best.json         # the settings a tuning study found
  optbench-train --cfg job                                # print the composed config, train nothing

Groups (group=option):
{groups}

More: README.md ("Training runs"), conf/train.yaml (every top-level key), --hydra-help (Hydra's own flags).
"""


def help_text() -> str:
    """The --help page: a description, examples and the groups a run accepts, with their options."""
    width = max(len(group) for group in GROUPS)
    return HELP.format(groups="\n".join(f"  {g:<{width}}  {', '.join(group_options(g))}" for g in GROUPS))


@hydra.main(version_base="1.3", config_path=config_path(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet_known_warnings()
    with user_errors():
        from optbench.training.checks import apply_best, check_values

        check_values(apply_best(cfg))  # a bad value is reported before Lightning is even imported
        from optbench.cluster.gpu import deterministic_cuda

        deterministic_cuda(cfg.trainer)  # before anything starts CUDA
        from optbench.training.train import train

        metrics = train(cfg)
        _print_summary(cfg, metrics)
    return metrics.get("val/acc_best", metrics.get("val/loss"))


def _print_summary(cfg: DictConfig, metrics: dict) -> None:
    """One short summary at the end of the run, from rank 0 (other ranks of a DDP job run this too)."""
    from hydra.core.hydra_config import HydraConfig
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from optbench.training.console import run_link, run_summary

    if rank_zero_only.rank != 0:
        return
    link = None
    if metrics.get("run_id"):
        from optbench.tracking.store import resolve_tracking_uri

        link = run_link(resolve_tracking_uri(cfg.logger.tracking_uri), metrics["run_id"])
    outcome = "diverged" if metrics.get("train/diverged", 0) > 0 else "completed"
    output = HydraConfig.get().runtime.output_dir
    print(run_summary(run_name(cfg), metrics, outcome, metrics.get("time/train_s", 0.0), output, link), flush=True)


def cli() -> None:
    """The console script: optbench's own --help (Hydra's lists every group of conf/), else Hydra's main."""
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print(help_text())
        return
    main()


if __name__ == "__main__":
    cli()
