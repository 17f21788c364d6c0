#!/usr/bin/env python3
"""Write a seeded random subset of a Kaldi-style data directory.

    python -m comflp_espnet.bin.comflp_subset --data_dir data/train \
        --num_utts 200 --seed 0 --output_dir exp/.../comflp/calib \
        [--exclude_data_dir data/heldout]

``--num_utts 0`` takes every utterance; asking for more utterances than the
directory has (after exclusion) is an error. The output holds wav.scp, text,
utt2spk, spk2utt and the other per-utterance files of the source, filtered.
"""

import argparse
import logging
from typing import List, Optional

from comflp_espnet.cli import exit_on_error, new_parser, setup_logging
from comflp_espnet.datadir import DataDirError, make_subset


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_subset", "Write a seeded random subset of a Kaldi-style data directory"
    )
    parser.add_argument("--data_dir", required=True, help="Source data directory")
    parser.add_argument(
        "--num_utts", type=int, required=True, help="Number of utterances; 0 for all"
    )
    parser.add_argument("--seed", type=int, default=0, help="Random seed")
    parser.add_argument("--output_dir", required=True, help="Destination data directory")
    parser.add_argument(
        "--exclude_data_dir",
        action="append",
        default=[],
        help="Never pick utterances of this data directory (repeatable)",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    with exit_on_error(parser.prog, DataDirError):
        selected = make_subset(
            args.data_dir,
            args.output_dir,
            num_utts=args.num_utts,
            seed=args.seed,
            exclude_data_dirs=args.exclude_data_dir,
        )
    logging.info(f"Wrote {len(selected)} utterances of {args.data_dir} to {args.output_dir}")


if __name__ == "__main__":
    main()
