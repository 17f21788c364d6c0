"""The depths a bracketing sweep decodes (comflp_espnet.bracket): where it starts from the proxy,
where it goes from the decoded depths, and that, run to the end on error curves whose answer is
known, it finds the deepest depth within the tolerance while decoding few depths."""

import pytest

from comflp_espnet.bracket import next_depth, start_depths

DEPTHS = list(range(1, 12))


def test_start_at_the_deepest_depth_the_proxy_puts_within_and_the_next_deeper():
    guess = {k: k <= 4 for k in DEPTHS}
    assert start_depths(DEPTHS, guess) == [4, 5]


def test_start_at_the_shallowest_depth_when_the_proxy_puts_none_within():
    assert start_depths(DEPTHS, {k: False for k in DEPTHS}) == [1, 2]


def test_start_at_the_deepest_depth_alone_when_the_proxy_puts_all_within():
    assert start_depths(DEPTHS, {k: True for k in DEPTHS}) == [11]


def test_without_a_proxy_guess_start_in_the_middle():
    assert start_depths(DEPTHS, {k: None for k in DEPTHS}) == [6, 7]
    assert start_depths([2, 4, 6, 8], {}) == [4, 6]


def test_depths_need_not_be_consecutive_or_sorted():
    assert start_depths([8, 2, 6, 4], {2: True, 4: True, 6: False, 8: False}) == [4, 6]


@pytest.mark.parametrize("within, expected", [
    ({4: True, 5: False}, None),             # bracketed: 4 is the answer
    ({4: True, 5: True}, 6),                 # both within: go deeper
    ({4: False, 5: False}, 3),               # both outside: go shallower
    ({1: False, 2: False}, None),            # the shallowest is outside: nothing qualifies
    ({11: True}, None),                      # the deepest depth is within
    ({3: True, 4: False, 5: False}, None),
    ({3: False, 4: False, 5: False}, 2),
])
def test_next_depth(within, expected):
    assert next_depth(DEPTHS, within) == expected


def simulate(depths, real_error, proxy_error, original, tolerance):
    """Run the search to the end; (answer, decoded depths in order)."""
    guess = {k: proxy_error[k] - original["proxy"] <= tolerance for k in depths}
    planned = start_depths(depths, guess)
    while True:
        within = {k: real_error[k] - original["real"] <= tolerance for k in planned}
        n = next_depth(depths, within)
        if n is None:
            inside = [k for k, ok in within.items() if ok]
            return (max(inside) if inside else None), planned
        planned.append(n)


# A monotone curve like the an4_synth model's sweep (fine-search CER of each depth's winner).
REAL = dict(zip(DEPTHS, [5.96, 6.72, 7.57, 7.96, 9.40, 11.33, 12.95, 16.53, 21.90, 27.51, 40.96]))
PROXY = dict(zip(DEPTHS, [12.30, 13.01, 13.77, 15.09, 17.18, 19.03, 22.61, 25.95, 32.80, 40.84, 52.41]))
ORIGINAL = {"real": 5.61, "proxy": 11.9}


@pytest.mark.parametrize("tolerance", [0.0, 0.3, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0, 40.0])
def test_the_search_finds_the_deepest_depth_within_the_tolerance(tolerance):
    answer, decoded = simulate(DEPTHS, REAL, PROXY, ORIGINAL, tolerance)
    inside = [k for k in DEPTHS if REAL[k] - ORIGINAL["real"] <= tolerance]
    assert answer == (max(inside) if inside else None)
    # The answer is bracketed: its deeper neighbour was decoded (unless it is the deepest depth).
    if answer is not None and answer < max(DEPTHS):
        assert answer + 1 in decoded
    assert len(decoded) == len(set(decoded))
    # The proxy is on the real scale here, so the start is at most one depth off.
    assert len(decoded) <= 3


def test_a_misleading_proxy_costs_decodes_not_the_answer():
    pessimistic = {k: v + 10 for k, v in PROXY.items()}  # starts at the shallowest depth
    answer, decoded = simulate(DEPTHS, REAL, pessimistic, ORIGINAL, 4.0)
    assert answer == 5
    assert decoded == [1, 2, 3, 4, 5, 6]
