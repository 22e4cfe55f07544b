"""Spool files: the fsync'd local fallback of the inference and feedback logs.

A spool file ``<data_dir>/spool/<name>.jsonl`` holds one JSON record per line. Files are shared
safely between processes: appends hold an exclusive ``flock``, check the file was not renamed under
them, and ``fsync`` before returning (so a record counts as accepted only once it is on disk); a
reader *claims* the file by renaming it, then takes the lock once so any append already in flight
finishes first.

Nothing here parses records: :func:`spool_lines` yields raw lines with their numbers, and the
caller decides what a readable line is (unreadable ones go to the dead-letter table, never away).
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path


def spool_append(spool_dir: Path, lines: Iterable[str | bytes], name: str) -> None:
    """Append lines (without their newline) to the spool file ``name``: locked, fsync'd, durable."""
    data = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    if not data:
        return
    spool_dir.mkdir(parents=True, exist_ok=True)
    path = spool_dir / name
    while True:
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # a reader claimed (renamed) the file between our open and lock: reopen
                continue
            os.write(fd, data)
            os.fsync(fd)
            if created:
                _fsync_dir(spool_dir)  # the new file's name is durable too
            return
        finally:
            os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def claim_spool(spool_dir: Path, name: str) -> list[Path]:
    """Take the current spool file ``name`` (and any left by an interrupted reader) for reading."""
    if not spool_dir.is_dir():
        return []
    path = spool_dir / name
    stem = name.removesuffix(".jsonl")
    if path.exists():
        claimed = spool_dir / f"{stem}.{uuid.uuid4().hex}.claimed.jsonl"
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            pass
    files = sorted(spool_dir.glob(f"{stem}.*.claimed.jsonl"))
    for file in files:  # wait for appends that opened the file before the rename
        with open(file, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
    return files


def spool_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line without its newline) of a claimed spool file; blank lines skipped."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip(b"\n")
            if line.strip():
                yield number, line


def spool_pending(spool_dir: Path, name: str) -> bool:
    """Whether the spool ``name`` holds a file to replay (the live one or a claimed one)."""
    if not spool_dir.is_dir():
        return False
    stem = name.removesuffix(".jsonl")
    return (spool_dir / name).exists() or any(spool_dir.glob(f"{stem}.*.claimed.jsonl"))


def spool_size(spool_dir: Path, name: str) -> int:
    """Bytes waiting in the spool files of ``name``."""
    if not spool_dir.is_dir():
        return 0
    stem = name.removesuffix(".jsonl")
    return sum(p.stat().st_size for p in spool_dir.glob(f"{stem}*.jsonl") if p.is_file())
