"""The learning-rate trajectory of each scheduler must match its closed-form formula.

Every config in conf/scheduler/ is loaded as shipped (a few values overridden to fit a 20-step run), built
with optbench.training.optim.build_scheduler on SGD with lr_0 = 0.1, and stepped as Lightning steps it: one
scheduler.step() after each optimizer.step() (step(metric) for plateau). lr_t is the learning rate the t-th
optimizer step uses, t = 0 .. total - 1, and is compared with the formula written out below.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from optbench.core.config import group_options, load_option
from optbench.core.errors import ConfigError
from optbench.training.optim import build_scheduler

pytestmark = pytest.mark.unit  # optimizers and schedules stepped by hand: no training fit

SCHEDULERS = group_options("scheduler")
LR0 = 0.1
TOTAL = 20


def scheduler_config(name: str, /, **overrides: object) -> DictConfig:
    """conf/scheduler/<name>.yaml as shipped, with `overrides` merged in."""
    return OmegaConf.merge(load_option("scheduler", name), overrides)


def sgd() -> torch.optim.SGD:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR0)


def lr_trajectory(cfg: DictConfig, total: int, metrics: Sequence[float] | None = None) -> list[float]:
    """The lr of each of `total` optimizer steps, the scheduler stepped after each (with metrics[t] if given)."""
    optimizer = sgd()
    scheduler = build_scheduler(cfg, optimizer, total)["scheduler"]
    lrs = []
    for t in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if metrics is None:
            scheduler.step()
        else:
            scheduler.step(metrics[t])
    return lrs


def same_trajectory(expected: list[float]) -> object:
    return pytest.approx(expected, rel=1e-9, abs=1e-15)


# ---------------------------------------------------------------------------------------------------------
# Closed forms: lr_t for t = 0 .. total - 1, from the config's values h.
# ---------------------------------------------------------------------------------------------------------


def step_lr(t: int, h: dict, total: int) -> float:
    """lr_0 * gamma^floor(t / step_size)."""
    return LR0 * h["gamma"] ** (t // h["step_size"])


def multistep_lr(t: int, h: dict, total: int) -> float:
    """lr_0 * gamma^(number of milestones <= t)."""
    return LR0 * h["gamma"] ** sum(t >= m for m in h["milestones"])


def exponential_lr(t: int, h: dict, total: int) -> float:
    """lr_0 * gamma^t."""
    return LR0 * h["gamma"] ** t


def inverse_time_lr(t: int, h: dict, total: int) -> float:
    """lr_0 / (1 + decay * t)."""
    return LR0 / (1 + h["decay"] * t)


def cosine_lr(t: int, h: dict, total: int) -> float:
    """eta_min + (lr_0 - eta_min) (1 + cos(pi t / T)) / 2, T = T_max, or the run's length when T_max is null."""
    T = h["T_max"] if h["T_max"] is not None else total
    return h["eta_min"] + (LR0 - h["eta_min"]) * (1 + math.cos(math.pi * t / T)) / 2


def warmup_steps(h: dict, total: int) -> int:
    """W: warmup_steps if set, else warmup_fraction of the run (rounded), at least 1."""
    return h["warmup_steps"] if h["warmup_steps"] is not None else max(1, round(h["warmup_fraction"] * total))


def linear_warmup_lr(t: int, h: dict, total: int) -> float:
    """lr_0 (sf + (1 - sf) min(t, W) / W): from sf * lr_0 up to lr_0 in W steps, then constant."""
    W, sf = warmup_steps(h, total), h["start_factor"]
    return LR0 * (sf + (1 - sf) * min(t, W) / W)


def warmup_cosine_lr(t: int, h: dict, total: int) -> float:
    """Linear warmup over W steps, then cosine from lr_0 to eta_min over the remaining total - W steps."""
    W, sf, eta_min = warmup_steps(h, total), h["start_factor"], h["eta_min"]
    if t < W:
        return LR0 * (sf + (1 - sf) * t / W)
    return eta_min + (LR0 - eta_min) * (1 + math.cos(math.pi * (t - W) / (total - W))) / 2


def onecycle_lr(t: int, h: dict, total: int) -> float:
    """torch.optim.lr_scheduler.OneCycleLR, max_lr = lr_0, initial = max_lr / div_factor,
    min = initial / final_div_factor. Phases end at step indices (the last step of each phase):
      two phases:   up   initial -> max_lr  until pct_start * total - 1,
                    down max_lr  -> min     until total - 1;
      three phases: up   initial -> max_lr  until pct_start * total - 1,
                    down max_lr  -> initial until 2 pct_start * total - 2,
                    down initial -> min     until total - 1.
    Within a phase from `start` to `end` over steps (a, b], pct = (t - a) / (b - a) and
      cos:    end + (start - end) (1 + cos(pi pct)) / 2
      linear: start + (end - start) pct.
    The first phase starts at a = 0.
    """
    max_lr = LR0
    initial = max_lr / h["div_factor"]
    minimum = initial / h["final_div_factor"]
    p = h["pct_start"]
    if h["three_phase"]:
        phases = [(p * total - 1, initial, max_lr), (2 * p * total - 2, max_lr, initial), (total - 1, initial, minimum)]
    else:
        phases = [(p * total - 1, initial, max_lr), (total - 1, max_lr, minimum)]

    def anneal(start: float, end: float, pct: float) -> float:
        if h["anneal_strategy"] == "cos":
            return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2
        return start + (end - start) * pct

    a = 0.0
    for b, start, end in phases:
        if t <= b:
            return anneal(start, end, (t - a) / (b - a))
        a = b
    raise AssertionError(f"step {t} is past the end of the cycle")


