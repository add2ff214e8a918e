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


def check_function_choice(args: list[str]) -> None:
    """An unknown `function=` is a user error with the valid names (status 2), not Hydra's composition error
    (status 1, which names the search path): checked on the command line before Hydra composes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    valid = group_options("function")
    for arg in args:
        if arg.startswith("-") or not arg.lstrip("+~").startswith("function="):
            continue
        try:
            (override,) = OverridesParser.create().parse_overrides([arg])
        except Exception:  # a malformed override: Hydra reports it in its own words
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        unknown = [str(v) for v in values if str(v) not in valid]
        if unknown:
            raise ConfigError(f"Unknown function '{unknown[0]}'. Valid functions: {', '.join(valid)}.")


@hydra.main(version_base="1.3", config_path=config_path(), config_name="trajectory")
def run(cfg: DictConfig) -> None:
    quiet_known_warnings()
    with user_errors():
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
