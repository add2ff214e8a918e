"""Functions run as SLURM jobs through submitit: one array job, waited for, cancelled if the caller stops.

submitit (the library behind Hydra's submitit launcher) pickles the function and its arguments, writes the
sbatch script, submits, and collects each job's result or traceback; nothing here replaces it. What this
module adds: a clear error before anything is submitted when SLURM is not there, executor settings from
one config block, and `scancel` of every job when the caller is interrupted or one job fails to start.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from optbench.core.errors import ConfigError, OptbenchError

log = logging.getLogger("optbench.cluster.workers")

# Keys of a `slurm` config block and the submitit AutoExecutor parameter each sets.
EXECUTOR_KEYS = {
    "partition": "slurm_partition",
    "timeout_min": "timeout_min",
    "cpus_per_task": "cpus_per_task",
    "mem_gb": "mem_gb",
    "gpus_per_node": "gpus_per_node",
    "setup": "slurm_setup",
    "additional_parameters": "slurm_additional_parameters",
}


def check_slurm(what: str) -> None:
    """SLURM's client commands are on PATH (we are on a login or compute node), else one paragraph."""
    missing = [cmd for cmd in ("sbatch", "squeue", "scancel") if shutil.which(cmd) is None]
    if missing:
        raise ConfigError(
            f"{what}: SLURM's {', '.join(missing)} not found on PATH, so no job can be submitted from this "
            "machine. Run the command on a login node of the cluster (after `module load slurm` if your site "
            "needs it), or use the local launcher."
        )


def executor_parameters(settings: Mapping[str, Any]) -> dict[str, Any]:
    """submitit AutoExecutor parameters from a `slurm` block (unset and empty values left to SLURM)."""
    unknown = sorted(set(settings) - set(EXECUTOR_KEYS) - {"folder", "single_node"})
    if unknown:
        raise ConfigError(f"unknown SLURM setting(s) {unknown}; valid: {sorted(EXECUTOR_KEYS)}.")
    params: dict[str, Any] = {}
    for key, name in EXECUTOR_KEYS.items():
        value = settings.get(key)
        if value is None or (isinstance(value, (list, dict)) and not value):
            continue
        params[name] = dict(value) if key == "additional_parameters" else list(value) if key == "setup" else value
    return params


def run_array(
    fn: Callable[..., Any],
    args: Sequence[tuple],
    *,
    folder: str | Path,
    name: str,
    settings: Mapping[str, Any],
) -> list[Any]:
    """Run `fn(*a)` for every `a` in `args` as the tasks of one SLURM array job and wait for all of them.

    The jobs start in this process's working directory with its environment (sbatch's default), so relative
    paths and MLFLOW_TRACKING_URI mean the same in them. Returns the results in order; a failed task raises
    OptbenchError naming its log file. Ctrl-C (or any error while waiting) cancels every task."""
    check_slurm(f"{name} on SLURM")
    import submitit

    folder = Path(folder).resolve() / "%j"  # one folder per job: the sbatch script, logs and pickles
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(name=name, **executor_parameters(settings))
    columns = list(zip(*args)) if args else []
    try:
        jobs = executor.map_array(_in_directory, [os.getcwd()] * len(args), [fn] * len(args), *columns)
    except Exception as err:  # sbatch refused the job: unknown partition, too much memory, no account
        raise OptbenchError(f"{name}: SLURM did not accept the job: {' '.join(str(err).split())[:600]}") from None
    log.info("%s: %d SLURM tasks in array job %s (logs in %s)", name, len(jobs), jobs[0].job_id.split("_")[0], folder)
    try:
        return _results(jobs, name)
    except BaseException:
        for job in jobs:
            if not job.done():
                job.cancel(check=False)
        raise


def _in_directory(directory: str, fn: Callable[..., Any], *args: Any) -> Any:
    os.chdir(directory)  # sbatch starts in the submission directory already; this also covers --chdir overrides
    return fn(*args)


def _results(jobs: list, name: str) -> list[Any]:
    import submitit

    results, failures = [], []
    for job in jobs:
        try:
            results.append(job.result())
        except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as err:
            last = " ".join(str(err).split())[-300:]
            failures.append(f"task {job.job_id} ({job.state}; log {job.paths.stderr}): {last}")
            results.append(None)
    if failures:
        raise OptbenchError(f"{name}: {len(failures)} of {len(jobs)} SLURM tasks failed: " + " | ".join(failures))
    return results
