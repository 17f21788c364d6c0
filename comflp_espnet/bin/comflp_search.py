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
The search itself: ``comflp_espnet.coarse``.  Only numpy is needed (no ESPnet import).
"""

import argparse
import logging
from typing import List, Optional

from comflp_espnet.cli import layer_list, max_run_type, new_parser, setup_logging, str2bool
from comflp_espnet.coarse import ALL_METHODS, format_table, load_corr, proposals_document, propose
from comflp_espnet.rundir import write_proposals
from comflp_espnet.search import AGGREGATES


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_search", "CoMFLP coarse search: rank sets of encoder layers to remove by a correlation matrix"
    )
    parser.add_argument("--corr", required=True, help="(L+1) x (L+1) correlation matrix (.npy)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--num_prune", type=int, help="number of encoder layers to remove")
    size.add_argument("--num_keep", type=int, help="number of encoder layers to keep (instead of --num_prune)")
    parser.add_argument("--topk", type=int, default=10, help="number of proposals to keep")
    parser.add_argument("--method", default="dp", choices=ALL_METHODS)
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


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    try:
        corr = load_corr(args.corr)
        num_layers = corr.shape[0] - 1
        if args.num_keep is not None:
            if not 1 <= args.num_keep < num_layers:
                raise ValueError(f"--num_keep must be in 1..{num_layers - 1} for {num_layers} layers, "
                                 f"got {args.num_keep}")
            num_prune = num_layers - args.num_keep
        else:
            num_prune = args.num_prune
        proposals = propose(args.method, corr, num_layers, num_prune, topk=args.topk,
                            beam_size=args.beam_size, aggregate=args.aggregate,
                            keep_first=args.keep_first, keep_last=args.keep_last, max_run=args.max_run,
                            protect=args.protect, seed=args.seed, exhaustive_limit=args.exhaustive_limit)
    except ValueError as err:
        message = str(err)
        parser.error(message if "--corr" in message else f"{message} (matrix: --corr {args.corr})")

    logging.info(f"{args.method} search: remove {num_prune} of {num_layers} layers, {len(proposals)} proposal(s)"
                 f"\n{format_table(proposals)}")
    data = proposals_document(
        proposals, num_layers, num_prune, args.method, args.topk,
        constraints={"keep_first": args.keep_first, "keep_last": args.keep_last, "max_run": args.max_run,
                     "protect": args.protect},
        options={"beam_size": args.beam_size, "aggregate": args.aggregate,
                 "exhaustive_limit": args.exhaustive_limit, "seed": args.seed},
        corr=args.corr)
    write_proposals(args.output, data)
    logging.info(f"wrote {args.output}")


if __name__ == "__main__":
    main()
