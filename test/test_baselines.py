"""Layer-pruning baselines: drop_last, random, block influence, angular distance."""

import numpy as np
import pytest

from comflp_espnet.baselines import (
    adjacent_cosines,
    angular_proposal,
    bi_proposal,
    drop_last,
    random_proposals,
)
from comflp_espnet.measures import correlation_matrix


def test_drop_last_removes_the_top_removable_layers():
    assert drop_last(12, 4)[0].pruned == (9, 10, 11, 12)
    assert drop_last(12, 4, keep_last=True)[0].pruned == (8, 9, 10, 11)
    assert drop_last(12, 3, protect=(11,))[0].pruned == (9, 10, 12)
    assert drop_last(12, 4)[0].score is None
    with pytest.raises(ValueError, match="max_run"):
        drop_last(12, 4, max_run=2)


def test_random_proposals_are_distinct_seeded_and_constrained():
    constraints = dict(keep_first=True, keep_last=True, protect=(5,), max_run=2)
    first = random_proposals(24, 8, 20, seed=3, **constraints)
    again = random_proposals(24, 8, 20, seed=3, **constraints)
    other = random_proposals(24, 8, 20, seed=4, **constraints)
    assert [p.pruned for p in first] == [p.pruned for p in again]
    assert [p.pruned for p in first] != [p.pruned for p in other]
    assert len({p.pruned for p in first}) == 20
    for proposal in first:
        assert len(proposal.pruned) == 8
        assert not {1, 5, 24} & set(proposal.pruned)
        assert all(b - a + 1 <= 2 for a, b in proposal.runs)


def test_random_proposals_large_space_and_small_space():
    big = random_proposals(96, 48, 5, seed=0)  # drawn by rejection, not enumerated
    assert len({p.pruned for p in big}) == 5 and all(len(p.pruned) == 48 for p in big)
    # only C(4, 2) = 6 sets exist: all of them, once each
    small = random_proposals(4, 2, 10, seed=0)
    assert sorted(p.pruned for p in small) == [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
    with pytest.raises(ValueError):
        random_proposals(4, 2, 0)


def test_bi_removes_layers_that_change_their_input_least():
    cosines = [0.2, 0.95, 0.5, 0.99, 0.95, 0.1]
    proposal = bi_proposal(cosines, 3)[0]
    assert proposal.pruned == (2, 4, 5)  # tie between layers 2 and 5 resolved towards the lower layer first
    assert proposal.score == pytest.approx((0.95 + 0.99 + 0.95) / 3)
    assert bi_proposal(cosines, 2)[0].pruned == (2, 4)
    assert bi_proposal(cosines, 2, protect=(4,))[0].pruned == (2, 5)
    with pytest.raises(ValueError, match="max_run"):
        bi_proposal(cosines, 3, max_run=1)
    with pytest.raises(ValueError):
        bi_proposal([0.5, np.nan, 0.2], 1)


def test_bi_from_states_finds_identity_layers():
    rng = np.random.default_rng(0)
    states = [rng.normal(size=(20, 8))]
    for layer in range(1, 7):
        # layers 2 and 5 pass their input through unchanged
        states.append(states[-1] if layer in (2, 5) else states[-1] + rng.normal(size=(20, 8)))
    cosines = adjacent_cosines(correlation_matrix(states, "cosine"))
    assert cosines.shape == (6,)
    assert bi_proposal(cosines, 2)[0].pruned == (2, 5)


def test_angular_picks_the_block_with_closest_ends():
    rng = np.random.default_rng(1)
    states = [rng.normal(size=(30, 8))]
    for layer in range(1, 9):
        states.append(states[-1] + rng.normal(size=(30, 8)))
    states[6] = states[3] + 1e-3 * rng.normal(size=(30, 8))  # h_3 ~ h_6: block 4..6 is removable
    angular = correlation_matrix(states, "angular")
    found = angular_proposal(angular, 3, topk=4)
    assert found[0].pruned == (4, 5, 6)
    assert found[0].score == pytest.approx(angular[3, 6])
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)
    assert all(len(p.runs) == 1 and len(p.pruned) == 3 for p in found)
    assert (4, 5, 6) not in [p.pruned for p in angular_proposal(angular, 3, topk=6, protect=(5,))]
    with pytest.raises(ValueError, match="max_run"):
        angular_proposal(angular, 3, max_run=2)
    with pytest.raises(ValueError, match="consecutive"):
        angular_proposal(angular, 5, protect=(4,), keep_last=True)
