"""Log and warning settings of optbench's commands, applied when a command starts, never at import."""

from __future__ import annotations

import logging
import warnings

# Library loggers whose routine banners repeat once per run (a study or a tuning loop trains many).
ROUTINE_LOGGERS = ("lightning.pytorch", "lightning.fabric", "optbench.training.train")


def quiet_known_warnings() -> None:
    """Silence warnings nobody using optbench can act on (not the ones that matter)."""
    # Lightning 2.6 calls a torch API that newer torch releases deprecated.
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    # Tiny test-sized runs have fewer batches than Lightning's logging interval.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # A resumed run's checkpoint folder holds its last checkpoint by design.
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    # Sobol sampling, heartbeats and stale-trial failing are experimental in Optuna; used on purpose.
    warnings.filterwarnings("ignore", message=".*is experimental.*")


def quiet_routine_logs() -> None:
    """Keep only warnings from the loggers that print a banner for every run."""
    for name in ROUTINE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
