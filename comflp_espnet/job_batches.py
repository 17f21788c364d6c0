"""Batches of utterances that do not depend on how many jobs share the work.

A model run over a padded batch sees the padding (frontend STFT, subsampling,
convolution modules), so what an utterance gives depends slightly on the other
utterances of its batch.  For the results of a job array not to depend on its
number of jobs, the batches are formed once from the whole data set and whole
batches are given to the jobs:

* the utterances are sorted by length, longest first (ties by key), so that a
  batch carries little padding, and cut into batches of ``batch_size``;
* job n gets a contiguous run of whole batches (split at the batch boundaries
  nearest to equal shares of audio), listed in one scp file per job, in batch
  order: the job makes its batches of ``batch_size`` consecutive utterances of
  its list, which are exactly the global batches.

Concatenating the jobs' outputs in job order gives the global order whatever
the number of jobs.  Lengths come from the data dir's ``utt2num_samples`` (asr.sh
writes it for raw audio); without it, utterances keep the order of the scp and
the batches are still the same for every number of jobs.

Pure module: no ESPnet, no torch.
"""

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from comflp_espnet.atomic import atomic_output_file
from comflp_espnet.datadir import read_kaldi_map

PathLike = Union[str, Path]


def read_lengths(data_dir: PathLike, keys: Sequence[str]) -> Optional[Dict[str, int]]:
    """Lengths (samples or frames) of ``keys`` from ``utt2num_samples``; None when absent or
    incomplete."""
    path = Path(data_dir) / "utt2num_samples"
    if not path.is_file():
        return None
    lengths = {}
    for key, value in read_kaldi_map(path).items():
        try:
            lengths[key] = int(value.split()[0])
        except (ValueError, IndexError):
            return None
    if any(k not in lengths for k in keys):
        return None
    return lengths


def make_batches(keys: Sequence[str], batch_size: int,
                 lengths: Optional[Dict[str, int]] = None) -> List[List[str]]:
    """``keys`` cut into batches of ``batch_size``: longest first when lengths are known."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(keys)
    if lengths is not None:
        order.sort(key=lambda k: (-lengths[k], k))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def split_batches(batches: Sequence[Sequence[str]], nj: int,
                  lengths: Optional[Dict[str, int]] = None) -> List[List[str]]:
    """Contiguous runs of whole batches for at most ``nj`` jobs, as balanced in audio (or in
    utterances without lengths) as batch boundaries allow; every job gets at least one batch."""
    nj = max(1, min(nj, len(batches)))
    weights = [sum(lengths[k] for k in b) if lengths else len(b) for b in batches]
    total = float(sum(weights)) or 1.0
    jobs: List[List[str]] = []
    start = 0
    done = 0.0
    for j in range(nj):
        remaining_jobs = nj - j
        if remaining_jobs == 1:
            end = len(batches)
        else:
            target = total * (j + 1) / nj
            end = start + 1
            acc = done + weights[start]
            # Take further batches while that brings the cut nearer the target and leaves one
            # batch for each remaining job.
            while end < len(batches) - (remaining_jobs - 1) and abs(acc + weights[end] - target) <= abs(acc - target):
                acc += weights[end]
                end += 1
            done = acc
        jobs.append([k for b in batches[start:end] for k in b])
        start = end
    return jobs


def write_job_lists(data_dir: PathLike, files: Sequence[str], jobs: Sequence[Sequence[str]],
                    patterns: Sequence[PathLike]) -> None:
    """For each data file (e.g. ``wav.scp``, ``text``) the lines of each job's utterances, in the
    job's order, into ``pattern`` with JOB replaced by the job number."""
    for name, pattern in zip(files, patterns):
        entries = read_kaldi_map(Path(data_dir) / name)
        for n, keys in enumerate(jobs, 1):
            with atomic_output_file(str(pattern).replace("JOB", str(n)), encoding="utf-8") as f:
                f.writelines(f"{k} {entries[k]}\n" for k in keys)


def batch_groups(items, batch_size: int):
    """Group consecutive ``(position, item)`` pairs into the batches of a job's list: position
    p belongs to batch p // batch_size (items missing from the stream, e.g. skipped as
    unreadable, leave their batch smaller instead of shifting the later ones)."""
    group, current = [], None
    for position, item in items:
        index = position // batch_size
        if group and index != current:
            yield group
            group = []
        current = index
        group.append(item)
    if group:
        yield group
