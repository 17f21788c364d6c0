#!/usr/bin/env python3
"""Correlation matrix between the encoder hidden states h_0..h_L.

    python -m comflp_espnet.bin.comflp_corr --states_scp states/output.1/states.scp \
        [--states_scp states/output.2/states.scp ...] --measure dc \
        --output corr/dc.npy [--heatmap corr/dc.png] [--batch_size 32]
    python -m comflp_espnet.bin.comflp_corr --states_scp states/states.scp \
        --measure dc svcca cka --output_dir corr

Reads the states written by comflp_dump (several job scps or their
concatenation), computes the (L+1) x (L+1) matrix with
``comflp_espnet.measures.correlation_matrix`` and saves it as ``.npy``, and
optionally as a heatmap image.  With several measures the states are read
once and ``--output_dir`` receives ``<measure>.npy`` and ``<measure>.png`` each.
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
    parser.add_argument("--measure", nargs="+", default=["dc"], choices=MEASURES,
                        help="one measure, or several with --output_dir")
    parser.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="Rows per block for measures that take batch_size (dc); 0: all rows; ignored by others",
    )
    parser.add_argument("--output", default=None, help="Output .npy (one measure)")
    parser.add_argument("--heatmap", default=None, help="Optional heatmap image (.png; one measure)")
    parser.add_argument("--output_dir", default=None,
                        help="Directory of <measure>.npy and <measure>.png, instead of --output/--heatmap")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    if args.batch_size is not None and args.batch_size < 0:
        parser.error("--batch_size must be >= 0 (0: all rows in one block)")
    if (args.output is None) == (args.output_dir is None):
        parser.error("give either --output (one measure) or --output_dir")
    if args.output is not None and len(args.measure) > 1:
        parser.error("several measures need --output_dir")
    with exit_on_error(parser.prog, ValueError, TypeError, FileNotFoundError):
        states = load_states(args.states_scp)
        num_items = states[0].shape[0]
        logging.info(
            f"Read {len(states)} states of {num_items} rows x {states[0].shape[1]} dims "
            f"from {len(args.states_scp)} scp file(s)"
        )
        info = read_info(Path(args.states_scp[0]).parent) or {}
        unit = "frames" if info.get("pooling") == "frame" else "utterances"
        for measure in args.measure:
            options = {}
            if args.batch_size is not None:
                if "batch_size" in MEASURE_OPTIONS[measure]:
                    options["batch_size"] = args.batch_size
                else:
                    logging.info(f"--batch_size does not apply to {measure}; ignored")
            corr = np.asarray(correlation_matrix(states, measure=measure, **options), dtype=np.float64)
            if args.output_dir is not None:
                output = Path(args.output_dir) / f"{measure}.npy"
                heatmap = Path(args.output_dir) / f"{measure}.png"
            else:
                output, heatmap = Path(args.output), args.heatmap
            with atomic_output_file(output, "wb") as f:
                np.save(f, corr)
            logging.info(f"Wrote {corr.shape[0]}x{corr.shape[1]} {measure} matrix to {output}")
            if heatmap:
                save_heatmap(corr, str(heatmap), measure, num_items, unit)
                logging.info(f"Wrote heatmap to {heatmap}")


if __name__ == "__main__":
    main()
