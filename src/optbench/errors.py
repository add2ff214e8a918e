"""Errors that optbench reports to the user as one paragraph, without a traceback."""


class OptbenchError(Exception):
    """A problem the user can fix; the command line prints the message and exits with status 2."""


class ConfigError(OptbenchError):
    """An invalid value or an incompatible combination of options, found before training starts."""


class DataNotFoundError(OptbenchError):
    """A dataset that is not on disk and cannot be downloaded."""
