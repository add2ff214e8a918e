"""optbench-train: one training run, configured by Hydra, tracked in MLflow.

optbench-train optimizer=sgd optimizer.lr=0.1 scheduler=cosine seed=3
optbench-train -m optimizer=sgd,adam,adamw seed=0,1,2
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from optbench.core.config import config_path
from optbench.core.errors import user_errors
from optbench.core.logs import quiet_known_warnings


@hydra.main(version_base="1.3", config_path=config_path(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet_known_warnings()
    with user_errors():
        from optbench.training.checks import apply_best, check_values

        check_values(apply_best(cfg))  # a bad value is reported before Lightning is even imported
        from optbench.training.train import train

        metrics = train(cfg)
    return metrics.get("val/acc_best", metrics.get("val/loss"))


if __name__ == "__main__":
    main()
