#!/usr/bin/env python3
"""Coarse search timings and quality on realistic matrices (correlation decaying with layer distance + noise).

(1) dp for L = 96, k = 48, K = 10 (goal < 2 s) and its top scores vs beam search with beam 10 (dp, being
    exact, is never worse);
(2) dp vs exhaustive at L = 24, k = 6 and 12 (134,596 and 2,704,156 subsets): same list, both timed;
(3) the published 12-layer matrix when present.

    python bench/bench_search.py [--repeats 3]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from comflp_espnet.search import coarse_search

PUBLISHED = Path(__file__).resolve().parents[2] / "shared/reference/comflp_published/dc_mat_mean_bs32_iter10.npy"


def decaying_corr(num_layers, seed=0):
    rng = np.random.default_rng(seed)
    index = np.arange(num_layers + 1)
    mat = np.exp(-np.abs(index[:, None] - index[None, :]) / 8.0) + 0.05 * rng.standard_normal((num_layers + 1,) * 2)
    mat = (mat + mat.T) / 2.0
    np.fill_diagonal(mat, 1.0)
    return mat


def timed(repeats, func, *args, **kwargs):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def compare(name, corr, k, repeats, methods):
    print(f"{name}: L = {corr.shape[0] - 1}, k = {k}, K = 10")
    results = {}
    for method in methods:
        found, seconds = timed(repeats, coarse_search, corr, k, 10, method, beam_size=10)
        results[method] = found
        print(f"  {method:<11} {seconds:8.3f} s   top-1 {found[0].score:.6f}   top-10 {found[-1].score:.6f}")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (median reported)")
    args = parser.parse_args()

    for seed in range(3):
        found = compare(f"decaying matrix, seed {seed}", decaying_corr(96, seed), 48, args.repeats, ["dp", "beam"])
        gaps = [a.score - b.score for a, b in zip(found["dp"], found["beam"])]
        assert min(gaps) >= 0.0, "dp returned a worse proposal than beam"
        print(f"  dp - beam at ranks 1..10: min {min(gaps):.2e}, top-1 {gaps[0]:.2e}")

    for k in (6, 12):  # 134,596 and 2,704,156 subsets
        found = compare("decaying matrix", decaying_corr(24), k, 1, ["dp", "exhaustive", "beam"])
        same = [p.pruned for p in found["dp"]] == [p.pruned for p in found["exhaustive"]]
        print(f"  dp list == exhaustive list: {same}")
        assert same

    if PUBLISHED.is_file():
        compare("published 12-layer DC matrix", np.load(PUBLISHED), 6, args.repeats, ["dp", "exhaustive", "beam"])


if __name__ == "__main__":
    main()
