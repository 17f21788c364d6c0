#!/usr/bin/env python3
"""Dump pooled encoder hidden states h_0..h_L of an ESPnet ASR model.

One job of ``${cmd} JOB=1:nj``::

    python -m comflp_espnet.bin.comflp_dump \
        --asr_train_config exp/asr_train/config.yaml \
        --asr_model_file exp/asr_train/valid.acc.ave.pth \
        --data_path_and_name_and_type dump/raw/calib/wav.scp,speech,sound \
        --key_file states/keys.JOB.scp --output_dir states/output.JOB \
        [--pooling mean|frame] [--frames_per_utt N] [--seed 0] \
        [--batch_size 8] [--ngpu 0]

writes ``states/output.JOB/{states.ark,states.scp,states_info.yaml}`` (format:
``comflp_espnet.state_archive``). Audio is read and preprocessed by ESPnet's
own inference data pipeline, as in ``espnet2.bin.asr_inference``.

Merging the jobs: either ``cat states/output.*/states.scp > states/states.scp``
(a valid scp; pass the job scps or their concatenation to comflp_corr), or::

    python -m comflp_espnet.bin.comflp_dump --merge states/output.* --output_dir states

which also writes the combined ``states/states_info.yaml``.

Utterances too short for the encoder's subsampling are skipped with a warning;
their number and ids are recorded in ``states_info.yaml``.
"""

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from comflp_espnet.atomic import atomic_output_dir
from comflp_espnet.cli import InputError, exit_on_error, new_parser, setup_logging, str2triple
from comflp_espnet.datadir import DataDirError, read_kaldi_map, read_keys, utterance_ids


class DumpError(RuntimeError):
    """Bad input for a state dump."""


def check_inputs(
    data_path_and_name_and_type: Sequence[Tuple[str, str, str]], key_file: Optional[str]
) -> List[str]:
    """Validate the data before loading the model; return the keys to dump."""
    speech = [t for t in data_path_and_name_and_type if t[1] == "speech"]
    if len(speech) != 1:
        raise DumpError("give exactly one --data_path_and_name_and_type ...,speech,<type>")
    path = Path(speech[0][0])
    if not path.is_file():
        raise DumpError(f"--data_path_and_name_and_type: {path}: no such file")
    if path.name == "wav.scp":
        data_dir = path.parent
        if (data_dir / "segments").is_file():
            raise DumpError(
                f"{data_dir} has a segments file; dump states from the audio dumped by "
                "asr.sh (dump/raw/<set>), which has one wav.scp entry per utterance"
            )
        try:
            utterance_ids(data_dir, require_text=False)
        except DataDirError as e:
            raise DumpError(str(e)) from e
    entries = read_kaldi_map(path)
    if not entries:
        raise DumpError(f"{path} is empty")
    if key_file is not None:
        if not Path(key_file).is_file():
            raise DumpError(f"--key_file: {key_file}: no such file")
        keys = read_keys(key_file)
        if not keys:
            raise DumpError(f"--key_file: {key_file} is empty")
        unknown = [k for k in keys if k not in entries]
        if unknown:
            raise DumpError(
                f"--key_file: {len(unknown)} key(s) of {key_file} are not in {path} "
                f"(e.g. {unknown[:3]})"
            )
    else:
        keys = list(entries)
    if speech[0][2] in ("sound", "kaldi_ark", "npy", "multi_columns_sound"):
        # Cheap check of plain file paths before the model is loaded; pipes
        # ("... |") and ark offsets are checked when read.
        missing = []
        for key in keys:
            value = entries[key]
            if value.endswith("|"):
                continue
            file_path = value.split()[0].rsplit(":", 1)[0] if speech[0][2] == "kaldi_ark" else value.split()[0]
            if not Path(file_path).exists():
                missing.append((key, file_path))
        if missing:
            raise DumpError(
                f"{path} lists {len(missing)} missing audio file(s), e.g. "
                + ", ".join(f"{k}: {p}" for k, p in missing[:3])
            )
    return keys


