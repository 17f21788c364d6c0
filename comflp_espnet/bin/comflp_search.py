#!/usr/bin/env python3
"""Coarse search of CoMFLP: rank sets of encoder layers to remove by a correlation matrix.

    python -m comflp_espnet.bin.comflp_search --corr exp/comflp/corr/dc.npy --num_prune 6 \\
        --topk 10 --method dp --output exp/comflp/dc_dp_prune6/proposals.json

``--num_keep N`` may replace ``--num_prune`` (removes L - N layers). Methods: the CoMFLP searches of
``comflp_espnet.search.METHODS`` (dp, beam, greedy, exhaustive) and the baselines of
``comflp_espnet.baselines.BASELINE_METHODS``: drop_last, random (``--topk`` distinct seeded sets), bi (reads
cos(h_{i-1}, h_i) from the matrix's first off-diagonal, so pass the ``cosine`` matrix) and angular (pass the
``angular`` matrix; returns the ``--topk`` best blocks).

Writes JSON (atomically: temporary file, then rename):
    {"num_layers": L, "num_prune": k, "method": ..., "topk": K,
     "constraints": {"keep_first": .., "keep_last": .., "max_run": .., "protect": [..]},
     "options": {"beam_size": .., "aggregate": .., "exhaustive_limit": .., "seed": ..},
     "corr": "<path as given>",
     "proposals": [{"rank": 1, "pruned": [..], "kept": [..], "runs": [[a, b], ..], "score": float|null}, ..]}
This module only needs numpy (no ESPnet import).
"""

import argparse
import json
import logging
import os
import re
from typing import List, Optional, Sequence

import numpy as np

from comflp_espnet import baselines
from comflp_espnet.atomic import atomic_output_file
from comflp_espnet.cli import new_parser, setup_logging, str2bool
from comflp_espnet.search import AGGREGATES, METHODS, Proposal, coarse_search


def max_run_type(value: str) -> Optional[int]:
    if str(value).strip().lower() in ("none", "0", ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, 0 or none, got {value!r}")
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, 0 or none, got {value!r}")
    return number


def layer_list(value: str) -> List[int]:
    items = [item for item in re.split(r"[,\s]+", str(value).strip()) if item]
    try:
        return [int(item) for item in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer ids such as 1,12, got {value!r}")


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_search", "CoMFLP coarse search: rank sets of encoder layers to remove by a correlation matrix"
    )
    parser.add_argument("--corr", required=True, help="(L+1) x (L+1) correlation matrix (.npy)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--num_prune", type=int, help="number of encoder layers to remove")
    size.add_argument("--num_keep", type=int, help="number of encoder layers to keep (instead of --num_prune)")
    parser.add_argument("--topk", type=int, default=10, help="number of proposals to keep")
    parser.add_argument("--method", default="dp", choices=METHODS + baselines.BASELINE_METHODS)
    parser.add_argument("--beam_size", type=int, default=10, help="beam width of --method beam")
    parser.add_argument("--aggregate", default="mean", choices=AGGREGATES, help="how run scores combine")
    parser.add_argument("--keep_first", type=str2bool, default=False, help="never remove layer 1")
    parser.add_argument("--keep_last", type=str2bool, default=False, help="never remove layer L")
    parser.add_argument("--max_run", type=max_run_type, default=None,
                        help="longest run of consecutive removed layers (0 or none: no limit)")
    parser.add_argument("--protect", type=layer_list, default=[], help="layers never removed, e.g. 1,12")
    parser.add_argument("--exhaustive_limit", type=int, default=5_000_000,
                        help="largest number of subsets --method exhaustive may score")
    parser.add_argument("--seed", type=int, default=0, help="seed of --method random")
    parser.add_argument("--output", required=True, help="proposals JSON to write")
    return parser


def load_corr(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ValueError(f"--corr: no such file: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"--corr: cannot read {path} as a .npy array ({err})")


def run_search(args, corr: np.ndarray, num_prune: int) -> List[Proposal]:
    constraints = dict(keep_first=args.keep_first, keep_last=args.keep_last, protect=tuple(args.protect),
                       max_run=args.max_run)
    num_layers = corr.shape[0] - 1
    if args.method in METHODS:
        return coarse_search(corr, num_prune, args.topk, args.method, beam_size=args.beam_size,
                             exhaustive_limit=args.exhaustive_limit, aggregate=args.aggregate, **constraints)
    if args.topk < 1:
        raise ValueError(f"topk must be an integer >= 1, got {args.topk}")
    if args.method == "drop_last":
        return baselines.drop_last(num_layers, num_prune, **constraints)
    if args.method == "random":
        return baselines.random_proposals(num_layers, num_prune, args.topk, args.seed, **constraints)
    if args.method == "bi":
        return baselines.bi_proposal(baselines.adjacent_cosines(corr), num_prune, **constraints)
    return baselines.angular_proposal(corr, num_prune, args.topk, **constraints)


def format_table(proposals: Sequence[Proposal]) -> str:
    lines = [f"{'rank':>4}  {'score':>10}  {'runs':<36}  pruned"]
    for rank, proposal in enumerate(proposals, 1):
        score = "-" if proposal.score is None else f"{proposal.score:.6f}"
        runs = " ".join(f"[{a}-{b}]" for a, b in proposal.runs)
        lines.append(f"{rank:>4}  {score:>10}  {runs:<36}  {','.join(map(str, proposal.pruned))}")
    return "\n".join(lines)


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    try:
        corr = load_corr(args.corr)
        if corr.ndim != 2 or corr.shape[0] != corr.shape[1] or corr.shape[0] < 3:
            raise ValueError(f"--corr: {args.corr} must hold a square (L+1) x (L+1) matrix with L >= 2, "
                             f"got shape {corr.shape}")
        num_layers = corr.shape[0] - 1
        if args.num_keep is not None:
            if not 1 <= args.num_keep < num_layers:
                raise ValueError(f"--num_keep must be in 1..{num_layers - 1} for {num_layers} layers, "
                                 f"got {args.num_keep}")
            num_prune = num_layers - args.num_keep
        else:
            num_prune = args.num_prune
        proposals = run_search(args, corr, num_prune)
    except ValueError as err:
        message = str(err)
        parser.error(message if "--corr" in message else f"{message} (matrix: --corr {args.corr})")

    logging.info(f"{args.method} search: remove {num_prune} of {num_layers} layers, {len(proposals)} proposal(s)"
                 f"\n{format_table(proposals)}")
    data = {
        "num_layers": num_layers,
        "num_prune": num_prune,
        "method": args.method,
        "topk": args.topk,
        "constraints": {"keep_first": args.keep_first, "keep_last": args.keep_last, "max_run": args.max_run,
                        "protect": sorted(set(args.protect))},
        "options": {"beam_size": args.beam_size, "aggregate": args.aggregate,
                    "exhaustive_limit": args.exhaustive_limit, "seed": args.seed},
        "corr": args.corr,
        "proposals": [],
    }
    for rank, proposal in enumerate(proposals, 1):
        item = proposal.to_dict()
        del item["num_layers"]
        data["proposals"].append({"rank": rank, **item})
    with atomic_output_file(args.output, encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    logging.info(f"wrote {args.output}")


if __name__ == "__main__":
    main()
