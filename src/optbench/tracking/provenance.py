"""Where a run ran, as tags: the SLURM job (id, array index, nodes, tasks), the world size, the GPUs and the CUDA
stack, torch's version. Each fact is recorded only where it exists (SLURM's under SLURM, the GPU's with CUDA);
a missing one is left out, never an error."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from optbench.cluster.gpu import gpu_facts
from optbench.cluster.slurm import slurm_environment, world_size

PREFIX = "optbench."  # = runs.TAG_PREFIX (runs.py imports this module)


def environment_tags(environ: Mapping[str, str] | None = None, strategy: Mapping | None = None) -> dict[str, str]:
    """{optbench.<fact>: value} for this process. The world size is a training run's `strategy` group
    (devices x num_nodes: what its Trainer is built with, also when Lightning spawns the ranks after the run is
    opened), else what the launcher set (WORLD_SIZE, SLURM_NTASKS)."""
    env = os.environ if environ is None else environ
    facts = {"torch_version": torch.__version__, **slurm_environment(env), **gpu_facts()}
    size = world_size(env)
    if strategy is not None:
        devices, nodes = strategy.get("devices", 1), strategy.get("num_nodes", 1)
        if isinstance(devices, int) and isinstance(nodes, int):
            size = devices * nodes
    if size is not None:
        facts["world_size"] = str(size)
    if env.get("CUBLAS_WORKSPACE_CONFIG"):
        facts["cublas_workspace_config"] = env["CUBLAS_WORKSPACE_CONFIG"]
    return {PREFIX + key: value for key, value in facts.items()}
