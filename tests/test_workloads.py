"""The workloads: each model and dataset a workload pairs, and the workload configs themselves.

Models are built from the real option files (conf/model/*.yaml, composed by Hydra) for stand-in datasets of
the exact input shapes the workloads use, so every check runs on the layers a real run trains.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import compose_config
from torch import nn

from optbench.core.config import group_options, load_option
from optbench.core.errors import ConfigError, OptbenchError
from optbench.training import synthetic
from optbench.training.data import Dataset, Split, load_dataset
from optbench.training.models import build_model, distance_to_optimum, num_parameters
from optbench.training.optimum_target import optimum_target
from optbench.training.prepare import prepare
from optbench.training.train import train
from optbench.training.workloads import load_workload, workloads

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
    model = model_for(MNIST_SHAPE, "model=vit", "model.depth=2", "model.hidden_dim=32", "model.mlp_dim=64")
    data = images(MNIST_SHAPE, n=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    losses = []
    for _ in range(25):
        loss = nn.functional.cross_entropy(model(data.train.x), data.train.y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    assert losses[-1] < 0.5 * losses[0]  # memorizing 16 random images: the gradients flow through every block


def test_vit_trains_through_optbench_train(make_cfg) -> None:
    metrics = train(make_cfg("data=digits", "model=vit", "logger=none"))

    assert metrics["train/steps"] == 4 and math.isfinite(metrics["test/loss"])


# --------------------------------------------------------------------------------------------------------------
# data=quadratic and data=regression: least squares with a known optimum
# --------------------------------------------------------------------------------------------------------------


def least_squares(name: str, *overrides: str) -> Dataset:
    return load_dataset(compose_config(f"data={name}", "model=linear", *overrides).data)


def condition_number(matrix: torch.Tensor) -> float:
    values = torch.linalg.eigvalsh(matrix)
    return float(values.max() / values.min())


@pytest.mark.unit
@pytest.mark.parametrize("kappa", [1.0, 10.0, 100.0, 1000.0])
def test_quadratic_training_loss_has_the_chosen_condition_number(kappa: float) -> None:
    data = least_squares("quadratic", f"data.condition_number={kappa}", "data.dimension=20", "data.n_samples=400")

    assert condition_number(synthetic.hessian(data.train.x)) == pytest.approx(kappa, rel=1e-4)


@pytest.mark.unit
def test_quadratic_hessian_is_twice_the_feature_covariance_and_one_for_the_bias() -> None:
    data = least_squares("quadratic", "data.dimension=10", "data.n_samples=200")
    hessian = synthetic.hessian(data.train.x)

    # Features centred exactly: the bias decouples from the weights, its curvature is 2 x mean(1^2).
    torch.testing.assert_close(hessian[-1, :-1], torch.zeros(10, dtype=torch.float64), atol=1e-5, rtol=0)
    assert hessian[-1, -1].item() == pytest.approx(2.0)
    assert torch.linalg.eigvalsh(hessian).min().item() == pytest.approx(2.0, rel=1e-5)  # smallest eigenvalue 1


@pytest.mark.unit
def test_quadratic_eigenvalues_fall_in_two_clusters_like_deepobs() -> None:
    values = synthetic.eigenvalues(100, 100.0, 0.9, torch.Generator().manual_seed(0))

    low, high = values[:90], values[90:]
    assert low.min() >= 1 and low.max() <= 2 and high.min() >= 50 and high.max() <= 100
    assert (values[0].item(), values[-1].item()) == (1.0, 100.0)


@pytest.mark.unit
def test_random_rotation_is_orthogonal() -> None:
    rotation = synthetic.random_rotation(30, torch.Generator().manual_seed(1))

    torch.testing.assert_close(rotation.T @ rotation, torch.eye(30, dtype=torch.float64))


@pytest.mark.unit
@pytest.mark.parametrize("name", ["quadratic", "regression"])
def test_closed_form_optimum_has_zero_gradient(name: str) -> None:
    data = least_squares(name)
    params = data.optimum.clone().requires_grad_(True)
    x, y = data.train.x.double(), data.train.y.double().squeeze(1)

    loss = ((x @ params[:-1] + params[-1] - y) ** 2).mean()
    (gradient,) = torch.autograd.grad(loss, params)
    at_zero = 2 * torch.cat([x.T @ -y, -y.sum()[None]]) / len(y)  # the gradient at θ = 0, for scale

    assert gradient.norm() < 1e-9 * at_zero.norm()


@pytest.mark.unit
def test_optimal_training_loss_is_below_the_loss_anywhere_else() -> None:
    data = least_squares("quadratic", "data.dimension=10", "data.n_samples=300")
    best = synthetic.optimal_losses(data)["train"]
    gen = torch.Generator().manual_seed(0)

    for _ in range(5):
        nearby = data.optimum + 1e-3 * torch.randn(11, generator=gen, dtype=torch.float64)
        assert synthetic.mean_squared_error(data.train.x, data.train.y, nearby) > best


@pytest.mark.unit
def test_quadratic_optimal_loss_is_about_the_label_noise_variance() -> None:
    losses = synthetic.optimal_losses(least_squares("quadratic", "data.noise=2.0"))

    # Least squares with 101 parameters on 1,400 rows fits 101/1400 of the noise: E[train] = 4 (1 - 101/1400).
    assert losses["train"] == pytest.approx(4 * (1 - 101 / 1400), rel=0.1)
    assert losses["val"] == pytest.approx(4.0, rel=0.2) and losses["test"] == pytest.approx(4.0, rel=0.2)


@pytest.mark.unit
def test_quadratic_problem_follows_split_seed_only() -> None:
    fingerprint = lambda *o: least_squares("quadratic", "data.dimension=5", "data.n_samples=100", *o).fingerprint  # noqa: E731

    assert fingerprint() == fingerprint()
    assert fingerprint() != fingerprint("data.split_seed=1")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.condition_number=0.5"], "data.condition_number must be a finite number >= 1"),
        (["data.dimension=1"], "data.dimension must be a whole number >= 2"),
        (["data.low_fraction=1.0"], "data.low_fraction must be in"),
        (["data.n_samples=120"], "needs more training examples than parameters"),
    ],
)
def test_quadratic_settings_that_cannot_build_the_problem_are_config_errors(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        least_squares("quadratic", *overrides)


@pytest.mark.unit
def test_distance_to_optimum_is_undefined_for_a_model_that_is_not_the_linear_one() -> None:
    data = least_squares("regression")
    linear = build_model(compose_config("data=regression", "model=linear").model, data)
    mlp = build_model(compose_config("data=regression", "model=mlp").model, data)

    assert math.isfinite(distance_to_optimum(linear, data.optimum))
    assert math.isnan(distance_to_optimum(mlp, data.optimum))


@pytest.mark.unit
def test_prepare_records_the_optimal_loss_of_each_split(tmp_path) -> None:
    cfg = compose_config(
        "data=quadratic",
        f"output={tmp_path / 'q.pt'}",
        f"info={tmp_path / 'q.json'}",
        config_name="prepare",
        hydra_node=False,
    )

    info = prepare(cfg)

    assert info["optimal_loss"] == synthetic.optimal_losses(least_squares("quadratic"))
    assert "optimal_loss" not in prepare(
        compose_config(
            "data=digits",
            f"output={tmp_path / 'd.pt'}",
            f"info={tmp_path / 'd.json'}",
            config_name="prepare",
            hydra_node=False,
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize(("name", "lr", "epochs"), [("quadratic", 0.1, 20), ("regression", 0.05, 15)])
def test_least_squares_workload_approaches_its_known_optimum(name: str, lr: float, epochs: int, make_cfg) -> None:
    cfg = make_cfg(
        f"data={name}",
        "model=linear",
        "optimizer=adam",
        f"optimizer.lr={lr}",
        f"trainer.max_epochs={epochs}",
        "trainer.limit_train_batches=null",
        "trainer.limit_val_batches=null",
        "logger=none",
    )
    optimal = synthetic.optimal_losses(load_dataset(cfg.data))

    metrics = train(cfg)

    # Within 1.5x of the exact solution's validation loss (from hundreds of times it at the start).
    assert metrics["val/loss"] < 1.5 * optimal["val"]
    assert metrics["train/dist_to_opt"] < 1.0


# --------------------------------------------------------------------------------------------------------------
# GPU tier: model=wide_resnet and model=vit_cifar, trained here on tiny generated CIFAR files
# --------------------------------------------------------------------------------------------------------------


def convolutions(model: nn.Module, side: int) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (side, side)]


@pytest.mark.unit
def test_wide_resnet_16_4_has_the_papers_shape() -> None:
    model = model_for(CIFAR_SHAPE, "model=wide_resnet", num_classes=100)

    assert len(convolutions(model, 3)) == 1 + 3 * 2 * 2  # stem, then 3 groups of 2 blocks of 2 convolutions
    assert [c.out_channels for c in convolutions(model, 1)] == [64, 128, 256]  # shortcuts where the shape changes
    assert num_parameters(model) == pytest.approx(2.7e6, rel=0.05)  # WRN-16-4: 2.7 M in the paper
    assert model(torch.randn(2, *CIFAR_SHAPE)).shape == (2, 100)


@pytest.mark.unit
def test_wide_resnet_depth_and_width_come_from_the_config() -> None:
    model = model_for(CIFAR_SHAPE, "model=wide_resnet", "model.depth=10", "model.widen_factor=2")

    assert len(convolutions(model, 3)) == 1 + 3 * 1 * 2
    assert [c.out_channels for c in convolutions(model, 1)] == [32, 64, 128]


@pytest.mark.unit
def test_wide_resnet_halves_the_resolution_twice() -> None:
    model = model_for(CIFAR_SHAPE, "model=wide_resnet", "model.depth=10", "model.widen_factor=1")
    sides = []
    for block in model:
        if block.__class__.__name__ == "PreActBlock":
            block.register_forward_hook(lambda m, i, out: sides.append(out.shape[-1]))

    model(torch.randn(1, *CIFAR_SHAPE))

    assert sides == [32, 16, 8]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("override", "message"),
    [("model.depth=15", "6n \\+ 4"), ("model.widen_factor=0", "widen_factor must be a positive")],
)
def test_wide_resnet_shapes_that_do_not_exist_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        model_for(CIFAR_SHAPE, "model=wide_resnet", override)


@pytest.mark.unit
def test_vit_cifar_is_the_vit_with_4x4_patches_on_32x32_images() -> None:
    vit = vit_of(model_for(CIFAR_SHAPE, "model=vit_cifar"))

    assert vit.patch_size == 4 and vit.seq_length == 64 + 1 and vit.image_size == 32


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Generated CIFAR-10 / CIFAR-100 files in their real format (test_data.py's writers), and overrides that
    read them: (data overrides, number of training examples)."""
    import torchvision
    from test_data import CIFAR_CLASSES, TORCHVISION_CASES, trust_generated_cifar_files

    def make(name: str) -> tuple[list[str], int]:
        writer, val_size, _, _ = TORCHVISION_CASES[name]
        root = tmp_path / "data"
        written = writer(root)
        class_name, folder = CIFAR_CLASSES[name]
        trust_generated_cifar_files(monkeypatch, getattr(torchvision.datasets, class_name), root / folder)
        return [f"data={name}", f"data.root={root}", f"data.val_size={val_size}"], len(written.train_y) - val_size

    return make


