#!/usr/bin/env python3
"""Print where a CoMFLP search's results are and one summary line.

    python -m comflp_espnet.bin.comflp_summary --search_dir exp/asr_x/comflp/dc_dp_prune6

prints the search's RESULTS.md, the pruned winner's and the fine-tuned model's directories, and
``<tag>: removed encoder layers ... (12 -> 6); params ... -> ...; test CER original ... /
pruned ... / fine-tuned ...; search ...``.  Parts not made yet are left out; what it reads:
``comflp_espnet.run_summary``.
"""

import argparse
import logging
from typing import List, Optional

from comflp_espnet.cli import exit_on_error, new_parser, setup_logging
from comflp_espnet.run_summary import SummaryError, summarize, summary_lines


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser("comflp_summary", "Where a CoMFLP search's results are, and a one-line summary")
    parser.add_argument(
        "--search_dir", required=True,
        help="one search's directory, <asr_exp>/comflp/<tag> (--comflp_dir/--comflp_tag of asr_comflp.sh)",
    )
    parser.add_argument(
        "--inference_tag", default=None,
        help="decoding of stage 20 to read (test_decode/<inference_tag>); default: the one scored last",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    with exit_on_error(parser.prog, SummaryError):
        summary = summarize(args.search_dir, args.inference_tag)
    for note in summary["notes"]:
        logging.warning(note)
    print("\n".join(summary_lines(summary)), flush=True)


if __name__ == "__main__":
    main()
