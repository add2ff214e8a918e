"""The workloads: each model and dataset a workload pairs, and the workload configs themselves.

Models are built from the real option files (conf/model/*.yaml, composed by Hydra) for stand-in datasets of
the exact input shapes the workloads use, so every check runs on the layers a real run trains.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_config
from torch import nn

from optbench.core.errors import ConfigError
from optbench.training.data import Dataset, Split
from optbench.training.models import build_model, num_parameters
from optbench.training.train import train

# --------------------------------------------------------------------------------------------------------------
# Stand-in datasets of a workload's input shape
# --------------------------------------------------------------------------------------------------------------

MNIST_SHAPE, CIFAR_SHAPE, DIGITS_SHAPE = (1, 28, 28), (3, 32, 32), (1, 8, 8)


def images(shape: tuple[int, ...], num_classes: int = 10, n: int = 16, seed: int = 0) -> Dataset:
    """A Dataset of `n` random float images of `shape` per split, labels cycling through the classes."""
    gen = torch.Generator().manual_seed(seed)

    def split() -> Split:
        return Split(torch.randn(n, *shape, generator=gen), torch.arange(n) % num_classes)

    return Dataset("standin", split(), split(), split(), input_shape=shape, num_classes=num_classes)


def model_for(shape: tuple[int, ...], *overrides: str, num_classes: int = 10) -> nn.Module:
    cfg = compose_config(*overrides)
    return build_model(cfg.model, images(shape, num_classes))


# --------------------------------------------------------------------------------------------------------------
# model=vit
# --------------------------------------------------------------------------------------------------------------


def encoder_blocks(model: nn.Module) -> int:
    from torchvision.models.vision_transformer import EncoderBlock

    return sum(isinstance(m, EncoderBlock) for m in model.modules())


def vit_of(model: nn.Module) -> nn.Module:
    from torchvision.models import VisionTransformer

    (vit,) = [m for m in model.modules() if isinstance(m, VisionTransformer)]
    return vit


@pytest.mark.unit
@pytest.mark.parametrize(
    ("shape", "overrides", "classes"),
    [(MNIST_SHAPE, [], 10), (CIFAR_SHAPE, ["model.patch_size=4"], 10), (CIFAR_SHAPE, ["model.patch_size=4"], 100)],
    ids=["mnist-1x28x28", "cifar10-3x32x32", "cifar100-3x32x32"],
)
def test_vit_maps_a_batch_of_images_to_one_logit_per_class(shape, overrides, classes) -> None:
    model = model_for(shape, "model=vit", *overrides, num_classes=classes)

    logits = model(torch.randn(5, *shape))

    assert logits.shape == (5, classes)
    assert vit_of(model).conv_proj.in_channels == shape[0]  # torchvision's RGB-only projection replaced for 1


@pytest.mark.unit
@pytest.mark.parametrize(("patch", "depth"), [(7, 4), (4, 2), (14, 1)])
def test_vit_depth_and_patch_size_come_from_the_config(patch: int, depth: int) -> None:
    model = model_for(MNIST_SHAPE, "model=vit", f"model.patch_size={patch}", f"model.depth={depth}")

    vit = vit_of(model)
    assert encoder_blocks(model) == depth
    assert vit.seq_length == (28 // patch) ** 2 + 1  # one token per patch, plus the class token
    assert vit.conv_proj.kernel_size == (patch, patch) and vit.conv_proj.stride == (patch, patch)


@pytest.mark.unit
def test_vit_width_heads_and_mlp_come_from_the_config() -> None:
    model = model_for(MNIST_SHAPE, "model=vit", "model.hidden_dim=32", "model.heads=2", "model.mlp_dim=48")

    block = vit_of(model).encoder.layers[0]
    assert block.self_attention.embed_dim == 32 and block.self_attention.num_heads == 2
    assert block.mlp[0].out_features == 48


@pytest.mark.unit
def test_vit_pads_images_whose_side_is_not_a_multiple_of_the_patch() -> None:
    # digits are 8x8: with 7x7 patches they are padded to 14x14, four patches.
    model = model_for(DIGITS_SHAPE, "model=vit")

    assert vit_of(model).image_size == 14 and vit_of(model).seq_length == 4 + 1
    assert model(torch.randn(3, *DIGITS_SHAPE)).shape == (3, 10)


@pytest.mark.unit
def test_default_vit_is_small_enough_for_a_cpu() -> None:
    assert 50_000 < num_parameters(model_for(MNIST_SHAPE, "model=vit")) < 500_000


@pytest.mark.unit
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.hidden_dim=30", "model.heads=4"], "must be a multiple of model.heads=4"),
        (["model.patch_size=40"], "larger than the 28x28 images"),
        (["model.depth=0"], "model.depth must be a positive whole number"),
        (["model.dropout=1.5"], "model.dropout must be in [0, 1)"),
    ],
)
def test_vit_sizes_torchvision_would_reject_are_config_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        model_for(MNIST_SHAPE, "model=vit", *overrides)


@pytest.mark.unit
def test_vit_learns_a_fixed_batch_with_adamw() -> None:
    torch.manual_seed(0)
    model = model_for(MNIST_SHAPE, "model=vit", "model.depth=2")
    data = images(MNIST_SHAPE, n=32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(data.train.x), data.train.y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    assert losses[-1] < 0.5 * losses[0]  # memorizing 32 random images: the gradients flow through every block


def test_vit_trains_through_optbench_train(make_cfg) -> None:
    metrics = train(make_cfg("data=digits", "model=vit", "logger=none"))

    assert metrics["train/steps"] == 4 and math.isfinite(metrics["test/loss"])
