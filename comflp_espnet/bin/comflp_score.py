#!/usr/bin/env python3
"""Score decoded models (CER and WER) and rank CoMFLP candidates.

    python -m comflp_espnet.bin.comflp_score --ref data/text --hyp_dir decode/hyp \
        --output_dir scores [--token_type char] [--proposals proposals.json --candidates_dir candidates]

Outputs and the ranking rule: ``comflp_espnet.ranking``.
"""

import argparse
from typing import List, Optional

from comflp_espnet.cli import exit_on_error, new_parser, setup_logging
from comflp_espnet.ranking import score_hyp_dir
from comflp_espnet.rundir import read_proposals


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_score", "Score decoded models with CER/WER and rank CoMFLP candidates"
    )
    parser.add_argument("--ref", required=True, help="reference Kaldi text")
    parser.add_argument("--hyp_dir", required=True, help="directory with <name>/text")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--metric", default="auto", choices=("auto", "cer", "wer"))
    parser.add_argument(
        "--token_type", default=None,
        help="token type of the models (char -> CER for --metric auto, else WER)",
    )
    parser.add_argument(
        "--utt2spk", default=None,
        help="speakers for the summary table (default: utt2spk next to --ref)",
    )
    parser.add_argument(
        "--nlsyms_txt", default=None,
        help="non-linguistic symbols removed before scoring, one per line",
    )
    parser.add_argument(
        "--models", default=None,
        help="comma-separated model names to score (default: every <name>/text)",
    )
    parser.add_argument("--proposals", default=None, help="proposals.json to rank")
    parser.add_argument(
        "--candidates_dir", default=None,
        help="comflp_candidates output (prune.yaml gives the parameter counts)",
    )
    parser.add_argument(
        "--label_prefix", default="",
        help="prefix of the model names in scores.md rows (e.g. a test set name + '/')",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    with exit_on_error(parser.prog, FileNotFoundError, ValueError):
        proposals = read_proposals(args.proposals) if args.proposals else None
        score_hyp_dir(args.ref, args.hyp_dir, args.output_dir, metric=args.metric,
                      token_type=args.token_type, utt2spk=args.utt2spk, nlsyms_txt=args.nlsyms_txt,
                      models=[n for n in (args.models or "").split(",") if n] or None,
                      proposals=proposals, candidates_dir=args.candidates_dir,
                      label_prefix=args.label_prefix)


if __name__ == "__main__":
    main()
