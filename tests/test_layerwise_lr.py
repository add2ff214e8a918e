"""optimizer.layerwise_lr_decay: the layer k layers below the output learns at lr x d^k, in parameter groups
composed with the weight-decay groups, the ratios kept by every schedule; unset, nothing changes."""

from __future__ import annotations

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from optbench.core.config import load_option
from optbench.core.errors import ConfigError
from optbench.training.optim import (
    SCHEDULERS,
    build_optimizer,
    build_scheduler,
    check_optimizer,
    decay_groups,
    model_layers,
)

pytestmark = pytest.mark.unit


def optimizer_config(name: str, /, **overrides: object) -> DictConfig:
    return OmegaConf.merge(load_option("optimizer", name), overrides)


def network() -> nn.Sequential:
    """Three layers: a linear layer with the norm after it, then two linear layers (the output last)."""
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2))


def lr_of_each_parameter(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}


def test_the_layer_k_layers_below_the_output_gets_lr_times_decay_to_the_k():
    model = network()
    optimizer = build_optimizer(optimizer_config("sgd", lr=0.1, layerwise_lr_decay=0.5), model)
    first, norm, middle, output = model[0], model[1], model[3], model[4]
    expected = {
        **{id(p): 0.1 * 0.5**2 for p in [*first.parameters(), *norm.parameters()]},  # the norm joins its layer
        **{id(p): 0.1 * 0.5 for p in middle.parameters()},
        **{id(p): 0.1 for p in output.parameters()},
    }
    assert lr_of_each_parameter(optimizer) == expected


def test_a_decay_above_one_gives_the_input_layers_the_larger_rates():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    optimizer = build_optimizer(optimizer_config("adam", lr=1e-3, layerwise_lr_decay=3.0), model)
    assert [group["lr"] for group in optimizer.param_groups] == [pytest.approx(3e-3), 1e-3]


def test_layer_groups_keep_the_weight_decay_groups():
    model = network()
    cfg = optimizer_config("adamw", lr=0.01, weight_decay=0.1, no_decay_bias_norm=True, layerwise_lr_decay=0.5)
    optimizer = build_optimizer(cfg, model)
    decay = {id(p): (0.1 if p.ndim >= 2 else 0.0) for p in model.parameters()}
    assert {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]} == decay
    # per layer a decaying group (its matrix) and an exempt one (its biases and norm), no empty group
    assert [(g["layer"], len(g["params"]), g["weight_decay"]) for g in optimizer.param_groups] == [
        (0, 1, 0.1),
        (0, 3, 0.0),
        (1, 1, 0.1),
        (1, 1, 0.0),
        (2, 1, 0.1),
        (2, 1, 0.0),
    ]


@pytest.mark.parametrize("decay", [None, 1.0])
def test_no_decay_builds_the_same_groups_as_without_the_option(decay):
    model = network()
    for extra in ({"weight_decay": 0.1, "no_decay_bias_norm": True}, {}):
        base = optimizer_config("adamw", **extra)
        with_option = build_optimizer(OmegaConf.merge(base, {"layerwise_lr_decay": decay}), model)
        plain = decay_groups(list(model.parameters()), base)
        assert [[id(p) for p in g["params"]] for g in with_option.param_groups] == [
            [id(p) for p in g["params"]] for g in plain
        ]
        assert {g["lr"] for g in with_option.param_groups} == {base.lr}


def test_every_shipped_optimizer_config_has_the_option_off_by_default():
    for name in ("sgd", "momentum", "adam", "adamw", "lamb", "lars"):
        assert load_option("optimizer", name).layerwise_lr_decay is None


def test_a_position_embedding_held_by_the_model_itself_is_a_layer_of_its_own():
    class Embedded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.position = nn.Parameter(torch.zeros(1, 5, 4))  # held directly, registered first
            self.norm = nn.LayerNorm(4)
            self.head = nn.Linear(4, 2)

    model = Embedded()
    layers = model_layers(model)
    assert [[id(p) for p in layer] for layer in layers] == [
        [id(model.position), id(model.norm.weight), id(model.norm.bias)],
        [id(model.head.weight), id(model.head.bias)],
    ]


def test_a_norm_before_any_matrix_joins_the_first_layer():
    model = nn.Sequential(nn.LayerNorm(3), nn.Linear(3, 4), nn.Linear(4, 2))
    assert [len(layer) for layer in model_layers(model)] == [4, 2]


def scheduler_config(name: str) -> DictConfig:
    cfg = load_option("scheduler", name)
    if name == "step":
        cfg.step_size = 2
    if name == "multistep":
        cfg.milestones = [2, 4]
    return cfg


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_schedule_keeps_the_ratio_of_the_layers_learning_rates(name):
    model = network()
    optimizer = build_optimizer(optimizer_config("momentum", lr=0.2, layerwise_lr_decay=0.5), model)
    config = build_scheduler(scheduler_config(name), optimizer, total=50)  # 5 steps of warmup
    for _ in range(3):
        optimizer.step()
        if config is not None:
            scheduler = config["scheduler"]
            scheduler.step(1.0) if name == "plateau" else scheduler.step()
    lrs = [group["lr"] for group in optimizer.param_groups]
    top = lrs[-1]
    assert top > 0
    assert [lr / top for lr in lrs] == pytest.approx([0.25, 0.5, 1.0])
    if name not in ("constant", "plateau"):
        assert top != pytest.approx(0.2)  # the schedule did move the rates


@pytest.mark.parametrize("decay", [0.0, -0.5, "half", True])
def test_a_decay_that_is_not_a_positive_number_is_refused_before_training(decay):
    with pytest.raises(ConfigError, match="layerwise_lr_decay"):
        check_optimizer(optimizer_config("adam", layerwise_lr_decay=decay))


def test_an_optimizer_without_parameter_groups_refuses_layerwise_rates_before_training():
    cfg = OmegaConf.merge(load_option("optimizer", "lbfgs"), {"layerwise_lr_decay": 0.5})
    with pytest.raises(ConfigError, match="optimizer=lbfgs rejects its settings"):
        check_optimizer(cfg)


@pytest.mark.parametrize("name", ["sgd", "adam", "lamb", "lars"])
def test_check_optimizer_accepts_layerwise_rates(name):
    check_optimizer(optimizer_config(name, layerwise_lr_decay=0.7))
