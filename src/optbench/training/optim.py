"""Optimizers and learning-rate schedules from the `optimizer` and `scheduler` config groups.

An optimizer config names its class in `_target_` (torch.optim or pytorch-optimizer); every other key is a
constructor argument except the few optbench reads itself (OPTBENCH_KEYS). Schedules are torch's own
classes; the run's length is filled in from the trainer so a config never hard-codes a step count.

`layerwise_lr_decay: d` gives each layer its own learning rate, lr x d^k for the layer k layers below the
output (discriminative learning rates, ULMFiT; layer-wise lr decay, BEiT/ELECTRA): one parameter group per
layer (and per weight-decay group), so every schedule, which scales each group's own lr, keeps the ratios.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from pytorch_optimizer.base.exception import NegativeLRError
from torch import nn
from torch.optim import Optimizer, lr_scheduler

from optbench.core.errors import ConfigError

# Keys of an optimizer config that optbench reads itself; the rest go to the optimizer's constructor.
OPTBENCH_KEYS = {"name", "_target_", "no_decay_bias_norm", "full_batch", "layerwise_lr_decay"}
SCHEDULERS = (
    "constant",
    "step",
    "multistep",
    "exponential",
    "inverse_time",
    "cosine",
    "warmup_cosine",
    "linear_warmup",
    "onecycle",
    "plateau",
)


def optimizer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Constructor arguments of the optimizer; YAML lists become tuples (betas, eps)."""
    options = OmegaConf.to_container(cfg, resolve=True)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if k not in OPTBENCH_KEYS}


def optimizer_class(cfg: DictConfig) -> type[Optimizer]:
    try:
        return get_class(cfg._target_)
    except Exception as err:
        raise ConfigError(f"optimizer={cfg.name}: cannot import its class '{cfg._target_}' ({err}).") from None


def decay_groups(params: list[nn.Parameter], cfg: DictConfig) -> list[dict[str, Any]]:
    """One group, or two when biases and normalization weights are exempt from weight decay.

    The rule is nanoGPT's: tensors with two or more dimensions (weights of linear and conv layers) decay,
    vectors (biases, norm scales and shifts) do not.
    """
    if not cfg.get("no_decay_bias_norm", False) or not cfg.get("weight_decay", 0.0):
        return [{"params": params}]
    return [
        {"params": [p for p in params if p.ndim >= 2]},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def model_layers(model: nn.Module) -> list[list[nn.Parameter]]:
    """The model's trainable parameters as layers, input first (the order modules register them).

    A layer is a module that holds a tensor of two or more dimensions (the weight of a linear, conv or
    embedding layer, or a position embedding held directly), with its bias. A module holding only vectors
    (a norm's scale and shift) joins the layer before it, which is what it normalizes (the first layer when
    it comes first): otherwise every norm would count as a layer of its own and stretch the depth.
    """
    owners: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            owners.setdefault(name.rpartition(".")[0], []).append(p)
    layers: list[list[nn.Parameter]] = []
    has_matrix: list[bool] = []
    for params in owners.values():
        matrix = any(p.ndim >= 2 for p in params)
        if not layers or (matrix and has_matrix[-1]):
            layers.append(list(params))
            has_matrix.append(matrix)
        else:
            layers[-1].extend(params)
            has_matrix[-1] = has_matrix[-1] or matrix
    return layers


def layerwise_decay(cfg: DictConfig) -> float | None:
    """The optimizer's `layerwise_lr_decay`: None (or 1, the same thing) for one global learning rate."""
    decay = cfg.get("layerwise_lr_decay")
    if decay is None:
        return None
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < float("inf"):
        raise ConfigError(
            f"optimizer.layerwise_lr_decay must be null or a positive number (the layer k layers below the output "
            f"gets lr x decay^k), got {decay!r}."
        )
    return None if decay == 1 else float(decay)


def parameter_groups(model: nn.Module, cfg: DictConfig) -> list[dict[str, Any]]:
    """The weight-decay groups (`decay_groups`); with `layerwise_lr_decay` d, those of every layer, the layer
    k layers below the output with lr x d^k (schedules then scale each group's own lr)."""
    decay = layerwise_decay(cfg)
    if decay is None:
        return decay_groups([p for p in model.parameters() if p.requires_grad], cfg)
    layers = model_layers(model)
    groups = []
    for index, params in enumerate(layers):
        scale = decay ** (len(layers) - 1 - index)
        groups += [
            {**group, "lr": cfg.lr * scale, "layer": index} for group in decay_groups(params, cfg) if group["params"]
        ]
    return groups


def build_optimizer(cfg: DictConfig, model: nn.Module) -> Optimizer:
    """The optimizer `cfg` (the `optimizer` group) describes, over `model`'s parameters."""
    return optimizer_class(cfg)(parameter_groups(model, cfg), **optimizer_kwargs(cfg))


def check_optimizer(cfg: DictConfig) -> None:
    """Build the optimizer on a dummy parameter, so its own argument checks run before any training."""
    cls, kwargs = optimizer_class(cfg), optimizer_kwargs(cfg)
    signature = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in signature.values()):
        # pytorch-optimizer's constructors swallow unknown keywords (**kwargs): a misspelt setting would be
        # silently ignored, so check names against the signature here.
        known = {n for n, p in signature.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(
                f"optimizer={cfg.name} has no setting {', '.join(unknown)}. "
                f"Its settings are: {', '.join(sorted(known - {'self', 'params'}))}."
            )
    # With layer-wise learning rates, the groups of two layers: an optimizer without parameter groups
    # (L-BFGS) refuses them here rather than after the data has loaded.
    params = (
        parameter_groups(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), cfg)
        if layerwise_decay(cfg)
        else [nn.Parameter(torch.zeros(2, 2))]
    )
    try:
        cls(params, **kwargs)
    except (TypeError, ValueError, NegativeLRError) as err:  # pytorch-optimizer's NegativeLRError is no ValueError
        raise ConfigError(f"optimizer={cfg.name} rejects its settings: {err}.") from None


