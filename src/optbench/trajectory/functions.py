"""The 2-D test functions of conf/function/: one formula each, written once for torch tensors and numpy arrays.

A formula takes the two coordinates as separate arrays and uses only arithmetic, so the same code gives the
optimizers their autograd gradients (torch scalars) and the contour plot its exact surface (numpy grids).
Everything else a function needs (parameters, minima, start, plot bounds, contour levels, learning rates) is
in its YAML file, in one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from optbench.core.errors import ConfigError


def rosenbrock(x: Any, y: Any, a: float = 1.0, b: float = 100.0) -> Any:
    """Rosenbrock's banana: a curved, flat-bottomed valley; minimum 0 at (a, a^2)."""
    return (a - x) ** 2 + b * (y - x**2) ** 2


def beale(x: Any, y: Any) -> Any:
    """Beale's function: flat plateaus and steep quartic-to-sextic walls; minimum 0 at (3, 0.5)."""
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def double_well(x: Any, y: Any, height: float = 0.25) -> Any:
    """A saddle between two wells: x^2 + (y^2 - 1)^2 * height - height. The origin is a saddle (curvature
    +2 along x, -4 * height along y); the minima are (0, +1) and (0, -1) with value -height. Chosen over
    x^2 - y^2 because it has minima, so steps-to-tolerance measures how fast an optimizer escapes."""
    return x**2 + height * (y**2 - 1) ** 2 - height


def quadratic(x: Any, y: Any, condition: float = 10.0, angle: float = 0.0) -> Any:
    """An ill-conditioned quadratic 0.5 * (u^2 + condition * v^2) in axes (u, v) turned by `angle` degrees:
    Hessian eigenvalues 1 and `condition`, minimum 0 at the origin. At angle 0 the axes are the coordinates
    (where diagonal preconditioners such as Adam's shine); a turned valley takes that advantage away."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    u, v = c * x + s * y, -s * x + c * y
    return 0.5 * (u**2 + condition * v**2)


FORMULAS: dict[str, Callable[..., Any]] = {
    "rosenbrock": rosenbrock,
    "beale": beale,
    "double_well": double_well,
    "quadratic": quadratic,
}


@dataclass(frozen=True)
class TestFunction:
    """A formula with its parameters and what the picture and the tolerance need to know about it."""

    __test__ = False  # not a pytest test class despite its name

    name: str
    formula: str
    params: dict[str, float]
    minima: list[tuple[float, float]]
    start: tuple[float, float]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    levels: str = "log"
    n_levels: int = 30
    saddles: list[tuple[float, float]] = field(default_factory=list)

    def __call__(self, x: Any, y: Any) -> Any:
        return FORMULAS[self.formula](x, y, **self.params)

    @property
    def minimum_value(self) -> float:
        """f* (the value at the listed minima, which all share it)."""
        x, y = self.minima[0]
        return float(self(np.float64(x), np.float64(y)))

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Euclidean distance of each point (rows of an (n, 2) array) to the nearest listed minimum."""
        minima = np.asarray(self.minima, dtype=float)
        return np.min(np.linalg.norm(points[:, None, :] - minima[None, :, :], axis=2), axis=1)

    def gap(self, points: np.ndarray) -> np.ndarray:
        """f - f* at each point."""
        return self(points[:, 0], points[:, 1]) - self.minimum_value


def load_function(cfg: DictConfig) -> TestFunction:
    """The `function` group's config as a TestFunction; an unknown formula names the known ones."""
    if cfg.formula not in FORMULAS:
        raise ConfigError(
            f"function={cfg.name}: unknown formula '{cfg.formula}'. Formulas: {', '.join(sorted(FORMULAS))}."
        )
    params = OmegaConf.to_container(cfg.params, resolve=True) if cfg.get("params") else {}
    if len(cfg.minima) == 0:
        raise ConfigError(
            f"function={cfg.name}: list at least one minimum under `minima` (steps-to-tolerance needs it)."
        )
    return TestFunction(
        name=str(cfg.name),
        formula=str(cfg.formula),
        params={k: float(v) for k, v in params.items()},
        minima=[(float(x), float(y)) for x, y in cfg.minima],
        start=(float(cfg.start[0]), float(cfg.start[1])),
        xlim=(float(cfg.bounds.x[0]), float(cfg.bounds.x[1])),
        ylim=(float(cfg.bounds.y[0]), float(cfg.bounds.y[1])),
        levels=str(cfg.levels.scale),
        n_levels=int(cfg.levels.count),
        saddles=[(float(x), float(y)) for x, y in cfg.get("saddles") or []],
    )
