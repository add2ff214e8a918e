"""Wide residual networks for 32x32 images (model=wide_resnet), WRN-d-k of Zagoruyko and Komodakis (2016).

Written here because torchvision's wide_resnet50_2 / wide_resnet101_2 are the ImageNet bottleneck networks
(224x224 inputs, a stride-4 stem, 69-127 M parameters), not the CIFAR family: three groups of pre-activation
basic blocks (BN-ReLU-conv3x3 twice) with 16k, 32k and 64k channels, the second and third group halving the
resolution, then BN-ReLU, global average pooling and a linear classifier. WRN-16-4 (the default, 2.7 M
parameters) is DeepOBS's cifar100_wrn164 network and AlgoPerf's kind of CIFAR model.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import Tensor, nn

from optbench.core.errors import ConfigError


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-(dropout)-BN-ReLU-conv3x3 plus the input (through a 1x1 convolution when its shape
    changes), as in the paper's "B(3,3)" block."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.bn1(x).relu()
        out = self.conv2(self.dropout(self.bn2(self.conv1(activated)).relu()))
        # The projection reads the activated input, as in the authors' code, when the shape changes.
        return out + (x if self.shortcut is None else self.shortcut(activated))


def build_wide_resnet(cfg: DictConfig, in_channels: int, outputs: int) -> nn.Module:
    """WRN-`cfg.depth`-`cfg.widen_factor` for `in_channels`-channel images and `outputs` classes."""
    depth, widen = cfg.depth, cfg.widen_factor
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ConfigError(
            f"model.depth must be 6n + 4 (10, 16, 22, 28, 40: n blocks in each of the 3 groups), got {depth!r}."
        )
    if isinstance(widen, bool) or not isinstance(widen, int) or widen < 1:
        raise ConfigError(f"model.widen_factor must be a positive whole number, got {widen!r}.")
    if isinstance(cfg.dropout, bool) or not 0 <= cfg.dropout < 1:
        raise ConfigError(f"model.dropout must be in [0, 1), got {cfg.dropout!r}.")
    blocks = (depth - 4) // 6
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)]
    for group, (width, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
        for index in range(blocks):
            in_width = widths[group] if index == 0 else width
            layers.append(PreActBlock(in_width, width, stride if index == 0 else 1, cfg.dropout))
    layers += [nn.BatchNorm2d(widths[-1]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    layers.append(nn.Linear(widths[-1], outputs))
    model = nn.Sequential(*layers)
    for module in model.modules():  # the authors' initialization: He-normal convolutions, zero biases
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
    return model
