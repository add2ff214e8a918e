"""Errors that optbench reports to the user as one paragraph, without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn


class OptbenchError(Exception):
    """A problem the user can fix; the command line prints the message and exits with status 2."""


class ConfigError(OptbenchError):
    """An invalid value or an incompatible combination of options, found before training starts."""


class DataNotFoundError(OptbenchError):
    """A dataset that is not on disk and cannot be downloaded."""


class RunInterrupted(KeyboardInterrupt):
    """Training stopped by a signal: Ctrl-C (SIGINT) or a scheduler's SIGTERM. A KeyboardInterrupt, so every
    layer treats it as one: the MLflow run ends KILLED, an Optuna trial FAIL."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(signal_name)
        self.signal_name, self.exit_code = signal_name, exit_code


def fail(err: Exception) -> NoReturn:
    """Report a user error as one paragraph on stderr and exit with status 2 (every optbench command)."""
    print(f"optbench: error: {err}", file=sys.stderr)
    sys.exit(2)


def _is_misconfiguration(err: Exception) -> bool:
    # Lightning's MisconfigurationException is a user error too; matched by name so that importing this
    # module does not import Lightning.
    return type(err).__name__ == "MisconfigurationException" and type(err).__module__.startswith("lightning")


def _is_config_value_error(err: Exception) -> bool:
    from omegaconf.errors import OmegaConfBaseException  # light: Hydra has imported it already

    return isinstance(err, OmegaConfBaseException)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn optbench's (and Lightning's configuration) errors raised inside the block into `fail`."""
    try:
        yield
    except OptbenchError as err:
        fail(err)
    except KeyboardInterrupt as err:
        code = getattr(err, "exit_code", 130)
        print(
            f"optbench: interrupted ({getattr(err, 'signal_name', 'SIGINT')}): the run is recorded as killed; "
            "rerun the same command to resume it from its last checkpoint.",
            file=sys.stderr,
        )
        sys.exit(code)
    except Exception as err:
        if _is_misconfiguration(err):
            fail(err)
        if _is_config_value_error(err):  # an interpolation that does not resolve, a value of the wrong type
            fail(ConfigError(f"the config cannot be resolved: {' '.join(str(err).split())}"))
        raise
