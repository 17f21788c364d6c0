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
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"

# Options asr_comflp.sh's fine-tuning stage passes to asr_train on the command
# line, options that describe the original run's devices and processes, and
# entries ESPnet records in config.yaml that its parser does not accept back.
DEFAULT_DROP = (
    "config",
    "print_config",
    "collect_stats",
    "write_collected_feats",
    "train_data_path_and_name_and_type",
    "valid_data_path_and_name_and_type",
    "train_shape_file",
    "valid_shape_file",
    "fold_length",
    "output_dir",
    "init_param",
    "resume",
    "ngpu",
    "dist_backend",
    "dist_init_method",
    "dist_world_size",
    "dist_rank",
    "local_rank",
    "dist_master_addr",
    "dist_master_port",
    "dist_launcher",
    "multiprocessing_distributed",
    "distributed",
    # Recorded by ESPnet in config.yaml but not options of its parser.
    "required",
    "version",
)


def merge(base: Dict[str, Any], overlay: Dict[str, Any]) -> Dict[str, Any]:
    """Recursive merge; the overlay wins, mappings are merged key by key."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_mapping(path: str, option: str) -> Dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"{option} {path}: no such file")
    try:
        with p.open(encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise SystemExit(f"{option} {path}: does not parse as YAML: {e}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SystemExit(
            f"{option} {path}: expected a mapping of training options "
            f"(e.g. 'max_epoch: 10'), got {type(data).__name__}"
        )
    return data


def write_yaml_atomic(data: Dict[str, Any], path: str) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(data, f, allow_unicode=True, sort_keys=False, indent=4)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Merge an overlay YAML into an ESPnet training config",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--log_level",
        type=lambda x: x.upper(),
        default="INFO",
        choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET"),
        help="The verbose level of logging",
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
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)

    base = load_mapping(args.base, "--base")
    overlay = load_mapping(args.overlay, "--overlay")
    dropped = [k for k in args.drop if k in base]
    for key in dropped:
        del base[key]
    overridden = sorted(k for k in overlay if k in base)
    merged = merge(base, overlay)
    write_yaml_atomic(merged, args.output)
    logging.info(
        f"Wrote {args.output}: {args.base} with {len(overlay)} entr"
        f"{'y' if len(overlay) == 1 else 'ies'} of {args.overlay} "
        f"(overriding {', '.join(overridden) or 'nothing'}); removed {', '.join(dropped) or 'nothing'}"
    )


if __name__ == "__main__":
    main()