@pytest.mark.slow
@pytest.mark.parametrize(
    ("data", "model"), [("cifar100", "wide_resnet"), ("cifar10", "vit_cifar"), ("cifar10", "resnet18")]
)
def test_gpu_tier_model_trains_on_generated_cifar_files(data: str, model: str, tiny_cifar, make_cfg) -> None:
    overrides, n_train = tiny_cifar(data)
    cfg = make_cfg(*overrides, f"model={model}", "batch_size=8", "trainer.limit_train_batches=2", "logger=none")

    metrics = train(cfg)

    assert metrics["train/steps"] == 2 and math.isfinite(metrics["test/loss"]) and n_train > 8


# --------------------------------------------------------------------------------------------------------------
# conf/workload: one config per workload, its target and (GPU tier) its preset
# --------------------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = group_options("workload")
CPU_WORKLOADS = [w.name for w in workloads("cpu")]
GPU_WORKLOADS = [w.name for w in workloads("gpu")]
DIRECTIONS = {"val/acc": "maximize", "val/loss": "minimize"}


def workload_config(name: str, *overrides: str):
    """optbench-train's config with the workload, as `optbench-train workload=<name>` composes it."""
    return compose_config(f"workload={name}", *overrides)


@pytest.mark.unit
def test_the_workloads_of_issue_12_exist() -> None:
    assert set(CPU_WORKLOADS) == {"digits_mlp", "mnist5k_cnn", "mnist5k_vit", "regression_linear", "quadratic_linear"}
    assert set(GPU_WORKLOADS) == {"cifar10_resnet18", "cifar100_wrn", "cifar10_vit"}


