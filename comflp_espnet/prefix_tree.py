"""Prefix tree (trie) of the kept-layer sequences of pruning candidates.

A candidate is the original encoder with some layers skipped; it runs its kept
layers in order, e.g. ``(1, 2, 4, 6)`` for L = 6 with layers 3 and 5 pruned.
Candidates that keep the same first layers compute identical hidden states up
to their first difference, so the states of a batch for all candidates are
computed once per trie edge: an edge is one layer forward, and the number of
edges is the number of layer forwards a walk does (against the sum of the
sequence lengths without sharing).

The walk is depth first. Its plan is a list of steps over state slots indexed
by trie depth (slot 0 holds the encoder input h_0, slot d the state after d
layers of the current path)::

    Step("forward", depth=d, layer=l, node=n, parent_layer=p)
        run layer l on the state in slot d-1 (the output of layer p, 0 for
        the input layer) and put the result in slot d (node n of the trie)
    Step("output", depth=d, node=n, candidates=(i, j, ...))
        the state in slot d is the last layer output of candidates i, j, ...
        (indices into the sequences the tree was built from)
    Step("drop", depth=d, node=n)
        slot d is no longer needed and may be freed

A slot is written only when empty and read only while full, and a state is
dropped as soon as its node has no more children to run and no more outputs,
so a walk holds at most one state per depth (at most ``max_depth + 1`` states
in all, ``max_live_states`` exactly). Children are visited in increasing layer
order, so the plan depends only on the set of sequences and their order.

Pure Python: nothing here knows about tensors or ESPnet.
"""

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

FORWARD = "forward"
OUTPUT = "output"
DROP = "drop"


@dataclass(frozen=True)
class Step:
    """One step of a walk plan (see the module docstring)."""

    op: str
    depth: int
    node: int
    layer: int = 0
    parent_layer: int = 0
    candidates: Tuple[int, ...] = ()


@dataclass
class _Node:
    layer: int  # layer id of the edge into this node (0 for the root)
    depth: int
    parent: Optional[int]
    children: Dict[int, int] = field(default_factory=dict)  # layer id -> node id
    ends: List[int] = field(default_factory=list)  # candidates ending here


def kept_sequence(pruned: Iterable[int], num_layers: int) -> Tuple[int, ...]:
    """Kept layer ids (1-based, increasing) of ``num_layers`` minus ``pruned``.

    Raises ValueError for ids out of 1..num_layers, repeated ids, or pruning
    every layer.
    """
    if isinstance(num_layers, bool) or int(num_layers) != num_layers or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    ids = []
    for layer in pruned:
        if isinstance(layer, bool) or int(layer) != layer:
            raise ValueError(f"layer id {layer!r} is not an integer")
        ids.append(int(layer))
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"layer id(s) {repeated} given more than once")
    bad = [i for i in ids if not 1 <= i <= num_layers]
    if bad:
        raise ValueError(
            f"layer id(s) {bad} out of range: the encoder has {num_layers} layers, "
            f"numbered 1..{num_layers}"
        )
    removed = set(ids)
    kept = tuple(i for i in range(1, num_layers + 1) if i not in removed)
    if not kept:
        raise ValueError(f"cannot prune all {num_layers} layers; keep at least one")
    return kept


