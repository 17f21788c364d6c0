#!/usr/bin/env python3
"""Remove encoder (and optionally attention decoder) layers of an ESPnet ASR model.

    python -m comflp_espnet.bin.comflp_prune \
        --asr_train_config exp/asr_train/config.yaml \
        --asr_model_file exp/asr_train/valid.acc.ave.pth \
        --prune 1,3,4 [--prune_decoder 2] --output_dir exp/asr_train_pruned

Layer ids are 1-based. The output directory holds config.yaml, the model file
(same name as the input) and prune.yaml; it loads in stock ESPnet
(asr_inference, asr_train --init_param).
"""

import argparse
from typing import List, Optional

from comflp_espnet.cli import exit_on_error, new_parser, setup_logging
from comflp_espnet.surgery import PruneError, parse_layer_ids, prune_experiment


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser("comflp_prune", "Remove encoder/decoder layers of an ESPnet ASR model")
    parser.add_argument("--asr_train_config", required=True, help="Training config.yaml")
    parser.add_argument("--asr_model_file", required=True, help="Model file (.pth)")
    parser.add_argument(
        "--prune", default="", help="Encoder layers to remove, 1-based, e.g. 1,3,4"
    )
    parser.add_argument(
        "--prune_decoder", default="", help="Attention decoder layers to remove, 1-based"
    )
    parser.add_argument("--output_dir", required=True, help="Directory to write")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    try:
        prune_encoder = parse_layer_ids(args.prune)
        prune_decoder = parse_layer_ids(args.prune_decoder)
    except PruneError as e:
        parser.error(str(e))
    if not prune_encoder and not prune_decoder:
        parser.error("give the layers to remove with --prune and/or --prune_decoder")
    with exit_on_error(parser.prog, PruneError, FileNotFoundError, ValueError):
        prune_experiment(
            args.asr_train_config,
            args.asr_model_file,
            args.output_dir,
            prune_encoder=prune_encoder,
            prune_decoder=prune_decoder,
        )


if __name__ == "__main__":
    main()
