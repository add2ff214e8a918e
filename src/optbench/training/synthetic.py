"""Synthetic least-squares problems whose optimum is known in closed form: data=regression and data=quadratic.

Both are trained with model=linear (Flatten -> Linear(d, 1)) and the mean squared error, so the training loss
is a convex quadratic in the parameters [w, b]. Its minimizer on the training split is computed here in
float64 (`Dataset.optimum`), runs log their distance to it (train/dist_to_opt), and `optimal_losses` gives
the loss of every split at it: the floor a target on val/loss is set against.

data=quadratic is the ill-conditioned noisy quadratic of the workload suite, after DeepOBS's quadratic_deep
(100 dimensions, Hessian eigenvalues in two clusters, 90 % small and 10 % large, a random rotation). DeepOBS
writes it as 0.5 (θ - x)^T Q (θ - x) with a separate parameter vector; here it is the same kind of problem
as least squares on features with covariance Q, so it runs through the regression path unchanged (model,
metrics, distance to the optimum, L-BFGS, DDP). The training features are built so that the Hessian of the
training loss is exactly 2 diag(Q, 1) (the 1 for the bias): its condition number is the configured one.
Gradients are noisy because each mini-batch holds different rows and the labels carry noise.
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import Tensor

from optbench.core.errors import ConfigError

LOW_CLUSTER_SPAN = 2.0  # each eigenvalue cluster spans a factor of 2, as DeepOBS's large cluster (30, 60)


Pairs = list[tuple[Tensor, Tensor]]  # (x, y) of the train, val and test splits


def regression(cfg: DictConfig) -> Pairs:
    """data=regression: X ~ N(0, I), y = X w* + b* + noise; split at random into train, val and test."""
    gen = torch.Generator().manual_seed(cfg.split_seed)
    n, d = cfg.n_samples, cfg.n_features
    x = torch.randn(n, d, generator=gen)
    w_true, b_true = torch.randn(d, generator=gen), torch.randn(1, generator=gen)
    y = (x @ w_true + b_true + cfg.noise * torch.randn(n, generator=gen)).unsqueeze(1)
    order = torch.randperm(n, generator=gen)
    n_val, n_test = split_sizes(cfg)
    val_idx, test_idx, train_idx = order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]
    return [(x[i], y[i]) for i in (train_idx, val_idx, test_idx)]


def split_sizes(cfg: DictConfig) -> tuple[int, int]:
    return round(cfg.n_samples * cfg.val_fraction), round(cfg.n_samples * cfg.test_fraction)


def eigenvalues(dimension: int, condition_number: float, low_fraction: float, gen: torch.Generator) -> Tensor:
    """`dimension` eigenvalues in two clusters: round(low_fraction x dimension) in [1, 2], the rest in
    [condition_number / 2, condition_number] (clipped to [1, condition_number] when it is below 4); the
    smallest is exactly 1 and the largest exactly `condition_number`. Sorted ascending, float64."""
    n_low = min(max(round(low_fraction * dimension), 1), dimension - 1)
    top = float(condition_number)
    low = 1 + (min(LOW_CLUSTER_SPAN, top) - 1) * torch.rand(n_low, generator=gen, dtype=torch.float64)
    high_start = max(top / LOW_CLUSTER_SPAN, 1.0)
    high = high_start + (top - high_start) * torch.rand(dimension - n_low, generator=gen, dtype=torch.float64)
    values, _ = torch.sort(torch.cat([low, high]))
    values[0], values[-1] = 1.0, top
    return values


def random_rotation(dimension: int, gen: torch.Generator) -> Tensor:
    """A Haar-distributed orthogonal matrix (QR of a Gaussian matrix with the signs of R's diagonal fixed,
    Mezzadri 2007), float64."""
    q, r = torch.linalg.qr(torch.randn(dimension, dimension, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def check_quadratic(cfg: DictConfig) -> None:
    """Values that would build a different problem than the one asked for, as one ConfigError each."""
    d, kappa, frac = cfg.dimension, cfg.condition_number, cfg.low_fraction
    if isinstance(d, bool) or not isinstance(d, int) or d < 2:
        raise ConfigError(f"data.dimension must be a whole number >= 2 (two eigenvalue clusters), got {d!r}.")
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 1 <= kappa < math.inf:
        raise ConfigError(f"data.condition_number must be a finite number >= 1, got {kappa!r}.")
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
        raise ConfigError(f"data.low_fraction must be in (0, 1), got {frac!r}.")
    n_train = cfg.n_samples - sum(split_sizes(cfg))
    if n_train <= d + 1:
        raise ConfigError(
            f"data=quadratic needs more training examples than parameters for a unique optimum: "
            f"n_samples={cfg.n_samples} leaves {n_train} for training, and dimension={d} makes {d + 1} parameters. "
            f"Raise data.n_samples or lower data.dimension."
        )


def quadratic(cfg: DictConfig) -> Pairs:
    """data=quadratic: the training features have mean exactly 0 and second moment exactly Q = R^T diag(λ) R;
    validation and test features are drawn from N(0, Q); y = X w* + b* + noise, w* and b* standard normal."""
    check_quadratic(cfg)
    gen = torch.Generator().manual_seed(cfg.split_seed)
    d = cfg.dimension
    scale = eigenvalues(d, cfg.condition_number, cfg.low_fraction, gen).sqrt()[:, None] * random_rotation(d, gen)
    n_val, n_test = split_sizes(cfg)
    n_train = cfg.n_samples - n_val - n_test
    # Orthonormal columns orthogonal to the ones vector: centred Gaussian columns, orthonormalized by QR.
    gaussian = torch.randn(n_train, d, generator=gen, dtype=torch.float64)
    basis, _ = torch.linalg.qr(gaussian - gaussian.mean(dim=0))
    train_x = math.sqrt(n_train) * basis @ scale
    held_out_x = torch.randn(n_val + n_test, d, generator=gen, dtype=torch.float64) @ scale
    w_true, b_true = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(1, generator=gen).double()

    def labelled(x: Tensor) -> tuple[Tensor, Tensor]:
        y = x @ w_true + b_true + cfg.noise * torch.randn(len(x), generator=gen, dtype=torch.float64)
        return x.float(), y.float().unsqueeze(1)

    return [labelled(train_x), labelled(held_out_x[:n_val]), labelled(held_out_x[n_val:])]


def least_squares_optimum(x: Tensor, y: Tensor) -> Tensor:
    """The exact minimizer [w, b] of the mean squared error of x w + b against y, in float64."""
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    return torch.linalg.lstsq(design, y.double()).solution.squeeze(1)


def hessian(x: Tensor) -> Tensor:
    """The Hessian of the mean squared error of x w + b in [w, b] (constant: the loss is quadratic), float64."""
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    return 2 * design.T @ design / len(x)


def mean_squared_error(x: Tensor, y: Tensor, params: Tensor) -> float:
    """The mean squared error of the linear model with parameters [w, b] on (x, y), in float64."""
    prediction = x.double() @ params[:-1] + params[-1]
    return float(((prediction - y.double().squeeze(1)) ** 2).mean())


def optimal_losses(data) -> dict[str, float]:
    """The mean squared error of each split at the training optimum: the training loss no run can beat, and
    the validation and test losses of the exact solution. Empty for a dataset without a known optimum."""
    if data.optimum is None:
        return {}
    splits = {"train": data.train, "val": data.val, "test": data.test}
    return {name: mean_squared_error(s.x, s.y, data.optimum) for name, s in splits.items()}
