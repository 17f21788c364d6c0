"""The coarse search as a stage: the proposals of any method, as a proposals document.

``propose`` runs a CoMFLP search (``comflp_espnet.search``: dp, beam, greedy,
exhaustive) or a baseline (``comflp_espnet.baselines``: drop_last, random, bi,
angular; ``none``: the unpruned model as the only proposal, a reference) on a
correlation matrix; ``proposals_document`` turns its result into the proposals
JSON (``comflp_espnet.rundir.write_proposals``)::

    {"num_layers": L, "num_prune": k, "method": ..., "topk": K,
     "constraints": {"keep_first": .., "keep_last": .., "max_run": .., "protect": [..]},
     "options": {"beam_size": .., "aggregate": .., "exhaustive_limit": .., "seed": ..},
     "corr": "<path>",
     "proposals": [{"rank": 1, "pruned": [..], "kept": [..], "runs": [[a, b], ..], "score": float|null}, ..]}

Several measures (``union_document``): each measure's search keeps its top K;
the proposals are the union of those lists, deduplicated, in the order of their
best rank (ties: the order of the measures as given, so the first measure's
rank-1 proposal comes first), and each records which measures proposed it and
its rank and score under each measure (the score under every measure; the rank
only where that measure's top K has it)::

    {"rank": 3, "pruned": [..], "kept": [..], "runs": [..], "score": <first measure's>,
     "proposed_by": ["svcca"], "measures": {"dc": {"rank": null, "score": ..},
                                            "svcca": {"rank": 1, "score": ..}}}

Only numpy is needed (no ESPnet import).
"""

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from comflp_espnet import baselines
from comflp_espnet.search import METHODS, Proposal, coarse_search, proposal_score

# The unpruned model as the one proposal: the reference a pruned model is compared with.
NO_PRUNING = "none"
# Methods that read the correlation matrix (the others only need the number of layers).
READS_MATRIX = tuple(METHODS) + ("bi", "angular")
ALL_METHODS = tuple(METHODS) + tuple(baselines.BASELINE_METHODS) + (NO_PRUNING,)


def load_corr(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ValueError(f"--corr: no such file: {path}")
    try:
        corr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"--corr: cannot read {path} as a .npy array ({err}); "
                         "it is damaged: run the matrix stage (15) again")
    if corr.ndim != 2 or corr.shape[0] != corr.shape[1] or corr.shape[0] < 3:
        raise ValueError(f"--corr: {path} must hold a square (L+1) x (L+1) matrix with L >= 2, "
                         f"got shape {corr.shape}")
    return corr


def propose(method: str, corr: Optional[np.ndarray], num_layers: int, num_prune: int, topk: int = 10,
            beam_size: int = 10, aggregate: str = "mean", keep_first: bool = False, keep_last: bool = False,
            max_run: Optional[int] = None, protect: Sequence[int] = (), seed: int = 0,
            exhaustive_limit: int = 5_000_000) -> List[Proposal]:
    """Proposals of ``method`` in rank order (ValueError for impossible requests)."""
    constraints = dict(keep_first=keep_first, keep_last=keep_last, protect=tuple(protect), max_run=max_run)
    if method == NO_PRUNING:
        return [Proposal((), num_layers)]
    if method in READS_MATRIX and corr is None:
        raise ValueError(f"--method {method} reads the correlation matrix: give --corr")
    if method in METHODS:
        return coarse_search(corr, num_prune, topk, method, beam_size=beam_size,
                             exhaustive_limit=exhaustive_limit, aggregate=aggregate, **constraints)
    if topk < 1:
        raise ValueError(f"topk must be an integer >= 1, got {topk}")
    if method == "drop_last":
        return baselines.drop_last(num_layers, num_prune, **constraints)
    if method == "random":
        return baselines.random_proposals(num_layers, num_prune, topk, seed, **constraints)
    if method == "bi":
        return baselines.bi_proposal(baselines.adjacent_cosines(corr), num_prune, **constraints)
    if method == "angular":
        return baselines.angular_proposal(corr, num_prune, topk, **constraints)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(ALL_METHODS)}")


def proposals_document(proposals: Sequence[Proposal], num_layers: int, num_prune: int, method: str,
                       topk: int, constraints: Dict[str, Any], options: Dict[str, Any],
                       corr: Optional[str]) -> Dict[str, Any]:
    data: Dict[str, Any] = {
        "num_layers": num_layers, "num_prune": num_prune, "method": method, "topk": topk,
        "constraints": dict(constraints, protect=sorted(set(constraints.get("protect") or []))),
        "options": options, "corr": corr, "proposals": [],
    }
    for rank, proposal in enumerate(proposals, 1):
        item = proposal.to_dict()
        del item["num_layers"]
        data["proposals"].append({"rank": rank, **item})
    return data


def format_table(proposals: Sequence[Proposal]) -> str:
    lines = [f"{'rank':>4}  {'score':>10}  {'runs':<36}  pruned"]
    for rank, proposal in enumerate(proposals, 1):
        score = "-" if proposal.score is None else f"{proposal.score:.6f}"
        runs = " ".join(f"[{a}-{b}]" for a, b in proposal.runs)
        lines.append(f"{rank:>4}  {score:>10}  {runs:<36}  {','.join(map(str, proposal.pruned))}")
    return "\n".join(lines)


def union_document(per_measure: Dict[str, Sequence[Proposal]], corrs: Dict[str, np.ndarray], num_layers: int,
                   num_prune: int, method: str, topk: int, constraints: Dict[str, Any], options: Dict[str, Any],
                   corr_files: Dict[str, str]) -> Dict[str, Any]:
    """The proposals document of several measures' searches: the union of their lists (see the
    module doc); ``per_measure`` and ``corrs`` in the order of the measures as given."""
    measures = list(per_measure)
    best: Dict[Tuple[int, ...], Tuple[int, int]] = {}
    ranks: Dict[Tuple[int, ...], Dict[str, int]] = {}
    for m_index, measure in enumerate(measures):
        for rank, proposal in enumerate(per_measure[measure], 1):
            ranks.setdefault(proposal.pruned, {})[measure] = rank
            key = (rank, m_index)
            if proposal.pruned not in best or key < best[proposal.pruned]:
                best[proposal.pruned] = key
    order = sorted(best, key=lambda pruned: best[pruned])
    aggregate = options.get("aggregate", "mean")
    data = proposals_document([], num_layers, num_prune, method, topk, constraints, options,
                              corr_files[measures[0]] if len(measures) == 1 else None)
    data["measures"] = measures
    data["corr_files"] = dict(corr_files)
    for rank, pruned in enumerate(order, 1):
        item = Proposal(pruned, num_layers).to_dict()
        del item["num_layers"]
        scores = {m: (proposal_score(corrs[m], pruned, aggregate) if corrs.get(m) is not None and pruned else None)
                  for m in measures}
        item["score"] = scores[measures[0]]
        item["proposed_by"] = [m for m in measures if m in ranks[pruned]]
        item["measures"] = {m: {"rank": ranks[pruned].get(m), "score": scores[m]} for m in measures}
        data["proposals"].append({"rank": rank, **item})
    return data
