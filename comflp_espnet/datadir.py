"""Kaldi-style data directories: reading, validation, seeded subsets, key splits.

A data directory holds per-utterance files ``wav.scp``, ``text``, ``utt2spk``
(and ``spk2utt``), optionally ``segments`` (then ``wav.scp`` is keyed by
recording id) and further ``utt2*`` files. Every file is ``<key> <value>``
per line, sorted by key.

This module does not import ESPnet.
"""

import logging
import random
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple, Union

from comflp_espnet.atomic import atomic_output_dir, atomic_output_file

PathLike = Union[str, Path]

# Files keyed by utterance id (besides any "utt2*" file).
UTT_KEYED_FILES = ("text", "segments", "feats.scp")
# Files keyed by recording id when "segments" exists.
RECORDING_KEYED_FILES = ("wav.scp", "reco2file_and_channel", "reco2dur")
SPEAKER_KEYED_FILES = ("spk2gender",)
# Small descriptive files that ESPnet's dump directories carry; copied as is.
VERBATIM_FILES = ("feats_type", "audio_format")


class DataDirError(ValueError):
    """A data directory is missing, empty or inconsistent."""


def read_kaldi_map(path: PathLike) -> "OrderedDict[str, str]":
    """Read ``<key> <value>`` lines; the value is the rest of the line.

    Raises DataDirError for a missing file, a line without a key or a
    duplicated key, naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"{path}: no such file")
    entries: "OrderedDict[str, str]" = OrderedDict()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            key = parts[0]
            value = parts[1] if len(parts) > 1 else ""
            if key in entries:
                raise DataDirError(f"{path}:{lineno}: duplicated key '{key}'")
            entries[key] = value
    return entries


def write_kaldi_map(path: PathLike, entries: Dict[str, str]) -> None:
    """Write ``<key> <value>`` lines sorted by key, atomically."""
    with atomic_output_file(path, "w", encoding="utf-8") as f:
        for key in sorted(entries):
            value = entries[key]
            f.write(f"{key} {value}\n" if value != "" else f"{key}\n")


def read_keys(path: PathLike) -> List[str]:
    """Keys (first column) of a Kaldi-style file, in file order."""
    return list(read_kaldi_map(path).keys())


def _describe_diff(name_a: str, keys_a: set, name_b: str, keys_b: set) -> str:
    only_a = sorted(keys_a - keys_b)
    only_b = sorted(keys_b - keys_a)
    parts = []
    if only_a:
        parts.append(f"{len(only_a)} key(s) only in {name_a} (e.g. {only_a[:3]})")
    if only_b:
        parts.append(f"{len(only_b)} key(s) only in {name_b} (e.g. {only_b[:3]})")
    return "; ".join(parts)


def utterance_ids(data_dir: PathLike, require_text: bool = True) -> List[str]:
    """Validate a data directory and return its sorted utterance ids.

    Checks that ``wav.scp`` exists and is not empty; that ``text`` exists (when
    ``require_text``) and lists exactly the same utterances as ``wav.scp`` (or
    ``segments``); that ``utt2spk``, when present, covers the same utterances;
    and that ``segments`` refers to recordings present in ``wav.scp``.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir}: data directory does not exist")
    wav_scp = data_dir / "wav.scp"
    if not wav_scp.is_file():
        raise DataDirError(f"{wav_scp}: no such file (every data directory needs one)")
    wavs = read_kaldi_map(wav_scp)
    if not wavs:
        raise DataDirError(f"{wav_scp} is empty: no utterances in {data_dir}")

    segments_path = data_dir / "segments"
    if segments_path.is_file():
        segments = read_kaldi_map(segments_path)
        if not segments:
            raise DataDirError(f"{segments_path} is empty")
        missing = sorted(
            {v.split()[0] for v in segments.values() if v.split()} - set(wavs)
        )
        if missing:
            raise DataDirError(
                f"{segments_path} refers to {len(missing)} recording(s) missing from "
                f"{wav_scp} (e.g. {missing[:3]})"
            )
        utts = set(segments)
        utt_source = "segments"
    else:
        utts = set(wavs)
        utt_source = "wav.scp"

    text_path = data_dir / "text"
    if text_path.is_file():
        text_keys = set(read_kaldi_map(text_path))
        if text_keys != utts:
            raise DataDirError(
                f"{text_path} and {data_dir / utt_source} disagree: "
                + _describe_diff(utt_source, utts, "text", text_keys)
                + ". Fix the data preparation (e.g. utils/fix_data_dir.sh)."
            )
    elif require_text:
        raise DataDirError(f"{text_path}: no such file (the data directory needs transcripts)")

    utt2spk_path = data_dir / "utt2spk"
    if utt2spk_path.is_file():
        spk_keys = set(read_kaldi_map(utt2spk_path))
        if spk_keys != utts:
            raise DataDirError(
                f"{utt2spk_path} and {data_dir / utt_source} disagree: "
                + _describe_diff(utt_source, utts, "utt2spk", spk_keys)
            )
    return sorted(utts)


