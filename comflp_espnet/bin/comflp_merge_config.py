#!/usr/bin/env python3
"""Merge an overlay YAML into an ESPnet training config for fine-tuning.

    python -m comflp_espnet.bin.comflp_merge_config \
        --base exp/.../winner/config.yaml --overlay conf/comflp/finetune.yaml \
        --output exp/.../finetune/finetune_config.yaml

The overlay is applied on top of the base config: nested mappings are merged
key by key (``optim_conf: {lr: 0.0002}`` changes only the learning rate), any
other value (scalars, lists, ``null``) replaces the base's.

The base is the config.yaml an ESPnet training wrote, so it also records how
that training was run.  Entries that the fine-tuning command line gives again
(data and shape files, fold lengths, output directory, initial parameters,
device and distributed settings; see ``--drop``) are removed: ESPnet appends
command-line values of list options to the config's, and would otherwise train
on the data twice.  The output is written atomically.
"""

import argparse
import logging
from typing import List, Optional

import yaml

from comflp_espnet.atomic import atomic_output_file
from comflp_espnet.cli import exit_on_error, new_parser, read_yaml_mapping, setup_logging
from comflp_espnet.config_merge import DEFAULT_DROP, merge

def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_merge_config", "Merge an overlay YAML into an ESPnet training config"
    )
    parser.add_argument("--base", required=True, help="config.yaml written by ESPnet training")
    parser.add_argument("--overlay", required=True, help="YAML whose entries override the base")
    parser.add_argument("--output", required=True, help="merged config to write")
    parser.add_argument(
        "--drop",
        nargs="*",
        default=list(DEFAULT_DROP),
        help="top-level keys removed from the base before merging",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)

    with exit_on_error(parser.prog):
        base = read_yaml_mapping(args.base, "--base", "training options", "max_epoch: 10")
        overlay = read_yaml_mapping(
            args.overlay, "--overlay", "training options", "max_epoch: 10"
        )
    dropped = [k for k in args.drop if k in base]
    for key in dropped:
        del base[key]
    overridden = sorted(k for k in overlay if k in base)
    merged = merge(base, overlay)
    with atomic_output_file(args.output, encoding="utf-8") as f:
        yaml.safe_dump(merged, f, allow_unicode=True, sort_keys=False, indent=4)
    logging.info(
        f"Wrote {args.output}: {args.base} with {len(overlay)} entr"
        f"{'y' if len(overlay) == 1 else 'ies'} of {args.overlay} "
        f"(overriding {', '.join(overridden) or 'nothing'}); removed {', '.join(dropped) or 'nothing'}"
    )


if __name__ == "__main__":
    main()