@pytest.mark.unit
@pytest.mark.parametrize("name", WORKLOADS)
def test_workload_config_declares_a_consistent_target(name: str) -> None:
    workload = load_workload(name)

    assert load_option("workload", name).workload.name == name
    assert DIRECTIONS[workload.metric] == workload.direction and workload.tier in ("cpu", "gpu")
    assert workload.target_file == f"conf/targets/{workload.data}-{workload.model}.yaml"
    assert workload.batch_size >= 1 and workload.epochs >= 1


@pytest.mark.unit
@pytest.mark.parametrize("name", WORKLOADS)
def test_workload_composes_into_the_training_config_it_declares(name: str) -> None:
    workload = load_workload(name)
    cfg = compose_config(f"workload={name}", "seed=3")

    assert (cfg.data.name, cfg.model.name) == (workload.data, workload.model)
    assert (cfg.batch_size, cfg.trainer.max_epochs) == (workload.batch_size, workload.epochs)
    assert cfg.seed == 3  # the command line still wins
    assert cfg.trainer.accelerator == ("gpu" if workload.tier == "gpu" else "cpu")


@pytest.mark.unit
def test_an_unknown_workload_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="Valid options: .*mnist5k_vit"):
        load_workload("mnist_vit")


@pytest.mark.unit
@pytest.mark.parametrize("name", CPU_WORKLOADS)
def test_every_cpu_workload_has_a_committed_target_on_its_metric(name: str) -> None:
    option = load_option("workload", name).workload
    content = yaml.safe_load((REPO / option.target_file).read_text())

    assert (content["metric"], content["direction"]) == (option.metric, option.direction)
    assert content["reference"]["epochs"] == load_option("workload", name).trainer.max_epochs
    if option.metric == "val/acc":
        assert 0.1 < content["target"] <= 1  # clearly better than chance on 10 classes


