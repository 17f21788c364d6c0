#!/usr/bin/env python3
"""Decode one share of utterances with several ASR models in one process.

One job of ``${decode_cmd} JOB=1:nj``: every model of ``--models_scp``
(``<name> <asr config.yaml> <asr model file>``) decodes the key share with
ESPnet's ``Speech2Text``; outputs and their records are described in
``comflp_espnet.decoding``.  ``--check_options true`` only checks the decoding
options (``--config`` and ``--<option> <value>`` pairs) against Speech2Text's,
without importing ESPnet.
"""

import argparse
import logging
from typing import List, Optional

from comflp_espnet import decoding
from comflp_espnet.cli import exit_on_error, new_parser, setup_logging, str2bool, str2triple, str_or_none
from comflp_espnet.rundir import DocumentError


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_decode", "Decode a key share with several ESPnet ASR models in one process"
    )
    parser.add_argument(
        "--models_scp", default=None,
        help="Lines '<name> <asr config.yaml> <asr model file>' (required unless --check_options)",
    )
    parser.add_argument(
        "--data_path_and_name_and_type", type=str2triple, default=None,
        action="append", help="e.g. dump/raw/test/wav.scp,speech,sound",
    )
    parser.add_argument("--key_file", type=str_or_none, default=None)
    parser.add_argument("--output_dir", default=None)
    parser.add_argument(
        "--check_options", type=str2bool, default=False,
        help="Only check the inference options (--config and the extra --<option> <value>) "
        "against Speech2Text's, without importing ESPnet or decoding; exit 2 if one is wrong",
    )
    parser.add_argument(
        "--config", type=str_or_none, default=None,
        help="Inference config YAML (beam_size, ctc_weight, ...), as asr_inference's",
    )
    parser.add_argument(
        "--ngpu", type=int, default=None, help="0: CPU, 1: cuda (default: config, else 0)"
    )
    parser.add_argument("--batch_size", type=int, default=None, help="Only 1 is supported")
    parser.add_argument("--seed", type=int, default=None, help="Random seed (default 0)")
    parser.add_argument(
        "--skip_bad_utts", type=str2bool, default=False,
        help="Skip (and list) utterances whose audio cannot be read or is too short for the "
        "encoder, instead of stopping with an error",
    )
    parser.add_argument(
        "--num_workers", type=int, default=None, help="DataLoader workers (default 1)"
    )
    parser.add_argument(
        "--dtype", default=None, choices=["float16", "float32", "float64"],
        help="Data type (default float32)",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args, extra = parser.parse_known_args(cmd)
    setup_logging(args.log_level)
    with exit_on_error(parser.prog, DocumentError):
        if args.check_options:
            conf = decoding.check_options(args.config, extra)
            logging.info(f"inference options OK: {', '.join(sorted(conf)) or '(none)'}")
            return
        for option in ("models_scp", "data_path_and_name_and_type", "output_dir"):
            if getattr(args, option) is None:
                parser.error(f"--{option} is required")
        given = {k: getattr(args, k) for k in ("batch_size", "ngpu", "seed", "num_workers", "dtype")}
        decoding.decode_share(args.models_scp, args.data_path_and_name_and_type, args.key_file,
                              args.output_dir, args.config, extra, given, args.skip_bad_utts)


if __name__ == "__main__":
    main()
