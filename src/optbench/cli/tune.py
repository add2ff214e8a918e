"""optbench-tune: Optuna studies per optimizer, with an equal budget, pruning, resume and parallel workers.

optbench-tune optimizer=adam tune=lr tune.n_trials=20
optbench-tune -m optimizer=sgd,momentum,adam,adamw tune=full tune.n_trials=20 tune.n_studies=3
optbench-tune optimizer=adam tune.n_trials=64 tune.n_jobs=16 tune.launcher=slurm \
    tune.storage=postgresql+psycopg2://optuna@dbhost/optuna     # 16 SLURM workers, one study (docs/cluster.md)
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from optbench.core.config import config_path
from optbench.core.errors import user_errors
from optbench.core.logs import quiet_known_warnings

log = logging.getLogger("optbench")


@hydra.main(version_base="1.3", config_path=config_path(), config_name="tune")
def main(cfg: DictConfig) -> float | None:
    quiet_known_warnings()
    with user_errors():
        from optbench.tuning.progress import rounded, settings_text
        from optbench.tuning.tune import tune  # Lightning, Optuna and MLflow load only once a study runs

        summary = tune(cfg)
    log.info(
        "Best %s (%s) = %s with %s -> %s/best.json",
        summary["metric"],
        summary["selection"],
        rounded(summary["best_value"]),
        settings_text(summary["best_params"], ", "),
        summary["output_dir"],
    )
    return summary["best_value"]


if __name__ == "__main__":
    main()
