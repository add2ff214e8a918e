"""The models optbench trains: small ones that run on a laptop CPU (a small ViT among them), and ResNet-18,
a Wide ResNet and a larger ViT for the GPU tier."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import nn

from optbench.core.errors import ConfigError
from optbench.training.data import Dataset

IMAGE_MODELS = ("cnn", "resnet18", "wide_resnet", "vit", "vit_cifar")
MODELS = ("logreg", "mlp", "cnn", "resnet18", "wide_resnet", "vit", "vit_cifar", "linear")


def build_model(cfg: DictConfig, data: Dataset) -> nn.Module:
    """The network `cfg` (the `model` group) names, sized for `data`'s inputs and outputs."""
    check_model_fits_data(cfg, data)
    outputs = 1 if data.is_regression else data.num_classes
    features = math.prod(data.input_shape)
    if cfg.name in ("logreg", "linear"):
        return nn.Sequential(nn.Flatten(), nn.Linear(features, outputs))
    if cfg.name == "mlp":
        return _mlp(features, list(cfg.hidden), outputs, cfg.batch_norm, cfg.dropout)
    if cfg.name == "cnn":
        return _cnn(data.input_shape, list(cfg.channels), cfg.hidden, outputs, cfg.batch_norm)
    if cfg.name == "resnet18":
        return _resnet18(data.input_shape[0], outputs, cfg.cifar_stem)
    if cfg.name == "wide_resnet":
        from optbench.training.wide_resnet import build_wide_resnet

        return build_wide_resnet(cfg, data.input_shape[0], outputs)
    if cfg.name in ("vit", "vit_cifar"):  # one network; vit_cifar is its GPU-sized option for 32x32 images
        from optbench.training.vit import build_vit

        return build_vit(cfg, data.input_shape, outputs)
    raise ConfigError(f"Unknown model '{cfg.name}'. Valid models: {', '.join(MODELS)}.")


def check_model_fits_data(cfg: DictConfig, data: Dataset) -> None:
    if data.is_regression and cfg.name not in ("linear", "mlp"):
        raise ConfigError(
            f"model={cfg.name} does not fit data={data.name}: the regression problem needs a model with one "
            "output on flat features; use model=linear (or model=mlp)."
        )
    if not data.is_regression and cfg.name == "linear":
        raise ConfigError(
            f"model=linear is the one-output model of the regression problem; for classification on "
            f"data={data.name} use model=logreg."
        )
    if cfg.name in IMAGE_MODELS and len(data.input_shape) != 3:
        raise ConfigError(f"model={cfg.name} needs image inputs, but data={data.name} has flat features.")


def _mlp(features: int, hidden: list[int], outputs: int, batch_norm: bool, dropout: float) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers.append(nn.Linear(features, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        features = width
    layers.append(nn.Linear(features, outputs))
    return nn.Sequential(*layers)


def _cnn(shape: tuple[int, ...], channels: list[int], hidden: int, outputs: int, batch_norm: bool) -> nn.Module:
    in_channels, height, width = shape
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        in_channels, height, width = out_channels, height // 2, width // 2
    if height == 0 or width == 0:
        raise ConfigError(f"model.channels has {len(channels)} pooling blocks, too many for {shape[1:]} images.")
    layers += [nn.Flatten(), nn.Linear(in_channels * height * width, hidden), nn.ReLU(), nn.Linear(hidden, outputs)]
    return nn.Sequential(*layers)


def _resnet18(in_channels: int, outputs: int, cifar_stem: bool) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=outputs)
    if cifar_stem:  # small images: keep the resolution instead of dividing it by 4 in the stem
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def distance_to_optimum(model: nn.Module, optimum: torch.Tensor) -> torch.Tensor:
    """||θ − θ*|| in float64 for the least-squares model (Flatten -> Linear, parameters [weight (1, d), bias]).

    The optimum is that of model=linear: for any other model on the same data (model=mlp) the distance is
    undefined and NaN is returned rather than a number of another problem."""
    linear = model[-1] if isinstance(model, nn.Sequential) and len(model) == 2 else None
    if not isinstance(linear, nn.Linear) or linear.weight.numel() + 1 != optimum.numel():
        return torch.tensor(float("nan"), dtype=torch.float64, device=optimum.device)
    params = torch.cat([linear.weight.detach().flatten(), linear.bias.detach()]).double()
    return torch.linalg.vector_norm(params - optimum)
