"""The one way this project replaces a file (``atomic_write``) and dumps a config (``plain_dict``).
Torch-free, so core, storage and the annotator all use it (a crash or a full disk leaves the previous
file, never a half-written one)."""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask once, so written files get ordinary permissions


def stage(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None], fsync: bool = True) -> Path:
    """Write ``data`` (bytes, or a function writing to a binary file object) to a new temp file next to
    ``path`` (the folder is created if missing), flushed and fsync'ed (``fsync=False`` for caches);
    returns the temp file's path, for ``os.replace(tmp, path)`` -- now (``atomic_write``) or once a
    whole set of files is staged. The temp file is removed on any failure; OSError propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=str(path.parent))
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
    except BaseException:
        _discard(tmp)
        raise
    return Path(tmp)


def _discard(tmp) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None], fsync: bool = True) -> Path:
    """Replace ``path`` with ``data``: ``stage`` then ``os.replace``, so a crash or a full disk leaves
    the previous file or none, never a half-written one. OSError (ENOSPC, EACCES...) propagates for the
    caller to word. Returns the path."""
    path = Path(path)
    tmp = stage(path, data, fsync)
    try:
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    return path


def plain_dict(config) -> dict:
    """A dataclass config (RunConfig, TrainConfig) as a JSON-ready dict: tuples become lists. The one
    config dump: what project.db's runs.config and every checkpoint's "config" hold."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