@pytest.mark.unit
@pytest.mark.parametrize("name", ["regression_linear", "quadratic_linear"])
def test_known_optimum_targets_are_reproduced_from_their_recorded_settings(name: str) -> None:
    option = load_option("workload", name)
    content = yaml.safe_load((REPO / option.workload.target_file).read_text())
    reference = content["reference"]
    data = reference["data"]

    again = optimum_target(data["name"], reference["factor"], *(f"data.{k}={v}" for k, v in data.items()))

    assert again["target"] == content["target"]
    assert content["target"] == pytest.approx(reference["factor"] * reference["optimal_loss"]["val"], abs=1e-5)
    assert again["optimal_loss"] == reference["optimal_loss"]
    assert again["fingerprint"] == content["provenance"]["data_fingerprint"]
    assert reference["batch_size"] == option.batch_size


@pytest.mark.unit
@pytest.mark.parametrize(
    ("overrides", "factor", "message"),
    [(["digits"], 2.0, "no known optimum"), (["quadratic", "data.dimension=5", "data.n_samples=100"], 0.5, ">= 1")],
)
def test_optimum_target_refuses_what_it_cannot_set(overrides: list[str], factor: float, message: str) -> None:
    with pytest.raises(OptbenchError, match=message):
        optimum_target(overrides[0], factor, *overrides[1:])


@pytest.mark.unit
@pytest.mark.parametrize("name", GPU_WORKLOADS)
def test_gpu_workload_and_its_preset_agree(name: str) -> None:
    cfg = compose_config(f"workload={name}")
    preset = yaml.safe_load((REPO / "pipelines" / "presets" / f"{name}.yaml").read_text())

    assert (preset["data"], preset["model"]) == (cfg.data.name, cfg.model.name)
    assert (preset["epochs"], preset["batch_size"]) == (cfg.trainer.max_epochs, cfg.batch_size)
    assert (preset["trainer"], preset["precision"]) == ("gpu", cfg.precision.name)


@pytest.mark.slow
@pytest.mark.parametrize("name", CPU_WORKLOADS)
def test_every_cpu_workload_trains_a_few_steps(name: str, make_cfg, tmp_path) -> None:
    base = make_cfg()  # the session's store and paths; the workload's own settings on top
    overrides = [f"metrics_path={base.metrics_path}", f"checkpoint.dir={base.checkpoint.dir}", "logger=none"]
    cfg = workload_config(name, *overrides, "trainer.limit_train_batches=3", "trainer.limit_val_batches=2")

    metrics = train(cfg)

    option = load_option("workload", name)
    assert metrics["train/steps"] == 3 * option.trainer.max_epochs
    assert math.isfinite(metrics[option.workload.metric])
