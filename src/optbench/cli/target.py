"""optbench-target: set optbench-compare's target a priori from reference runs (conf/target.yaml).

optbench-target
optbench-target data=digits model=logreg trainer=fast epochs=1 seeds=[100,101]
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from optbench.core.config import config_path
from optbench.core.errors import user_errors
from optbench.core.logs import quiet_known_warnings


@hydra.main(version_base="1.3", config_path=config_path(), config_name="target")
def main(cfg: DictConfig) -> float:
    quiet_known_warnings()
    with user_errors():
        from optbench.compare.reference import make_target  # torch, Lightning and MLflow load only now

        return make_target(cfg)["target"]


if __name__ == "__main__":
    main()
