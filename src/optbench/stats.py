"""Every statistic optbench reports, in one place, built on scipy.stats.

The policy every claim study follows (optbench.studies judges each claim with `claim_test` or, for a time
to a target, `censored_claim_test`, then corrects the study's family of claims with `holm` and `decide`):

- Paired by seed wherever both sides ran on the same seeds: the t-interval and t-tests of the per-seed
  differences (`ttest_1samp` of the differences, the same as `ttest_rel`); Welch (`ttest_ind`,
  `equal_var=False`) only where the sides are not paired; `bootstrap_ci` where a t-interval would be off.
- An interval of a bounded metric is clipped to its range (`bounds`: accuracy (0, 1), losses and times
  (0, inf)); the interval of a difference to the range of a difference, (lo - hi, hi - lo).
- Each claim gets the one-sided p-value of its test against its margin (advantage: H0 advantage <= margin;
  equivalence: TOST, the larger of the two one-sided p-values) and of the opposite test (the data showing
  the claim false). Supported only if the Holm-adjusted p of the claim's test is below 1 - confidence,
  refuted only if that of the opposite test is, else inconclusive.
- No zero-width interval: a constant sample has none (NaN bounds). An exact tie on every seed (deterministic
  runs) is a tie, reported with its reason; any other difference without spread is inconclusive.
- A power note per claim: the smallest true difference the seeds detect with 80% power (`detectable_effect`).

An interval is a dict, so it goes into verdict.json as it is:
    mean_ci       {"mean", "low", "high", "n"}
    difference    {"diff", "low", "high", "n", ...}
Bounds are NaN where there is no interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats

SUPPORTED, REFUTED, INCONCLUSIVE = "supported", "refuted", "inconclusive"
TESTS = ("advantage", "equivalence")
POWER = 0.8  # the power of the detectable effect
Bounds = tuple[float, float] | None
# The reasons a claim is decided without a test.
TIE_EQUIVALENT = "exact tie on every seed"
TIE_NO_ADVANTAGE = "a tie is not an advantage"
NO_SPREAD = "no spread: interval undefined"
TOO_FEW = "fewer than two seeds: interval undefined"


def finite(values: Iterable[float | None]) -> np.ndarray:
    """The finite values as a float array (None, NaN and infinities dropped)."""
    return np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)


def difference_bounds(bounds: Bounds) -> Bounds:
    """The range of a difference of two values of a metric with range `bounds`."""
    if bounds is None:
        return None
    width = bounds[1] - bounds[0]
    return (-width, width)


def clip(ci: dict[str, Any], bounds: Bounds) -> dict[str, Any]:
    """`ci` with its low and high clipped to `bounds` (NaN bounds stay NaN)."""
    if bounds is not None:
        for key in ("low", "high"):
            if math.isfinite(ci[key]):
                ci[key] = float(min(max(ci[key], bounds[0]), bounds[1]))
    return ci


def mean_ci(values: Iterable[float | None], confidence: float = 0.95, bounds: Bounds = None) -> dict[str, float]:
    """Mean and t-interval (`ttest_1samp`) of the finite values, clipped to `bounds`; NaN bounds below two
    values and for a sample without spread (five equal runs are not certainty)."""
    x = finite(values)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2 or x.var() == 0:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": n}
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return clip({"mean": mean, "low": float(ci.low), "high": float(ci.high), "n": n}, bounds)


def _pairs(a: Sequence[float | None], b: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """The seeds where both sides have a finite value."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    kept = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)]
    return np.asarray([x for x, _ in kept], dtype=float), np.asarray([y for _, y in kept], dtype=float)


def _difference(res, diff: float, n: int, confidence: float, bounds: Bounds) -> dict[str, Any]:
    ci = res.confidence_interval(confidence)
    return clip({"diff": diff, "low": float(ci.low), "high": float(ci.high), "n": n}, difference_bounds(bounds))


def paired_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, bounds: Bounds = None) -> dict:
    """mean(a[i] - b[i]) over the seeds where both are finite (the same seed on both sides) and its
    t-interval (`ttest_rel`'s, the one-sample interval of the differences); NaN bounds without spread."""
    x, y = _pairs(a, b)
    d = x - y
    diff = float(d.mean()) if len(d) else math.nan
    if len(d) < 2 or d.var() == 0:
        return {"diff": diff, "low": math.nan, "high": math.nan, "n": len(d)}
    return _difference(stats.ttest_rel(x, y), diff, len(d), confidence, bounds)


def welch_ci(a: Iterable[float], b: Iterable[float], confidence: float = 0.95, bounds: Bounds = None) -> dict:
    """mean(a) - mean(b) with Welch's t-interval (`ttest_ind(equal_var=False)`), for sides that do not share
    seeds; NaN bounds when either side has fewer than two values or neither has spread."""
    x, y = finite(a), finite(b)
    n = min(len(x), len(y))
    diff = float(x.mean() - y.mean()) if n else math.nan
    if n < 2 or (x.var() == 0 and y.var() == 0):
        return {"diff": diff, "low": math.nan, "high": math.nan, "n": n}
    return _difference(stats.ttest_ind(x, y, equal_var=False), diff, n, confidence, bounds)


