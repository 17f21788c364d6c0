#!/usr/bin/env python3
"""Write the CoMFLP section of an ESPnet-style RESULTS.md.

The section sits between ``<!-- comflp:begin TAG -->`` and ``<!-- comflp:end TAG -->``;
a rerun replaces exactly that block and keeps everything else in the file.  Its
contents: ``comflp_espnet.results``.
"""

import argparse
import logging
import re
from pathlib import Path
from typing import List, Optional

from comflp_espnet.atomic import atomic_output_file
from comflp_espnet.cli import exit_on_error, new_parser, setup_logging
from comflp_espnet.results import TAG_PATTERN, build_section, replace_section


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_results", "Write/update the CoMFLP section of an ESPnet-style RESULTS.md"
    )
    parser.add_argument("--output", required=True, help="RESULTS.md to create or update")
    parser.add_argument(
        "--tag", required=True,
        help="section id; the section between its markers is replaced on rerun",
    )
    parser.add_argument("--title", default=None, help="section heading")
    parser.add_argument("--asr_exp", default=None, help="original experiment directory")
    parser.add_argument("--asr_model_file", default=None, help="original model file")
    parser.add_argument(
        "--winner_dir", default=None, help="winning candidate dir (its prune.yaml is read)"
    )
    parser.add_argument("--proposals", default=None, help="proposals.json (search settings)")
    parser.add_argument("--ranking", default=None, help="ranking.json of comflp_score")
    parser.add_argument("--fine_set", default=None, help="name of the fine-search set")
    parser.add_argument("--measure", default=None, help="correlation measure name")
    parser.add_argument("--heatmap", default=None, help="correlation heatmap image")
    parser.add_argument(
        "--test_scores", action="append", default=[],
        help="NAME=PATH: test set name and comflp_score output dir (or its scores.json); "
        "repeat per test set",
    )
    parser.add_argument("--inference_config", default=None, help="decode config to link")
    parser.add_argument("--finetune_config", default=None, help="fine-tune config to link")
    parser.add_argument("--finetune_dir", default=None, help="fine-tuned experiment dir")
    parser.add_argument("--date", default=None, help="date line (default: now)")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    if not re.fullmatch(TAG_PATTERN, args.tag):
        parser.error(f"--tag {args.tag!r}: use letters, digits and _ . + - only")
    output = Path(args.output)
    with exit_on_error(parser.prog, ValueError):
        section = build_section(args, output.parent)
        document = output.read_text(encoding="utf-8") if output.is_file() else ""
        updated = replace_section(document, args.tag, section, source=str(output))
    with atomic_output_file(output, encoding="utf-8") as f:
        f.write(updated)
    logging.info(f"wrote section {args.tag} of {output}")


if __name__ == "__main__":
    main()
