"""A small vision transformer (model=vit) for MNIST-sized and CIFAR-sized images, built on torchvision's.

torchvision's VisionTransformer is the ViT of Dosovitskiy et al. (class token, learned position embedding,
pre-norm encoder blocks) with every size a constructor argument, so nothing here re-implements it. Two
things are adapted around it: its patch projection is hard-wired to 3 input channels (replaced for other
channel counts), and it needs the image side to be a multiple of the patch side (images that are not are
zero-padded at the bottom and right first, as timm's PatchEmbed(dynamic_img_pad=True) does).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from optbench.core.errors import ConfigError


class PadToPatches(nn.Module):
    """Zero-pad (n, c, h, w) images at the bottom and right up to `side` x `side`."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x, (0, self.side - x.shape[-1], 0, self.side - x.shape[-2]))


def build_vit(cfg: DictConfig, shape: tuple[int, ...], outputs: int) -> nn.Module:
    """torchvision's VisionTransformer sized by `cfg` (the model=vit options) for (channels, side, side) images."""
    from torchvision.models import VisionTransformer

    check_vit(cfg, shape)
    channels, side = shape[0], shape[1]
    padded = math.ceil(side / cfg.patch_size) * cfg.patch_size
    vit = VisionTransformer(
        image_size=padded,
        patch_size=cfg.patch_size,
        num_layers=cfg.depth,
        num_heads=cfg.heads,
        hidden_dim=cfg.hidden_dim,
        mlp_dim=cfg.mlp_dim,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        num_classes=outputs,
    )
    if channels != 3:  # torchvision builds conv_proj for RGB only; same layer and init for `channels` inputs
        vit.conv_proj = nn.Conv2d(channels, cfg.hidden_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        fan_in = channels * cfg.patch_size**2
        nn.init.trunc_normal_(vit.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(vit.conv_proj.bias)
    if padded == side:
        return vit
    return nn.Sequential(PadToPatches(padded), vit)


def check_vit(cfg: DictConfig, shape: tuple[int, ...]) -> None:
    """Sizes torchvision would reject with an assertion deep inside, as one ConfigError each."""
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ConfigError(f"model=vit needs square images (channels, side, side); the data has shape {shape}.")
    for key in ("patch_size", "depth", "heads", "hidden_dim", "mlp_dim"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.{key} must be a positive whole number, got {value!r}.")
    if cfg.patch_size > shape[1]:
        raise ConfigError(
            f"model.patch_size={cfg.patch_size} is larger than the {shape[1]}x{shape[2]} images: choose a patch "
            f"side that divides {shape[1]} (for example {_divisors(shape[1])})."
        )
    if cfg.hidden_dim % cfg.heads:
        raise ConfigError(
            f"model.hidden_dim={cfg.hidden_dim} must be a multiple of model.heads={cfg.heads} (each attention "
            f"head gets hidden_dim / heads dimensions): change one of them."
        )
    for key in ("dropout", "attention_dropout"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(f"model.{key} must be in [0, 1), got {value!r}.")


def _divisors(side: int) -> str:
    return ", ".join(str(d) for d in range(2, side) if side % d == 0) or str(side)
