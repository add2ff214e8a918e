"""optbench.stats on constructed data with known answers."""

from __future__ import annotations

import math

import pytest

from optbench.stats import (
    advantage_ci,
    advantage_verdict,
    bootstrap_ci,
    equivalence_verdict,
    first_crossing,
    holm,
    interval_verdict,
    mean_ci,
    median_time_to_target,
    paired_ci,
    welch_ci,
)

pytestmark = pytest.mark.unit


def test_mean_ci_is_the_t_interval():
    # mean 2, sample sd 1, n 4: half-width t_{0.975, 3} * 1 / 2 = 3.182446305284263 / 2
    ci = mean_ci([1.0, 2.0, 2.0, 3.0], 0.95)
    sd = math.sqrt(((1 - 2) ** 2 + 0 + 0 + (3 - 2) ** 2) / 3)
    half = 3.182446305284263 * sd / 2
    assert ci["mean"] == 2.0 and ci["n"] == 4
    assert ci["low"] == pytest.approx(2.0 - half, rel=1e-12) and ci["high"] == pytest.approx(2.0 + half, rel=1e-12)


def test_mean_ci_drops_non_finite_values_and_has_no_bounds_below_two_values():
    ci = mean_ci([0.7, float("nan"), None, float("inf")])
    assert ci["mean"] == 0.7 and ci["n"] == 1 and math.isnan(ci["low"]) and math.isnan(ci["high"])
    assert mean_ci([])["n"] == 0 and math.isnan(mean_ci([])["mean"])


def test_paired_interval_removes_the_shared_seed_effect():
    # Seeds shift both sides alike: the paired differences are exactly 0.1 each, the Welch interval is wide.
    a = [0.50, 0.70, 0.90, 0.60]
    b = [x - 0.1 for x in a]
    paired = paired_ci(a, b)
    assert paired["mean"] == pytest.approx(0.1) and paired["high"] - paired["low"] == pytest.approx(0.0, abs=1e-12)
    welch = welch_ci(a, b)
    assert welch["diff"] == pytest.approx(0.1) and welch["low"] < 0 < welch["high"]
    with pytest.raises(ValueError, match="equal lengths"):
        paired_ci([1.0, 2.0], [1.0])


def test_welch_interval_matches_the_known_answer():
    # Two samples with means 2 and 5, variances 1 and 4, n 3 each: Welch df = 2.94, t_{0.975} = 3.1995...
    ci = welch_ci([1.0, 2.0, 3.0], [3.0, 5.0, 7.0])
    se = math.sqrt(1 / 3 + 4 / 3)
    assert ci["diff"] == -3.0
    assert (ci["high"] - ci["low"]) / 2 / se == pytest.approx(3.2, abs=0.05)


def test_advantage_ci_flips_sign_when_lower_is_better():
    steps_fast, steps_slow = [10.0, 12.0, 11.0], [20.0, 22.0, 21.0]
    assert advantage_ci(steps_fast, steps_slow, lower_is_better=True, confidence=0.95)["diff"] == 10.0
    assert advantage_ci(steps_fast, steps_slow, lower_is_better=False, confidence=0.95)["diff"] == -10.0


@pytest.mark.parametrize(
    "low, high, margin, verdict",
    [
        (0.02, 0.05, 0.01, "supported"),  # wholly above the margin
        (-0.05, 0.01, 0.01, "refuted"),  # nowhere above it (a tie refutes an advantage)
        (-0.01, 0.03, 0.01, "inconclusive"),  # across it
        (math.nan, math.nan, 0.0, "inconclusive"),  # no interval
    ],
)
def test_advantage_verdict(low, high, margin, verdict):
    assert advantage_verdict({"diff": 0.0, "low": low, "high": high}, margin) == verdict
    assert interval_verdict({"diff": 0.0, "low": low, "high": high}, margin, "advantage") == verdict


@pytest.mark.parametrize(
    "low, high, verdict",
    [(-0.005, 0.005, "supported"), (0.02, 0.03, "refuted"), (-0.03, -0.02, "refuted"), (-0.02, 0.005, "inconclusive")],
)
def test_equivalence_verdict(low, high, verdict):
    assert equivalence_verdict({"diff": 0.0, "low": low, "high": high}, 0.01) == verdict
    with pytest.raises(ValueError, match="unknown test"):
        interval_verdict({"diff": 0.0, "low": low, "high": high}, 0.01, "superiority")


def test_first_crossing_is_the_first_step_at_the_target_or_none_when_censored():
    curve = [(30, 0.95), (10, 0.80), (20, 0.90), (40, 0.97)]  # unordered on purpose
    assert first_crossing(curve, 0.90) == 20.0
    assert first_crossing(curve, 0.99) is None
    assert first_crossing([(5, 2.0), (10, 0.4)], 0.5, higher_is_better=False) == 10.0


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    values = [0.91, 0.93, 0.92, 0.95, 0.90, 0.94]
    ci = bootstrap_ci(values, seed=1)
    assert ci == bootstrap_ci(values, seed=1)  # reproducible
    assert ci["mean"] == pytest.approx(0.925) and ci["low"] < ci["mean"] < ci["high"]
    assert math.isnan(bootstrap_ci([0.5, 0.5])["low"])


def test_median_time_to_target_counts_censored_runs_instead_of_dropping_them():
    # Reached at 10, 20, 30; two runs stopped at 40 without reaching it: the median is 30, not 20.
    assert median_time_to_target([10, 20, 30, None, None], [40] * 5) == 30.0
    assert median_time_to_target([10, None, None], [40] * 3) == math.inf  # most never get there
    assert median_time_to_target([None, None], [40, 40]) == math.inf
    assert median_time_to_target([5, 7, 9], [40] * 3) == 7.0  # nothing censored: the plain median


def test_holm_adjusts_step_down_and_keeps_the_order():
    # m = 3: sorted p (0.01, 0.02, 0.04) -> 0.03, max(0.03, 0.04) = 0.04, max(0.04, 0.04) = 0.04
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
