"""hydra/launcher=slurm: checks that run before hydra-submitit-launcher submits anything.

Submission, the array job, waiting and collecting results stay submitit's. Hydra accepts launchers only from
its `hydra_plugins` package, so optbench does not subclass the launcher: conf/hydra/launcher/slurm.yaml adds
this Hydra callback, whose on_multirun_start runs before the sweeper builds the launcher. A launch that cannot
work fails there with a one-paragraph error and exit status 2, before any folder is made or job submitted,
instead of with submitit's traceback from deep inside.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from optbench.cluster.slurm import check_can_submit
from optbench.core.errors import user_errors


class SlurmChecks(Callback):
    """hydra.callbacks.slurm_checks of hydra/launcher=slurm."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with user_errors():  # Hydra would report an exception with a traceback hint and exit 1
            check_can_submit()
