"""Pooled encoder states as Kaldi-style ``.ark`` + ``.scp`` archives.

Layout of a dump directory (one per job)::

    states.ark          kaldiio binary float32 matrices
    states.scp          <utt-id> <path of states.ark>:<offset>
    states_info.yaml    num_layers, num_states, dim, pooling, counts, ...

Each utterance is ONE matrix stacking its states (see ``comflp_espnet.states``):

* ``pooling: mean``  -> ``(L+1) x D``, row i is the pooled h_i;
* ``pooling: frame`` -> ``((L+1)*T) x D``, layer-major: rows ``i*T..(i+1)*T-1``
  are the T kept frames of h_i.

``kaldiio.load_scp("states.scp")`` reads them back. The scp refers to the ark
by the path given as the output directory (relative paths are relative to the
working directory, as in ESPnet's dump directories).

Merging job outputs: ``cat OUT.*/states.scp > states.scp`` is a valid scp, and
``load_states`` accepts several scp files directly. ``merge_dumps`` also writes
a combined ``states_info.yaml`` (``comflp_dump --merge``).
"""

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import yaml

from comflp_espnet.atomic import atomic_output_file

PathLike = Union[str, Path]

ARK_NAME = "states.ark"
SCP_NAME = "states.scp"
INFO_NAME = "states_info.yaml"


class StatesWriter:
    """Stream utterance matrices into ``<dir>/states.ark`` and ``states.scp``.

    ``directory`` is where the files are written now; ``final_dir`` is where
    they will live (the scp names the ark there). Every matrix goes to disk
    when written, so memory does not grow with the number of utterances.
    """

    def __init__(self, directory: PathLike, final_dir: Optional[PathLike] = None):
        import kaldiio

        self.directory = Path(directory)
        self.final_dir = Path(final_dir) if final_dir is not None else self.directory
        self._ark = open(self.directory / ARK_NAME, "wb")
        self._scp = open(self.directory / SCP_NAME, "w", encoding="utf-8")
        self._final_ark = str(self.final_dir / ARK_NAME)
        self._kaldiio = kaldiio
        self._keys = set()
        self.count = 0

    def write(self, key: str, matrix: np.ndarray) -> None:
        if key in self._keys:
            raise ValueError(f"utterance '{key}' written twice")
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"invalid utterance id {key!r}")
        self._keys.add(key)
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        start = self._ark.tell()
        self._kaldiio.save_ark(self._ark, {key: matrix})
        # kaldiio writes "<key> " then the matrix; the scp offset points past it.
        offset = start + len((key + " ").encode("utf-8"))
        self._scp.write(f"{key} {self._final_ark}:{offset}\n")
        self.count += 1

    def close(self) -> None:
        self._ark.close()
        self._scp.close()

    def __enter__(self) -> "StatesWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_info(directory: PathLike, info: Dict[str, Any]) -> None:
    with atomic_output_file(Path(directory) / INFO_NAME, "w", encoding="utf-8") as f:
        yaml.safe_dump(info, f, sort_keys=False)


def read_info(directory: PathLike) -> Optional[Dict[str, Any]]:
    path = Path(directory) / INFO_NAME
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _scp_info(scp_path: Path) -> Optional[Dict[str, Any]]:
    return read_info(scp_path.parent)


def _read_scp(path: PathLike):
    """(key, matrix) pairs of a states scp; a read error names the scp.

    kaldiio's own messages name only the archive or a fragment of a line.
    """
    import kaldiio

    try:
        yield from kaldiio.load_scp_sequential(str(path))
    except Exception as e:
        raise ValueError(
            f"{path}: cannot read the states it lists ({type(e).__name__}: {e}); "
            "the archive is damaged or incomplete (or not written by comflp_dump): "
            "dump the states again (stage 14)"
        ) from e


