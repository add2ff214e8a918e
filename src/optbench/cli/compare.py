"""optbench-compare: the comparison report of finished training runs, read back from MLflow.

optbench-compare
optbench-compare optimizers=[sgd,adam] data=mnist5k epochs=5 tune_experiment=optbench-tune
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from optbench.core import timings
from optbench.core.config import config_path
from optbench.core.errors import user_errors


@hydra.main(version_base="1.3", config_path=config_path(), config_name="compare")
def main(cfg: DictConfig) -> None:
    with user_errors():
        from optbench.compare.publish import compare  # MLflow, pandas and matplotlib load only now

        with timings.phase("reporting"):
            compare(cfg)


if __name__ == "__main__":
    main()
