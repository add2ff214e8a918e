"""The GPU side of provenance and determinism: which GPUs and CUDA stack a run used, and what
trainer.deterministic=true needs on CUDA. torch is imported inside the functions (start-up stays fast)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

log = logging.getLogger(__name__)

# cuBLAS is deterministic only with a fixed workspace, read when its first handle is made (the first matmul):
# https://docs.nvidia.com/cuda/cublas/index.html#results-reproducibility
CUBLAS_WORKSPACE = ":4096:8"
DETERMINISM_COST = (
    "trainer.deterministic=true on CUDA: CUBLAS_WORKSPACE_CONFIG={value} (cuBLAS keeps 8 workspaces of 4 MiB, "
    "about 32 MiB of GPU memory per stream) and only deterministic kernels (cuDNN autotuning off, often slower; "
    "an operation without a deterministic kernel raises); trainer=gpu turns it off for speed"
)


def gpu_facts() -> dict[str, str]:
    """GPU model and count and the CUDA, cuDNN and NCCL versions torch uses; empty without a usable GPU."""
    import torch

    if not torch.cuda.is_available():
        return {}
    facts = {
        "gpu_model": torch.cuda.get_device_name(0),
        "gpu_count": str(torch.cuda.device_count()),
        "cuda_version": str(torch.version.cuda),
    }
    if torch.backends.cudnn.is_available():
        facts["cudnn_version"] = str(torch.backends.cudnn.version())
    with suppress(AttributeError, RuntimeError):  # a build without NCCL (Windows, ROCm) has no version
        facts["nccl_version"] = ".".join(str(part) for part in torch.cuda.nccl.version())
    return facts


def deterministic_cuda(trainer: Mapping[str, Any], environ: dict[str, str] | None = None) -> str | None:
    """Set CUBLAS_WORKSPACE_CONFIG before CUDA starts when a CUDA run asks for deterministic algorithms (Lightning
    sets it too, but only when the Trainer is built, after optbench may have touched the GPU), and log once what
    that costs. Returns the value set, or None when nothing applies. A value the user set is kept."""
    env = os.environ if environ is None else environ
    if not trainer.get("deterministic") or trainer.get("accelerator") not in ("gpu", "cuda"):
        return None
    value = env.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    log.info(DETERMINISM_COST.format(value=value))
    return value
