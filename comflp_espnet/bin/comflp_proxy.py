#!/usr/bin/env python3
"""Score layer-pruning candidates of one ESPnet ASR model by a cheap proxy.

One job of ``${cmd} JOB=1:N``::

    python -m comflp_espnet.bin.comflp_proxy \\
        --asr_train_config exp/asr_train/config.yaml \\
        --asr_model_file exp/asr_train/valid.acc.ave.pth \\
        --candidates proxy/candidates.txt \\
        --data_path_and_name_and_type dump/raw/dev/wav.scp,speech,sound \\
        [--data_path_and_name_and_type dump/raw/dev/text,text,text] \\
        --key_file proxy/keys.JOB.scp --output_dir proxy/output.JOB \\
        [--proxy ctc_greedy|loss] [--batch_size 8] [--ngpu 0] [--dtype float32]

The model is loaded once; no pruned model is written. Every candidate is the
model with some encoder layers skipped, evaluated through a prefix tree of the
candidates' kept-layer sequences (``comflp_espnet.proxy``): the layers shared by
candidates run once per batch.

``--candidates``: lines ``<name> <pruned layer ids>``, ids 1-based and separated
by commas (``cand01 2,5,7``); a name alone is the original model. Blank lines
and ``#`` comments are skipped; names are plain directory names, each once.

``--proxy ctc_greedy`` (CTC argmax, repeats collapsed, blanks dropped, text as
Speech2Text writes it) needs a CTC branch; a model without one is scored by
``loss`` instead, with a log line saying so. ``--proxy loss`` (the model's own
teacher-forced loss) needs the reference text: a second
``--data_path_and_name_and_type <text file>,text,text``.

Utterances are read and preprocessed by ESPnet's inference data pipeline (as
comflp_decode and asr_inference do), grouped by length (up to ``--sort_chunk``
utterances at a time, sorted, cut into batches of ``--batch_size``) so that
batches carry little padding. Outputs, written under a temporary name and
renamed when complete (``OUT`` = ``--output_dir``)::

    OUT/<name>/text        ctc_greedy: Kaldi text "utt words..." in key order
                           (an utterance too short for the encoder: "utt")
    OUT/<name>/loss        loss: "utt loss num_tokens" in key order; loss is
                           the utterance's training loss (CTC and attention
                           weighted by ctc_weight, summed over its tokens),
                           num_tokens its reference tokens; utterances too
                           short for the encoder are left out
    OUT/proxy_info.yaml    proxy (requested and used), candidates, layer
                           forwards done / predicted / without sharing,
                           seconds, utterances, too-short keys, fingerprint

Set-level value of a candidate from the JOB outputs: CER/WER of the
concatenated ``text`` files; or sum(loss) / sum(num_tokens) (per token; the
mean of loss per utterance is the model's own batch loss with
``length_normalized_loss: false``), as ``aggregate_loss`` computes them. A rerun with the same model, candidates,
data and options finds OUT complete and does nothing.
"""

import argparse
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from comflp_espnet.atomic import atomic_output_dir
from comflp_espnet.cli import (
    InputError,
    exit_on_error,
    new_parser,
    setup_logging,
    str2triple,
    str_or_none,
)
from comflp_espnet.datadir import DataDirError, read_kaldi_map, read_keys

PROXIES = ("ctc_greedy", "loss")
INFO_FILE = "proxy_info.yaml"


