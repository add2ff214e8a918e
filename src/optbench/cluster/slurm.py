"""SLURM for optbench: what a job knows about itself, and the launcher that submits Hydra multiruns as jobs.

A SLURM job learns its id, array index, nodes and tasks from the environment SLURM sets for every job step
(https://slurm.schedmd.com/sbatch.html#SECTION_OUTPUT-ENVIRONMENT-VARIABLES); reading it is all provenance needs.
Submission is hydra-submitit-launcher's (submitit writes the sbatch script, submits an array and waits); optbench
only checks, before anything is submitted, that the machine can submit at all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

from optbench.core.errors import ConfigError

# SLURM's variable -> the provenance key it is logged under (prefixed "optbench." by the tracking layer).
SLURM_KEYS = {
    "SLURM_JOB_ID": "slurm_job_id",
    "SLURM_ARRAY_JOB_ID": "slurm_array_job_id",
    "SLURM_ARRAY_TASK_ID": "slurm_array_task_id",
    "SLURM_JOB_NODELIST": "slurm_nodelist",
    "SLURM_JOB_NUM_NODES": "slurm_num_nodes",
    "SLURM_NTASKS": "slurm_ntasks",
    "SLURM_JOB_PARTITION": "slurm_partition",
    "SLURM_CLUSTER_NAME": "slurm_cluster",
    "SLURM_RESTART_COUNT": "slurm_restart_count",
}


def slurm_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The SLURM facts of this process as {key: value}; empty outside a SLURM job.

    `slurm_job_id` of an array task is written as SLURM writes it in squeue and sacct (`<array job>_<index>`),
    so it names the task, not the whole array; the numeric per-task id SLURM also assigns is `slurm_task_job_id`.
    """
    env = os.environ if environ is None else environ
    if not env.get("SLURM_JOB_ID"):
        return {}
    facts = {key: env[var] for var, key in SLURM_KEYS.items() if env.get(var)}
    if "slurm_array_job_id" in facts and "slurm_array_task_id" in facts:
        facts["slurm_task_job_id"] = facts["slurm_job_id"]
        facts["slurm_job_id"] = f"{facts['slurm_array_job_id']}_{facts['slurm_array_task_id']}"
    return facts


def world_size(environ: Mapping[str, str] | None = None) -> int | None:
    """Processes of this training job as the launcher that started it says: torch's WORLD_SIZE (Lightning,
    torchrun), else SLURM's task count; None when neither set it (one process, or ranks not started yet)."""
    env = os.environ if environ is None else environ
    for var in ("WORLD_SIZE", "SLURM_NTASKS"):
        if env.get(var, "").isdigit():
            return int(env[var])
    return None


def check_can_submit(path: str | None = None) -> None:
    """Refuse a SLURM launch on a machine without `sbatch` (a laptop, a node without SLURM's client tools)
    before anything is submitted: otherwise submitit fails deep inside with a bare FileNotFoundError."""
    if shutil.which("sbatch", path=path) is None:
        raise ConfigError(
            "hydra/launcher=slurm submits each job with SLURM's `sbatch`, which is not on PATH here. Run the "
            "command on a login node of your cluster (where `sbatch --version` works, after any `module load "
            "slurm` your site needs), or drop hydra/launcher=slurm to run the jobs one after another on this "
            "machine (hydra/launcher=local, the default). Nothing was submitted."
        )
