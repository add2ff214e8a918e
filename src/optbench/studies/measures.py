"""Quantities that several study kinds measure: distances between parameter vectors, and where a study's
runs execute (and on how many CPU threads)."""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from omegaconf import DictConfig

from optbench.core.config import compose_config
from optbench.core.errors import ConfigError

EQUIVALENT, NOT_EQUIVALENT = "equivalent", "not equivalent"
# BatchNorm running statistics are state, not parameters: the distance compares learned parameters only.
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def verdict_of(distance: float, threshold: float) -> str:
    """An exact claim's verdict: equivalent when the distance is finite and below the threshold."""
    return EQUIVALENT if math.isfinite(distance) and distance < threshold else NOT_EQUIVALENT


def parameter_vector(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The learned parameters of a state_dict as one float64 vector (BatchNorm running statistics left out)."""
    keys = [k for k, v in state.items() if torch.is_floating_point(v) and not k.endswith(BUFFER_SUFFIXES)]
    return torch.cat([state[k].detach().double().flatten() for k in keys])


def relative_distance(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """||θ − θ_ref|| / ||θ_ref|| over the learned parameters."""
    a, b = parameter_vector(state), parameter_vector(reference)
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def device_of(cfg: DictConfig) -> str:
    """cpu or cuda, from the trainer of the study's `train` overrides; a GPU preset on a machine without
    one is the user's error."""
    accelerator = compose_config(*cfg.train).trainer.accelerator
    if accelerator not in ("gpu", "cuda"):
        return "cpu"
    if not torch.cuda.is_available():
        raise ConfigError(
            f"study {cfg.name}: this preset runs on a CUDA GPU (trainer.accelerator={accelerator}) and torch "
            "sees none on this machine. Run the default CPU-sized study (no --preset), or run on a GPU machine."
        )
    return "cuda"


@contextmanager
def cpu_threads(threads: int | None, device: str):
    """torch's intra-op threads set to `threads` for the block (CPU only; None keeps torch's default)."""
    before = torch.get_num_threads()
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
