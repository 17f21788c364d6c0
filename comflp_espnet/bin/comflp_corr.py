#!/usr/bin/env python3
"""Correlation matrix between the encoder hidden states h_0..h_L.

    python -m comflp_espnet.bin.comflp_corr --states_scp states/output.1/states.scp \
        [--states_scp states/output.2/states.scp ...] --measure dc \
        --output corr/dc.npy [--heatmap corr/dc.png] [--batch_size 32]

Reads the states written by comflp_dump (several job scps or their
concatenation), computes the (L+1) x (L+1) matrix with
``comflp_espnet.measures.correlation_matrix`` and saves it as ``.npy``, and
optionally as a heatmap image.
"""

import argparse
import logging
from pathlib import Path
from typing import List, Optional

import numpy as np

from comflp_espnet.atomic import atomic_output_file
from comflp_espnet.cli import exit_on_error, new_parser, setup_logging
from comflp_espnet.heatmap import save_heatmap
from comflp_espnet.measures import MEASURE_OPTIONS, MEASURES, correlation_matrix
from comflp_espnet.state_archive import load_states, read_info


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser("comflp_corr", "Correlation matrix between encoder hidden states")
    parser.add_argument(
        "--states_scp", action="append", required=True, help="states.scp (repeatable)"
    )
    parser.add_argument("--measure", default="dc", choices=MEASURES)
    parser.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="Rows per block for measures that take batch_size (dc); 0: all rows; ignored by others",
    )
    parser.add_argument("--output", required=True, help="Output .npy")
    parser.add_argument("--heatmap", default=None, help="Optional heatmap image (.png)")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    if args.batch_size is not None and args.batch_size < 0:
        parser.error("--batch_size must be >= 0 (0: all rows in one block)")
    options = {}
    if args.batch_size is not None:
        if "batch_size" in MEASURE_OPTIONS[args.measure]:
            options["batch_size"] = args.batch_size
        else:
            logging.info(f"--batch_size does not apply to {args.measure}; ignored")
    with exit_on_error(parser.prog, ValueError, TypeError, FileNotFoundError):
        states = load_states(args.states_scp)
        num_items = states[0].shape[0]
        logging.info(
            f"Read {len(states)} states of {num_items} rows x {states[0].shape[1]} dims "
            f"from {len(args.states_scp)} scp file(s)"
        )
        corr = np.asarray(
            correlation_matrix(states, measure=args.measure, **options), dtype=np.float64
        )

    with atomic_output_file(args.output, "wb") as f:
        np.save(f, corr)
    logging.info(f"Wrote {corr.shape[0]}x{corr.shape[1]} {args.measure} matrix to {args.output}")
    if args.heatmap:
        info = read_info(Path(args.states_scp[0]).parent) or {}
        unit = "frames" if info.get("pooling") == "frame" else "utterances"
        save_heatmap(corr, args.heatmap, args.measure, num_items, unit)
        logging.info(f"Wrote heatmap to {args.heatmap}")


if __name__ == "__main__":
    main()
