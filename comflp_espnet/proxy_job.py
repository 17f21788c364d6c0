"""One job of the proxy scoring array: every candidate of a list on one share of utterances.

The model is loaded once; no pruned model is written.  Every candidate is the
model with some encoder layers skipped, evaluated through a prefix tree of the
candidates' kept-layer sequences (``comflp_espnet.proxy``): the layers shared
by candidates run once per batch.

Candidates file: lines ``<name> <pruned layer ids>``, ids 1-based and separated
by commas (``rm02-05 2,5``); a name alone is the original model.  Blank lines
and ``#`` comments are skipped; names are plain directory names, each once.

Batches: with ``sort_chunk`` > 0, up to that many utterances are read, sorted
by length and cut into batches; with ``sort_chunk`` 0 the batches are
``batch_size`` consecutive utterances as listed (the recipe lists every job's
share as whole batches of the length-sorted set, ``comflp_espnet.job_batches``,
so that the scores do not depend on the number of jobs).

Outputs, written under a temporary name and renamed when complete (``OUT`` =
the output directory), with a freshness record (``comflp_espnet.records``)
made from the model's files, the data files, the keys, the candidates and the
options: a rerun whose record is current does nothing::

    OUT/<name>/text        ctc_greedy: Kaldi text "utt words..." in key order
                           (an utterance too short for the encoder: "utt")
    OUT/<name>/loss        loss: "utt loss num_tokens" in key order; loss is
                           the utterance's training loss (CTC and attention
                           weighted by ctc_weight, summed over its tokens),
                           num_tokens its reference tokens; utterances too
                           short for the encoder are left out
    OUT/proxy_info.yaml    proxy (requested and used), candidates, layer
                           forwards done / predicted / without sharing,
                           seconds, utterances, too-short and skipped keys, and
                           the model's learnable parameters (names and count
                           per encoder layer: what candidates' sizes are
                           counted from, without building the model again)

Set-level value of a candidate from its outputs: CER/WER of the ``text``; or
sum(loss) / sum(num_tokens) (per token), as ``aggregate_loss`` computes it.
"""

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from comflp_espnet import records
from comflp_espnet.atomic import atomic_output_dir
from comflp_espnet.cli import InputError
from comflp_espnet.datadir import DataDirError, read_kaldi_map
from comflp_espnet.gc_tuning import collector_paused

PROXIES = ("ctc_greedy", "loss")
INFO_FILE = "proxy_info.yaml"
# Bumped when the same inputs would give other proxy outputs.
PROXY_CODE = "proxy-1"
RESULT_FILE = {"ctc_greedy": "text", "loss": "loss"}


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
                raise InputError(f"{path}:{lineno}: candidate name {name!r} must be a plain directory "
                                 "name (no '/', not starting with '.')")
            if name in seen:
                raise InputError(f"{path}:{lineno}: duplicated candidate name {name!r} (first on line "
                                 f"{seen[name]})")
            text = fields[1].strip() if len(fields) > 1 else ""
            items = [t for t in text.replace(",", " ").split() if t]
            try:
                layers = tuple(int(t) for t in items)
            except ValueError:
                raise InputError(f"{path}:{lineno}: expected '<name> <comma-separated pruned layer "
                                 f"ids>', got {line.strip()!r}") from None
            if len(set(layers)) != len(layers):
                raise InputError(f"{path}:{lineno}: {name}: a layer id is given twice")
            seen[name] = lineno
            candidates.append((name, layers, lineno))
    if not candidates:
        raise InputError(f"--candidates {path}: no candidates listed")
    return candidates


def write_candidates(path, candidates: Sequence[Tuple[str, Sequence[int]]]) -> None:
    """A candidates file: ``<name> <pruned ids>`` per line."""
    from comflp_espnet.atomic import atomic_output_file

    with atomic_output_file(path, encoding="utf-8") as f:
        f.writelines(f"{name} {','.join(map(str, sorted(layers)))}".rstrip() + "\n"
                     for name, layers in candidates)


def check_candidate_layers(candidates, num_layers: int, path: str) -> None:
    for name, layers, lineno in candidates:
        bad = [i for i in layers if not 1 <= i <= num_layers]
        if bad:
            raise InputError(f"{path}:{lineno}: {name}: layer id(s) {bad} out of range; the model's "
                             f"encoder has {num_layers} layers, numbered 1..{num_layers}")
        if len(layers) >= num_layers:
            raise InputError(f"{path}:{lineno}: {name}: prunes all {num_layers} layers; keep at least one")


