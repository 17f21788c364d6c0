"""Bootstrap intervals of error rates (comflp_espnet.bootstrap)."""
import numpy as np
import pytest

from comflp_espnet.bootstrap import error_rate_interval, paired_difference


def _corpus(num_utts, rate, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, 40, size=num_utts)
    errors = rng.binomial(lengths, rate)
    return errors, lengths


def test_interval_contains_the_estimate_and_is_reproducible():
    errors, lengths = _corpus(300, 0.2, 1)
    iv = error_rate_interval(errors, lengths, seed=3)
    assert iv.estimate == pytest.approx(100.0 * errors.sum() / lengths.sum())
    assert iv.low < iv.estimate < iv.high
    assert error_rate_interval(errors, lengths, seed=3) == iv
    assert error_rate_interval(errors, lengths, seed=4) != iv


def test_interval_width_matches_the_binomial_standard_error():
    # Independent token errors: the rate's standard error is sqrt(p(1-p)/N_tokens).
    errors, lengths = _corpus(2000, 0.2, 2)
    iv = error_rate_interval(errors, lengths, num_samples=2000)
    p = errors.sum() / lengths.sum()
    expected = 2 * 1.96 * 100.0 * np.sqrt(p * (1 - p) / lengths.sum())
    assert (iv.high - iv.low) == pytest.approx(expected, rel=0.15)


def test_interval_narrows_with_more_utterances():
    small = error_rate_interval(*_corpus(100, 0.2, 5))
    large = error_rate_interval(*_corpus(1600, 0.2, 5))
    assert (large.high - large.low) < 0.5 * (small.high - small.low)


def test_no_errors_gives_a_zero_width_interval():
    iv = error_rate_interval([0, 0, 0], [5, 6, 7])
    assert (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0)


def test_paired_difference_of_a_system_with_itself_is_zero():
    errors, lengths = _corpus(200, 0.3, 6)
    cmp = paired_difference(errors, errors, lengths)
    assert (cmp.difference, cmp.low, cmp.high) == (0.0, 0.0, 0.0)
    # Every resample is a tie: neither system is the better one.
    assert cmp.prob_a_better == 0.5


def test_paired_difference_sees_a_consistent_small_gain_that_unpaired_intervals_miss():
    # A makes one error fewer than B on a third of the utterances: a small gain that the two
    # unpaired intervals overlap on, but that every paired resample shows.
    errors_b, lengths = _corpus(300, 0.25, 7)
    errors_a = errors_b.copy()
    errors_a[::3] = np.maximum(errors_a[::3] - 1, 0)
    ia = error_rate_interval(errors_a, lengths)
    ib = error_rate_interval(errors_b, lengths)
    assert ia.high > ib.low  # overlapping unpaired intervals
    cmp = paired_difference(errors_a, errors_b, lengths)
    assert cmp.difference < 0
    assert cmp.high < 0
    assert cmp.prob_a_better > 0.99
    swapped = paired_difference(errors_b, errors_a, lengths)
    assert swapped.difference == pytest.approx(-cmp.difference)
    assert swapped.prob_a_better < 0.01


def test_paired_difference_of_unrelated_equal_systems_straddles_zero():
    errors_a, lengths = _corpus(300, 0.2, 8)
    rng = np.random.default_rng(9)
    errors_b = rng.binomial(lengths, 0.2)
    cmp = paired_difference(errors_a, errors_b, lengths)
    assert cmp.low < 0 < cmp.high
    assert 0.0 < cmp.prob_a_better < 1.0


@pytest.mark.parametrize(
    "errors, lengths, message",
    [
        ([1, 2], [3], "equal 1-d shapes"),
        ([], [], "no utterances"),
        ([0, 0], [0, 0], "references are empty"),
        ([-1, 2], [3, 3], "non-negative"),
    ],
)
def test_bad_counts_are_rejected(errors, lengths, message):
    with pytest.raises(ValueError, match=message):
        error_rate_interval(errors, lengths)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="confidence"):
        error_rate_interval([1], [3], confidence=1.0)
    with pytest.raises(ValueError, match="num_samples"):
        error_rate_interval([1], [3], num_samples=0)
