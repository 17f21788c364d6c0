#!/usr/bin/env python3
"""Dump pooled encoder hidden states h_0..h_L of an ESPnet ASR model.

One job of ``${cmd} JOB=1:nj``::

    python -m comflp_espnet.bin.comflp_dump \
        --asr_train_config exp/asr_train/config.yaml \
        --asr_model_file exp/asr_train/valid.acc.ave.pth \
        --data_path_and_name_and_type dump/raw/calib/wav.scp,speech,sound \
        --key_file states/keys.JOB.scp --output_dir states/output.JOB \
        [--pooling mean|frame] [--frames_per_utt N] [--seed 0] \
        [--batch_size 8] [--ngpu 0] [--skip_bad_utts false]

writes ``states/output.JOB/{states.ark,states.scp,states_info.yaml}`` (format:
``comflp_espnet.state_archive``; the dump itself: ``comflp_espnet.dumping``).

Merging the jobs: ``python -m comflp_espnet.bin.comflp_dump --merge
states/output.* --output_dir states`` writes ``states/states.scp`` and the
combined ``states/states_info.yaml``.
"""

import argparse
from typing import List, Optional

from comflp_espnet.cli import InputError, exit_on_error, new_parser, setup_logging, str2bool, str2triple
from comflp_espnet.dumping import DEFAULT_BATCH_SIZE, DumpError, check_inputs, run_dump


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_dump", "Dump pooled encoder hidden states of an ESPnet ASR model"
    )
    parser.add_argument("--asr_train_config", help="Training config.yaml")
    parser.add_argument("--asr_model_file", help="Model file (.pth)")
    parser.add_argument(
        "--data_path_and_name_and_type",
        type=str2triple,
        action="append",
        default=[],
        help="e.g. dump/raw/calib/wav.scp,speech,sound",
    )
    parser.add_argument("--key_file", default=None, help="Keys to dump (one job's share)")
    parser.add_argument("--output_dir", required=True, help="Output directory")
    parser.add_argument("--pooling", default="mean", choices=("mean", "frame"))
    parser.add_argument(
        "--frames_per_utt",
        type=int,
        default=None,
        help="frame pooling: keep at most this many random frames per utterance",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the frame subsets")
    parser.add_argument(
        "--batch_size", type=int, default=DEFAULT_BATCH_SIZE,
        help="Utterances per forward pass: that many consecutive utterances of the list",
    )
    parser.add_argument("--num_workers", type=int, default=0, help="Data loader workers")
    parser.add_argument("--ngpu", type=int, default=0, choices=(0, 1), help="0: CPU, 1: GPU")
    parser.add_argument(
        "--skip_bad_utts", type=str2bool, default=False,
        help="Skip (and list) utterances whose audio cannot be read or is too short for the "
        "encoder, instead of stopping with an error",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="DUMP_DIR",
        help="Merge these job output directories into --output_dir instead of dumping",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)

    if args.merge:
        from comflp_espnet.state_archive import merge_dumps

        with exit_on_error(parser.prog, ValueError, FileNotFoundError):
            merge_dumps(args.merge, args.output_dir)
        return

    for option in ("asr_train_config", "asr_model_file"):
        if getattr(args, option) is None:
            parser.error(f"--{option} is required")
    if not args.data_path_and_name_and_type:
        parser.error("--data_path_and_name_and_type is required")
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    if args.frames_per_utt is not None and args.frames_per_utt < 1:
        parser.error("--frames_per_utt must be >= 1")

    from comflp_espnet.model_io import load_asr_model

    with exit_on_error(parser.prog, DumpError, FileNotFoundError, ValueError):
        check_inputs(args.data_path_and_name_and_type, args.key_file)
        device = "cuda" if args.ngpu > 0 else "cpu"
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise InputError("--ngpu 1 but no CUDA device is visible; use --ngpu 0")
        model, train_args = load_asr_model(
            args.asr_train_config, args.asr_model_file, device=device
        )
        run_dump(
            model,
            train_args,
            args.data_path_and_name_and_type,
            args.output_dir,
            key_file=args.key_file,
            pooling=args.pooling,
            frames_per_utt=args.frames_per_utt,
            seed=args.seed,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=device,
            skip_bad_utts=args.skip_bad_utts,
            extra_info={
                "asr_train_config": str(args.asr_train_config),
                "asr_model_file": str(args.asr_model_file),
            },
        )


if __name__ == "__main__":
    main()