def advantage_ci(
    a: Sequence[float], b: Sequence[float], lower_is_better: bool, confidence: float, *, paired: bool, bounds=None
) -> dict:
    """The interval of A's advantage over B (negated where lower values are better), paired or Welch."""
    sign = -1.0 if lower_is_better else 1.0
    ci = paired_ci if paired else welch_ci
    return ci([sign * v for v in a], [sign * v for v in b], confidence, bounds)


def has_bounds(ci: dict[str, float]) -> bool:
    return math.isfinite(ci["low"]) and math.isfinite(ci["high"])


# --- judging a claim ----------------------------------------------------------------------------------------


def decide(p_value: float, p_opposite: float, alpha: float) -> str:
    """Supported if the claim's test rejects at `alpha`, refuted if the opposite test does, else inconclusive."""
    claim, opposite = p_value < alpha, p_opposite < alpha
    if claim and not opposite:
        return SUPPORTED
    if opposite and not claim:
        return REFUTED
    return INCONCLUSIVE


def one_sided_pvalues(test: str, margin: float, greater) -> tuple[float, float]:
    """(p of the claim's test, p of the opposite test), from `greater(shift, alternative)`: the one-sided
    p-value of "advantage - shift" being greater (or less) than 0.

    advantage:    H0 advantage <= margin; opposite H0 advantage >= margin.
    equivalence:  TOST, max of H0 advantage <= -margin and H0 advantage >= margin; opposite: the advantage
                  lies outside +-margin, the smaller one-sided p doubled (either side could show it).
    """
    if test == "advantage":
        return greater(margin, "greater"), greater(margin, "less")
    if test == "equivalence":
        tost = max(greater(-margin, "greater"), greater(margin, "less"))
        outside = min(1.0, 2 * min(greater(margin, "greater"), greater(-margin, "less")))
        return tost, outside
    raise ValueError(f"unknown test {test!r}: advantage or equivalence")


def tie_verdict(test: str, margin: float) -> tuple[str, str]:
    """(verdict, reason) of a claim whose two sides are equal on every seed."""
    if test == "equivalence":
        return SUPPORTED, TIE_EQUIVALENT
    return (SUPPORTED, "a tie beats a negative margin") if margin < 0 else (REFUTED, TIE_NO_ADVANTAGE)


