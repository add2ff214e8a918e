"""Performance profiles (Dolan and Moré 2002) with the AlgoPerf score, and budget curves (tunability).

Performance profile. A problem is one seed (one seed of one workload when runs of several are compared).
On each problem every optimizer has a time to target (steps, or training seconds), infinite when its run
never reaches the target or is missing; r = time / the fastest optimizer's time on that problem (infinite
when no optimizer reaches it there). rho(tau) is the fraction of problems with r <= tau.

AlgoPerf score: the integral of rho over [1, r_max] divided by (r_max - 1), r_max = 4, as in MLCommons
AlgoPerf's scoring/performance_profile.py (`compute_performance_profiles`: divide by the per-workload
minimum, `rho = (r <= tau).sum() / n`; `compute_leaderboard_score(normalize=True)`: the trapezoid rule
over a tau grid divided by the grid's range). rho is a step function, so we integrate it exactly instead of
on a grid: a problem solved at ratio r contributes (r_max - r) / (r_max - 1), one never solved 0.

Budget curve. The expected best validation metric after k tuning trials, k = 1..N: the exact expectation
of the maximum of k draws without replacement from an optimizer's N trials (pooled over all its tuning
studies), E = sum_i v_(i) C(i-1, k-1) / C(N, k) over the values sorted ascending; no random orderings.
Written out because neither scipy nor optuna offers this estimator. It ends at the best trial (k = N).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from optbench.compare.styles import line_style
from optbench.core.figures import save_figure, subplots

R_MAX = 4.0  # AlgoPerf's upper limit of the performance-profile integral


def profile_ratios(times: pd.DataFrame) -> pd.DataFrame:
    """Ratios r (problems x optimizers) from a long table (problem, optimizer, time); NaN or missing = inf.

    Every optimizer is scored on every problem any optimizer has: a seed one optimizer lacks counts as not
    solved, never as a smaller denominator."""
    wide = times.pivot_table(index="problem", columns="optimizer", values="time", aggfunc="min", dropna=False)
    wide = wide.reindex(columns=sorted(times.optimizer.unique())).astype(float).fillna(math.inf)
    best = wide.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = wide.div(best, axis=0)
    ratios[~np.isfinite(best.to_numpy())] = math.inf  # nobody reached it: inf / inf is no ratio of 1
    return ratios.fillna(math.inf)


def profile(ratios: pd.DataFrame, taus: Sequence[float]) -> pd.DataFrame:
    """rho(tau) per optimizer (rows tau, columns optimizers): the fraction of problems with r <= tau."""
    taus = np.asarray(taus, dtype=float)
    values = {name: [(ratios[name] <= tau).mean() for tau in taus] for name in ratios.columns}
    return pd.DataFrame(values, index=pd.Index(taus, name="tau"))


def profile_score(ratios: pd.DataFrame, r_max: float = R_MAX) -> dict[str, float]:
    """The exact normalised integral of rho from 1 to r_max, per optimizer (1 = fastest on every problem)."""
    if not r_max > 1:
        raise ValueError(f"r_max must exceed 1, got {r_max}")
    gained = np.clip(r_max - ratios.to_numpy(float), 0.0, r_max - 1.0)  # inf -> 0: never counted
    return {name: float(score) for name, score in zip(ratios.columns, gained.mean(axis=0) / (r_max - 1.0))}


def expected_best(values: Sequence[float], floor: float = 0.0) -> list[float]:
    """E[max of k draws without replacement] for k = 1..N; non-finite values (diverged trials) count as
    `floor`, the worst value of the metric (0 for an accuracy)."""
    v = np.sort(np.where(np.isfinite(np.asarray(values, dtype=float)), values, floor))
    n = len(v)
    curve = []
    for k in range(1, n + 1):
        # P(the maximum is the i-th smallest, 1-based) = C(i-1, k-1) / C(n, k); exact integers, then float
        weights = [math.comb(i - 1, k - 1) for i in range(1, n + 1)]
        curve.append(float(np.dot(v, np.asarray(weights, dtype=float)) / math.comb(n, k)))
    return curve


def budget_curves(trials: pd.DataFrame, metric: str = "val_acc_best") -> dict[str, list[float]]:
    """Per optimizer, `expected_best` over all its trials, every tuning study pooled (each trial is one draw)."""
    return {
        str(name): expected_best(group[metric].to_numpy(float))
        for name, group in trials.dropna(subset=["optimizer"]).groupby("optimizer", sort=True)
    }


# --- figures ----------------------------------------------------------------------------------------------


def plot_profile(ratios: pd.DataFrame, scores: dict[str, float], axis: str, r_max: float = R_MAX, path=None):
    """rho(tau) for tau in [1, r_max] as steps, one line per optimizer with its score in the legend."""
    taus = np.unique(np.concatenate([np.linspace(1.0, r_max, 301), ratios.to_numpy(float).ravel()]))
    taus = taus[(taus >= 1.0) & (taus <= r_max)]
    rho = profile(ratios, taus)
    fig, ax = subplots(figsize=(7, 4.5))
    for k, name in enumerate(rho.columns):
        style = {**line_style(k, len(rho)), "markevery": max(1, len(rho) // 8) + k}  # markers not on top of each other
        ax.step(rho.index, rho[name], where="post", label=f"{name} (score {scores[name]:.3f})", lw=1.5, **style)
    ax.set(xlim=(1.0, r_max), ylim=(-0.02, 1.02), xlabel=f"tau: {axis} to target / fastest optimizer's")
    ax.set_ylabel(f"rho(tau): fraction of {len(ratios)} problems")
    ax.set_title("Performance profile (Dolan-Moré); score = integral of rho over [1, r_max] / (r_max - 1)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig if path is None else save_figure(fig, Path(path), dpi=110)


def plot_budget_curves(curves: dict[str, list[float]], path=None):
    """Expected best val/acc_best against the number of tuning trials, one line per optimizer."""
    fig, ax = subplots(figsize=(7, 4.5))
    for k, (name, curve) in enumerate(curves.items()):
        style = {**line_style(k, len(curve)), "markevery": 1}
        ax.plot(range(1, len(curve) + 1), curve, lw=1.5, label=f"{name} ({len(curve)} trials)", **style)
    ax.set(xlabel="tuning trials k", ylabel="expected best val/acc_best")
    ax.set_title("Budget curves: E[best of k trials drawn without replacement], studies pooled", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig if path is None else save_figure(fig, Path(path), dpi=110)
