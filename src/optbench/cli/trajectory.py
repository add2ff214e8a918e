"""optbench-trajectory: optimizer paths on a 2-D test function, on its contour plot, with steps to tolerance.

optbench-trajectory function=rosenbrock 'optimizers=[sgd,momentum,nesterov,adagrad,rmsprop,adam]'
optbench-trajectory function=quadratic function.params.condition=50 function.lr.sgd=0.03 noise=0.1
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from optbench.core.config import config_path, group_options
from optbench.core.errors import ConfigError, fail, user_errors
from optbench.core.logs import quiet_known_warnings
from optbench.trajectory.choices import check_function_choice, check_optimizer_names

HELP = """optbench-trajectory: optimizer paths on a 2-D test function, drawn on its contour map, with steps to tolerance.

The optimizers are the torch.optim / pytorch-optimizer classes of conf/optimizer/, built as training builds them,
with the learning rate the function's config gives each (function.lr.<optimizer>). Writes trajectory.png,
trajectory.gif, trajectory.md and trajectory.json to output_dir and prints the table. Configured by Hydra.

Examples:
  optbench-trajectory                                          # rosenbrock; sgd momentum nesterov adagrad rmsprop adam
  optbench-trajectory function=beale 'optimizers=[sgd,adam,lbfgs]' steps=500
  optbench-trajectory function=quadratic function.params.condition=50 function.lr.sgd=0.03
  optbench-trajectory function=double_well noise=0.05 seed=1   # noisy gradients, seeded
  optbench-trajectory -m function=rosenbrock,beale             # one output folder each
  optbench-trajectory --cfg job                                # print the composed config, run nothing

Functions (function=name):  {functions}
Optimizers (optimizers=[...]):  {optimizers}
Keys: steps, tolerance, tolerance_on (distance | gap), noise, seed, settings.<optimizer>.<key>, figure.*,
output_dir; function.lr.<optimizer>, function.params.*, function.start, function.bounds.

More: docs/trajectory.md, conf/trajectory.yaml, conf/function/, --hydra-help (Hydra's own flags).
"""


def help_text() -> str:
    return HELP.format(functions=", ".join(group_options("function")), optimizers=", ".join(group_options("optimizer")))


@hydra.main(version_base="1.3", config_path=config_path(), config_name="trajectory")
def run(cfg: DictConfig) -> None:
    quiet_known_warnings()
    with user_errors():
        check_optimizer_names(cfg.optimizers)  # before torch loads: a misspelt name is answered at once
        from optbench.trajectory.publish import trajectory  # torch and matplotlib load only now

        trajectory(cfg)


def main() -> None:
    """The console script: optbench's own --help (Hydra's lists every group of conf/), names checked before
    Hydra composes, then Hydra's main."""
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print(help_text())
        return
    try:
        check_function_choice(sys.argv[1:])
    except ConfigError as err:
        fail(err)
    run()


if __name__ == "__main__":
    main()
