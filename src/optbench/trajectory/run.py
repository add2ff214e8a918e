"""Step each optimizer across a 2-D test function and measure its path: steps to tolerance, final distance
to the minimum and final f - f*.

The optimizers are built exactly as training builds them (optbench.training.optim.build_optimizer from the
`optimizer` group's YAML), over a module whose only parameter is the 2-vector (x, y). Every step goes through
`optimizer.step(closure)`: first-order methods call the closure once, L-BFGS as often as its line search
needs, so one loop serves all of them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from optbench.core.config import load_option
from optbench.core.errors import ConfigError
from optbench.training.optim import build_optimizer, check_optimizer
from optbench.trajectory.choices import check_optimizer_names
from optbench.trajectory.functions import TestFunction

TOLERANCE_MEASURES = ("distance", "gap")


class Point(nn.Module):
    """A model whose parameters are one point of the plane, so the training builder applies unchanged."""

    def __init__(self, start: tuple[float, float]) -> None:
        super().__init__()
        self.xy = nn.Parameter(torch.tensor(start, dtype=torch.float64))


@dataclass
class Path:
    """One optimizer's run: the points visited (start first) and how it went."""

    optimizer: str
    settings: dict[str, Any]
    points: np.ndarray  # (steps + 1, 2), fewer rows when the run diverged
    evaluations: int  # function and gradient evaluations (L-BFGS makes several per step)
    diverged: bool


@dataclass
class Outcome:
    """One row of the table."""

    optimizer: str
    lr: float
    steps_to_tolerance: int | None  # None = not reached within the budget
    final_distance: float
    final_gap: float
    evaluations: int
    steps: int
    status: str  # reached | not reached | diverged


def optimizer_config(name: str, function_cfg: DictConfig, settings: DictConfig | None = None) -> DictConfig:
    """The optimizer's config from conf/optimizer/<name>.yaml with the function's learning rate for it and any
    per-optimizer `settings` on top; checked by the same rules training applies."""
    check_optimizer_names([name])
    cfg = load_option("optimizer", name)
    overrides: dict[str, Any] = {}
    lrs = function_cfg.get("lr") or {}
    if name in lrs:
        overrides["lr"] = lrs[name]
    for layer in (function_cfg.get("settings") or {}, settings or {}):
        if name in layer:
            overrides.update(OmegaConf.to_container(layer[name], resolve=True))
    with open_dict(cfg):
        cfg.merge_with(overrides)
    check_optimizer(cfg)
    return cfg


def run_optimizer(
    function: TestFunction, name: str, cfg: DictConfig, steps: int, noise: float = 0.0, seed: int = 0
) -> Path:
    """`steps` optimizer steps from the function's start. With `noise` > 0 each gradient gets Gaussian noise
    of that standard deviation from a generator seeded with `seed`, the same draws for every optimizer."""
    point = Point(function.start)
    optimizer = build_optimizer(cfg, point)
    generator = torch.Generator().manual_seed(seed)
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        loss = function(point.xy[0], point.xy[1])
        loss.backward()
        if noise > 0:
            point.xy.grad.add_(torch.randn(2, generator=generator, dtype=torch.float64), alpha=noise)
        return loss

    points = [point.xy.detach().clone()]
    diverged = False
    for _ in range(steps):
        optimizer.step(closure)
        current = point.xy.detach().clone()
        if not torch.isfinite(current).all() or not math.isfinite(float(function(current[0], current[1]))):
            diverged = True  # the path so far is kept; the point that overflowed is not drawable
            break
        points.append(current)
    settings = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in ("name",)}
    return Path(name, settings, torch.stack(points).numpy(), evaluations, diverged)


def steps_to_tolerance(values: np.ndarray, tolerance: float) -> int | None:
    """The first step whose value (distance or f - f*, one per point, start = step 0) is below `tolerance`."""
    below = np.flatnonzero(np.asarray(values) < tolerance)
    return int(below[0]) if below.size else None


def measure(function: TestFunction, path: Path, tolerance: float, measure_on: str = "distance") -> Outcome:
    if measure_on not in TOLERANCE_MEASURES:
        raise ConfigError(f"tolerance_on={measure_on}: use one of {', '.join(TOLERANCE_MEASURES)}.")
    distance, gap = function.distance(path.points), function.gap(path.points)
    reached = steps_to_tolerance(distance if measure_on == "distance" else gap, tolerance)
    status = "reached" if reached is not None else "diverged" if path.diverged else "not reached"
    return Outcome(
        optimizer=path.optimizer,
        lr=float(path.settings["lr"]),
        steps_to_tolerance=reached,
        final_distance=float(distance[-1]),
        final_gap=float(gap[-1]),
        evaluations=path.evaluations,
        steps=len(path.points) - 1,
        status=status,
    )


def run_trajectories(cfg: DictConfig, function: TestFunction) -> tuple[list[Path], list[Outcome]]:
    """Every optimizer of `cfg.optimizers` on `function`; all names are checked before any runs."""
    names = check_optimizer_names(cfg.optimizers)
    if cfg.tolerance_on not in TOLERANCE_MEASURES:  # checked before the runs, not after them
        raise ConfigError(f"tolerance_on={cfg.tolerance_on}: use one of {', '.join(TOLERANCE_MEASURES)}.")
    configs = {name: optimizer_config(name, cfg.function, cfg.get("settings")) for name in names}
    paths = [run_optimizer(function, n, configs[n], int(cfg.steps), float(cfg.noise), int(cfg.seed)) for n in names]
    outcomes = [measure(function, p, float(cfg.tolerance), str(cfg.tolerance_on)) for p in paths]
    return paths, outcomes


def result_record(cfg: DictConfig, function: TestFunction, paths: list[Path], outcomes: list[Outcome]) -> dict:
    """What trajectory.json holds: the run's settings, the table and every path (the figures' source)."""
    return {
        "function": function.name,
        "formula": function.formula,
        "params": function.params,
        "minima": [list(m) for m in function.minima],
        "minimum_value": function.minimum_value,
        "start": list(function.start),
        "steps": int(cfg.steps),
        "tolerance": float(cfg.tolerance),
        "tolerance_on": str(cfg.tolerance_on),
        "noise": float(cfg.noise),
        "seed": int(cfg.seed),
        "figure": {
            "xlim": list(function.xlim),
            "ylim": list(function.ylim),
            "levels": function.levels,
            "n_levels": function.n_levels,
            "saddles": [list(s) for s in function.saddles],
        },
        "outcomes": [asdict(o) for o in outcomes],
        "paths": {p.optimizer: {"settings": p.settings, "points": p.points.tolist()} for p in paths},
    }
