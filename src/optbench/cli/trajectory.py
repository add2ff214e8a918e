"""optbench-trajectory: optimizer paths on a 2-D test function, on its contour plot, with steps to tolerance.

optbench-trajectory function=rosenbrock 'optimizers=[sgd,momentum,nesterov,adagrad,rmsprop,adam]'
optbench-trajectory function=quadratic function.params.condition=50 function.lr.sgd=0.03 noise=0.1
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from optbench.core.config import config_path
from optbench.core.errors import ConfigError, fail, user_errors
from optbench.core.logs import quiet_known_warnings
from optbench.trajectory.choices import check_function_choice, check_optimizer_names


@hydra.main(version_base="1.3", config_path=config_path(), config_name="trajectory")
def run(cfg: DictConfig) -> None:
    quiet_known_warnings()
    with user_errors():
        check_optimizer_names(cfg.optimizers)  # before torch loads: a misspelt name is answered at once
        from optbench.trajectory.publish import trajectory  # torch and matplotlib load only now

        trajectory(cfg)


def main() -> None:
    try:
        check_function_choice(sys.argv[1:])
    except ConfigError as err:
        fail(err)
    run()


if __name__ == "__main__":
    main()
