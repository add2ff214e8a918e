"""Each optimizer's first update matches its reference update rule on a tiny problem.

Every config in conf/optimizer/ is loaded as shipped (a few values overridden to reach the decay and option
paths), built with optbench.training.optim.build_optimizer on one fixed float64 parameter with a known gradient,
stepped once, and compared with the update rule written out by hand below from the paper / the library's
documented algorithm. The rules are first-step rules: every moment and buffer starts at zero and t = 1.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.testing import assert_close

from optbench.core.config import group_options, load_option
from optbench.core.errors import ConfigError
from optbench.training.optim import build_optimizer, check_optimizer, state_bytes

pytestmark = pytest.mark.unit  # optimizers and schedules stepped by hand: no training fit

OPTIMIZERS = group_options("optimizer")
FROM_PYTORCH_OPTIMIZER = ("lamb", "lars", "lion")  # the rest are torch.optim classes

# The tiny problem: one parameter, either a matrix (a layer weight) or a vector (a bias or norm scale),
# with fixed values and a fixed gradient. The gradients' norms exceed 1 and their entries differ in size,
# so clipping, trust ratios and per-coordinate scaling all show in the update.
PARAMETERS = {
    "matrix": torch.tensor([[0.5, -0.3, 0.8], [-0.2, 0.4, -0.6]], dtype=torch.float64),
    "vector": torch.tensor([0.5, -0.3, 0.8, -0.1], dtype=torch.float64),
}
GRADIENTS = {
    "matrix": torch.tensor([[0.3, -1.2, 2.0], [-0.7, 0.05, 1.1]], dtype=torch.float64),
    "vector": torch.tensor([0.3, -1.2, 2.0, -0.7], dtype=torch.float64),
}


def optimizer_config(name: str, /, **overrides: object) -> DictConfig:
    """conf/optimizer/<name>.yaml as shipped, with `overrides` merged in."""
    return OmegaConf.merge(load_option("optimizer", name), overrides)


class OneParameter(nn.Module):
    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(value.clone())


@pytest.fixture
def float64_scalars() -> Iterator[None]:
    """Make torch.optim keep its scalar state (step counts, NAdam's mu product) in float64 too."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def rms(x: Tensor) -> Tensor:
    return x.square().mean().sqrt()


# ---------------------------------------------------------------------------------------------------------
# Reference first-step rules. Each takes the parameter w, its gradient g and the config's values h, and
# returns the parameter after one step.
# ---------------------------------------------------------------------------------------------------------


def sgd_rule(w: Tensor, g: Tensor, h: dict) -> Tensor:
    """torch.optim.SGD (sgd, momentum, nesterov). Coupled L2: d = g + wd * w.

    Plain:     w - lr * d
    Momentum:  the buffer starts as the gradient itself, b_1 = d (dampening is not applied on the first
               step), so the first step is plain SGD: w - lr * b_1.
    Nesterov:  w - lr * (d + m * b_1) = w - lr * (1 + m) * d.
    """
    lr, m, wd = h["lr"], h["momentum"], h["weight_decay"]
    d = g + wd * w
    if m == 0:
        return w - lr * d
    b = d
    if h["nesterov"]:
        return w - lr * (d + m * b)
    return w - lr * b


def adam_rule(w: Tensor, g: Tensor, h: dict) -> Tensor:
    """Adam (Kingma & Ba) with coupled L2, d = g + wd * w:
    m = (1 - b1) d, v = (1 - b2) d^2, m_hat = m / (1 - b1), v_hat = v / (1 - b2),
    w - lr * m_hat / (sqrt(v_hat) + eps). AMSGrad's max(v_hat) is v_hat itself on the first step.
    """
    lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
    d = g + wd * w
    m, v = (1 - b1) * d, (1 - b2) * d**2
    m_hat, v_hat = m / (1 - b1), v / (1 - b2)
    return w - lr * m_hat / (v_hat.sqrt() + eps)


def adamw_rule(w: Tensor, g: Tensor, h: dict) -> Tensor:
    """AdamW (Loshchilov & Hutter): the Adam step on g alone, decay decoupled and scaled by lr:
    w (1 - lr * wd) - lr * m_hat / (sqrt(v_hat) + eps).
    """
    lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
    m, v = (1 - b1) * g, (1 - b2) * g**2
    m_hat, v_hat = m / (1 - b1), v / (1 - b2)
    return w * (1 - lr * wd) - lr * m_hat / (v_hat.sqrt() + eps)


def nadam_rule(w: Tensor, g: Tensor, h: dict) -> Tensor:
    """NAdam (Dozat) as torch.optim.NAdam documents it, with the momentum schedule
    mu_t = b1 (1 - 0.5 * 0.96^(t psi)):
    w - lr (1 - mu_1) / (1 - mu_1) * d / D - lr mu_2 / (1 - mu_1 mu_2) * m / D, D = sqrt(v / (1 - b2)) + eps.
    Weight decay is coupled L2 (d = g + wd w) unless decoupled_weight_decay (w <- w (1 - lr wd), d = g).
    """
    lr, (b1, b2), eps, wd, psi = h["lr"], h["betas"], h["eps"], h["weight_decay"], h["momentum_decay"]
    if h["decoupled_weight_decay"]:
        w, d = w * (1 - lr * wd), g
    else:
        d = g + wd * w
    mu_1 = b1 * (1 - 0.5 * 0.96 ** (1 * psi))
    mu_2 = b1 * (1 - 0.5 * 0.96 ** (2 * psi))
    m, v = (1 - b1) * d, (1 - b2) * d**2
    denom = (v / (1 - b2)).sqrt() + eps
    return w - lr * (1 - mu_1) / (1 - mu_1) * d / denom - lr * mu_2 / (1 - mu_1 * mu_2) * m / denom


def radam_rule(w: Tensor, g: Tensor, h: dict) -> Tensor:
    """RAdam (Liu et al.): while the SMA length rho_t = rho_inf - 2 t b2^t / (1 - b2^t) is at most 5 the
    variance is not rectified and the step is momentum SGD with a bias-corrected first moment. At t = 1,
    rho_1 = 1, so: w - lr * m / (1 - b1) = w - lr * d. Decay as in NAdam.
    """
    lr, (b1, b2), wd = h["lr"], h["betas"], h["weight_decay"]
    if h["decoupled_weight_decay"]:
        w, d = w * (1 - lr * wd), g
    else:
        d = g + wd * w
    rho_inf = 2 / (1 - b2) - 1
    rho_1 = rho_inf - 2 * 1 * b2 / (1 - b2)
    assert rho_1 <= 5, "the first RAdam step is un-rectified"
    m = (1 - b1) * d
    return w - lr * m / (1 - b1)


def rmsprop_rule(w: Tensor, g: Tensor, h: dict) -> Tensor:
    """RMSprop (Hinton) with coupled L2, d = g + wd w: v = (1 - a) d^2; centered subtracts the squared
    running mean of the gradient, g_bar = (1 - a) d. w - lr * d / (sqrt(v [- g_bar^2]) + eps).
    With momentum the buffer starts at zero, b_1 = d / (...), so the first step is the same.
    """
    lr, a, eps, wd = h["lr"], h["alpha"], h["eps"], h["weight_decay"]
    d = g + wd * w
    v = (1 - a) * d**2
    if h["centered"]:
        g_bar = (1 - a) * d
        v = v - g_bar**2
    return w - lr * d / (v.sqrt() + eps)


def adagrad_rule(w: Tensor, g: Tensor, h: dict) -> Tensor:
    """Adagrad (Duchi et al.) with coupled L2, d = g + wd w: s = s_0 + d^2, lr_t = lr / (1 + (t - 1) lr_decay),
    w - lr_1 * d / (sqrt(s) + eps).
    """
    lr, eps, wd = h["lr"], h["eps"], h["weight_decay"]
    d = g + wd * w
    s = h["initial_accumulator_value"] + d**2
    lr_1 = lr / (1 + (1 - 1) * h["lr_decay"])
    return w - lr_1 * d / (s.sqrt() + eps)


def adafactor_rule(w: Tensor, g: Tensor, h: dict) -> Tensor:
    """Adafactor (Shazeer & Stern) as torch.optim.Adafactor documents it, at t = 1:
    beta2_hat_1 = 1 - 1^tau = 0 (the estimate is this step's squared gradient), rho_1 = min(lr, 1),
    alpha = max(eps2, RMS(w)) rho_1 (RMS of w before the decay), w <- w - lr wd w (decoupled).
    Matrix: row factor R = mean over columns of g^2, column factor C = mean over rows of g^2,
    V = R C / max(mean(R), eps1). Vector: V = g^2.
    U = g / max(sqrt(V), eps1), U_hat = U / max(1, RMS(U) / d), w - alpha U_hat.
    """
    lr, tau, d_clip, wd = h["lr"], h["beta2_decay"], h["d"], h["weight_decay"]
    eps1, eps2 = h["eps"]
    eps1 = torch.finfo(w.dtype).eps if eps1 is None else eps1
    t = 1
    beta2_hat = 1 - t**tau
    rho = min(lr, 1 / math.sqrt(t))
    alpha = max(eps2, rms(w).item()) * rho
    w = w * (1 - lr * wd)
    if w.ndim > 1:
        R = beta2_hat * 0 + (1 - beta2_hat) * (g**2).mean(dim=-1, keepdim=True)
        C = beta2_hat * 0 + (1 - beta2_hat) * (g**2).mean(dim=-2, keepdim=True)
        V = R @ C / R.mean().clamp(min=eps1)
    else:
        V = beta2_hat * 0 + (1 - beta2_hat) * g**2
    U = g / V.sqrt().clamp(min=eps1)
    U_hat = U / max(1.0, rms(U).item() / d_clip)
    return w - alpha * U_hat


def lamb_rule(w: Tensor, g: Tensor, h: dict) -> Tensor:
    """LAMB (You et al.) as pytorch_optimizer.Lamb implements it (rectify, adam, pre_norm off):
    m = (1 - b1) g (grad_averaging), v = (1 - b2) g^2 (no bias correction of v),
    step size lr / (1 - b1) (the first-moment bias correction), decoupled decay w <- w (1 - lr wd) before
    the trust ratio (coupled: u += wd w instead), u = m / (sqrt(v) + eps),
    trust = min(||w||, 10) / (||u|| + eps), w - lr / (1 - b1) * trust * u.
    max_grad_norm only takes effect with pre_norm=True, which the config does not set: no gradient clipping.
    """
    lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
    b3 = 1 - b1 if h["grad_averaging"] else 1.0
    m, v = b3 * g, (1 - b2) * g**2
    u = m / (v.sqrt() + eps)
    if h["weight_decouple"]:
        w = w * (1 - lr * wd)
    else:
        u = u + wd * w
    weight_norm = w.norm().clamp(max=10.0)
    trust = weight_norm / (u.norm() + eps)
    return w - lr / (1 - b1) * trust * u


def lars_rule(w: Tensor, g: Tensor, h: dict) -> Tensor:
    """LARS (You et al.) as pytorch_optimizer.LARS implements it. Matrices: d = eta ||w|| / (||g|| + wd ||w||)
    * (g + wd w); vectors (biases, norm parameters): d = g, no decay, no trust ratio. The momentum buffer
    starts at zero: b_1 = (1 - dampening) d; w - lr * b_1, or w - lr * (d + m b_1) with Nesterov.
    """
    lr, m, eta, wd = h["lr"], h["momentum"], h["trust_coefficient"], h["weight_decay"]
    if w.ndim > 1:
        trust = eta * w.norm() / (g.norm() + wd * w.norm())
        d = trust * (g + wd * w)
    else:
        d = g
    b = m * 0 + (1 - h["dampening"]) * d
    if h["nesterov"]:
        return w - lr * (d + m * b)
    return w - lr * b


def lion_rule(w: Tensor, g: Tensor, h: dict) -> Tensor:
    """Lion (Chen et al.): c = b1 m_0 + (1 - b1) d with m_0 = 0, w - lr sign(c) = w - lr sign(d).
    Decoupled decay w <- w (1 - lr wd), d = g; coupled: d = g + wd w.
    """
    lr, (b1, _b2), wd = h["lr"], h["betas"], h["weight_decay"]
    if h["weight_decouple"]:
        w, d = w * (1 - lr * wd), g
    else:
        d = g + wd * w
    c = b1 * 0 + (1 - b1) * d
    return w - lr * c.sign()


RULES: dict[str, Callable[[Tensor, Tensor, dict], Tensor]] = {
    "sgd": sgd_rule,
    "momentum": sgd_rule,
    "nesterov": sgd_rule,
    "adam": adam_rule,
    "adamw": adamw_rule,
    "nadam": nadam_rule,
    "radam": radam_rule,
    "rmsprop": rmsprop_rule,
    "adagrad": adagrad_rule,
    "adafactor": adafactor_rule,
    "lamb": lamb_rule,
    "lars": lars_rule,
    "lion": lion_rule,
}
# Options each optimizer's rule is checked under (the shipped value is always among them).
OPTIONS: dict[str, dict[str, list]] = {
    "sgd": {"weight_decay": [0.0, 0.1]},
    "momentum": {"weight_decay": [0.0, 0.1], "dampening": [0.0, 0.5]},
    "nesterov": {"weight_decay": [0.0, 0.1]},
    "adam": {"weight_decay": [0.0, 0.1], "amsgrad": [False, True]},
    "adamw": {"weight_decay": [0.01, 0.0]},
    "nadam": {"weight_decay": [0.0, 0.1], "decoupled_weight_decay": [False, True]},
    "radam": {"weight_decay": [0.0, 0.1], "decoupled_weight_decay": [False, True]},
    "rmsprop": {"weight_decay": [0.0, 0.1], "centered": [False, True], "momentum": [0.0, 0.9]},
    "adagrad": {"weight_decay": [0.0, 0.1], "initial_accumulator_value": [0.0, 0.1], "lr_decay": [0.0, 0.5]},
    "adafactor": {"weight_decay": [0.0, 0.1], "d": [1.0, 2.0]},
    "lamb": {"weight_decay": [0.01, 0.0], "weight_decouple": [True, False]},
    "lars": {"weight_decay": [0.0, 0.1], "nesterov": [False, True]},
    "lion": {"weight_decay": [0.01, 0.0], "weight_decouple": [True, False]},
}


def rule_cases() -> Iterator[object]:
    for name, options in OPTIONS.items():
        for values in itertools.product(*options.values()):
            overrides = dict(zip(options, values))
            for shape in PARAMETERS:
                label = ",".join(f"{k}={v}" for k, v in overrides.items())
                yield pytest.param(name, overrides, shape, id=f"{name}-{shape}-{label}")


def test_every_optimizer_config_has_a_reference_rule():
    assert sorted([*RULES, "lbfgs"]) == OPTIMIZERS


@pytest.mark.usefixtures("float64_scalars")
@pytest.mark.parametrize(("name", "overrides", "shape"), list(rule_cases()))
def test_first_update_matches_reference_rule(name: str, overrides: dict, shape: str):
    # no_decay_bias_norm off, so the chosen weight_decay reaches vectors too (the grouping has its own tests).
    cfg = optimizer_config(name, no_decay_bias_norm=False, **overrides)
    w0, g = PARAMETERS[shape], GRADIENTS[shape]
    model = OneParameter(w0)
    optimizer = build_optimizer(cfg, model)
    model.weight.grad = g.clone()
    optimizer.step()

    expected = RULES[name](w0.clone(), g.clone(), OmegaConf.to_container(cfg))
    assert_close(model.weight.detach() - w0, expected - w0, rtol=1e-9, atol=1e-15)


@pytest.mark.usefixtures("float64_scalars")
@pytest.mark.parametrize("lr", [1.0, 0.5])
@pytest.mark.parametrize("grad_scale", [1.0, 0.1], ids=["grad_l1_above_1", "grad_l1_below_1"])
def test_lbfgs_first_update_is_a_gradient_step_of_length_min_1_over_grad_l1(lr: float, grad_scale: float):
    """torch.optim.LBFGS with no line search: the first direction is -g and the first step length is
    t = lr * min(1, 1 / ||g||_1), so w - lr * min(1, 1 / ||g||_1) * g.
    """
    cfg = optimizer_config("lbfgs", lr=lr, line_search_fn=None, max_iter=1)
    w0, g = PARAMETERS["matrix"], grad_scale * GRADIENTS["matrix"]
    model = OneParameter(w0)
    optimizer = build_optimizer(cfg, model)

    def closure() -> Tensor:  # a linear loss whose gradient is g everywhere
        optimizer.zero_grad()
        loss = (g * model.weight).sum()
        loss.backward()
        return loss

    optimizer.step(closure)

    expected = w0 - lr * min(1.0, 1.0 / g.abs().sum().item()) * g
    assert_close(model.weight.detach() - w0, expected - w0, rtol=1e-9, atol=1e-15)


# ---------------------------------------------------------------------------------------------------------
# Parameter groups: weight decay for matrices only when no_decay_bias_norm is on.
# ---------------------------------------------------------------------------------------------------------

DECAYING = [name for name in OPTIMIZERS if name != "lbfgs"]  # L-BFGS has no weight decay


def small_network() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))


