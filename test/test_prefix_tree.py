"""Prefix tree of kept-layer sequences: counts, walk plan, memory bound."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comflp_espnet.prefix_tree import DROP, FORWARD, OUTPUT, PrefixTree, kept_sequence


def simulate(tree: PrefixTree):
    """Run a plan over symbolic states (the layer path of each slot).

    Checks the slot discipline (write only empty slots, read/drop only full
    ones) and returns (paths output per candidate, forwards, max live states).
    """
    slots = {0: ()}  # depth -> layer path of the state held there
    outputs = {}
    forwards = []
    most = 1
    for step in tree.plan():
        if step.op == FORWARD:
            assert step.depth - 1 in slots, f"input slot {step.depth - 1} empty: {step}"
            assert step.depth not in slots, f"slot {step.depth} overwritten: {step}"
            parent_path = slots[step.depth - 1]
            assert step.parent_layer == (parent_path[-1] if parent_path else 0)
            slots[step.depth] = parent_path + (step.layer,)
            forwards.append(slots[step.depth])
            most = max(most, len(slots))
        elif step.op == OUTPUT:
            assert step.depth in slots
            for c in step.candidates:
                assert c not in outputs, f"candidate {c} output twice"
                outputs[c] = slots[step.depth]
        elif step.op == DROP:
            assert step.depth in slots
            del slots[step.depth]
        else:
            raise AssertionError(step)
    assert not slots, f"states never dropped: {slots}"
    return outputs, forwards, most


def test_kept_sequence():
    assert kept_sequence([3, 5], 6) == (1, 2, 4, 6)
    assert kept_sequence([], 3) == (1, 2, 3)
    with pytest.raises(ValueError, match="out of range"):
        kept_sequence([7], 6)
    with pytest.raises(ValueError, match="more than once"):
        kept_sequence([2, 2], 6)
    with pytest.raises(ValueError, match="keep at least one"):
        kept_sequence([1, 2], 2)


def test_counts_hand_checked():
    # L = 4: the original, and each of layers 3, 2, 1 pruned.
    tree = PrefixTree.from_pruned([[], [3], [2], [1]], 4)
    # Edges: 1, 1-2, 1-2-3, 1-2-3-4, 1-2-4, 1-3, 1-3-4, 2, 2-3, 2-3-4.
    assert tree.num_edges == 10
    assert tree.num_forwards_unshared == 4 + 3 + 3 + 3
    assert tree.max_depth == 4
    # The full path 1-2-3-4 holds root, 1, 1-2 (has child 4 left), 1-2-3, 1-2-3-4.
    assert tree.max_live_states == 5


def test_plan_hand_checked():
    tree = PrefixTree([(1, 2), (1, 3), (2,)])
    ops = [(s.op, s.depth, s.layer, s.candidates) for s in tree.plan()]
    assert ops == [
        (FORWARD, 1, 1, ()),           # h after layer 1
        (FORWARD, 2, 2, ()),           # 1-2
        (OUTPUT, 2, 0, (0,)),
        (DROP, 2, 0, ()),
        (FORWARD, 2, 3, ()),           # 1-3: last child of node 1
        (DROP, 1, 0, ()),
        (OUTPUT, 2, 0, (1,)),
        (DROP, 2, 0, ()),
        (FORWARD, 1, 2, ()),           # 2: last child of the root
        (DROP, 0, 0, ()),
        (OUTPUT, 1, 0, (2,)),
        (DROP, 1, 0, ()),
    ]
    assert tree.num_edges == 4


def test_shared_identical_and_prefix_candidates():
    # Equal sequences share a node; a candidate may end inside another's path.
    tree = PrefixTree([(1, 2, 3), (1, 2), (1, 2, 3)])
    assert tree.num_edges == 3
    outputs, forwards, _ = simulate(tree)
    assert outputs == {0: (1, 2, 3), 1: (1, 2), 2: (1, 2, 3)}
    outs = [s for s in tree.plan() if s.op == OUTPUT]
    assert [s.candidates for s in outs] == [(1,), (0, 2)]


def test_bad_input():
    with pytest.raises(ValueError, match="keeps no layer"):
        PrefixTree([(1,), ()])
    with pytest.raises(ValueError, match="candidate 1: .*out of range"):
        PrefixTree.from_pruned([[1], [9]], 4)
    with pytest.raises(ValueError, match=">= 1"):
        PrefixTree([(0, 1)])


def test_all_subsets_of_size_k_forward_count():
    # Every k-subset of L layers pruned: the trie holds every prefix of a kept
    # sequence of length L-k, i.e. the increasing sequences of length d whose
    # last element leaves room for the rest.
    L, k = 6, 3
    pruned = list(itertools.combinations(range(1, L + 1), k))
    tree = PrefixTree.from_pruned(pruned, L)
    prefixes = set()
    for p in pruned:
        kept = kept_sequence(p, L)
        prefixes.update(kept[:d] for d in range(1, len(kept) + 1))
    assert tree.num_edges == len(prefixes)
    assert tree.num_forwards_unshared == len(pruned) * (L - k)


@st.composite
def pruned_sets(draw):
    num_layers = draw(st.integers(1, 10))
    sets = draw(
        st.lists(
            st.sets(st.integers(1, num_layers), max_size=num_layers - 1),
            min_size=1, max_size=30,
        )
    )
    return num_layers, [sorted(s) for s in sets]


@settings(max_examples=200, deadline=None)
@given(pruned_sets())
def test_walk_properties(case):
    num_layers, sets = case
    tree = PrefixTree.from_pruned(sets, num_layers)
    outputs, forwards, most = simulate(tree)
    # Every candidate is output once, at the end of its own kept sequence.
    assert set(outputs) == set(range(len(sets)))
    for i, pruned in enumerate(sets):
        assert outputs[i] == kept_sequence(pruned, num_layers)
    # Each trie edge (distinct non-empty prefix) is run exactly once.
    prefixes = {seq[:d] for seq in tree.sequences for d in range(1, len(seq) + 1)}
    assert len(forwards) == len(set(forwards)) == tree.num_edges == len(prefixes)
    assert set(forwards) == prefixes
    # Bounded memory: at most one state per depth, as the plan predicts.
    assert most == tree.max_live_states <= tree.max_depth + 1
    assert tree.num_edges <= tree.num_forwards_unshared


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=6), min_size=1, max_size=12))
def test_walk_properties_any_sequences(seqs):
    # Not only increasing sequences: the trie works for any layer order.
    tree = PrefixTree(seqs)
    outputs, forwards, _ = simulate(tree)
    assert [outputs[i] for i in range(len(seqs))] == [tuple(s) for s in seqs]
    assert len(forwards) == len(set(forwards)) == tree.num_edges
