"""Coarse search of CoMFLP: rank sets of encoder layers to remove by a correlation matrix.

An encoder with L layers has hidden states h_0 .. h_L and an (L+1) x (L+1) correlation matrix C. A proposal
removes a set P of k layers (1-based). P splits into maximal runs of consecutive layers [a, b]; removing the
run [a, b] joins h_{a-1} directly to layer b+1, so the run scores C[a-1][b] (how similar the state before
the run is to the state after it). The proposal's score aggregates its run scores:

    mean (default, the published CoMFLP objective):  score(P) = (1/r) sum_{runs} C[a-1][b]
    sum:                                            score(P) = sum_{runs} C[a-1][b]
    min (the weakest joint):                        score(P) = min_{runs} C[a-1][b]

Reported scores are computed in float64 from the matrix as given (only the upper triangle C[a-1][b],
a-1 < b, is read), summing runs from left to right, so every method reports bit-identical scores for a set.
Proposals are ranked by score (descending), ties by the sorted tuple of removed layers (ascending). To make
the ranking exact and identical across methods it uses the matrix rounded to a fixed-point grid with step
2^-(50 - 2 ceil(log2(k+1))) times the power of two bounding |C| (about 4e-12 for k = 48 and |C| <= 1): on
that grid sums are exact integers in float64 and distinct means stay distinct after division. Scores closer
than one grid step count as ties.

Methods (``METHODS``):

``exhaustive``
    Scores every allowed k-subset (vectorized in chunks); refuses above ``exhaustive_limit`` subsets.
``beam`` / ``greedy``
    The reference procedure: start from the empty set, extend every beam by one more allowed layer, drop
    duplicate sets, keep the best ``beam_size`` by their current score, repeat k times. Returns at most
    ``beam_size`` proposals. ``greedy`` is ``beam`` with ``beam_size=1``. Under ``max_run``, partial sets
    that cannot be completed are passed over.
``dp``
    The exact top K. A dynamic program from the right computes, for every position t (layer t-1 kept),
    number j of layers still to remove and number r of runs among them, the best achievable sum (or min)
    of run scores over layers t..L: O(L * max_run * k^2) with numpy over (j, r). That gives the exact best
    completion of any partial proposal, for the mean max_r (acc + g[t, j, r]) / (r_done + r). A best-first
    search over partial proposals (decided left to right; children: keep layer t, or remove a run
    t..t+m-1 and keep the layer after it) ordered by that bound pops complete proposals in ranking order.
    Partial proposals sort by their removed layers followed by t, which orders every subtree exactly as
    the tuples of the proposals inside it, so ties come out in the shared order too. As the bound is exact,
    only ancestors of returned proposals are expanded: O(K * L * max_run) after the table, ties included.

Constraints honoured by every method: ``keep_first`` / ``keep_last`` (never remove layer 1 / layer L),
``protect`` (layers never removed) and ``max_run`` (longest run of consecutive removed layers).
"""

import dataclasses
import heapq
import itertools
import logging
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

METHODS = ("dp", "beam", "greedy", "exhaustive")
AGGREGATES = ("mean", "sum", "min")

_SYMMETRY_RTOL = 1e-5
_SYMMETRY_ATOL = 1e-6
_EXHAUSTIVE_CHUNK = 1 << 16


