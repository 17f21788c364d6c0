"""Freshness records: what an output was made from, and the digests of its files.

Every output of the run directory (a file, a set of files or a directory) has a
record beside it, ``<parent>/.<name>.record.json``::

    {"format": 1,
     "output": "<name>",
     "made_from": {"inputs": {name: digest}, "options": {...}},
     "files": {"<path relative to the record's directory>": "<sha256>"},
     "seconds": <wall-clock seconds it took to make>,
     "info": {...},                    # free-form facts (counts, skipped utterances)
     "made": {"at": "<ISO time>", "host": "...", "pid": N},
     "pending": false}

``made_from.inputs`` holds content digests: of input files (``file_digest``) or
the ``digest`` of the records of outputs it was made from, so a change anywhere
upstream changes the expected ``made_from`` of everything downstream.
``options`` are the settings that shape the output (and a code version where
the computation may change).  An output is *current* when its record exists,
its ``made_from`` equals the one expected now and every listed file still has
its recorded digest; anything else is missing, stale (made from something
else) or damaged (a file changed or disappeared since it was recorded).

A *pending* record (``write_pending``) marks an output being made that can be
resumed (a training run): same ``made_from`` means "continue", another means
"start again".

The record is written last, atomically: an output whose maker was killed has
no record (or a pending one), so it is never taken for finished.

Pure module: no ESPnet, no torch.
"""

import dataclasses
import datetime
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from comflp_espnet.atomic import atomic_output_file, is_temporary_name

PathLike = Union[str, os.PathLike]

RECORD_FORMAT = 1
RECORD_SUFFIX = ".record.json"

CURRENT = "current"
MISSING = "missing"
STALE = "stale"
DAMAGED = "damaged"
PENDING = "pending"


class RecordError(ValueError):
    """A record file that cannot be read."""


# ---------------------------------------------------------------------------- digests
_file_digests: Dict[Tuple[str, int, int, int, int], str] = {}


def file_digest(path: PathLike) -> str:
    """sha256 of a file's content (about 1.5 GB/s; a 100 MB model takes ~0.07 s).

    Remembered within the process for the same path, size, inode and change
    time, so that one check hashes each file once.
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    digest = _file_digests.get(key)
    if digest is None:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        _file_digests[key] = digest
    return digest


def value_digest(value: Any) -> str:
    """sha256 of a JSON-able value in canonical form (sorted keys)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def files_digest(paths: Iterable[PathLike], base: Optional[PathLike] = None) -> str:
    """One digest for several files: their names (relative to ``base``) and contents."""
    items = []
    for p in paths:
        p = Path(p)
        name = os.path.relpath(p, base) if base is not None else str(p)
        items.append([name, file_digest(p) if p.is_file() else None])
    return value_digest(sorted(items))


# ---------------------------------------------------------------------------- records
def record_path(output: PathLike) -> Path:
    """Where the record of ``output`` (a file or a directory) lives."""
    output = Path(output)
    return output.parent / f".{output.name}{RECORD_SUFFIX}"


def made_from(inputs: Optional[Mapping[str, Any]] = None, options: Optional[Mapping[str, Any]] = None):
    """The ``made_from`` value of a record: JSON-normalised inputs and options."""
    return json.loads(json.dumps({"inputs": dict(inputs or {}), "options": dict(options or {})},
                                 sort_keys=True, default=str))


@dataclasses.dataclass
class Record:
    output: str
    made_from: Dict[str, Any]
    files: Dict[str, str]
    seconds: Optional[float] = None
    info: Dict[str, Any] = dataclasses.field(default_factory=dict)
    made: Dict[str, Any] = dataclasses.field(default_factory=dict)
    pending: bool = False

    @property
    def digest(self) -> str:
        """Identity of the output: what it was made from and what it holds."""
        return value_digest({"made_from": self.made_from, "files": self.files})

    def to_json(self) -> Dict[str, Any]:
        return {"format": RECORD_FORMAT, "output": self.output, "made_from": self.made_from,
                "files": self.files, "seconds": self.seconds, "info": self.info,
                "made": self.made, "pending": self.pending}


def output_files(output: PathLike) -> List[Path]:
    """The files of an output: the file itself, or every file under the directory
    (records and temporary names excluded)."""
    output = Path(output)
    if output.is_file():
        return [output]
    if not output.is_dir():
        return []
    found = []
    for root, dirs, names in os.walk(output):
        dirs[:] = sorted(d for d in dirs if not is_temporary_name(d))
        for name in sorted(names):
            if name.endswith(RECORD_SUFFIX) or is_temporary_name(name):
                continue
            found.append(Path(root) / name)
    return found


