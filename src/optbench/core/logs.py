"""Log and warning settings of optbench's commands, applied when a command starts, never at import."""

from __future__ import annotations

import logging
import warnings

# Library loggers whose routine banners repeat once per run (a study or a tuning loop trains many).
ROUTINE_LOGGERS = ("lightning.pytorch", "lightning.fabric", "optbench.training.train")


# Lightning's notices that every run repeats and that say nothing about this run: hardware it does not use,
# an advertisement, its own bookkeeping. Its warnings and every other notice still show.
ROUTINE_NOTICES = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "💡 Tip:",
    "Loading `train_dataloader` to estimate",
)


class _DropRoutineNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ROUTINE_NOTICES)


def quiet_known_warnings() -> None:
    """Silence warnings nobody using optbench can act on (not the ones that matter), and Lightning's
    routine notices."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropRoutineNotices) for f in logger.filters):
            logger.addFilter(_DropRoutineNotices())
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
