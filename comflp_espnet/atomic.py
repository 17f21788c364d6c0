"""Write outputs so that a failure never leaves a half-written file or directory.

Everything is first written under a temporary name in the destination's own
directory (same filesystem, so the final rename is atomic) and renamed into
place only when complete.  Temporary names are ``.<name>.tmp<random>`` (new
output) and ``.<name>.old<random>`` (the output being replaced); a process
killed while writing leaves them behind, and ``remove_temporaries`` clears
them on the next run (``is_temporary_name`` tells them apart).
"""

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, List, Union

PathLike = Union[str, os.PathLike]

_TEMPORARY = re.compile(r"^\..+\.(tmp|old)[A-Za-z0-9_]*(\.[A-Za-z0-9]+)?$")


def is_temporary_name(name: str) -> bool:
    """True for the names this module writes before renaming into place."""
    return bool(_TEMPORARY.match(name))


def temporary_name(name: str) -> str:
    """A fixed temporary name for ``name`` (for writers outside this module,
    e.g. shell scripts), recognised by ``is_temporary_name``."""
    return f".{name}.tmp"


def remove_temporaries(root: PathLike) -> List[Path]:
    """Remove every temporary output under ``root``; return what was removed.

    Only safe while no other process writes under ``root`` (the run lock).
    """
    removed = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for folder, dirs, names in os.walk(root):
        for name in list(dirs) + names:
            if is_temporary_name(name):
                path = Path(folder) / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                removed.append(path)
        dirs[:] = [d for d in dirs if not is_temporary_name(d)]
    return removed


@contextlib.contextmanager
def atomic_output_dir(output_dir: PathLike) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``output_dir`` on success.

    An existing ``output_dir`` is replaced only after the new one is complete.
    On any exception the temporary directory is removed and ``output_dir`` is
    left as it was.
    """
    output_dir = Path(output_dir)
    parent = output_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp", dir=parent))
    try:
        yield tmp_dir
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    # mkdtemp creates mode 0700; give the result the usual permissions.
    os.chmod(tmp_dir, 0o777 & ~_umask())
    old_dir = None
    if output_dir.exists() or output_dir.is_symlink():
        old_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old", dir=parent))
        os.rmdir(old_dir)
        os.replace(output_dir, old_dir)
    os.replace(tmp_dir, output_dir)
    if old_dir is not None:
        if old_dir.is_dir() and not old_dir.is_symlink():
            shutil.rmtree(old_dir, ignore_errors=True)
        else:
            old_dir.unlink()


@contextlib.contextmanager
def atomic_output_file(path: PathLike, mode: str = "w", **open_kwargs) -> Iterator:
    """Open a temporary file that replaces ``path`` once closed without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp_name, mode, **open_kwargs) as f:
            yield f
        os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