def detectable_effect(se: float, df: float, confidence: float, power: float = POWER) -> float:
    """The smallest true difference a t-test with standard error `se` and `df` degrees of freedom detects
    with `power`, two-sided alpha = 1 - confidence: (t_{1-alpha/2} + t_{power}) * se."""
    if not (math.isfinite(se) and se > 0 and df > 0):
        return math.nan
    alpha = 1 - confidence
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def claim_test(
    a: Sequence[float],
    b: Sequence[float],
    *,
    test: str = "advantage",
    margin: float = 0.0,
    lower_is_better: bool = False,
    paired: bool = True,
    confidence: float = 0.95,
    bounds: Bounds = None,
) -> dict[str, Any]:
    """The claim "A beats B by more than `margin`" (advantage) or "A and B agree within +-margin"
    (equivalence) on per-seed values: A's advantage (paired by index, or Welch), its interval clipped to
    the range of a difference of `bounds`, the one-sided p-values of the claim's test and of the opposite
    test, the detectable effect and the verdict before any multiplicity correction."""
    sign = -1.0 if lower_is_better else 1.0
    x, y = _pairs(a, b) if paired else (finite(a), finite(b))
    x, y = sign * x, sign * y
    ci = (paired_ci if paired else welch_ci)(list(x), list(y), confidence, bounds)
    result = {
        "test": test,
        "margin": float(margin),
        "method": "paired t (per-seed differences)" if paired else "Welch t (unpaired)",
        "advantage": ci,
        "p_value": math.nan,
        "p_opposite": math.nan,
        "detectable_effect": math.nan,
        "reason": None,
    }
    d = x - y if paired else None
    if ci["n"] < 2:
        return {**result, "verdict": INCONCLUSIVE, "reason": TOO_FEW}
    tie = not d.any() if paired else (x.var() == 0 and y.var() == 0 and x[0] == y[0])
    if tie:
        verdict, reason = tie_verdict(test, margin)
        return {**result, "verdict": verdict, "reason": reason}
    if not has_bounds(ci):
        return {**result, "verdict": INCONCLUSIVE, "reason": NO_SPREAD}
    if paired:
        se, df = float(d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1

        def greater(shift, alternative):
            return float(stats.ttest_1samp(d, shift, alternative=alternative).pvalue)
    else:
        se = math.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
        df = float(stats.ttest_ind(x, y, equal_var=False).df)

        def greater(shift, alternative):
            return float(stats.ttest_ind(x - shift, y, equal_var=False, alternative=alternative).pvalue)

    p, p_opposite = one_sided_pvalues(test, float(margin), greater)
    return {
        **result,
        "p_value": p,
        "p_opposite": p_opposite,
        "detectable_effect": detectable_effect(se, df, confidence),
        "verdict": decide(p, p_opposite, 1 - confidence),
    }


# --- time to a target ---------------------------------------------------------------------------------------


def first_crossing(curve: Iterable[tuple[float, float]], target: float, higher_is_better: bool = True) -> float | None:
    """The first step of a (step, value) curve whose value reaches `target`; None when it never does
    (a censored run: its time to target is only known to exceed the run's length)."""
    for step, value in sorted(curve):
        if (value >= target) if higher_is_better else (value <= target):
            return float(step)
    return None


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


def censored_claim_test(
    a: Sequence[float | None],
    b: Sequence[float | None],
    horizons_a: Sequence[float],
    horizons_b: Sequence[float],
    *,
    test: str = "advantage",
    margin: float = 0.0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The claim "A reaches the target sooner than B" (by more than `margin`) on per-seed times, paired by
    index; a run that never reaches it (None or inf) is censored: its time is +inf, never its length.

    The test is Wilcoxon's signed-rank test (`scipy.stats.wilcoxon`) of the per-seed differences B - A,
    which needs only their order, so +inf is a valid value; a seed where neither side reached the target
    carries no information and is dropped with the ties. The advantage is the difference of the Kaplan-
    Meier medians; it has no interval (a bootstrap of a median over a handful of censored seeds is not
    sound), so its bounds are NaN. The power note is the smallest p the test can give on these seeds."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    ta, tb = (np.asarray([math.inf if t is None else float(t) for t in side]) for side in (a, b))
    medians = median_time_to_target(list(ta), horizons_a), median_time_to_target(list(tb), horizons_b)
    diff = medians[1] - medians[0] if not (math.isinf(medians[0]) and math.isinf(medians[1])) else math.nan
    both_censored = np.isinf(ta) & np.isinf(tb)
    with np.errstate(invalid="ignore"):  # inf - inf where both are censored: no information, a tie
        d = np.where(both_censored, 0.0, tb - ta)
    informative = int(np.count_nonzero(d))
    result = {
        "test": test,
        "margin": float(margin),
        "method": "Wilcoxon signed-rank (paired, never reached = +inf)",
        "advantage": {"diff": diff, "low": math.nan, "high": math.nan, "n": len(d)},
        "medians": list(medians),
        "reached": [int(np.isfinite(ta).sum()), int(np.isfinite(tb).sum())],
        "interval": "not defined: Kaplan-Meier medians of censored runs over a few seeds",
        "p_value": math.nan,
        "p_opposite": math.nan,
        "detectable_effect": math.nan,
        "power_note": f"the signed-rank test on {informative} informative seeds cannot give p below "
        f"{0.5**informative:.3g}"
        if informative
        else "no seed separates the two sides",
        "reason": None,
    }
    if both_censored.all():
        return {**result, "verdict": INCONCLUSIVE, "reason": "neither side reached the target on any seed"}
    if informative == 0:
        verdict, reason = tie_verdict(test, margin)
        return {**result, "verdict": verdict, "reason": reason}

    def greater(shift, alternative):
        shifted = d - shift
        if not shifted.any():
            return 1.0
        return float(stats.wilcoxon(shifted, alternative=alternative, zero_method="wilcox").pvalue)

    p, p_opposite = one_sided_pvalues(test, float(margin), greater)
    return {**result, "p_value": p, "p_opposite": p_opposite, "verdict": decide(p, p_opposite, 1 - confidence)}


def censoring_guard(verdict: str, test: str, censored_better: int, censored_than: int) -> str:
    """`verdict` unless runs counted at their length (lower bounds of their time) could have produced it:
    supported while the claimed-faster side has such runs, refuted while the other side has, either for an
    equivalence. Then inconclusive."""
    if test == "equivalence" and (censored_better or censored_than):
        return INCONCLUSIVE
    if (verdict == SUPPORTED and censored_better) or (verdict == REFUTED and censored_than):
        return INCONCLUSIVE
    return verdict


# --- other intervals and the multiplicity correction --------------------------------------------------------


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, seed: int = 0, bounds: Bounds = None) -> dict:
    """Mean and the BCa bootstrap interval (`scipy.stats.bootstrap`, seeded) of the finite values, for
    quantities whose t-interval would be off (skewed, bounded); NaN bounds below two distinct values."""
    x = finite(values)
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2 or x.var() == 0:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": len(x)}
    ci = stats.bootstrap((x,), np.mean, confidence_level=confidence, random_state=seed).confidence_interval
    return clip({"mean": mean, "low": float(ci.low), "high": float(ci.high), "n": len(x)}, bounds)


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
