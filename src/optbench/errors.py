"""Errors that optbench reports to the user as one paragraph, without a traceback."""

import sys


class OptbenchError(Exception):
    """A problem the user can fix; the command line prints the message and exits with status 2."""


class ConfigError(OptbenchError):
    """An invalid value or an incompatible combination of options, found before training starts."""


class DataNotFoundError(OptbenchError):
    """A dataset that is not on disk and cannot be downloaded."""


def fail(err: Exception) -> None:
    """Report a user error as one paragraph on stderr and exit with status 2 (every optbench command)."""
    print(f"optbench: error: {err}", file=sys.stderr)
    sys.exit(2)