def write_record(
    output: PathLike,
    made_from_value: Mapping[str, Any],
    files: Optional[Iterable[PathLike]] = None,
    seconds: Optional[float] = None,
    info: Optional[Mapping[str, Any]] = None,
) -> Record:
    """Record ``output`` as made from ``made_from_value``, with the digests of
    ``files`` (default: ``output_files(output)``); written atomically, last."""
    output = Path(output)
    path = record_path(output)
    base = path.parent
    listed = output_files(output) if files is None else [Path(f) for f in files]
    for f in listed:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: listed as part of {output} but not a file")
    record = Record(
        output=output.name,
        made_from=json.loads(json.dumps(made_from_value, sort_keys=True, default=str)),
        files={os.path.relpath(f, base): file_digest(f) for f in listed},
        seconds=None if seconds is None else round(float(seconds), 3),
        info=json.loads(json.dumps(dict(info or {}), default=str)),
        made=_made_stamp(),
    )
    _write(path, record)
    return record


def write_pending(output: PathLike, made_from_value: Mapping[str, Any]) -> Record:
    """Mark ``output`` as being made from ``made_from_value`` (resumable)."""
    output = Path(output)
    record = Record(output=output.name,
                    made_from=json.loads(json.dumps(made_from_value, sort_keys=True, default=str)),
                    files={}, made=_made_stamp(), pending=True)
    _write(record_path(output), record)
    return record


def remove_record(output: PathLike) -> None:
    try:
        record_path(output).unlink()
    except FileNotFoundError:
        pass


def _made_stamp() -> Dict[str, Any]:
    return {"at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": socket.gethostname(), "pid": os.getpid()}


def _write(path: Path, record: Record) -> None:
    with atomic_output_file(path, encoding="utf-8") as f:
        json.dump(record.to_json(), f, indent=1, sort_keys=True)
        f.write("\n")


def read_record(output: PathLike) -> Optional[Record]:
    """The record of ``output``; None when there is none; RecordError when unreadable."""
    path = record_path(output)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise ValueError("not a record of this format")
        return Record(
            output=str(data["output"]),
            made_from=dict(data["made_from"]),
            files={str(k): str(v) for k, v in dict(data["files"]).items()},
            seconds=data.get("seconds"),
            info=dict(data.get("info") or {}),
            made=dict(data.get("made") or {}),
            pending=bool(data.get("pending", False)),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RecordError(f"{path}: unreadable record ({e})")


# ---------------------------------------------------------------------------- checks
@dataclasses.dataclass
class Status:
    """Outcome of a check: ``state`` is current, missing, stale, damaged or pending."""

    output: Path
    state: str
    reason: str = ""
    record: Optional[Record] = None

    @property
    def current(self) -> bool:
        return self.state == CURRENT

    def describe(self) -> str:
        return f"{self.output} {self.reason}" if self.reason else f"{self.output} is {self.state}"


def check(output: PathLike, expected: Mapping[str, Any], verify: bool = True) -> Status:
    """Is ``output`` current for ``expected`` made_from?  ``verify`` re-hashes its files."""
    output = Path(output)
    try:
        record = read_record(output)
    except RecordError as e:
        return Status(output, DAMAGED, f"has a damaged record ({e})")
    if record is None:
        if output.exists():
            return Status(output, MISSING, "exists but has no record (its maker did not finish)")
        return Status(output, MISSING, "does not exist")
    expected = json.loads(json.dumps(expected, sort_keys=True, default=str))
    if record.made_from != expected:
        return Status(output, STALE, "was made from other inputs or options: "
                      + describe_difference(record.made_from, expected), record)
    if record.pending:
        return Status(output, PENDING, "was started but not finished", record)
    if verify:
        damaged = damaged_file(record, record_path(output).parent)
        if damaged:
            return Status(output, DAMAGED, damaged, record)
    return Status(output, CURRENT, "", record)


def damaged_file(record: Record, base: Path) -> str:
    """Why the recorded files are no longer as recorded ('' when they are)."""
    for name, digest in sorted(record.files.items()):
        path = base / name
        if not path.is_file():
            return f"lacks {path} (removed after it was made)"
        if file_digest(path) != digest:
            return f"has {path} changed or damaged since it was made"
    return ""


def describe_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """'option topk: 10 -> 5; input model changed' between two made_from values."""
    parts = []
    for section, label in (("options", "option"), ("inputs", "input")):
        a, b = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) == b.get(key):
                continue
            if section == "options":
                parts.append(f"{label} {key}: {_short(a.get(key))} -> {_short(b.get(key))}")
            elif key not in a:
                parts.append(f"new input {key}")
            elif key not in b:
                parts.append(f"input {key} no longer used")
            else:
                parts.append(f"input {key} changed")
    return "; ".join(parts) or "a different record format"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
