"""One run at a time per ``--comflp_dir``: an exclusive ``flock`` on ``<comflp_dir>/.lock``.

The stage script opens the lock file on a descriptor it keeps for its whole
life (``exec 9<>.lock``) and lets ``acquire`` lock that descriptor: the lock
belongs to the open file, so it stays after the helper process exits and is
freed by the kernel when the run ends, however it ends (a killed run leaves
no lock behind; the next run takes over and says so).  The holder writes its
pid, host, start time and command into the file, so that a second run can
name the one it waits for.

Pure module: no ESPnet, no torch.
"""

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

PathLike = Union[str, os.PathLike]


class LockBusy(RuntimeError):
    """Another run holds the lock."""


def describe(holder: Optional[Dict[str, Any]]) -> str:
    if not holder:
        return "a run that left no description"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
            f"{holder.get('command')}")


def read_holder(lock_path: PathLike) -> Optional[Dict[str, Any]]:
    """The description written by the holder (or by a holder that died), None if empty."""
    try:
        text = Path(lock_path).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {"command": text[:200]}
    return data if isinstance(data, dict) else None


def acquire(fd: int, lock_path: PathLike, pid: int, command: str, wait_seconds: float = 0,
            started: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Lock the open file ``fd`` (``lock_path``) for the run ``pid``.

    Waits up to ``wait_seconds`` for another holder; then raises LockBusy
    naming it.  Returns the description left by an earlier holder that ended
    without releasing the lock (killed), else None.
    """
    deadline = time.monotonic() + max(0.0, wait_seconds)
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise LockBusy(f"cannot lock {lock_path} ({e.strerror}); the file system may not "
                               "support flock: choose a --comflp_dir on a local disk") from e
        holder = read_holder(lock_path)
        if time.monotonic() >= deadline:
            waited = f" (waited {wait_seconds:g} s)" if wait_seconds > 0 else ""
            raise LockBusy(
                f"another run is using {Path(lock_path).parent}{waited}: {describe(holder)}; wait for it to "
                "finish (or pass --comflp_lock_wait SECONDS), or give this run its own --comflp_dir")
        if not announced:
            logging.info(f"waiting up to {wait_seconds:g} s for the run holding {lock_path}: {describe(holder)}")
            announced = True
        time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
    previous = read_holder(lock_path)
    info = {"pid": pid, "host": socket.gethostname(),
            "started": started or time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
    if previous and (previous.get("pid"), previous.get("host")) != (pid, info["host"]):
        return previous
    return None


def release(fd: int) -> None:
    """Clear the holder's description (the kernel frees the lock itself)."""
    os.ftruncate(fd, 0)