def load_states(
    scp_paths: Union[PathLike, Sequence[PathLike]],
    num_states: Optional[int] = None,
    pooling: Optional[str] = None,
) -> List[np.ndarray]:
    """Read pooled states into a list of L+1 arrays of shape N x D.

    N is the number of utterances (mean pooling) or of frames (frame
    pooling). Several scp files (one per job) are read in order. ``pooling``
    and ``num_states`` come from the ``states_info.yaml`` beside each scp when
    not given; without it, mean pooling is assumed and ``num_states`` is the
    row count (the same for every utterance).
    """
    if isinstance(scp_paths, (str, os.PathLike)):
        scp_paths = [scp_paths]
    if not scp_paths:
        raise ValueError("no states scp given")
    for path in scp_paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--states_scp: {path}: no such file")
        info = _scp_info(Path(path))
        if info is not None:
            if pooling is None:
                pooling = info.get("pooling")
            elif info.get("pooling") not in (None, pooling):
                raise ValueError(f"{path}: pooling {info.get('pooling')} differs from {pooling}")
            if num_states is None:
                num_states = info.get("num_states")
            elif info.get("num_states") not in (None, num_states):
                raise ValueError(
                    f"{path}: {info.get('num_states')} states differ from {num_states}"
                )
    pooling = pooling or "mean"
    if pooling not in ("mean", "frame"):
        raise ValueError(f"unknown pooling {pooling!r}")
    if pooling == "frame" and num_states is None:
        raise ValueError(
            f"frame-pooled states need num_states: no {INFO_NAME} beside {scp_paths[0]}"
        )

    seen = set()
    per_state: Optional[List[List[np.ndarray]]] = None
    for path in scp_paths:
        for key, matrix in _read_scp(path):
            if key in seen:
                raise ValueError(f"{path}: utterance '{key}' appears more than once")
            seen.add(key)
            if pooling == "mean":
                if num_states is None:
                    num_states = matrix.shape[0]
                if matrix.shape[0] != num_states:
                    raise ValueError(
                        f"{path}: '{key}' has {matrix.shape[0]} states, expected {num_states}"
                    )
                blocks = list(matrix)
            else:
                from comflp_espnet.states import split_frame_states

                blocks = split_frame_states(matrix, num_states)
            if per_state is None:
                per_state = [[] for _ in range(num_states)]
            for i, block in enumerate(blocks):
                per_state[i].append(block)
    if per_state is None:
        raise ValueError(f"no states in {', '.join(str(p) for p in scp_paths)}")
    if pooling == "mean":
        return [np.stack(rows, axis=0) for rows in per_state]
    return [np.concatenate(rows, axis=0) for rows in per_state]


def merge_dumps(dump_dirs: Sequence[PathLike], output_dir: PathLike) -> Path:
    """Merge job dump directories into ``output_dir``.

    Writes ``states.scp`` (the job scps concatenated; they keep pointing to
    the job arks) and ``states_info.yaml`` with summed counts. The jobs must
    agree on pooling, number of states and dimension.
    """
    if not dump_dirs:
        raise ValueError("no dump directories to merge")
    infos = []
    for d in dump_dirs:
        info = read_info(d)
        if info is None or not (Path(d) / SCP_NAME).is_file():
            raise FileNotFoundError(f"{d}: not a complete dump ({SCP_NAME}, {INFO_NAME})")
        infos.append(info)
    for field in ("pooling", "num_states", "dim", "frames_per_utt", "seed"):
        values = {repr(i.get(field)) for i in infos}
        if len(values) > 1:
            raise ValueError(f"dump directories disagree on {field}: {sorted(values)}")
    merged = dict(infos[0])
    merged["num_utts"] = sum(int(i.get("num_utts", 0)) for i in infos)
    merged["num_skipped"] = sum(int(i.get("num_skipped", 0)) for i in infos)
    merged["skipped_keys"] = [k for i in infos for k in (i.get("skipped_keys") or [])]
    merged["merged_from"] = [str(d) for d in dump_dirs]
    # Files are replaced one by one (not the directory): the job directories
    # usually live inside output_dir.
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output_file(output_dir / SCP_NAME, "w", encoding="utf-8") as out:
        for d in dump_dirs:
            out.write((Path(d) / SCP_NAME).read_text(encoding="utf-8"))
    write_info(output_dir, merged)
    logging.info(f"Merged {len(dump_dirs)} dumps ({merged['num_utts']} utterances) into {output_dir}")
    return Path(output_dir)