class PrefixTree:
    """The trie of candidates' kept-layer sequences and its depth-first walk.

    ``sequences[i]`` is candidate i's kept layer ids in the order they run
    (non-empty, ids >= 1). Equal sequences share a node and are output together.
    """

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.sequences: List[Tuple[int, ...]] = []
        self._nodes: List[_Node] = [_Node(layer=0, depth=0, parent=None)]
        for index, sequence in enumerate(sequences):
            seq = tuple(sequence)
            if not seq:
                raise ValueError(f"candidate {index} keeps no layer")
            for layer in seq:
                if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
                    raise ValueError(
                        f"candidate {index}: layer ids must be integers >= 1, got {layer!r}"
                    )
            self.sequences.append(seq)
            node = 0
            for layer in seq:
                child = self._nodes[node].children.get(layer)
                if child is None:
                    child = len(self._nodes)
                    self._nodes.append(
                        _Node(layer=layer, depth=self._nodes[node].depth + 1, parent=node)
                    )
                    self._nodes[node].children[layer] = child
                node = child
            self._nodes[node].ends.append(index)
        self._plan: Optional[List[Step]] = None

    @classmethod
    def from_pruned(
        cls, pruned_sets: Sequence[Iterable[int]], num_layers: int
    ) -> "PrefixTree":
        """The tree of candidates given as pruned layer ids of an L-layer encoder."""
        sequences = []
        for index, pruned in enumerate(pruned_sets):
            try:
                sequences.append(kept_sequence(pruned, num_layers))
            except ValueError as e:
                raise ValueError(f"candidate {index}: {e}") from None
        return cls(sequences)

    # sizes ---------------------------------------------------------------
    @property
    def num_candidates(self) -> int:
        return len(self.sequences)

    @property
    def num_nodes(self) -> int:
        """Nodes including the root."""
        return len(self._nodes)

    @property
    def num_edges(self) -> int:
        """Layer forwards of one walk (per batch): one per trie edge."""
        return len(self._nodes) - 1

    @property
    def num_forwards_unshared(self) -> int:
        """Layer forwards without prefix sharing: the sum of sequence lengths."""
        return sum(len(s) for s in self.sequences)

    @property
    def max_depth(self) -> int:
        return max((n.depth for n in self._nodes), default=0)

    @property
    def max_live_states(self) -> int:
        """Most states held at once during a walk (the root's included)."""
        live = most = 1  # the root's state
        for step in self.plan():
            if step.op == FORWARD:
                live += 1
                most = max(most, live)
            elif step.op == DROP:
                live -= 1
        return most

    def node_layer(self, node: int) -> int:
        return self._nodes[node].layer

    def node_depth(self, node: int) -> int:
        return self._nodes[node].depth

    def node_path(self, node: int) -> Tuple[int, ...]:
        """Layer ids from the root to ``node``."""
        path = []
        while node:
            path.append(self._nodes[node].layer)
            node = self._nodes[node].parent
        return tuple(reversed(path))

    def has_children(self, node: int) -> bool:
        return bool(self._nodes[node].children)

    # walk ------------------------------------------------------------------
    def plan(self) -> List[Step]:
        """The depth-first walk (computed once, then cached)."""
        if self._plan is None:
            self._plan = self._make_plan()
        return list(self._plan)

    def _make_plan(self) -> List[Step]:
        steps: List[Step] = []
        # Explicit stack (no recursion limit for deep encoders): entries are
        # (node, sorted child ids still to visit).
        root = self._nodes[0]
        if root.ends:  # impossible through __init__ (empty sequences refused)
            steps.append(Step(OUTPUT, 0, 0, candidates=tuple(root.ends)))
        stack = [(0, self._sorted_children(0))]
        while stack:
            node, pending = stack[-1]
            if not pending:
                stack.pop()
                continue
            child = pending.pop(0)
            n = self._nodes[child]
            steps.append(
                Step(FORWARD, n.depth, child, layer=n.layer,
                     parent_layer=self._nodes[node].layer)
            )
            if not pending:  # the parent's last child has read its state
                steps.append(Step(DROP, self._nodes[node].depth, node))
            if n.ends:
                steps.append(Step(OUTPUT, n.depth, child, candidates=tuple(n.ends)))
            children = self._sorted_children(child)
            if children:
                stack.append((child, children))
            else:
                steps.append(Step(DROP, n.depth, child))
        return steps

    def _sorted_children(self, node: int) -> List[int]:
        children = self._nodes[node].children
        return [children[layer] for layer in sorted(children)]

    def describe(self) -> str:
        """One line: candidates, forwards shared vs unshared, depth, live states."""
        return (
            f"{self.num_candidates} candidate(s), {self.num_edges} layer forward(s) per "
            f"batch with prefix sharing vs {self.num_forwards_unshared} without, "
            f"depth {self.max_depth}, at most {self.max_live_states} state(s) held"
        )