def weight_decay_of_each_parameter(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}


@pytest.mark.parametrize("name", DECAYING)
def test_no_decay_bias_norm_exempts_biases_and_norm_parameters_from_weight_decay(name: str):
    model = small_network()
    optimizer = build_optimizer(optimizer_config(name, weight_decay=0.1, no_decay_bias_norm=True), model)
    expected = {id(p): 0.1 if p.ndim >= 2 else 0.0 for p in model.parameters()}
    assert weight_decay_of_each_parameter(optimizer) == expected


@pytest.mark.parametrize("name", DECAYING)
def test_without_no_decay_bias_norm_all_parameters_share_one_decaying_group(name: str):
    model = small_network()
    optimizer = build_optimizer(optimizer_config(name, weight_decay=0.1, no_decay_bias_norm=False), model)
    assert [(len(g["params"]), g["weight_decay"]) for g in optimizer.param_groups] == [(6, 0.1)]


@pytest.mark.parametrize("name", DECAYING)
def test_zero_weight_decay_needs_no_separate_group(name: str):
    model = small_network()
    optimizer = build_optimizer(optimizer_config(name, weight_decay=0.0, no_decay_bias_norm=True), model)
    assert [(len(g["params"]), g["weight_decay"]) for g in optimizer.param_groups] == [(6, 0.0)]


# ---------------------------------------------------------------------------------------------------------
# check_optimizer: settings the optimizer itself rejects become a ConfigError before training.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_check_optimizer_accepts_every_shipped_config(name: str):
    check_optimizer(optimizer_config(name))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_check_optimizer_rejects_a_negative_learning_rate(name: str):
    with pytest.raises(ConfigError, match=f"optimizer={name}"):
        check_optimizer(optimizer_config(name, lr=-0.1))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_check_optimizer_rejects_an_unknown_keyword(name: str):
    with pytest.raises(ConfigError, match=f"optimizer={name}"):
        check_optimizer(optimizer_config(name, learning_rate_typo=0.1))


# ---------------------------------------------------------------------------------------------------------
# state_bytes
# ---------------------------------------------------------------------------------------------------------


def test_adam_state_is_two_moments_the_size_of_the_parameters_plus_a_step_counter():
    model = nn.Linear(3, 2)  # float32: 8 values, 32 bytes
    optimizer = build_optimizer(optimizer_config("adam"), model)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()

    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    step_counter_bytes = 4  # torch keeps each tensor's step as a 0-d float32 tensor
    assert state_bytes(optimizer) == 2 * param_bytes + step_counter_bytes * len(list(model.parameters()))
