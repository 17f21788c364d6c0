"""Agreement between two rankings of the same items (pure Python).

Used to ask how well a cheap proxy score orders pruning candidates compared
with the real metric (e.g. CTC-greedy CER against beam-search CER).
"""

import math
from typing import Sequence


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between paired scores ``x[i]``, ``y[i]``.

    +1: both order every pair the same way, -1: opposite orders. Ties are
    handled as tau-b does: a pair tied in x or in y is neither concordant nor
    discordant, and the denominator ``sqrt((n0 - tx) (n0 - ty))`` counts the
    pairs not tied in x and not tied in y respectively (pairs tied in both
    belong to both counts). Returns nan when x or y has a single distinct
    value (or fewer than two items): no order to compare. O(n^2), meant for
    candidate lists of up to a few thousand items.
    """
    if len(x) != len(y):
        raise ValueError(f"score lists differ in length: {len(x)} and {len(y)}")
    values = [(float(a), float(b)) for a, b in zip(x, y)]
    if any(math.isnan(a) or math.isnan(b) for a, b in values):
        raise ValueError("scores must not be nan")
    n = len(values)
    concordant = discordant = tied_x = tied_y = 0
    for i in range(n):
        xi, yi = values[i]
        for j in range(i + 1, n):
            dx = xi - values[j][0]
            dy = yi - values[j][1]
            if dx == 0:
                tied_x += 1
            if dy == 0:
                tied_y += 1
            if dx == 0 or dy == 0:
                continue
            if (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    if denominator == 0:
        return float("nan")
    return (concordant - discordant) / denominator