def run_dump(
    model,
    train_args: argparse.Namespace,
    data_path_and_name_and_type: Sequence[Tuple[str, str, str]],
    output_dir: str,
    key_file: Optional[str] = None,
    pooling: str = "mean",
    frames_per_utt: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str = "cpu",
    extra_info: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Dump states of the utterances to ``output_dir`` (atomically); return the info."""
    import torch
    from espnet2.tasks.asr import ASRTask

    from comflp_espnet.state_archive import StatesWriter, write_info
    from comflp_espnet.states import EncoderStateCollector, log_skipped

    wav_scp = [t[0] for t in data_path_and_name_and_type if t[1] == "speech"][0]
    loader = ASRTask.build_streaming_iterator(
        list(data_path_and_name_and_type),
        dtype="float32",
        batch_size=batch_size,
        key_file=key_file,
        num_workers=num_workers,
        preprocess_fn=ASRTask.build_preprocess_fn(train_args, False),
        collate_fn=ASRTask.build_collate_fn(train_args, False),
        inference=True,
    )
    skipped: List[str] = []
    num_frames = 0
    dim = None
    start = time.perf_counter()
    with atomic_output_dir(output_dir) as tmp_dir:
        with StatesWriter(tmp_dir, final_dir=output_dir) as writer, EncoderStateCollector(
            model, pooling=pooling, frames_per_utt=frames_per_utt, seed=seed
        ) as collector:
            batches = iter(loader)
            last_key = None
            while True:
                try:
                    keys, batch = next(batches)
                except StopIteration:
                    break
                except Exception as e:
                    where = f"after utterance '{last_key}'" if last_key else "at the first batch"
                    raise DumpError(f"failed to read audio listed in {wav_scp} {where}: {e}") from e
                speech = batch["speech"].to(device)
                lengths = batch["speech_lengths"].to(device)
                states, short = collector.collect(keys, speech, lengths)
                log_skipped(short)
                skipped.extend(short)
                for key in keys:
                    if key in states:
                        matrix = states[key]
                        writer.write(key, matrix)
                        dim = matrix.shape[1]
                        num_frames += matrix.shape[0] // (collector.num_layers + 1)
                last_key = keys[-1]
            num_written = writer.count
        if num_written == 0:
            raise DumpError(
                f"no states written: all {len(skipped)} utterance(s) of {wav_scp} were too "
                "short for the encoder's subsampling"
                if skipped
                else f"no utterances read from {wav_scp}"
            )
        info: Dict[str, Any] = {
            "num_layers": collector.num_layers,
            "num_states": collector.num_layers + 1,
            "dim": int(dim),
            "pooling": pooling,
            "frames_per_utt": frames_per_utt if pooling == "frame" else None,
            "seed": seed,
            "layout": (
                "one (L+1) x D matrix per utterance; row i = masked mean of h_i"
                if pooling == "mean"
                else "one ((L+1)*T) x D matrix per utterance, layer-major; rows "
                "i*T..(i+1)*T-1 = the T kept frames of h_i"
            ),
            "num_utts": num_written,
            "num_frames": num_frames,
            "num_skipped": len(skipped),
            "skipped_keys": skipped,
            "encoder": getattr(train_args, "encoder", None),
            "data": [",".join(t) for t in data_path_and_name_and_type],
            "key_file": key_file,
            "seconds": round(time.perf_counter() - start, 3),
        }
        info.update(extra_info or {})
        write_info(tmp_dir, info)
    if skipped:
        logging.warning(f"{len(skipped)} utterance(s) skipped as too short (see {output_dir})")
    logging.info(f"Wrote states of {num_written} utterances to {output_dir}")
    return info


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
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_workers", type=int, default=0, help="Data loader workers")
    parser.add_argument("--ngpu", type=int, default=0, choices=(0, 1), help="0: CPU, 1: GPU")
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
            extra_info={
                "asr_train_config": str(args.asr_train_config),
                "asr_model_file": str(args.asr_model_file),
            },
        )


if __name__ == "__main__":
    main()
