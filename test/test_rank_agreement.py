"""Kendall tau-b between two score lists."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comflp_espnet.rank_agreement import kendall_tau_b


def test_hand_checked():
    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # One swapped pair of 6: (5 - 1) / 6.
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # Ties: x = 1,1,2 y = 1,2,3: pairs (1,2) tied in x; (1,3), (2,3) concordant.
    # tau-b = 2 / sqrt((3 - 1) * (3 - 0)).
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))


def test_degenerate():
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))
    assert math.isnan(kendall_tau_b([1], [2]))
    assert math.isnan(kendall_tau_b([], []))
    with pytest.raises(ValueError, match="length"):
        kendall_tau_b([1, 2], [1])
    with pytest.raises(ValueError, match="nan"):
        kendall_tau_b([1, float("nan")], [1, 2])


scores = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=40)


@settings(max_examples=200, deadline=None)
@given(scores)
def test_matches_scipy(pairs):
    from scipy.stats import kendalltau

    x, y = [p[0] for p in pairs], [p[1] for p in pairs]
    ours = kendall_tau_b(x, y)
    theirs = kendalltau(x, y, variant="b").statistic
    if math.isnan(theirs):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(theirs, abs=1e-12)
    # Symmetric, and reversing one order flips the sign.
    assert ours == pytest.approx(kendall_tau_b(y, x), nan_ok=True)
    assert -ours == pytest.approx(kendall_tau_b(x, [-v for v in y]), nan_ok=True)
