"""Every statistic optbench reports, in one place, built on scipy.stats.

Intervals are t-intervals from scipy's tests (`ttest_1samp`, `ttest_rel`, `ttest_ind(equal_var=False)`
and their `confidence_interval`); verdict rules read those intervals against a margin. The comparison
report (optbench.compare) and every claim study (optbench.studies) use these functions and no others.

An interval is a dict, so it goes into verdict.json as it is:
    mean_ci       {"mean", "low", "high", "n"}
    difference    {"diff", "low", "high"}
Bounds are NaN where there is no interval (fewer than two values).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats

SUPPORTED, REFUTED, INCONCLUSIVE = "supported", "refuted", "inconclusive"


def finite(values: Iterable[float | None]) -> np.ndarray:
    """The finite values as a float array (None, NaN and infinities dropped)."""
    return np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)


def mean_ci(values: Iterable[float | None], confidence: float = 0.95) -> dict[str, float]:
    """Mean and t-interval (`ttest_1samp`) of the finite values; NaN bounds below two values.

    Samples without spread (deterministic runs) get a zero-width interval: the t-interval's limit as the
    spread goes to 0, which scipy would return as NaN.
    """
    x = finite(values)
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": 1}
    if x.var() == 0:
        return {"mean": mean, "low": mean, "high": mean, "n": n}
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return {"mean": mean, "low": float(ci.low), "high": float(ci.high), "n": n}


def paired_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and t-interval of the paired differences a[i] − b[i] (the same seed on both sides):
    `ttest_rel`'s interval, which is the one-sample interval of the differences."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    return mean_ci([x - y for x, y in zip(a, b)], confidence)


def welch_ci(a: Iterable[float], b: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """mean(a) − mean(b) with Welch's t-interval (`ttest_ind(equal_var=False)`); a zero-width interval
    when both samples are constant, NaN bounds when either has fewer than two values."""
    x, y = finite(a), finite(b)
    if len(x) == 0 or len(y) == 0:
        return {"diff": math.nan, "low": math.nan, "high": math.nan}
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return {"diff": diff, "low": math.nan, "high": math.nan}
    if x.var() == 0 and y.var() == 0:
        return {"diff": diff, "low": diff, "high": diff}
    ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(confidence)
    return {"diff": diff, "low": float(ci.low), "high": float(ci.high)}


def advantage_ci(a: Sequence[float], b: Sequence[float], lower_is_better: bool, confidence: float) -> dict[str, float]:
    """The Welch interval of A's advantage over B: mean(a) − mean(b), negated where lower values are better."""
    sign = -1.0 if lower_is_better else 1.0
    return welch_ci([sign * v for v in a], [sign * v for v in b], confidence)


def has_bounds(ci: dict[str, float]) -> bool:
    return math.isfinite(ci["low"]) and math.isfinite(ci["high"])


def advantage_verdict(ci: dict[str, float], margin: float) -> str:
    """ "A is better than B by more than `margin`", judged on the interval of A's advantage: supported if
    the whole interval lies above the margin, refuted if none of it does, else inconclusive."""
    if not has_bounds(ci):
        return INCONCLUSIVE
    if ci["low"] > margin:
        return SUPPORTED
    if ci["high"] <= margin:
        return REFUTED
    return INCONCLUSIVE


def equivalence_verdict(ci: dict[str, float], margin: float) -> str:
    """ "A and B are the same within ±margin" (two one-sided tests): supported if the interval of the
    difference lies inside (−margin, margin), refuted if it lies wholly outside, else inconclusive."""
    if not has_bounds(ci):
        return INCONCLUSIVE
    if -margin < ci["low"] and ci["high"] < margin:
        return SUPPORTED
    if ci["low"] > margin or ci["high"] < -margin:
        return REFUTED
    return INCONCLUSIVE


def interval_verdict(ci: dict[str, float], margin: float, test: str = "advantage") -> str:
    """The verdict of an `advantage` or `equivalence` claim on the interval `ci`."""
    if test == "equivalence":
        return equivalence_verdict(ci, margin)
    if test == "advantage":
        return advantage_verdict(ci, margin)
    raise ValueError(f"unknown test {test!r}: advantage or equivalence")


def first_crossing(curve: Iterable[tuple[float, float]], target: float, higher_is_better: bool = True) -> float | None:
    """The first step of a (step, value) curve whose value reaches `target`; None when it never does
    (a censored run: its time to target is only known to exceed the run's length)."""
    for step, value in sorted(curve):
        if (value >= target) if higher_is_better else (value <= target):
            return float(step)
    return None


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean and the BCa bootstrap interval (`scipy.stats.bootstrap`, seeded) of the finite values, for
    quantities whose t-interval would be off (skewed, bounded); NaN bounds below two distinct values."""
    x = finite(values)
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2 or x.var() == 0:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": len(x)}
    ci = stats.bootstrap((x,), np.mean, confidence_level=confidence, random_state=seed).confidence_interval
    return {"mean": mean, "low": float(ci.low), "high": float(ci.high), "n": len(x)}


def median_time_to_target(times: Sequence[float | None], horizons: Sequence[float]) -> float:
    """The median time to a target over runs, some of which never reach it (censored at their horizon,
    the length of the run): the Kaplan-Meier estimate (`scipy.stats.ecdf` of censored data). Infinite
    when fewer than half the runs are known to reach it. Dropping the censored runs would make a slow
    optimizer look fast."""
    reached = [float(t) for t in times if t is not None and math.isfinite(t)]
    censored = [float(h) for t, h in zip(times, horizons) if t is None or not math.isfinite(t)]
    if not reached:
        return math.inf
    survival = stats.ecdf(stats.CensoredData(uncensored=reached, right=censored)).sf
    below = np.nonzero(survival.probabilities <= 0.5)[0]
    return float(survival.quantiles[below[0]]) if len(below) else math.inf


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error across the claims of one study), in the
    input order. Written out because scipy.stats offers only false-discovery-rate control
    (false_discovery_control), not family-wise Holm."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[index])))
        adjusted[index] = running
    return adjusted