def select_subset(
    utts: Sequence[str],
    num_utts: int,
    seed: int,
    exclude: Iterable[str] = (),
    source: str = "the data directory",
) -> List[str]:
    """Pick ``num_utts`` utterances at random (seeded), sorted by key.

    ``num_utts == 0`` selects every utterance not in ``exclude``. The choice
    depends only on the set of candidate keys and the seed, not on their order.
    """
    if num_utts < 0:
        raise DataDirError(f"--num_utts must be >= 0, got {num_utts}")
    excluded = set(exclude)
    candidates = sorted(set(utts) - excluded)
    if num_utts == 0:
        if not candidates:
            raise DataDirError(f"no utterances left in {source} after exclusion")
        return candidates
    if num_utts > len(candidates):
        detail = f" ({len(excluded & set(utts))} excluded)" if excluded else ""
        raise DataDirError(
            f"requested {num_utts} utterances but {source} has only "
            f"{len(candidates)} available{detail}; lower --num_utts or pass 0 for all"
        )
    rng = random.Random(seed)
    return sorted(rng.sample(candidates, num_utts))


def write_subset(src_dir: PathLike, dst_dir: PathLike, utts: Sequence[str]) -> Path:
    """Write the data directory ``dst_dir`` with only ``utts`` of ``src_dir``.

    Utterance-keyed files (``text``, ``segments``, ``utt2*``, ``feats.scp``)
    are filtered; ``wav.scp`` too, by utterance or, with ``segments``, by the
    recordings still used; ``spk2utt`` is regenerated from ``utt2spk`` (which
    maps each utterance to itself when the source has none). Written atomically.
    """
    src_dir = Path(src_dir)
    keep = set(utts)
    if not keep:
        raise DataDirError("refusing to write an empty data directory")
    has_segments = (src_dir / "segments").is_file()

    with atomic_output_dir(dst_dir) as tmp_dir:
        if has_segments:
            segments = read_kaldi_map(src_dir / "segments")
            recordings = {segments[u].split()[0] for u in keep}
        for path in sorted(src_dir.iterdir()):
            if not path.is_file():
                continue
            name = path.name
            if name == "spk2utt":
                continue
            if name in VERBATIM_FILES:
                (tmp_dir / name).write_bytes(path.read_bytes())
                continue
            if name in UTT_KEYED_FILES or name.startswith("utt2") or (
                name == "wav.scp" and not has_segments
            ):
                wanted = keep
            elif has_segments and name in RECORDING_KEYED_FILES:
                wanted = recordings
            elif name in SPEAKER_KEYED_FILES:
                continue  # filtered below, once the speakers are known
            else:
                logging.debug(f"Not copying {path} (not a per-utterance file)")
                continue
            entries = read_kaldi_map(path)
            write_kaldi_map(tmp_dir / name, {k: v for k, v in entries.items() if k in wanted})

        if (src_dir / "utt2spk").is_file():
            utt2spk = {
                k: v for k, v in read_kaldi_map(src_dir / "utt2spk").items() if k in keep
            }
        else:
            utt2spk = {u: u for u in keep}
            write_kaldi_map(tmp_dir / "utt2spk", utt2spk)
        spk2utt: Dict[str, List[str]] = {}
        for utt in sorted(utt2spk):
            spk2utt.setdefault(utt2spk[utt], []).append(utt)
        write_kaldi_map(tmp_dir / "spk2utt", {s: " ".join(u) for s, u in spk2utt.items()})
        for name in SPEAKER_KEYED_FILES:
            if (src_dir / name).is_file():
                entries = read_kaldi_map(src_dir / name)
                write_kaldi_map(
                    tmp_dir / name, {k: v for k, v in entries.items() if k in spk2utt}
                )
    return Path(dst_dir)