def check_data(triples: Sequence[Tuple[str, str, str]], proxy: str, key_file: Optional[str]) -> List[str]:
    """Validate the data options before the model is loaded; return the keys."""
    names = [t[1] for t in triples]
    if names.count("speech") != 1:
        raise InputError("give exactly one --data_path_and_name_and_type <scp>,speech,<type>")
    unknown = [n for n in names if n not in ("speech", "text")]
    if unknown or len(names) != len(set(names)):
        raise InputError("--data_path_and_name_and_type: expected one 'speech' and at most one 'text' "
                         f"entry, got names {names}")
    if proxy == "loss" and "text" not in names:
        raise InputError("--proxy loss needs the reference text: add "
                         "--data_path_and_name_and_type <data dir>/text,text,text")
    maps = {}
    for path, name, _ in triples:
        try:
            maps[name] = read_kaldi_map(path)
        except DataDirError as e:
            raise InputError(f"--data_path_and_name_and_type: {e}") from None
        if not maps[name]:
            raise InputError(f"--data_path_and_name_and_type: {path} is empty")
    if key_file is not None:
        from comflp_espnet.decoding import share_keys

        keys = share_keys(key_file, triples)
        if not keys:
            raise InputError(f"--key_file {key_file} is empty")
    else:
        keys = list(maps["speech"])
    for (path, name, _) in triples:
        missing = [k for k in keys if k not in maps[name]]
        if missing:
            raise InputError(f"{path} lacks {len(missing)} utterance(s) of the share, e.g. {missing[:3]}")
    return keys


def job_made_from(asr_train_config, asr_model_file, triples, keys: Sequence[str], candidates,
                  options: Dict[str, Any]) -> Dict[str, Any]:
    """What one job's output is made from: the model's files, the data files, its keys, the
    candidates and the options that shape the scores."""
    from comflp_espnet.decoding import data_digest

    return records.made_from(
        {"config": records.file_digest(asr_train_config), "model": records.file_digest(asr_model_file),
         "data": data_digest(triples), "keys": records.value_digest(list(keys)),
         "candidates": records.value_digest([[n, list(l)] for n, l, _ in candidates])},
        dict(options, code=PROXY_CODE))


def length_groups(items, batch_size: int, sort_chunk: int):
    """Cut ``(position, (key, data))`` items into batches.

    ``sort_chunk`` > 0: up to that many items are read, sorted by length
    (longest first) and cut, so memory stays bounded whatever the data size.
    ``sort_chunk`` 0: batch b holds the items at positions b*batch_size ..
    (b+1)*batch_size-1 of the list, as given.
    """
    if sort_chunk == 0:
        from comflp_espnet.job_batches import batch_groups

        yield from batch_groups(items, batch_size)
        return
    chunk = []
    for _, item in items:
        chunk.append(item)
        if len(chunk) >= sort_chunk:
            yield from _cut(chunk, batch_size)
            chunk = []
    if chunk:
        yield from _cut(chunk, batch_size)


def _cut(chunk, batch_size):
    chunk.sort(key=lambda item: -len(item[1]["speech"]))
    for start in range(0, len(chunk), batch_size):
        yield chunk[start:start + batch_size]


def load_model(asr_train_config, asr_model_file, device):
    import pickle
    import zipfile

    from comflp_espnet.model_io import load_asr_model

    try:
        return load_asr_model(asr_train_config, asr_model_file, device=device)
    except FileNotFoundError as e:  # files the config refers to: one line each
        raise InputError(str(e)) from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        # A truncated or foreign file: one line that names it.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if str(asr_model_file) not in first:
            first = f"cannot load --asr_model_file {asr_model_file}: {first}"
        raise InputError(first) from None


def learnable_parameters(model) -> Dict[str, Any]:
    """Names of the model's learnable parameters and the number of values per encoder layer."""
    names, per_layer = [], {}
    prefix = "encoder.encoders."
    for name, param in model.named_parameters():
        names.append(name)
        if name.startswith(prefix):
            layer = int(name[len(prefix):].split(".", 1)[0]) + 1
            per_layer[layer] = per_layer.get(layer, 0) + int(param.numel())
    total = sum(int(p.numel()) for p in model.parameters())
    return {"learnable": names, "layer_params": [per_layer.get(i, 0) for i in range(1, len(model.encoder.encoders) + 1)],
            "total": total}