def runs_of(pruned: Sequence[int]) -> List[Tuple[int, int]]:
    """Maximal runs of consecutive layers, e.g. (1, 2, 3, 6, 7, 9) -> [(1, 3), (6, 7), (9, 9)]."""
    runs: List[Tuple[int, int]] = []
    for layer in sorted(pruned):
        if runs and layer == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], layer)
        else:
            runs.append((layer, layer))
    return runs


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A set of encoder layers to remove (1-based ids) with its coarse score (None where undefined)."""

    pruned: Tuple[int, ...]
    num_layers: int
    score: Optional[float] = None

    def __post_init__(self):
        pruned = tuple(sorted(int(layer) for layer in self.pruned))
        if len(set(pruned)) != len(pruned):
            raise ValueError(f"pruned layers repeat: {self.pruned}")
        if pruned and (pruned[0] < 1 or pruned[-1] > self.num_layers):
            raise ValueError(f"pruned layers {pruned} outside 1..{self.num_layers}")
        object.__setattr__(self, "pruned", pruned)
        object.__setattr__(self, "num_layers", int(self.num_layers))
        if self.score is not None:
            object.__setattr__(self, "score", float(self.score))

    @property
    def kept(self) -> Tuple[int, ...]:
        removed = set(self.pruned)
        return tuple(layer for layer in range(1, self.num_layers + 1) if layer not in removed)

    @property
    def runs(self) -> List[Tuple[int, int]]:
        return runs_of(self.pruned)

    def to_dict(self) -> Dict:
        return {
            "pruned": list(self.pruned),
            "kept": list(self.kept),
            "runs": [list(run) for run in self.runs],
            "score": self.score,
            "num_layers": self.num_layers,
        }

    @classmethod
    def from_dict(cls, data: Dict, num_layers: Optional[int] = None) -> "Proposal":
        """Inverse of ``to_dict``; also reads proposals JSON items (num_layers from the argument or
        len(pruned) + len(kept))."""
        if "pruned" not in data:
            raise ValueError(f"proposal has no 'pruned' list: {data}")
        if data.get("num_layers") is not None:
            num_layers = data["num_layers"]
        elif num_layers is None:
            if "kept" not in data:
                raise ValueError("proposal needs 'num_layers' or 'kept' to know the number of layers")
            num_layers = len(data["pruned"]) + len(data["kept"])
        proposal = cls(tuple(data["pruned"]), num_layers, data.get("score"))
        if "kept" in data and list(data["kept"]) != list(proposal.kept):
            raise ValueError(f"proposal's kept {data['kept']} does not match pruned {list(proposal.pruned)}")
        return proposal


def check_corr(corr) -> np.ndarray:
    """The matrix as float64 after checking it is square, symmetric, finite and at least 3 x 3."""
    mat = np.asarray(corr, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"correlation matrix must be square (L+1) x (L+1), got shape {mat.shape}")
    if mat.shape[0] < 3:
        raise ValueError(f"correlation matrix must cover at least 2 layers (3 x 3), got {mat.shape}")
    if not np.all(np.isfinite(mat)):
        raise ValueError("correlation matrix contains NaN or infinite values")
    if not np.allclose(mat, mat.T, rtol=_SYMMETRY_RTOL, atol=_SYMMETRY_ATOL):
        worst = np.unravel_index(np.argmax(np.abs(mat - mat.T)), mat.shape)
        raise ValueError(
            f"correlation matrix is not symmetric: C[{worst[0]}][{worst[1]}] = {mat[worst]} but "
            f"C[{worst[1]}][{worst[0]}] = {mat[worst[::-1]]}"
        )
    return mat


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def prunable_layers(num_layers: int, keep_first=False, keep_last=False, protect: Iterable[int] = ()) -> List[int]:
    """Layers (1-based) that constraints allow to remove; checks the protect ids."""
    protected = set()
    for layer in protect:
        if not _is_int(layer) or not 1 <= layer <= num_layers:
            raise ValueError(f"protect: layer {layer!r} is not a layer id in 1..{num_layers}")
        protected.add(int(layer))
    if keep_first:
        protected.add(1)
    if keep_last:
        protected.add(num_layers)
    return [layer for layer in range(1, num_layers + 1) if layer not in protected]


def check_max_run(max_run) -> Optional[int]:
    if max_run is None:
        return None
    if not _is_int(max_run) or max_run < 1:
        raise ValueError(f"max_run must be an integer >= 1 (or None for no limit), got {max_run!r}")
    return int(max_run)


def check_num_prune(num_prune, num_layers: int) -> int:
    if not _is_int(num_prune) or not 1 <= num_prune < num_layers:
        raise ValueError(f"num_prune must be an integer in 1..{num_layers - 1} for {num_layers} layers, "
                         f"got {num_prune!r}")
    return int(num_prune)


def proposal_score(corr: np.ndarray, pruned: Sequence[int], aggregate: str = "mean") -> float:
    """Score of one set of removed layers (the computation shared by all methods: runs left to right)."""
    runs = runs_of(pruned)
    if aggregate == "min":
        return min(float(corr[a - 1, b]) for a, b in runs)
    total = 0.0
    for a, b in runs:
        total += float(corr[a - 1, b])
    return total / len(runs) if aggregate == "mean" else total


def ranking_grid(corr: np.ndarray, num_prune: int) -> np.ndarray:
    """The matrix on the fixed-point grid used for ranking (integers held in float64, see module docstring)."""
    largest = float(np.max(np.abs(corr)))
    exponent = math.ceil(math.log2(largest)) if largest > 0.0 else 0
    bits = 50 - 2 * math.ceil(math.log2(num_prune + 1)) - exponent
    return np.rint(np.ldexp(corr, bits))


def coarse_search(
    corr,
    num_prune: int,
    topk: int = 10,
    method: str = "dp",
    *,
    beam_size: int = 10,
    keep_first: bool = False,
    keep_last: bool = False,
    max_run: Optional[int] = None,
    protect: Iterable[int] = (),
    exhaustive_limit: int = 5_000_000,
    aggregate: str = "mean",
) -> List[Proposal]:
    """The best ``topk`` proposals that remove ``num_prune`` layers, best first (see module docstring)."""
    mat = check_corr(corr)
    num_layers = mat.shape[0] - 1
    k = check_num_prune(num_prune, num_layers)
    if not _is_int(topk) or topk < 1:
        raise ValueError(f"topk must be an integer >= 1, got {topk!r}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; choose one of {', '.join(AGGREGATES)}")
    if not _is_int(beam_size) or beam_size < 1:
        raise ValueError(f"beam_size must be an integer >= 1, got {beam_size!r}")
    if not _is_int(exhaustive_limit) or exhaustive_limit < 1:
        raise ValueError(f"exhaustive_limit must be an integer >= 1, got {exhaustive_limit!r}")
    max_run = check_max_run(max_run)
    protect = tuple(protect)
    allowed = prunable_layers(num_layers, keep_first, keep_last, protect)
    if len(allowed) < k:
        raise ValueError(
            f"constraints (keep_first={keep_first}, keep_last={keep_last}, protect={sorted(set(protect))}) leave "
            f"{len(allowed)} removable layers, fewer than num_prune={k}"
        )
    grid = ranking_grid(mat, k)
    table = _CompletionTable(grid, k, allowed, max_run, aggregate)
    if table.root_bound() == -math.inf:
        raise ValueError(f"no set of {k} removable layers satisfies max_run={max_run}; raise max_run or lower "
                         f"num_prune")

    if method == "exhaustive":
        found = _exhaustive(grid, k, topk, allowed, max_run, aggregate, exhaustive_limit)
    elif method in ("beam", "greedy"):
        width = 1 if method == "greedy" else beam_size
        found = _beam(grid, k, allowed, max_run, aggregate, width)[:topk]
        if len(found) < topk:
            logging.info(f"{method} search keeps {width} beam(s): returning {len(found)} of topk={topk} proposals")
    else:
        found = table.best_first(topk)
    return [Proposal(pruned, num_layers, proposal_score(mat, pruned, aggregate)) for pruned in found]


def _rank_value(grid: np.ndarray, pruned: Sequence[int], aggregate: str) -> float:
    return proposal_score(grid, pruned, aggregate)  # exact on the grid


class _CompletionTable:
    """g[t, j, r]: best combined run score over layers t..L, given layer t-1 is kept (t = 1: nothing before),
    with j layers removed there in r runs; -inf where impossible. Rows t = 1..L+1 (t = L+1: nothing left)."""

    def __init__(self, grid, k, allowed, max_run, aggregate):
        num_layers = grid.shape[0] - 1
        self.grid, self.k, self.num_layers, self.aggregate = grid, k, num_layers, aggregate
        self.combine = np.minimum if aggregate == "min" else np.add
        self.identity = math.inf if aggregate == "min" else 0.0
        allowed_mask = np.zeros(num_layers + 2, dtype=bool)
        allowed_mask[allowed] = True
        # longest run of removable layers starting at t, capped by max_run and k
        cap = np.zeros(num_layers + 2, dtype=int)
        for t in range(num_layers, 0, -1):
            cap[t] = cap[t + 1] + 1 if allowed_mask[t] else 0
        self.run_cap = np.minimum(cap, min(k, max_run or k))

        g = np.full((num_layers + 2, k + 1, k + 1), -math.inf)
        g[num_layers + 1, 0, 0] = self.identity
        for t in range(num_layers, 0, -1):
            row = g[t + 1].copy()  # keep layer t
            for m in range(1, self.run_cap[t] + 1):
                b = t + m - 1
                value = grid[t - 1, b]
                if b == num_layers:  # the run reaches the last layer
                    row[m, 1] = max(row[m, 1], float(self.combine(self.identity, value)))
                else:  # layer b+1 is kept; continue at t' = b + 2
                    np.maximum(row[m:, 1:], self.combine(value, g[b + 2, : k + 1 - m, :k]), out=row[m:, 1:])
            g[t] = row
        self.g = g

    def bound(self, t, remaining, runs_done, acc):
        """Best final value reachable from partial proposals (arrays of equal length, remaining >= 1)."""
        best = self.g[t, remaining, 1:]  # completions with r = 1..k runs
        if self.aggregate == "mean":
            runs = np.asarray(runs_done)[..., None] + np.arange(1, self.k + 1)
            values = (np.asarray(acc)[..., None] + best) / runs
        else:
            values = self.combine(np.asarray(acc)[..., None], best)
        return values.max(axis=-1)

    def root_bound(self) -> float:
        return float(self.bound(1, self.k, 0, self.identity))

    def best_first(self, topk: int) -> List[Tuple[int, ...]]:
        num_layers, grid = self.num_layers, self.grid
        # heap entries: (-priority, order key, node); node = (t, remaining, runs_done, acc, pruned).
        # Order keys are unique among entries in the heap (disjoint subtrees), so nodes are never compared.
        heap = [(-self.root_bound(), (1,), (1, self.k, 0, self.identity, ()))]
        found: List[Tuple[int, ...]] = []
        while heap and len(found) < topk:
            _, _, (t, remaining, runs_done, acc, pruned) = heapq.heappop(heap)
            if remaining == 0:
                found.append(pruned)
                continue
            partial = []
            if t < num_layers:  # keep layer t
                partial.append((t + 1, remaining, runs_done, acc, pruned))
            for m in range(1, min(self.run_cap[t], remaining) + 1):  # remove t..t+m-1, keep t+m
                b = t + m - 1
                if b == num_layers and m != remaining:
                    continue
                child = (b + 2, remaining - m, runs_done + 1, float(self.combine(acc, grid[t - 1, b])),
                         pruned + tuple(range(t, b + 1)))
                if child[1] == 0:
                    value = child[3] / child[2] if self.aggregate == "mean" else child[3]
                    heapq.heappush(heap, (-value, child[4], child))
                else:
                    partial.append(child)
            if partial:
                columns = [np.array(column) for column in zip(*(c[:4] for c in partial))]
                for child, priority in zip(partial, self.bound(*columns)):
                    if priority > -math.inf:
                        heapq.heappush(heap, (-float(priority), child[4] + (child[0],), child))
        return found


def _exhaustive(grid, k, topk, allowed, max_run, aggregate, limit):
    total = math.comb(len(allowed), k)
    if total > limit:
        raise ValueError(
            f"exhaustive search over C({len(allowed)}, {k}) = {total} subsets exceeds exhaustive_limit={limit}; "
            f"use method dp (exact) or raise exhaustive_limit"
        )
    combos = itertools.combinations(allowed, k)
    best_values = np.empty(0)
    best_sets = np.empty((0, k), dtype=np.int64)
    columns = np.arange(k)
    while True:
        flat = np.fromiter(itertools.chain.from_iterable(itertools.islice(combos, _EXHAUSTIVE_CHUNK)), dtype=np.int64)
        if flat.size == 0:
            break
        sets = flat.reshape(-1, k)
        starts = np.ones(sets.shape, dtype=bool)
        starts[:, 1:] = sets[:, 1:] != sets[:, :-1] + 1
        ends = np.ones(sets.shape, dtype=bool)
        ends[:, :-1] = starts[:, 1:]
        # for every column, the column where its run ends
        end_col = np.minimum.accumulate(np.where(ends, columns, k)[:, ::-1], axis=1)[:, ::-1]
        run_ends = np.take_along_axis(sets, end_col, axis=1)
        values = grid[sets - 1, run_ends]
        if max_run is not None:
            ok = ~np.any(starts & (run_ends - sets + 1 > max_run), axis=1)
            sets, starts, values = sets[ok], starts[ok], values[ok]
        if aggregate == "min":
            ranked = np.min(np.where(starts, values, np.inf), axis=1)
        else:
            ranked = np.where(starts, values, 0.0).sum(axis=1)  # exact on the grid
            if aggregate == "mean":
                ranked = ranked / starts.sum(axis=1)
        if len(ranked) > topk:  # pre-select, keeping ties at the cut
            cut = np.partition(ranked, len(ranked) - topk)[len(ranked) - topk]
            keep = ranked >= cut
            ranked, sets = ranked[keep], sets[keep]
        best_values = np.concatenate([best_values, ranked])
        best_sets = np.concatenate([best_sets, sets])
        order = np.lexsort(tuple(best_sets[:, col] for col in range(k - 1, -1, -1)) + (-best_values,))[:topk]
        best_values, best_sets = best_values[order], best_sets[order]
    return [tuple(int(x) for x in row) for row in best_sets]


def _beam(grid, k, allowed, max_run, aggregate, beam_size):
    beams: List[Tuple[int, ...]] = [()]
    for _ in range(k):
        candidates = set()
        for beam in beams:
            taken = set(beam)
            for layer in allowed:
                if layer in taken or (max_run is not None and _run_length_at(taken, layer) > max_run):
                    continue
                candidates.add(tuple(sorted(beam + (layer,))))
        scored = sorted((-_rank_value(grid, c, aggregate), c) for c in candidates)
        if max_run is None:
            beams = [c for _, c in scored[:beam_size]]
        else:  # skip partial sets that max_run makes impossible to complete
            completable = (c for _, c in scored if _most_removable(c, allowed, max_run, grid.shape[0] - 1) >= k)
            beams = list(itertools.islice(completable, beam_size))
    return beams


def _most_removable(forced, allowed, max_run, num_layers) -> int:
    """Largest set containing ``forced`` within ``allowed`` with no run over max_run (-1 if none). Any
    size between len(forced) and that maximum is reachable by leaving optional layers out."""
    forced, allowed = set(forced), set(allowed)
    best = {0: 0}  # current run length -> most layers removed so far
    for layer in range(1, num_layers + 1):
        step = {}
        for run, count in best.items():
            if layer not in forced:
                step[0] = max(step.get(0, -1), count)
            if layer in allowed and run < max_run:
                step[run + 1] = max(step.get(run + 1, -1), count + 1)
        best = step
        if not best:
            return -1
    return max(best.values())


def _run_length_at(taken, layer) -> int:
    """Length of the run containing ``layer`` once it is added to ``taken``."""
    low = layer
    while low - 1 in taken:
        low -= 1
    high = layer
    while high + 1 in taken:
        high += 1
    return high - low + 1