def make_subset(
    data_dir: PathLike,
    output_dir: PathLike,
    num_utts: int,
    seed: int = 0,
    exclude_data_dirs: Sequence[PathLike] = (),
) -> List[str]:
    """Validate ``data_dir``, pick a seeded subset and write it to ``output_dir``.

    Utterances of every directory in ``exclude_data_dirs`` are never picked
    (e.g. keep a calibration set disjoint from a held-out decoding set).
    Returns the selected utterance ids.
    """
    utts = utterance_ids(data_dir)
    excluded: set = set()
    for other in exclude_data_dirs:
        excluded.update(utterance_ids(other, require_text=False))
    selected = select_subset(utts, num_utts, seed, excluded, source=str(data_dir))
    write_subset(data_dir, output_dir, selected)
    return selected


def split_keys(keys: Sequence[str], num_splits: int) -> List[List[str]]:
    """Split keys into ``num_splits`` contiguous, nearly equal shares.

    Like Kaldi's split_scp.pl, every share is non-empty; asking for more
    shares than keys is an error.
    """
    if num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    if num_splits > len(keys):
        raise ValueError(f"cannot split {len(keys)} keys into {num_splits} non-empty shares")
    base, extra = divmod(len(keys), num_splits)
    shares, start = [], 0
    for i in range(num_splits):
        size = base + (1 if i < extra else 0)
        shares.append(list(keys[start : start + size]))
        start += size
    return shares


def write_key_files(
    keys: Sequence[str], num_splits: int, output_dir: PathLike, prefix: str = "keys"
) -> List[Path]:
    """Write ``<output_dir>/<prefix>.<n>.scp`` (n = 1..num_splits), one key a line."""
    output_dir = Path(output_dir)
    paths = []
    for n, share in enumerate(split_keys(keys, num_splits), 1):
        path = output_dir / f"{prefix}.{n}.scp"
        with atomic_output_file(path, "w", encoding="utf-8") as f:
            f.writelines(f"{k}\n" for k in share)
        paths.append(path)
    return paths


def unreadable_audio(scp_path: PathLike, keys: Sequence[str], data_type: str) -> Dict[str, str]:
    """Utterances of ``keys`` whose audio file in ``scp_path`` cannot be opened, with the
    reason: a cheap check of file headers (``sound`` data; pipes and archives are
    checked when read)."""
    if data_type != "sound":
        return {}
    import soundfile

    entries = read_kaldi_map(scp_path)
    bad = {}
    for key in keys:
        value = entries.get(key)
        if value is None:
            bad[key] = f"not in {scp_path}"
            continue
        if value.rstrip().endswith("|"):
            continue
        path = value.split()[0]
        try:
            soundfile.info(path)
        except Exception as e:  # libsndfile errors, missing files
            bad[key] = f"{path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return bad


def input_spec(data_dir: PathLike, default_format: str = "wav") -> Tuple[str, str]:
    """(scp file name, ESPnet data type) of the speech input of a dumped data dir, following the
    ``feats_type`` / ``audio_format`` files asr.sh writes."""
    def read(name, default):
        p = Path(data_dir) / name
        return p.read_text().strip() if p.is_file() else default

    feats_type = read("feats_type", "raw")
    audio_format = read("audio_format", default_format)
    if feats_type != "raw":
        return "feats.scp", "kaldi_ark"
    if "ark" in audio_format:
        return "wav.scp", "kaldi_ark"
    if "multi" in audio_format:
        return "wav.scp", "multi_columns_sound"
    return "wav.scp", "sound"


def write_job_keys(scp: PathLike, nj: int, pattern: PathLike) -> int:
    """The keys of ``scp`` split into the files ``pattern`` (JOB replaced by 1..nj') for a
    ``${cmd} JOB=1:nj'`` array, nj' = min(nj, utterances); returns nj'."""
    keys = read_keys(scp)
    nj = max(1, min(nj, len(keys)))
    for n, share in enumerate(split_keys(keys, nj), 1):
        path = Path(str(pattern).replace("JOB", str(n)))
        with atomic_output_file(path, "w", encoding="utf-8") as f:
            f.writelines(f"{k}\n" for k in share)
    return nj
