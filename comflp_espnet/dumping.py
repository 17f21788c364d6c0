"""Dump pooled encoder hidden states h_0..h_L of an ESPnet ASR model over a data set.

``run_dump`` reads the audio with ESPnet's own inference data pipeline (as
``espnet2.bin.asr_inference``), runs the model's encoder with
``comflp_espnet.states.EncoderStateCollector`` and writes
``{states.ark,states.scp,states_info.yaml}`` (``comflp_espnet.state_archive``).
``check_inputs`` validates the data before the model is loaded.
"""

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from comflp_espnet.atomic import atomic_output_dir
from comflp_espnet.datadir import DataDirError, read_kaldi_map, read_keys, unreadable_audio, utterance_ids
from comflp_espnet.decoding import MIN_SECONDS, sample_rate
from comflp_espnet.gc_tuning import collector_paused

# Utterances per forward pass of the dump (comflp_dump --batch_size).
DEFAULT_BATCH_SIZE = 8


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
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 0,
    device: str = "cpu",
    extra_info: Optional[Dict[str, Any]] = None,
    skip_bad_utts: bool = False,
) -> Dict[str, Any]:
    """Dump states of the utterances to ``output_dir`` (atomically); return the info.

    Batches are ``batch_size`` consecutive utterances of the list (the key file,
    else the data file), so that a list made of whole batches of a larger set
    (``comflp_espnet.job_batches``) gives the states that set gives: a skipped
    utterance leaves its batch smaller and does not shift the later ones.

    An utterance whose audio cannot be read, or that is too short for the
    encoder's subsampling, is an error; with ``skip_bad_utts`` it is skipped
    and listed in ``states_info.yaml`` (``skipped_keys`` with reasons).
    """
    with collector_paused():
        from espnet2.tasks.asr import ASRTask

        from comflp_espnet.state_archive import StatesWriter, write_info
        from comflp_espnet.states import EncoderStateCollector, log_skipped

    wav_scp, _, data_type = [t for t in data_path_and_name_and_type if t[1] == "speech"][0]
    keys_wanted = read_keys(key_file) if key_file is not None else list(read_kaldi_map(wav_scp))
    bad = unreadable_audio(wav_scp, keys_wanted, data_type)
    if bad and not skip_bad_utts:
        key = sorted(bad)[0]
        raise DumpError(
            f"{len(bad)} utterance(s) of {wav_scp} cannot be read, e.g. {key}: {bad[key]}; fix or remove "
            "them from the data dir, or pass --comflp_skip_bad_utts true (--skip_bad_utts true) to skip them")
    reasons: Dict[str, str] = dict(bad)
    fs = sample_rate(train_args)
    min_samples = int(MIN_SECONDS * fs) if fs else 0
    loader = ASRTask.build_streaming_iterator(
        list(data_path_and_name_and_type),
        dtype="float32",
        batch_size=1,
        key_file=key_file,
        num_workers=num_workers,
        preprocess_fn=ASRTask.build_preprocess_fn(train_args, False),
        collate_fn=None,
        inference=True,
    )
    if bad:
        # Unreadable utterances are passed over (ESPnet's data set takes a list of keys too).
        loader.dataset.key_file = [k for k in keys_wanted if k not in bad]
    collate = ASRTask.build_collate_fn(train_args, False)
    position = {k: i for i, k in enumerate(keys_wanted)}

    def batches_of_the_list():
        from comflp_espnet.job_batches import batch_groups

        def items():
            for key, data in loader.dataset:
                yield position[key], (key, data)

        for group in batch_groups(items(), batch_size):
            yield collate(group)
    skipped: List[str] = []
    num_frames = 0
    dim = None
    start = time.perf_counter()
    with atomic_output_dir(output_dir) as tmp_dir:
        with StatesWriter(tmp_dir, final_dir=output_dir) as writer, EncoderStateCollector(
            model, pooling=pooling, frames_per_utt=frames_per_utt, seed=seed
        ) as collector:
            batches = batches_of_the_list()
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
                # Audio shorter than the frontend's window fails inside the model: set it apart first.
                tiny = [k for k, n in zip(keys, lengths.tolist()) if speech.dim() == 2 and n < min_samples]
                if tiny:
                    keep = [i for i, k in enumerate(keys) if k not in tiny]
                    keys = [keys[i] for i in keep]
                    lengths = lengths[keep]
                    speech = speech[keep][:, : int(lengths.max())] if keep else speech[:0]
                if keys:
                    states, short = collector.collect(keys, speech, lengths)
                else:
                    states, short = {}, []
                short = tiny + list(short)
                if short and not skip_bad_utts:
                    raise DumpError(
                        f"utterance(s) {', '.join(short[:5])} of {wav_scp} are too short for the encoder's "
                        "subsampling; fix or remove them from the data dir, or pass --comflp_skip_bad_utts "
                        "true (--skip_bad_utts true) to skip them")
                log_skipped(short)
                skipped.extend(short)
                reasons.update({k: "too short for the encoder's subsampling" for k in short})
                for key in keys:
                    if key in states:
                        matrix = states[key]
                        writer.write(key, matrix)
                        dim = matrix.shape[1]
                        num_frames += matrix.shape[0] // (collector.num_layers + 1)
                last_key = (keys or short)[-1]
            num_written = writer.count
        skipped = sorted(reasons)
        if num_written == 0:
            raise DumpError(
                f"no states written: all {len(skipped)} utterance(s) of {wav_scp} were unreadable or too "
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
            "skipped_reasons": {k: reasons[k] for k in skipped},
            "encoder": getattr(train_args, "encoder", None),
            "data": [",".join(t) for t in data_path_and_name_and_type],
            "key_file": key_file,
            "seconds": round(time.perf_counter() - start, 3),
        }
        info.update(extra_info or {})
        write_info(tmp_dir, info)
    if skipped:
        logging.warning(f"{len(skipped)} utterance(s) skipped (--skip_bad_utts true): "
                        + ", ".join(f"{k} ({reasons[k]})" for k in skipped[:10]) + f" (see {output_dir})")
    logging.info(f"Wrote states of {num_written} utterances to {output_dir}")
    return info
