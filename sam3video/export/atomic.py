"""Atomic file output: write beside the final name, fsync, then ``os.replace`` — or leave nothing.

Every exporter writes through :func:`atomic_path` or :func:`atomic_open`. While the ``with`` block runs,
the data goes to a hidden temporary file in the same directory (``.tracks.txt.tmp-1a2b3c4d``). When the
block ends normally the file is flushed, fsynced and renamed over the final name in one step. When it
ends with any exception — ``KeyboardInterrupt`` included — the temporary file is removed, the exception
propagates, and whatever was at the final name before (nothing, or an older file) is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import InputError

TEMP_MARKER = ".tmp-"  # temporary files are named ".<final name>.tmp-<8 hex digits>"


def _create_temp(final: Path) -> Path:
    """Create (exclusively, mode 0o666 minus umask) and return an empty temp file beside ``final``."""
    if not final.parent.is_dir():
        raise InputError(f"output directory does not exist: {final.parent}")
    while True:
        temp = final.with_name(f".{final.name}{TEMP_MARKER}{secrets.token_hex(4)}")
        try:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temp
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; best effort (not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that opens files itself (e.g. PyAV).

    On normal exit the temp file is fsynced and renamed to ``path``; on any exception it is deleted.
    The writer must have closed the file before the block ends.
    """
    final = Path(path)
    temp = _create_temp(final)
    try:
        yield temp
        _fsync_file(temp)
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """``open(path, mode)`` made atomic: yields the open temp file, renamed to ``path`` on success.

    ``mode`` must create a new file: ``"w"``, ``"wb"``, ``"x"``…; text mode defaults to UTF-8 and
    ``newline="\\n"`` so files are identical on every platform.
    """
    if not mode.startswith(("w", "x")):
        raise ValueError(f"atomic_open writes a new file; mode must start with 'w' or 'x', got {mode!r}")
    mode = "w" + mode[1:]  # the temp file already exists (created exclusively), so "x" would fail on it
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
        open_kwargs.setdefault("newline", "\n")
    with atomic_path(path) as temp:
        with open(temp, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
