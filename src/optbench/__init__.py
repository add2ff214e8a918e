"""optbench: reproducible, versioned experiments that answer questions about deep-learning optimizers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("optbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