CLOSED_FORMS: dict[str, Callable[[int, dict, int], float]] = {
    "step": step_lr,
    "multistep": multistep_lr,
    "exponential": exponential_lr,
    "inverse_time": inverse_time_lr,
    "cosine": cosine_lr,
    "linear_warmup": linear_warmup_lr,
    "warmup_cosine": warmup_cosine_lr,
    "onecycle": onecycle_lr,
}
# Values each schedule is checked under; shipped values are kept where they fit a 20-step run.
OPTIONS: dict[str, dict[str, list]] = {
    "step": {"step_size": [3, 7], "gamma": [0.1, 0.5]},
    "multistep": {"milestones": [[2, 5], [3, 7, 15]], "gamma": [0.1, 0.5]},
    "exponential": {"gamma": [0.9, 0.5]},
    "inverse_time": {"decay": [1.0e-3, 0.5]},
    "cosine": {"T_max": [None, 12], "eta_min": [0.0, 0.01]},
    "linear_warmup": {"warmup_steps": [None, 4], "warmup_fraction": [0.1, 0.25], "start_factor": [0.01, 0.5]},
    "warmup_cosine": {
        "warmup_steps": [None, 4],
        "warmup_fraction": [0.1, 0.25],
        "start_factor": [0.01, 0.5],
        "eta_min": [0.0, 0.01],
    },
    "onecycle": {"pct_start": [0.3, 0.25], "anneal_strategy": ["cos", "linear"], "three_phase": [False, True]},
}


def closed_form_cases() -> Iterator[object]:
    for name, options in OPTIONS.items():
        for values in itertools.product(*options.values()):
            overrides = dict(zip(options, values))
            label = ",".join(f"{k}={v}" for k, v in overrides.items())
            yield pytest.param(name, overrides, id=f"{name}-{label}")


def test_every_scheduler_config_has_a_closed_form():
    assert sorted([*CLOSED_FORMS, "plateau", "constant"]) == SCHEDULERS


@pytest.mark.parametrize(("name", "overrides"), list(closed_form_cases()))
def test_lr_trajectory_matches_closed_form(name: str, overrides: dict):
    cfg = scheduler_config(name, **overrides)
    h = OmegaConf.to_container(cfg)
    expected = [CLOSED_FORMS[name](t, h, TOTAL) for t in range(TOTAL)]
    assert lr_trajectory(cfg, TOTAL) == same_trajectory(expected)


# ---------------------------------------------------------------------------------------------------------
# plateau: the lr is multiplied by factor after every patience + 1 epochs without a relative improvement
# larger than threshold, and never goes below min_lr.
# ---------------------------------------------------------------------------------------------------------

IMPROVING_EPOCHS = 3  # epochs 0, 1, 2 improve; from epoch 3 on the metric creeps down by less than threshold
VAL_LOSS = [1.0, 0.9, 0.8] + [0.8 * (1 - 1e-7 * i) for i in range(1, TOTAL - IMPROVING_EPOCHS + 1)]


def plateau_lr(t: int, h: dict) -> float:
    """max(lr_0 * factor^n_t, min_lr), n_t = floor((t - k) / (patience + 1)) for t >= k (0 before): the
    reductions happen at the end of epochs k + patience, k + 2 patience + 1, ... where k is the first epoch
    that does not improve.
    """
    n = max(0, (t - IMPROVING_EPOCHS) // (h["patience"] + 1))
    return max(LR0 * h["factor"] ** n, h["min_lr"])


@pytest.mark.parametrize("patience", [10, 2])
@pytest.mark.parametrize("factor", [0.1, 0.5])
@pytest.mark.parametrize("min_lr", [0.0, 0.002])
def test_plateau_lr_drops_by_factor_after_patience_epochs_without_improvement(
    patience: int, factor: float, min_lr: float
):
    assert max(abs(b / a - 1) for a, b in itertools.pairwise(VAL_LOSS[IMPROVING_EPOCHS - 1 :])) < 1.0e-4
    cfg = scheduler_config("plateau", patience=patience, factor=factor, min_lr=min_lr)
    h = OmegaConf.to_container(cfg)
    expected = [plateau_lr(t, h) for t in range(TOTAL)]
    assert lr_trajectory(cfg, TOTAL, metrics=VAL_LOSS) == same_trajectory(expected)


# ---------------------------------------------------------------------------------------------------------
# What build_scheduler hands to Lightning.
# ---------------------------------------------------------------------------------------------------------


def test_constant_schedule_is_no_scheduler():
    assert build_scheduler(scheduler_config("constant"), sgd(), TOTAL) is None


@pytest.mark.parametrize("name", [name for name in SCHEDULERS if name != "constant"])
def test_lightning_interval_and_monitor_come_from_the_yaml(name: str):
    cfg = scheduler_config(name)
    config = build_scheduler(cfg, sgd(), TOTAL)
    assert (config["interval"], config.get("monitor")) == (cfg.interval, cfg.monitor)


def test_unknown_scheduler_name_is_a_config_error():
    with pytest.raises(ConfigError, match="Unknown scheduler 'triangular'"):
        build_scheduler(scheduler_config("constant", name="triangular"), sgd(), TOTAL)