def read_candidates(path: str) -> List[Tuple[str, Tuple[int, ...], int]]:
    """``(name, pruned layer ids, line number)`` of a candidates file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--candidates {path}: no such file")
    candidates = []
    seen: Dict[str, int] = {}
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split(maxsplit=1)
            name = fields[0]
            if "/" in name or name.startswith("."):
                raise InputError(
                    f"{path}:{lineno}: candidate name {name!r} must be a plain directory "
                    "name (no '/', not starting with '.')"
                )
            if name in seen:
                raise InputError(
                    f"{path}:{lineno}: duplicated candidate name {name!r} (first on line "
                    f"{seen[name]})"
                )
            text = fields[1].strip() if len(fields) > 1 else ""
            items = [t for t in text.replace(",", " ").split() if t]
            try:
                layers = tuple(int(t) for t in items)
            except ValueError:
                raise InputError(
                    f"{path}:{lineno}: expected '<name> <comma-separated pruned layer "
                    f"ids>', got {line.strip()!r}"
                ) from None
            if len(set(layers)) != len(layers):
                raise InputError(f"{path}:{lineno}: {name}: a layer id is given twice")
            seen[name] = lineno
            candidates.append((name, layers, lineno))
    if not candidates:
        raise InputError(f"--candidates {path}: no candidates listed")
    return candidates


def check_candidate_layers(candidates, num_layers: int, path: str) -> None:
    for name, layers, lineno in candidates:
        bad = [i for i in layers if not 1 <= i <= num_layers]
        if bad:
            raise InputError(
                f"{path}:{lineno}: {name}: layer id(s) {bad} out of range; the model's "
                f"encoder has {num_layers} layers, numbered 1..{num_layers}"
            )
        if len(layers) >= num_layers:
            raise InputError(
                f"{path}:{lineno}: {name}: prunes all {num_layers} layers; keep at least one"
            )


def check_data(
    triples: Sequence[Tuple[str, str, str]], proxy: str, key_file: Optional[str]
) -> List[str]:
    """Validate the data options before the model is loaded; return the keys."""
    names = [t[1] for t in triples]
    if names.count("speech") != 1:
        raise InputError("give exactly one --data_path_and_name_and_type <scp>,speech,<type>")
    unknown = [n for n in names if n not in ("speech", "text")]
    if unknown or len(names) != len(set(names)):
        raise InputError(
            "--data_path_and_name_and_type: expected one 'speech' and at most one 'text' "
            f"entry, got names {names}"
        )
    if proxy == "loss" and "text" not in names:
        raise InputError(
            "--proxy loss needs the reference text: add "
            "--data_path_and_name_and_type <data dir>/text,text,text"
        )
    maps = {}
    for path, name, _ in triples:
        try:
            maps[name] = read_kaldi_map(path)
        except DataDirError as e:
            raise InputError(f"--data_path_and_name_and_type: {e}") from None
        if not maps[name]:
            raise InputError(f"--data_path_and_name_and_type: {path} is empty")
    if key_file is not None:
        if not Path(key_file).is_file():
            raise InputError(f"--key_file {key_file}: no such file")
        keys = read_keys(key_file)
        if not keys:
            raise InputError(f"--key_file {key_file} is empty")
    else:
        keys = list(maps["speech"])
    for (path, name, _) in triples:
        missing = [k for k in keys if k not in maps[name]]
        if missing:
            raise InputError(
                f"{path} lacks {len(missing)} utterance(s) of the share, e.g. {missing[:3]}"
            )
    return keys


def digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(args, candidates, keys) -> Dict[str, Any]:
    st = os.stat(args.asr_model_file)
    return {
        "asr_train_config": digest(Path(args.asr_train_config).read_text(encoding="utf-8")),
        "asr_model_file": f"{os.path.abspath(args.asr_model_file)}:{st.st_size}:{int(st.st_mtime)}",
        "candidates": digest([[n, list(l)] for n, l, _ in candidates]),
        "keys": digest(keys),
        "data": digest([list(t) for t in args.data_path_and_name_and_type]),
        "options": digest([args.proxy, args.dtype]),
    }


def output_is_current(out_dir: Path, candidates, fp) -> bool:
    info_path = out_dir / INFO_FILE
    if not info_path.is_file():
        return False
    try:
        info = yaml.safe_load(info_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(info, dict) or info.get("fingerprint") != fp:
        return False
    result = "text" if info.get("proxy") == "ctc_greedy" else "loss"
    return all((out_dir / name / result).is_file() for name, _, _ in candidates)


def length_groups(items, batch_size: int, sort_chunk: int):
    """Cut ``(key, data)`` items into batches of similar speech length.

    Up to ``sort_chunk`` items are read, sorted by length (longest first) and
    cut into batches, so memory stays bounded whatever the data size.
    """
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= sort_chunk:
            yield from _cut(chunk, batch_size)
            chunk = []
    if chunk:
        yield from _cut(chunk, batch_size)


def _cut(chunk, batch_size):
    chunk.sort(key=lambda item: -len(item[1]["speech"]))
    for start in range(0, len(chunk), batch_size):
        yield chunk[start : start + batch_size]


def load_model(args, device):
    import pickle
    import zipfile

    from comflp_espnet.model_io import load_asr_model

    try:
        return load_asr_model(args.asr_train_config, args.asr_model_file, device=device)
    except FileNotFoundError as e:  # files the config refers to: one line each
        raise InputError(str(e)) from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            OSError) as e:
        # A truncated or foreign file: one line that names it.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if str(args.asr_model_file) not in first:
            first = f"cannot load --asr_model_file {args.asr_model_file}: {first}"
        raise InputError(first) from None


def run(args) -> Dict[str, Any]:
    t_start = time.perf_counter()
    candidates = read_candidates(args.candidates)
    keys = check_data(args.data_path_and_name_and_type, args.proxy, args.key_file)
    if args.batch_size < 1:
        raise InputError("--batch_size must be >= 1")
    if args.sort_chunk < 1:
        raise InputError("--sort_chunk must be >= 1")
    for option in ("asr_train_config", "asr_model_file"):
        if not Path(getattr(args, option)).is_file():
            raise InputError(f"--{option} {getattr(args, option)}: no such file")

    out_root = Path(args.output_dir)
    fp = fingerprint(args, candidates, keys)
    if output_is_current(out_root, candidates, fp):
        logging.info(f"{out_root} is complete for these candidates and data; skipping")
        return yaml.safe_load((out_root / INFO_FILE).read_text(encoding="utf-8"))

    t_import = time.perf_counter()
    import torch
    from espnet2.tasks.asr import ASRTask

    from comflp_espnet.proxy import ProxyError, ProxyScorer, TokenTexter

    import_seconds = time.perf_counter() - t_import
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    device = "cuda" if args.ngpu > 0 else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--ngpu 1 but no CUDA device is visible; use --ngpu 0")

    t_load = time.perf_counter()
    model, train_args = load_model(args, device)
    model.to(dtype=getattr(torch, args.dtype)).eval()
    check_candidate_layers(candidates, len(model.encoder.encoders), args.candidates)
    try:
        scorer = ProxyScorer(model, [list(l) for _, l, _ in candidates], args.proxy)
        texter = TokenTexter.from_model(model, train_args) if scorer.proxy == "ctc_greedy" else None
    except ProxyError as e:
        raise InputError(f"{args.asr_train_config}: {e}") from None
    if scorer.proxy == "loss" and "text" not in [t[1] for t in args.data_path_and_name_and_type]:
        raise InputError(
            "the model has no CTC branch, so candidates are scored by their loss, which "
            "needs the reference text: add --data_path_and_name_and_type <data dir>/text,text,text"
        )
    load_seconds = time.perf_counter() - t_load
    logging.info(
        f"Scoring {len(candidates)} candidate(s) by {scorer.proxy} on {len(keys)} "
        f"utterance(s): {scorer.tree.describe()}"
    )

    # Layer forwards counted independently of the walker, by hooks.
    forwards = [0]
    handles = [
        layer.register_forward_hook(lambda *a: forwards.__setitem__(0, forwards[0] + 1))
        for layer in model.encoder.encoders
    ]
    loader = ASRTask.build_streaming_iterator(
        list(args.data_path_and_name_and_type),
        dtype=args.dtype,
        batch_size=1,
        key_file=args.key_file,
        num_workers=0,
        preprocess_fn=ASRTask.build_preprocess_fn(train_args, False),
        collate_fn=None,
        # ESPnet's "inference" data sets take speech alone; with the reference
        # text they are read as a validation set is.
        inference="text" not in [t[1] for t in args.data_path_and_name_and_type],
    )
    collate = ASRTask.build_collate_fn(train_args, False)
    hyps: List[Dict[str, List[int]]] = [dict() for _ in candidates]
    losses: List[Dict[str, float]] = [dict() for _ in candidates]
    num_tokens: Dict[str, int] = {}
    too_short: List[str] = []
    batches = encoded_batches = 0
    t_score = time.perf_counter()
    cpu_score = time.process_time()
    read = 0
    wav_scp = args.data_path_and_name_and_type[0][0]

    def items():
        nonlocal read
        iterator = iter(loader.dataset)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except Exception as e:  # a broken audio file, a bad ark offset, ...
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise InputError(
                    f"failed to read the data listed in {wav_scp} after {read} "
                    f"utterance(s): {first}"
                ) from None
            read += 1
            yield item

    try:
        for group in length_groups(items(), args.batch_size, args.sort_chunk):
            utt_ids, batch = collate(group)
            speech = batch["speech"].to(device)
            lengths = batch["speech_lengths"].to(device)
            text = batch.get("text")
            text_lengths = batch.get("text_lengths")
            if text is not None:
                text, text_lengths = text.to(device), text_lengths.to(device)
            scores = scorer.score_batch(speech, lengths, text, text_lengths)
            batches += 1
            encoded_batches += int(not all(scores.too_short))
            for b, key in enumerate(utt_ids):
                if scores.too_short[b]:
                    too_short.append(key)
                for c in range(len(candidates)):
                    if scores.token_ids is not None:
                        hyps[c][key] = scores.token_ids[c][b]
                    elif not scores.too_short[b]:
                        losses[c][key] = float(scores.loss[c, b])
                if scores.num_tokens is not None:
                    num_tokens[key] = scores.num_tokens[b]
    finally:
        for handle in handles:
            handle.remove()
    score_seconds = time.perf_counter() - t_score
    score_cpu_seconds = time.process_time() - cpu_score

    done = set(hyps[0]) if scorer.proxy == "ctc_greedy" else set(losses[0]) | set(too_short)
    missing = [k for k in keys if k not in done]
    if missing:
        raise InputError(
            f"{len(missing)} utterance(s) of the share were not read from the data, "
            f"e.g. {missing[:3]}"
        )
    if too_short:
        logging.warning(
            f"{len(too_short)} utterance(s) too short for the encoder's subsampling: "
            f"{too_short[:10]}"
        )
    predicted = scorer.tree.num_edges * encoded_batches
    if forwards[0] != predicted:
        logging.warning(f"layer forwards: {forwards[0]} done, {predicted} predicted")
    info = {
        "proxy": scorer.proxy,
        "proxy_requested": args.proxy,
        "candidates": {name: list(layers) for name, layers, _ in candidates},
        "num_layers": len(model.encoder.encoders),
        "num_utts": len(keys),
        "too_short": too_short,
        "batches": batches,
        "batch_size": args.batch_size,
        "layer_forwards": {
            "done": forwards[0],
            "predicted": predicted,
            "per_batch": scorer.tree.num_edges,
            "without_sharing": scorer.tree.num_forwards_unshared * encoded_batches,
        },
        "seconds": {
            "import": round(import_seconds, 3),
            "load": round(load_seconds, 3),
            "score": round(score_seconds, 3),
            # CPU time of this process (all threads): on a shared machine, what
            # the scoring costs without the waiting for other processes.
            "score_cpu": round(score_cpu_seconds, 3),
            "total": round(time.perf_counter() - t_start, 3),
        },
        "device": device,
        "dtype": args.dtype,
        "num_threads": torch.get_num_threads(),
        "asr_train_config": str(args.asr_train_config),
        "asr_model_file": str(args.asr_model_file),
        "data": [",".join(t) for t in args.data_path_and_name_and_type],
        "key_file": args.key_file,
        "fingerprint": fp,
    }
    with atomic_output_dir(out_root) as tmp:
        for c, (name, _, _) in enumerate(candidates):
            (tmp / name).mkdir()
            if scorer.proxy == "ctc_greedy":
                with (tmp / name / "text").open("w", encoding="utf-8") as f:
                    for key in keys:
                        f.write(f"{key} {texter(hyps[c][key])}".rstrip() + "\n")
            else:
                with (tmp / name / "loss").open("w", encoding="utf-8") as f:
                    for key in keys:
                        if key in losses[c]:
                            f.write(f"{key} {losses[c][key]:.6f} {num_tokens[key]}\n")
        with (tmp / INFO_FILE).open("w", encoding="utf-8") as f:
            yaml.safe_dump(info, f, sort_keys=False, allow_unicode=True)
    logging.info(
        f"Scored {len(candidates)} candidate(s) x {len(keys)} utterance(s) by {scorer.proxy} "
        f"in {score_seconds:.2f} s ({forwards[0]} layer forwards, "
        f"{info['layer_forwards']['without_sharing']} without sharing; imports "
        f"{import_seconds:.2f} s, model load {load_seconds:.2f} s); wrote {out_root}"
    )
    return info


def aggregate_loss(paths: Sequence[str]) -> Dict[str, float]:
    """Set-level loss of one candidate from its ``loss`` files (one per job).

    Returns ``per_token`` = sum(loss) / sum(num_tokens), ``per_utt`` =
    mean(loss), ``num_utts`` and ``num_tokens``. Malformed lines and
    utterances listed twice raise InputError naming the file and line.
    """
    total = 0.0
    tokens = 0
    seen: Dict[str, str] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    key, loss, count = fields[0], float(fields[1]), int(fields[2])
                    if len(fields) != 3:
                        raise ValueError
                except (ValueError, IndexError):
                    raise InputError(
                        f"{path}:{lineno}: expected '<utt> <loss> <num_tokens>', got "
                        f"{line.strip()!r}"
                    ) from None
                if key in seen:
                    raise InputError(f"{path}:{lineno}: utterance {key} already in {seen[key]}")
                seen[key] = f"{path}:{lineno}"
                total += loss
                tokens += count
    if not seen:
        raise InputError(f"no losses in {', '.join(map(str, paths))}")
    return {
        "per_token": total / max(tokens, 1),
        "per_utt": total / len(seen),
        "num_utts": len(seen),
        "num_tokens": tokens,
    }


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_proxy",
        "Score layer-pruning candidates of an ESPnet ASR model by a cheap proxy",
    )
    parser.add_argument("--asr_train_config", required=True, help="Training config.yaml")
    parser.add_argument("--asr_model_file", required=True, help="Model file (.pth)")
    parser.add_argument(
        "--candidates", required=True,
        help="Lines '<name> <comma-separated pruned layer ids>' (a name alone: the original)",
    )
    parser.add_argument(
        "--data_path_and_name_and_type", type=str2triple, action="append", required=True,
        help="e.g. dump/raw/dev/wav.scp,speech,sound (and dump/raw/dev/text,text,text "
        "for --proxy loss)",
    )
    parser.add_argument("--key_file", type=str_or_none, default=None, help="This job's keys")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--proxy", default="ctc_greedy", choices=PROXIES)
    parser.add_argument(
        "--batch_size", type=int, default=8,
        help="Utterances per batch (sorted by length; 4-16 measured best on CPU)",
    )
    parser.add_argument(
        "--sort_chunk", type=int, default=1000,
        help="Utterances read and sorted by length at a time before batching",
    )
    parser.add_argument("--ngpu", type=int, default=0, choices=(0, 1), help="0: CPU, 1: GPU")
    parser.add_argument("--dtype", default="float32", choices=("float16", "float32", "float64"))
    parser.add_argument(
        "--num_threads", type=int, default=None,
        help="torch threads (default: torch's, which follows OMP_NUM_THREADS)",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    with exit_on_error(parser.prog):
        run(args)


if __name__ == "__main__":
    main()