def score_share(asr_train_config: str, asr_model_file: str, candidates_file: str,
                triples: Sequence[Tuple[str, str, str]], output_dir: str, key_file: Optional[str] = None,
                proxy: str = "ctc_greedy", batch_size: int = 8, sort_chunk: int = 1000, ngpu: int = 0,
                dtype: str = "float32", num_threads: Optional[int] = None,
                skip_bad_utts: bool = False) -> Dict[str, Any]:
    """Score every candidate on the share; write ``output_dir`` (see the module doc)."""
    t_start = time.perf_counter()
    candidates = read_candidates(candidates_file)
    keys = check_data(triples, proxy, key_file)
    if batch_size < 1:
        raise InputError("--batch_size must be >= 1")
    if sort_chunk < 0:
        raise InputError("--sort_chunk must be >= 0")
    for option, path in (("asr_train_config", asr_train_config), ("asr_model_file", asr_model_file)):
        if not Path(path).is_file():
            raise InputError(f"--{option} {path}: no such file")

    out_root = Path(output_dir)
    expected = job_made_from(asr_train_config, asr_model_file, triples, keys, candidates,
                             {"proxy": proxy, "batch_size": batch_size, "sort_chunk": sort_chunk, "dtype": dtype,
                              "skip_bad_utts": skip_bad_utts})
    status = records.check(out_root, expected)
    if status.current:
        logging.info(f"{out_root} is current for these candidates and data; skipping")
        return yaml.safe_load((out_root / INFO_FILE).read_text(encoding="utf-8"))
    records.remove_record(out_root)

    wav_scp, _, data_type = [t for t in triples if t[1] == "speech"][0]
    from comflp_espnet.datadir import unreadable_audio

    bad = unreadable_audio(wav_scp, keys, data_type)
    if bad and not skip_bad_utts:
        key = sorted(bad)[0]
        raise InputError(f"{len(bad)} utterance(s) of {wav_scp} cannot be read, e.g. {key}: {bad[key]}; fix "
                         "or remove them from the data dir, or pass --skip_bad_utts true to skip them")

    t_import = time.perf_counter()
    with collector_paused():
        import torch
        from espnet2.tasks.asr import ASRTask

        from comflp_espnet.proxy import ProxyError, ProxyScorer, TokenTexter

    import_seconds = time.perf_counter() - t_import
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    device = "cuda" if ngpu > 0 else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--ngpu 1 but no CUDA device is visible; use --ngpu 0")

    t_load = time.perf_counter()
    model, train_args = load_model(asr_train_config, asr_model_file, device)
    model.to(dtype=getattr(torch, dtype)).eval()
    check_candidate_layers(candidates, len(model.encoder.encoders), candidates_file)
    try:
        scorer = ProxyScorer(model, [list(l) for _, l, _ in candidates], proxy)
        texter = TokenTexter.from_model(model, train_args) if scorer.proxy == "ctc_greedy" else None
    except ProxyError as e:
        raise InputError(f"{asr_train_config}: {e}") from None
    with_text = "text" in [t[1] for t in triples]
    if scorer.proxy == "loss" and not with_text:
        raise InputError("the model has no CTC branch, so candidates are scored by their loss, which "
                         "needs the reference text: add --data_path_and_name_and_type <data dir>/text,text,text")
    load_seconds = time.perf_counter() - t_load
    logging.info(f"Scoring {len(candidates)} candidate(s) by {scorer.proxy} on {len(keys)} "
                 f"utterance(s): {scorer.tree.describe()}")

    # Layer forwards counted independently of the walker, by hooks.
    forwards = [0]
    handles = [layer.register_forward_hook(lambda *a: forwards.__setitem__(0, forwards[0] + 1))
               for layer in model.encoder.encoders]
    wanted = [k for k in keys if k not in bad]
    loader = ASRTask.build_streaming_iterator(
        list(triples), dtype=dtype, batch_size=1, key_file=key_file, num_workers=0,
        preprocess_fn=ASRTask.build_preprocess_fn(train_args, False), collate_fn=None,
        # ESPnet's "inference" data sets take speech alone; with the reference text they are read
        # as a validation set is.
        inference=not with_text)
    collate = ASRTask.build_collate_fn(train_args, False)
    hyps: List[Dict[str, List[int]]] = [dict() for _ in candidates]
    losses: List[Dict[str, float]] = [dict() for _ in candidates]
    num_tokens: Dict[str, int] = {}
    too_short: List[str] = []
    batches = encoded_batches = 0
    t_score = time.perf_counter()
    cpu_score = time.process_time()
    position = {k: i for i, k in enumerate(keys)}
    read = 0

    if bad:
        # Unreadable utterances are passed over (ESPnet's data set takes a list of keys too).
        loader.dataset.key_file = wanted

    def items():
        nonlocal read
        iterator = iter(loader.dataset)
        while True:
            try:
                key, data = next(iterator)
            except StopIteration:
                return
            except Exception as e:  # a broken audio file, a bad ark offset, ...
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise InputError(f"failed to read the data listed in {wav_scp} after {read} "
                                 f"utterance(s): {first}") from None
            read += 1
            yield position[key], (key, data)

    try:
        for group in length_groups(items(), batch_size, sort_chunk):
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
    missing = [k for k in wanted if k not in done]
    if missing:
        raise InputError(f"{len(missing)} utterance(s) of the share were not read from the data, "
                         f"e.g. {missing[:3]}")
    if too_short:
        logging.warning(f"{len(too_short)} utterance(s) too short for the encoder's subsampling: {too_short[:10]}")
    if bad:
        logging.warning(f"{len(bad)} unreadable utterance(s) skipped: {sorted(bad)[:10]}")
    predicted = scorer.tree.num_edges * encoded_batches
    if forwards[0] != predicted:
        logging.warning(f"layer forwards: {forwards[0]} done, {predicted} predicted")
    info = {
        "proxy": scorer.proxy,
        "proxy_requested": proxy,
        "candidates": {name: list(layers) for name, layers, _ in candidates},
        "num_layers": len(model.encoder.encoders),
        "num_utts": len(keys),
        "too_short": too_short,
        "skipped": {k: bad[k] for k in sorted(bad)},
        "batches": batches,
        "batch_size": batch_size,
        "sort_chunk": sort_chunk,
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
            # CPU time of this process (all threads): on a shared machine, what the scoring
            # costs without the waiting for other processes.
            "score_cpu": round(score_cpu_seconds, 3),
            "total": round(time.perf_counter() - t_start, 3),
        },
        "device": device,
        "dtype": dtype,
        "num_threads": torch.get_num_threads(),
        "asr_train_config": str(asr_train_config),
        "asr_model_file": str(asr_model_file),
        "data": [",".join(t) for t in triples],
        "key_file": key_file,
        "parameters": learnable_parameters(model),
    }
    with atomic_output_dir(out_root) as tmp:
        for c, (name, _, _) in enumerate(candidates):
            (tmp / name).mkdir()
            if scorer.proxy == "ctc_greedy":
                with (tmp / name / "text").open("w", encoding="utf-8") as f:
                    for key in keys:
                        if key in hyps[c]:
                            f.write(f"{key} {texter(hyps[c][key])}".rstrip() + "\n")
            else:
                with (tmp / name / "loss").open("w", encoding="utf-8") as f:
                    for key in keys:
                        if key in losses[c]:
                            f.write(f"{key} {losses[c][key]:.6f} {num_tokens[key]}\n")
        with (tmp / INFO_FILE).open("w", encoding="utf-8") as f:
            yaml.safe_dump(info, f, sort_keys=False, allow_unicode=True)
    records.write_record(out_root, expected, seconds=time.perf_counter() - t_start,
                         info={"proxy": scorer.proxy, "num_candidates": len(candidates)})
    logging.info(
        f"Scored {len(candidates)} candidate(s) x {len(keys)} utterance(s) by {scorer.proxy} "
        f"in {score_seconds:.2f} s ({forwards[0]} layer forwards, "
        f"{info['layer_forwards']['without_sharing']} without sharing; imports "
        f"{import_seconds:.2f} s, model load {load_seconds:.2f} s); wrote {out_root}")
    return info


def read_info(output_dir) -> Dict[str, Any]:
    path = Path(output_dir) / INFO_FILE
    try:
        info = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{path}: cannot be read ({e}); run the proxy jobs again")
    if not isinstance(info, dict):
        raise InputError(f"{path}: not a proxy job's info; run the proxy jobs again")
    return info


def aggregate_loss(paths: Sequence[str]) -> Dict[str, float]:
    """Set-level loss of one candidate from its ``loss`` files (one per job).

    Returns ``per_token`` = sum(loss) / sum(num_tokens), ``per_utt`` =
    mean(loss), ``num_utts`` and ``num_tokens``.  Malformed lines and
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
                    raise InputError(f"{path}:{lineno}: expected '<utt> <loss> <num_tokens>', got "
                                     f"{line.strip()!r}") from None
                if key in seen:
                    raise InputError(f"{path}:{lineno}: utterance {key} already in {seen[key]}")
                seen[key] = f"{path}:{lineno}"
                total += loss
                tokens += count
    if not seen:
        raise InputError(f"no losses in {', '.join(map(str, paths))}")
    return {"per_token": total / max(tokens, 1), "per_utt": total / len(seen), "num_utts": len(seen),
            "num_tokens": tokens}