class InverseTimeDecay:
    """LambdaLR factor 1 / (1 + decay * t); a class rather than a lambda so schedules can be pickled."""

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def __call__(self, t: int) -> float:
        return 1.0 / (1.0 + self.decay * t)


def warmup_length(cfg: DictConfig, total: int) -> int:
    steps = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_fraction * total)
    return max(1, int(steps))


def build_scheduler(cfg: DictConfig, optimizer: Optimizer, total: int) -> dict[str, Any] | None:
    """Lightning's lr-scheduler config for `cfg` (the `scheduler` group), or None for a constant lr.

    `total` is the length of the run in the scheduler's own unit: optimizer steps when
    `cfg.interval` is "step", epochs when it is "epoch".
    """
    name = cfg.name
    if name == "constant":
        return None
    if name == "step":
        scheduler = lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    elif name == "multistep":
        scheduler = lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    elif name == "exponential":
        scheduler = lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma)
    elif name == "inverse_time":
        scheduler = lr_scheduler.LambdaLR(optimizer, InverseTimeDecay(cfg.decay))
    elif name == "cosine":
        scheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.T_max or total, eta_min=cfg.eta_min)
    elif name == "linear_warmup":
        warmup = warmup_length(cfg, total)
        scheduler = lr_scheduler.LinearLR(optimizer, start_factor=cfg.start_factor, total_iters=warmup)
    elif name == "warmup_cosine":
        warmup = warmup_length(cfg, total)
        scheduler = lr_scheduler.SequentialLR(
            optimizer,
            [
                lr_scheduler.LinearLR(optimizer, start_factor=cfg.start_factor, total_iters=warmup),
                lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=cfg.eta_min),
            ],
            milestones=[warmup],
        )
    elif name == "onecycle":
        scheduler = lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total,
            pct_start=cfg.pct_start,
            anneal_strategy=cfg.anneal_strategy,
            div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor,
            three_phase=cfg.three_phase,
            cycle_momentum=cfg.cycle_momentum,
        )
    elif name == "plateau":
        scheduler = lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=cfg.mode,
            factor=cfg.factor,
            patience=cfg.patience,
            threshold=cfg.threshold,
            min_lr=cfg.min_lr,
        )
    else:
        raise ConfigError(f"Unknown scheduler '{name}'. Valid schedulers: {', '.join(SCHEDULERS)}.")
    config = {"scheduler": scheduler, "interval": cfg.interval, "frequency": 1}
    if cfg.monitor:
        config["monitor"] = cfg.monitor
    return config


def state_bytes(optimizer: Optimizer) -> int:
    """Bytes held in the optimizer's per-parameter state (moments, buffers, histories)."""
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
            elif isinstance(value, list):  # L-BFGS keeps its curvature history as lists of tensors
                total += sum(t.numel() * t.element_size() for t in value if torch.is_tensor(t))
    return total
