"""optbench-suite: the cross-workload report of the suite's finished training runs, read back from MLflow.

optbench-suite                                         # every workload of pipelines/suite/params.yaml
optbench-suite workloads=[digits_mlp,mnist5k_cnn] output_dir=results/suite
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from optbench.core import timings
from optbench.core.config import config_path
from optbench.core.errors import user_errors


@hydra.main(version_base="1.3", config_path=config_path(), config_name="suite")
def main(cfg: DictConfig) -> None:
    with user_errors():
        from optbench.suite.publish import publish  # MLflow, pandas and matplotlib load only now

        with timings.phase("reporting"):
            publish(cfg)


if __name__ == "__main__":
    main()
