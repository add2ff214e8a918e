"""The names a trajectory command may choose (functions, optimizers), checked without importing torch, so a
misspelt name is answered in about a second with the valid ones."""

from __future__ import annotations

from collections.abc import Iterable

from optbench.core.config import group_options
from optbench.core.errors import ConfigError


def check_optimizer_names(names: Iterable[str]) -> list[str]:
    """The names as a list; an unknown or repeated name is a ConfigError naming the valid optimizers."""
    names = [names] if isinstance(names, str) else [str(n) for n in names]  # optimizers=adam means [adam]
    valid = group_options("optimizer")
    for name in names:
        if name not in valid:
            raise ConfigError(
                f"Unknown optimizer '{name}' in optimizers. Valid optimizers: {', '.join(valid)}. "
                "Give a list, for example 'optimizers=[sgd,momentum,adam]'."
            )
    if not names or len(set(names)) < len(names):
        raise ConfigError(
            f"optimizers={names}: give a list of distinct optimizer names, for example 'optimizers=[sgd,momentum,adam]'."
        )
    return names


def check_function_choice(args: list[str]) -> None:
    """An unknown `function=` on the command line is a ConfigError naming the valid functions. Checked before
    Hydra composes, whose own error for an unknown option exits with status 1 and names its search path."""
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
