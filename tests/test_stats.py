"""optbench.stats on constructed data with known answers: the one policy every claim study follows."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from optbench.stats import (
    INCONCLUSIVE,
    NO_SPREAD,
    REFUTED,
    SUPPORTED,
    TIE_EQUIVALENT,
    TIE_NO_ADVANTAGE,
    advantage_ci,
    bootstrap_ci,
    censored_claim_test,
    censoring_guard,
    claim_test,
    decide,
    detectable_effect,
    first_crossing,
    holm,
    mean_ci,
    median_time_to_target,
    paired_ci,
    welch_ci,
)

pytestmark = pytest.mark.unit


# --- intervals ----------------------------------------------------------------------------------------------


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


def test_a_constant_sample_has_no_interval_not_a_zero_width_one():
    ci = mean_ci([0.9, 0.9, 0.9, 0.9, 0.9])
    assert ci["mean"] == pytest.approx(0.9) and ci["n"] == 5 and math.isnan(ci["low"]) and math.isnan(ci["high"])
    assert math.isnan(welch_ci([1.0, 1.0], [0.5, 0.5])["low"])
    assert math.isnan(paired_ci([1.0, 2.0], [0.5, 1.5])["low"])  # constant difference 0.5


def test_an_accuracy_interval_is_clipped_to_zero_one_and_a_difference_to_minus_one_one():
    # mean 0.99, sd 0.01, n 3: the t-interval reaches 0.99 + 4.30 * 0.01 / sqrt(3) = 1.0148 before clipping
    raw = mean_ci([0.98, 0.99, 1.0])
    assert raw["high"] > 1.0
    clipped = mean_ci([0.98, 0.99, 1.0], bounds=(0.0, 1.0))
    assert clipped["high"] == 1.0 and clipped["low"] == raw["low"] and clipped["mean"] == raw["mean"]
    loss = mean_ci([0.001, 0.002, 0.01], bounds=(0.0, math.inf))  # a loss interval never goes below 0
    assert loss["low"] == 0.0 and mean_ci([0.001, 0.002, 0.01])["low"] < 0
    diff = welch_ci([0.95, 1.0], [0.0, 0.1], bounds=(0.0, 1.0))  # a difference of accuracies: within [-1, 1]
    assert diff["low"] >= -1.0 and diff["high"] == 1.0
    assert bootstrap_ci([0.97, 0.99, 1.0, 1.0, 0.98], bounds=(0.0, 1.0))["high"] <= 1.0


def test_a_paired_interval_is_narrower_than_welch_on_correlated_data():
    # The seed moves both sides alike (0.5 ... 0.9); the advantage is 0.1 with a little noise of its own.
    a = [0.50, 0.70, 0.90, 0.60, 0.80]
    b = [0.41, 0.59, 0.80, 0.51, 0.70]
    paired, welch = paired_ci(a, b), welch_ci(a, b)
    assert paired["diff"] == pytest.approx(welch["diff"]) == pytest.approx(0.098)
    assert paired["high"] - paired["low"] < (welch["high"] - welch["low"]) / 10
    assert paired["low"] > 0 > welch["low"]  # only pairing sees the advantage
    assert claim_test(a, b)["verdict"] == SUPPORTED and claim_test(a, b, paired=False)["verdict"] == INCONCLUSIVE
    with pytest.raises(ValueError, match="equal lengths"):
        paired_ci([1.0, 2.0], [1.0])


def test_welch_interval_matches_the_known_answer():
    # Two samples with means 2 and 5, variances 1 and 4, n 3 each: Welch df = 2.94, t_{0.975} = 3.1995...
    ci = welch_ci([1.0, 2.0, 3.0], [3.0, 5.0, 7.0])
    se = math.sqrt(1 / 3 + 4 / 3)
    assert ci["diff"] == -3.0
    assert (ci["high"] - ci["low"]) / 2 / se == pytest.approx(3.2, abs=0.05)


def test_advantage_ci_flips_sign_when_lower_is_better():
    steps_fast, steps_slow = [10.0, 12.0, 11.0], [20.0, 22.0, 21.5]
    assert advantage_ci(steps_fast, steps_slow, True, 0.95, paired=True)["diff"] == pytest.approx(10.1666, abs=1e-3)
    assert advantage_ci(steps_fast, steps_slow, False, 0.95, paired=False)["diff"] == pytest.approx(-10.1666, abs=1e-3)


# --- claims -------------------------------------------------------------------------------------------------


def test_an_advantage_claim_has_the_one_sided_p_value_against_its_margin():
    # Differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3). Against margin 0.5: t = 1.5 * sqrt(3) = 2.598, df 2.
    judged = claim_test([2.0, 4.0, 6.0], [1.0, 2.0, 3.0], margin=0.5)
    t = 1.5 * math.sqrt(3)
    assert judged["p_value"] == pytest.approx(scipy_stats.t.sf(t, 2))
    assert judged["p_opposite"] == pytest.approx(scipy_stats.t.cdf(t, 2))
    assert judged["advantage"]["diff"] == 2.0 and judged["method"].startswith("paired")
    lower = claim_test([1.0, 2.0, 3.0], [2.0, 4.0, 6.0], margin=0.5, lower_is_better=True)  # fewer is better
    assert lower["p_value"] == pytest.approx(judged["p_value"]) and lower["advantage"]["diff"] == 2.0


def test_an_equivalence_claim_takes_the_larger_of_the_two_one_sided_p_values():
    a, b = [0.900, 0.905, 0.898, 0.902], [0.899, 0.903, 0.899, 0.900]
    d = [x - y for x, y in zip(a, b)]
    judged = claim_test(a, b, test="equivalence", margin=0.01)
    above = scipy_stats.ttest_1samp(d, -0.01, alternative="greater").pvalue
    below = scipy_stats.ttest_1samp(d, 0.01, alternative="less").pvalue
    assert judged["p_value"] == pytest.approx(max(above, below))
    assert judged["verdict"] == SUPPORTED  # the differences sit well inside +-0.01
    far = claim_test([x + 0.1 for x in a], b, test="equivalence", margin=0.01)
    assert far["verdict"] == REFUTED  # well outside: the data show them different


@pytest.mark.parametrize(
    "p, p_opposite, verdict",
    [(0.01, 0.99, SUPPORTED), (0.99, 0.01, REFUTED), (0.2, 0.8, INCONCLUSIVE), (0.06, 0.94, INCONCLUSIVE)],
)
def test_decide_supports_refutes_or_leaves_the_claim_open(p, p_opposite, verdict):
    assert decide(p, p_opposite, alpha=0.05) == verdict


def test_every_claim_rule_can_be_inconclusive():
    noisy = claim_test([0.5, 0.9, 0.6], [0.6, 0.5, 0.8])  # differences -0.1, 0.4, -0.2
    assert noisy["verdict"] == INCONCLUSIVE and 0.05 < noisy["p_value"] < 0.95
    assert claim_test([0.5], [0.4])["verdict"] == INCONCLUSIVE  # one seed: no interval
    assert claim_test([0.5, 0.9, 0.6], [0.6, 0.5, 0.8], test="equivalence", margin=0.01)["verdict"] == INCONCLUSIVE


def test_an_exact_tie_supports_an_equivalence_and_refutes_an_advantage_with_its_reason():
    same = [0.91, 0.93, 0.92]  # deterministic runs: identical on every seed
    tie = claim_test(same, same, test="equivalence", margin=0.01)
    assert (tie["verdict"], tie["reason"]) == (SUPPORTED, TIE_EQUIVALENT) and math.isnan(tie["p_value"])
    no_gain = claim_test(same, same)
    assert (no_gain["verdict"], no_gain["reason"]) == (REFUTED, TIE_NO_ADVANTAGE)
    shifted = claim_test([x + 0.01 for x in same], same)  # the same gain on every seed: no spread
    assert (shifted["verdict"], shifted["reason"]) == (INCONCLUSIVE, NO_SPREAD)
    assert math.isnan(shifted["advantage"]["low"])


def test_the_detectable_effect_is_the_t_quantiles_times_the_standard_error():
    # se 1, df 4, two-sided alpha 0.05, power 0.8: t_{0.975, 4} + t_{0.8, 4} = 2.776445 + 0.940965
    assert detectable_effect(1.0, 4, 0.95) == pytest.approx(3.717410, abs=1e-5)
    d = [0.01, 0.03, 0.02, 0.04, 0.00]  # sd 0.0158, n 5: se 0.00707
    judged = claim_test([x + 1 for x in d], [1.0] * 5)
    se = scipy_stats.tstd(d) / math.sqrt(5)
    assert judged["detectable_effect"] == pytest.approx(3.717410 * se, rel=1e-5)
    more_seeds = claim_test([x + 1 for x in d * 4], [1.0] * 20)  # the same spread, four times the seeds
    assert more_seeds["detectable_effect"] < judged["detectable_effect"] / 2


def test_holm_matches_the_textbook_example():
    # m = 4, p = (0.01, 0.04, 0.03, 0.005): sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> 0.06.
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]  # uncorrected, all four would pass
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


# --- time to target -----------------------------------------------------------------------------------------


def test_first_crossing_is_the_first_step_at_the_target_or_none_when_censored():
    curve = [(30, 0.95), (10, 0.80), (20, 0.90), (40, 0.97)]  # unordered on purpose
    assert first_crossing(curve, 0.90) == 20.0
    assert first_crossing(curve, 0.99) is None
    assert first_crossing([(5, 2.0), (10, 0.4)], 0.5, higher_is_better=False) == 10.0


def test_median_time_to_target_counts_censored_runs_instead_of_dropping_them():
    # Reached at 10, 20, 30; two runs stopped at 40 without reaching it: the median is 30, not 20.
    assert median_time_to_target([10, 20, 30, None, None], [40] * 5) == 30.0
    assert median_time_to_target([10, None, None], [40] * 3) == math.inf  # most never get there
    assert median_time_to_target([None, None], [40, 40]) == math.inf
    assert median_time_to_target([5, 7, 9], [40] * 3) == 7.0  # nothing censored: the plain median


def test_a_case_that_never_reaches_the_target_cannot_win_a_steps_claim_by_being_censored():
    # "never" stopped at 100 steps on every seed; "slow" reached the target at 150-190 steps in longer runs.
    # Counted as its total steps (100), "never" would look 70 steps faster; censored, it is slower.
    never, slow = [None] * 5, [150.0, 160.0, 170.0, 180.0, 190.0]
    judged = censored_claim_test(never, slow, [100] * 5, [200] * 5)
    assert judged["verdict"] == REFUTED and judged["p_opposite"] == pytest.approx(1 / 32)  # every seed against it
    assert judged["medians"] == [math.inf, 170.0] and judged["reached"] == [0, 5]
    assert judged["advantage"]["diff"] == -math.inf and math.isnan(judged["advantage"]["low"])
    assert censored_claim_test(slow, never, [200] * 5, [100] * 5)["verdict"] == SUPPORTED


def test_censored_time_claims_tie_and_stay_open_when_the_data_say_nothing():
    assert censored_claim_test([None] * 3, [None] * 3, [50] * 3, [50] * 3)["verdict"] == INCONCLUSIVE
    tie = censored_claim_test([10, 20, 30], [10, 20, 30], [50] * 3, [50] * 3)
    assert (tie["verdict"], tie["reason"]) == (REFUTED, TIE_NO_ADVANTAGE)
    mixed = censored_claim_test([10, None, 30, 12], [20, 15, None, 10], [50] * 4, [50] * 4)
    assert mixed["verdict"] == INCONCLUSIVE and "cannot give p below 0.0625" in mixed["power_note"]


def test_a_censored_side_cannot_carry_the_verdict_its_bound_would_fake():
    assert censoring_guard(SUPPORTED, "advantage", 1, 0) == INCONCLUSIVE  # the better side's times are bounds
    assert censoring_guard(REFUTED, "advantage", 0, 1) == INCONCLUSIVE
    assert censoring_guard(SUPPORTED, "advantage", 0, 2) == SUPPORTED  # the other side's bound only helps it
    assert censoring_guard(SUPPORTED, "equivalence", 1, 0) == INCONCLUSIVE


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    values = [0.91, 0.93, 0.92, 0.95, 0.90, 0.94]
    ci = bootstrap_ci(values, seed=1)
    assert ci == bootstrap_ci(values, seed=1)  # reproducible
    assert ci["mean"] == pytest.approx(0.925) and ci["low"] < ci["mean"] < ci["high"]
    assert math.isnan(bootstrap_ci([0.5, 0.5])["low"])
