"""The schema of a training config: the keys each option may have and the range of every number.

One table instead of checks scattered through the code: each rule names a dotted key and what its value
must be; `check_schema` applies those whose key the config has, and refuses keys that no option file
declares (a misspelt `+model.hiden=...` would otherwise be accepted and silently ignored). Needs no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from optbench.core.config import load_option
from optbench.core.errors import ConfigError

# Groups whose option files declare every key a config of theirs may hold (optimizer keys are checked
# against the optimizer's constructor instead, trainer keys against Lightning's Trainer).
DECLARED_GROUPS = ("data", "model", "scheduler", "precision", "strategy", "logger")
# trainer.* keys that optbench applies itself rather than handing them to Lightning's Trainer.
OPTBENCH_TRAINER_KEYS = ("compile", "channels_last", "data_on_device")
# Modules whose classes `optimizer._target_` may name; extend with `allowed_modules` in the config.
ALLOWED_OPTIMIZER_MODULES = ("torch.optim", "pytorch_optimizer")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _in(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return _number(v) and above and below

    return check


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _non_negative(v: Any) -> bool:
    return _number(v) and v >= 0


def _count(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _each(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (list, tuple, ListConfig)) and len(v) > 0 and all(check(x) for x in v)


def _boolean(v: Any) -> bool:
    return isinstance(v, bool)


def _batch_limit(v: Any) -> bool:  # Lightning's limit_*_batches: a count, or a fraction of the batches
    return (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or (_number(v) and 0.0 <= v <= 1.0)


UNIT = _in(0, 1, high_open=True)  # [0, 1)
FRACTION = _in(0, 1, low_open=True, high_open=True)  # (0, 1)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "optimizer.lr": (_positive, "a positive, finite learning rate"),
    "optimizer.momentum": (UNIT, "in [0, 1)"),
    "optimizer.betas": (_each(UNIT), "a list of numbers in [0, 1)"),
    "optimizer.eps": (lambda v: _optional(_positive)(v) or _each(_optional(_positive))(v), "a positive number"),
    "optimizer.weight_decay": (_non_negative, "a finite number >= 0"),
    "optimizer.dampening": (_in(0, 1), "in [0, 1]"),
    "optimizer.alpha": (FRACTION, "in (0, 1)"),
    "optimizer.lr_decay": (_non_negative, "a finite number >= 0"),
    "model.dropout": (UNIT, "in [0, 1)"),
    "model.hidden": (lambda v: _count(1)(v) or _each(_count(1))(v), "a positive width or a list of them"),
    "model.channels": (_each(_count(1)), "a list of positive channel counts"),
    "data.val_fraction": (FRACTION, "a fraction in (0, 1)"),
    "data.test_fraction": (FRACTION, "a fraction in (0, 1)"),
    "data.val_size": (_count(1), "a positive number of examples"),
    "data.n_train": (_count(1), "a positive number of examples"),
    "data.noise": (_non_negative, "a finite number >= 0"),
    "scheduler.warmup_fraction": (UNIT, "in [0, 1)"),
    "scheduler.warmup_steps": (_optional(_count(1)), "a positive number of steps, or null"),
    "scheduler.pct_start": (FRACTION, "in (0, 1)"),
    "scheduler.eta_min": (_non_negative, "a finite number >= 0"),
    "scheduler.decay": (_non_negative, "a finite number >= 0"),
    "scheduler.step_size": (_count(1), "a positive number of epochs or steps"),
    "scheduler.patience": (_count(0), "a number of epochs >= 0"),
    "trainer.limit_train_batches": (_optional(_batch_limit), "a count >= 0 or a fraction in [0, 1]"),
    "trainer.limit_val_batches": (_optional(_batch_limit), "a count >= 0 or a fraction in [0, 1]"),
    "trainer.limit_test_batches": (_optional(_batch_limit), "a count >= 0 or a fraction in [0, 1]"),
    "trainer.log_every_n_steps": (_optional(_count(1)), "a positive number of steps"),
    "trainer.check_val_every_n_epoch": (_optional(_count(1)), "a positive number of epochs"),
    "trainer.compile": (_boolean, "true or false"),
    "trainer.channels_last": (_boolean, "true or false"),
    "trainer.data_on_device": (_boolean, "true or false"),
    "checkpoint.every_n_epochs": (_count(1), "a positive number of epochs"),
    "checkpoint.every_n_train_steps": (_optional(_count(1)), "a positive number of steps, or null"),
}


def check_schema(cfg: DictConfig, groups: tuple[str, ...] | None = None) -> None:
    """Raise ConfigError for the first value out of its range or the first key no option declares.
    `groups`: check only these groups (a config that is not a training run's, such as optbench-prepare's)."""
    for key, (valid, what) in RULES.items():
        if groups is not None and key.split(".")[0] not in groups:
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent)
        if node is None or leaf not in node:
            continue
        value = node[leaf]
        if not valid(value):
            shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            raise ConfigError(f"{key} must be {what}, got {shown!r}.")
    for group in DECLARED_GROUPS if groups is None else groups:
        _check_declared(cfg, group)
    if groups is None:
        _check_top_level(cfg)
        _check_optimizer_target(cfg)


def _check_top_level(cfg: DictConfig) -> None:
    declared = load_option(".", "train")
    known = set(declared) - {"defaults"} | {next(iter(d)) for d in declared.defaults if isinstance(d, DictConfig)}
    unknown = sorted(set(cfg) - known - {"tune", "find"})  # the nodes optbench-tune and the finders add
    if unknown:
        hint = " To resume from a checkpoint use resume=<path>." if "ckpt_path" in unknown else ""
        raise ConfigError(
            f"{', '.join(unknown)} is not a setting of a training run (added with +{unknown[0]}=...?): "
            f"the top-level settings are {', '.join(sorted(set(declared) - {'defaults'}))}.{hint}"
        )


def _check_declared(cfg: DictConfig, group: str) -> None:
    node = cfg.get(group)
    if not isinstance(node, DictConfig) or "name" not in node:
        return
    try:
        declared = load_option(group, str(node.name))
    except ConfigError:
        return  # an option composed from elsewhere (a user's own config folder): nothing to compare with
    if "defaults" in declared:
        return  # composed from several files: its keys are not all in this one
    unknown = sorted(set(node) - set(declared))
    if unknown:
        raise ConfigError(
            f"{group}={node.name} has no setting {', '.join(unknown)} (added with +{group}.{unknown[0]}=...?). "
            f"Its settings are: {', '.join(sorted(declared))}."
        )


def _check_optimizer_target(cfg: DictConfig) -> None:
    target = str(cfg.optimizer.get("_target_", ""))
    allowed = (*ALLOWED_OPTIMIZER_MODULES, *(cfg.get("allowed_modules") or []))
    if not any(target == m or target.startswith(m + ".") for m in allowed):
        raise ConfigError(
            f"optimizer._target_={target} is outside the modules optbench imports optimizers from "
            f"({', '.join(allowed)}): a config could otherwise run any importable code. To use your own "
            f"optimizer class, list its module: allowed_modules=[{', '.join(allowed)},your.module]."
        )
