"""optbench-prepare: build a dataset's fixed train/val/test split once and save it as a versioned file.

optbench-prepare data=mnist5k        # -> data/prepared/mnist5k.pt and results/data/mnist5k.json
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from optbench.core.config import config_path
from optbench.core.errors import user_errors


@hydra.main(version_base="1.3", config_path=config_path(), config_name="prepare")
def main(cfg: DictConfig) -> None:
    with user_errors():
        from optbench.training.schema import check_schema

        check_schema(cfg, groups=("data",))
        from optbench.training.prepare import prepare

        prepare(cfg)


if __name__ == "__main__":
    main()
