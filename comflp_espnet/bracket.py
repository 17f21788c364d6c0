"""Which depths of a sweep to decode when only the deepest one within a tolerance is wanted.

``--comflp_sweep_decode bracket`` (with ``--comflp_max_degradation X``): every depth's candidates
are scored by the proxy, but only the depths that bracket the limit are decoded in full: the
deepest depth whose winner is within X points of the original, and the next deeper one, which is
not.  The search assumes that the winners' error grows with the depth (as it does when layers are
removed from a trained encoder); a depth deeper than the first one found outside the tolerance is
not tried.

1. Start (``start_depths``): the deepest depth whose proxy-best candidate is within X of the
   original's proxy value, and the next deeper depth.  A proxy that is an error rate (CTC
   greedy) is on the scale of the real one; with a loss proxy there is no such guess and the
   search starts in the middle of the depths.
2. Then (``next_depth``), from the decoded depths and whether each winner is within X: one
   deeper while the deepest decoded depth within X has an undecoded deeper neighbour, one
   shallower while no decoded depth is within X; done when the deepest depth within X is
   bracketed (its deeper neighbour is decoded and outside, or it is the deepest depth), or when
   the shallowest depth is outside (no depth qualifies).

Pure: the caller says what was decoded and how it did.
"""

from typing import Dict, List, Optional, Sequence


def start_depths(depths: Sequence[int], proxy_within: Dict[int, Optional[bool]]) -> List[int]:
    """The first depths to decode: the deepest depth that the proxy puts within the tolerance
    (the shallowest when none is) and the next deeper one; when no depth has a proxy guess
    (``None``), the middle depth and the next deeper one."""
    ordered = sorted(set(depths))
    if not ordered:
        return []
    if any(proxy_within.get(k) is not None for k in ordered):
        inside = [k for k in ordered if proxy_within.get(k)]
        start = inside[-1] if inside else ordered[0]
    else:
        start = ordered[(len(ordered) - 1) // 2]
    i = ordered.index(start)
    return ordered[i:i + 2]


def next_depth(depths: Sequence[int], within: Dict[int, bool]) -> Optional[int]:
    """The next depth to decode given the decoded depths (``within``: depth -> whether its winner
    is within the tolerance), or None when the search is done."""
    ordered = sorted(set(depths))
    if not within:
        return None
    inside = [k for k, ok in within.items() if ok]
    if inside:
        i = ordered.index(max(inside))
        if i + 1 == len(ordered):
            return None
        deeper = ordered[i + 1]
        return None if deeper in within else deeper
    i = ordered.index(min(within))
    if i == 0:
        return None
    shallower = ordered[i - 1]
    return None if shallower in within else shallower
