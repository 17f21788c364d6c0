"""Layer-pruning baselines to compare CoMFLP against; each returns a list of ``search.Proposal``.

``drop_last``
    Remove the k highest-numbered removable layers (the usual "shallower model" baseline).
``random``
    Distinct, uniformly drawn sets of k removable layers, reproducible from a seed.
``bi``
    ShortGPT's block influence (Men et al. 2024): BI_i = 1 - cos(h_{i-1}, h_i), the change layer i makes to
    its input, averaged over rows. Remove the k layers with the smallest BI (ties: lower layer first). Input:
    the adjacent cosines cos(h_{i-1}, h_i) for i = 1..L, e.g. the off-diagonal C[i-1][i] of
    ``correlation_matrix(states, "cosine")``. Score: mean adjacent cosine of the removed layers (1 - mean BI;
    higher is better, like every score in this package).
``angular``
    Gromov et al. (2024): remove the contiguous block [a, a+k-1] whose input h_{a-1} and output h_{a+k-1}
    are closest in angular distance d = arccos(cos)/pi. Input: the angular-similarity matrix
    S = ``correlation_matrix(states, "angular")`` = 1 - d; the block minimizing d maximizes S[a-1][a+k-1],
    which is its score. Blocks are ranked by that score (ties: lower a first), so top K blocks are available.

Constraints are the ones of ``search.coarse_search``: keep_first, keep_last, protect, max_run.
``drop_last`` and ``random`` have no score (``None``).
"""

import itertools
import math
from typing import Iterable, List, Optional, Sequence

import numpy as np

from comflp_espnet.search import (
    Proposal,
    check_corr,
    check_max_run,
    check_num_prune,
    prunable_layers,
    runs_of,
)

BASELINE_METHODS = ("drop_last", "random", "bi", "angular")

# Below this many subsets, random proposals are drawn from the full list of valid sets.
_ENUMERATE_LIMIT = 200_000


def _allowed(num_layers, k, keep_first, keep_last, protect, max_run):
    k = check_num_prune(k, num_layers)
    max_run = check_max_run(max_run)
    allowed = prunable_layers(num_layers, keep_first, keep_last, protect)
    if len(allowed) < k:
        raise ValueError(f"constraints leave {len(allowed)} removable layers, fewer than num_prune={k}")
    return k, max_run, allowed


def _fits(pruned: Sequence[int], max_run: Optional[int]) -> bool:
    return max_run is None or all(b - a + 1 <= max_run for a, b in runs_of(pruned))


def drop_last(num_layers: int, k: int, *, keep_first=False, keep_last=False, protect: Iterable[int] = (),
              max_run: Optional[int] = None) -> List[Proposal]:
    k, max_run, allowed = _allowed(num_layers, k, keep_first, keep_last, protect, max_run)
    pruned = allowed[-k:]
    if not _fits(pruned, max_run):
        raise ValueError(f"drop_last removes layers {pruned}, a run longer than max_run={max_run}")
    return [Proposal(tuple(pruned), num_layers)]


def random_proposals(num_layers: int, k: int, num: int, seed: int = 0, *, keep_first=False, keep_last=False,
                     protect: Iterable[int] = (), max_run: Optional[int] = None) -> List[Proposal]:
    """``num`` distinct random sets (fewer only when fewer valid sets exist), in drawing order."""
    k, max_run, allowed = _allowed(num_layers, k, keep_first, keep_last, protect, max_run)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"number of random proposals must be an integer >= 1, got {num!r}")
    rng = np.random.default_rng(seed)
    if math.comb(len(allowed), k) <= _ENUMERATE_LIMIT:
        valid = [c for c in itertools.combinations(allowed, k) if _fits(c, max_run)]
        if not valid:
            raise ValueError(f"no set of {k} removable layers satisfies max_run={max_run}")
        picks = rng.permutation(len(valid))[:num]
        return [Proposal(valid[i], num_layers) for i in picks]
    drawn, seen = [], set()
    for _ in range(100 * num + 1000):
        pruned = tuple(sorted(int(x) for x in rng.choice(allowed, size=k, replace=False)))
        if pruned not in seen and _fits(pruned, max_run):
            seen.add(pruned)
            drawn.append(pruned)
            if len(drawn) == num:
                break
    if len(drawn) < num:
        raise ValueError(f"could only draw {len(drawn)} of {num} distinct sets satisfying max_run={max_run}")
    return [Proposal(p, num_layers) for p in drawn]


def bi_proposal(adjacent_cosine: Sequence[float], k: int, *, keep_first=False, keep_last=False,
                protect: Iterable[int] = (), max_run: Optional[int] = None) -> List[Proposal]:
    """Remove the k layers with the smallest block influence 1 - cos(h_{i-1}, h_i)."""
    cosines = np.asarray(adjacent_cosine, dtype=np.float64)
    if cosines.ndim != 1 or cosines.size < 2 or not np.all(np.isfinite(cosines)):
        raise ValueError("adjacent cosines must be a finite 1-D sequence cos(h_{i-1}, h_i), i = 1..L (L >= 2)")
    num_layers = cosines.size
    k, max_run, allowed = _allowed(num_layers, k, keep_first, keep_last, protect, max_run)
    # most similar to its input first; stable sort keeps lower layers first on ties
    order = sorted(allowed, key=lambda layer: -cosines[layer - 1])
    pruned = tuple(sorted(order[:k]))
    if not _fits(pruned, max_run):
        raise ValueError(f"bi removes layers {list(pruned)}, a run longer than max_run={max_run}")
    return [Proposal(pruned, num_layers, float(np.mean(cosines[np.array(pruned) - 1])))]


def adjacent_cosines(cosine_matrix) -> np.ndarray:
    """cos(h_{i-1}, h_i) for i = 1..L from a cosine matrix (its first off-diagonal)."""
    mat = check_corr(cosine_matrix)
    return np.diagonal(mat, offset=1).copy()


def angular_proposal(angular_matrix, k: int, topk: int = 1, *, keep_first=False, keep_last=False,
                     protect: Iterable[int] = (), max_run: Optional[int] = None) -> List[Proposal]:
    """The ``topk`` contiguous blocks of k layers with the most similar input and output states."""
    mat = check_corr(angular_matrix)
    num_layers = mat.shape[0] - 1
    k, max_run, allowed = _allowed(num_layers, k, keep_first, keep_last, protect, max_run)
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise ValueError(f"topk must be an integer >= 1, got {topk!r}")
    if max_run is not None and max_run < k:
        raise ValueError(f"angular removes one block of {k} layers, longer than max_run={max_run}")
    removable = set(allowed)
    blocks = [a for a in range(1, num_layers - k + 2) if all(layer in removable for layer in range(a, a + k))]
    if not blocks:
        raise ValueError(f"no block of {k} consecutive removable layers under the constraints")
    blocks.sort(key=lambda a: (-mat[a - 1, a + k - 1], a))
    return [Proposal(tuple(range(a, a + k)), num_layers, float(mat[a - 1, a + k - 1])) for a in blocks[:topk]]
