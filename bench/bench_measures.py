#!/usr/bin/env python3
"""Distance-correlation matrix: vectorized (comflp_espnet.measures) vs loops over pairs of states.

Default sizes: 49 states (L = 48), N = 1024 rows, D = 512, batches of 32 rows. Two loop baselines:
  pairwise: for each batch and each pair (i, j), compute both distance matrices and their correlation
            (the straightforward implementation);
  cached:   distance matrices computed once per state and batch, then a loop over pairs for the sums
            (how the CoMFLP reference organizes it).
Every result is checked against the vectorized one.

    python bench/bench_measures.py [--num_states 49 --rows 1024 --dim 512 --batch_size 32]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from comflp_espnet.measures import correlation_matrix


def centred_distances(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sq = np.einsum("ij,ij->i", x, x)
    d = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0, None))
    np.fill_diagonal(d, 0.0)
    return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()


def dc_pair(x, y):
    a, b = centred_distances(x), centred_distances(y)
    return (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())


def spans(rows, batch_size):
    if batch_size == 0 or batch_size >= rows:
        return [(0, rows)]
    return [(s, s + batch_size) for s in range(0, rows - rows % batch_size, batch_size)]


def pairwise(states, batch_size):
    size = len(states)
    out = np.zeros((size, size))
    for a, b in spans(states[0].shape[0], batch_size):
        for i in range(size):
            for j in range(size):
                out[i, j] += dc_pair(states[i][a:b], states[j][a:b])
    return out / len(spans(states[0].shape[0], batch_size))


def cached(states, batch_size):
    size = len(states)
    out = np.zeros((size, size))
    for a, b in spans(states[0].shape[0], batch_size):
        dist = [centred_distances(s[a:b]) for s in states]
        for i in range(size):
            for j in range(size):
                out[i, j] += (dist[i] * dist[j]).sum() / np.sqrt((dist[i] ** 2).sum() * (dist[j] ** 2).sum())
    return out / len(spans(states[0].shape[0], batch_size))


def best_time(repeats, func, *args):
    """Result and the fastest of ``repeats`` runs (the machine is shared; the minimum is the least noisy)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = func(*args)
        times.append(time.perf_counter() - start)
    return result, min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_states", type=int, default=49)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the fast variants (best reported)")
    parser.add_argument("--skip_pairwise", action="store_true", help="skip the slow pairwise loop (minutes)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    state = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
    states = [state]
    for _ in range(args.num_states - 1):
        state = state + 0.3 * rng.normal(size=state.shape).astype(np.float32)
        states.append(state)
    states = [s.astype(np.float64) for s in states]
    print(f"DC matrix: {args.num_states} states, N = {args.rows}, D = {args.dim}, batch_size = {args.batch_size}")

    fast, fast_time = best_time(args.repeats, lambda: correlation_matrix(states, "dc", batch_size=args.batch_size))
    print(f"  vectorized           {fast_time:8.3f} s   (best of {args.repeats})")
    baselines = [("cached-distance loop", cached, args.repeats)]
    if not args.skip_pairwise:
        baselines.append(("pairwise loop", pairwise, 1))
    for name, func, repeats in baselines:
        slow, slow_time = best_time(repeats, func, states, args.batch_size)
        diff = np.max(np.abs(slow - fast))
        assert diff < 1e-9, f"{name} differs from the vectorized matrix by {diff}"
        print(f"  {name:<20} {slow_time:8.3f} s   (best of {repeats})   ratio {slow_time / fast_time:6.1f}x   "
              f"max |diff| {diff:.1e}")

if __name__ == "__main__":
    main()
