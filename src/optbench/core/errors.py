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


def fail(err: Exception) -> NoReturn:
    """Report a user error as one paragraph on stderr and exit with status 2 (every optbench command)."""
    print(f"optbench: error: {err}", file=sys.stderr)
    sys.exit(2)


def _is_misconfiguration(err: Exception) -> bool:
    # Lightning's MisconfigurationException is a user error too; matched by name so that importing this
    # module does not import Lightning.
    return type(err).__name__ == "MisconfigurationException" and type(err).__module__.startswith("lightning")


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn optbench's (and Lightning's configuration) errors raised inside the block into `fail`."""
    try:
        yield
    except OptbenchError as err:
        fail(err)
    except Exception as err:
        if _is_misconfiguration(err):
            fail(err)
        raise
