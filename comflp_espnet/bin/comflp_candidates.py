#!/usr/bin/env python3
"""Turn coarse-search proposals into pruned candidate experiments.

    python -m comflp_espnet.bin.comflp_candidates --proposals proposals.json \\
        --asr_train_config exp/asr_x/config.yaml --asr_model_file exp/asr_x/valid.acc.ave.pth \\
        --output_dir candidates [--include_original true]

For each proposal in rank order ``OUT/candNN`` holds a pruned ESPnet experiment
(``config.yaml``, the model file, ``prune.yaml``) with its freshness record, and
``OUT/models.scp`` lists them (``original`` first with ``--include_original
true``), ready for ``comflp_decode --models_scp``.  A rerun keeps candidates
whose records are current and rebuilds the others (``comflp_espnet.candidates``).
"""

import argparse
import logging
from pathlib import Path
from typing import List, Optional

from comflp_espnet.candidates import write_candidates
from comflp_espnet.cli import exit_on_error, new_parser, setup_logging, str2bool
from comflp_espnet.rundir import read_proposals


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_candidates", "Write one pruned ESPnet experiment per CoMFLP proposal"
    )
    parser.add_argument("--proposals", required=True, help="proposals.json of comflp_search")
    parser.add_argument("--asr_train_config", required=True, help="config.yaml of the model")
    parser.add_argument("--asr_model_file", required=True, help="model file to prune")
    parser.add_argument("--output_dir", required=True, help="directory of the candidates")
    parser.add_argument(
        "--include_original", type=str2bool, default=False,
        help="List the unpruned model as 'original' first in models.scp",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    for opt in ("asr_train_config", "asr_model_file"):
        if not Path(getattr(args, opt)).is_file():
            parser.error(f"--{opt} {getattr(args, opt)}: no such file")
    with exit_on_error(parser.prog, ValueError, FileNotFoundError):
        result = write_candidates(read_proposals(args.proposals), args.asr_train_config,
                                  args.asr_model_file, args.output_dir, args.include_original)
    logging.info(f"wrote {Path(args.output_dir) / 'models.scp'} ({len(result['models'])} model(s))")


if __name__ == "__main__":
    main()
