"""Atomic file output: write beside the final name, fsync, then ``os.replace`` — or leave nothing.

Every exporter writes through :func:`atomic_path` or :func:`atomic_open`. While the ``with`` block runs,
the data goes to a hidden temporary file in the same directory (``.tracks.txt.tmp-1a2b3c4d``). When the
block ends normally the file is flushed, fsynced and renamed over the final name in one step. When it
ends with any exception — ``KeyboardInterrupt`` included — the temporary file is removed, the exception
propagates, and whatever was at the final name before (nothing, or an older file) is left untouched.

An ``OSError`` of the file itself (creating, writing, flushing, fsyncing or renaming it; disk full, no
permission ...) is raised as ``OutputError``, one line naming the final file and the reason.

A ``KeyboardInterrupt`` can land anywhere, also between creating a temp file and the ``try`` that would
remove it: a writer that owns a folder sweeps it with :func:`remove_temp_files` when it fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import InputError, OutputError

TEMP_MARKER = ".tmp-"  # temporary files are named ".<final name>.tmp-<8 hex digits>"


def remove_temp_files(directory: str | os.PathLike) -> None:
    """Delete the temp files (names with ``TEMP_MARKER``) directly in ``directory``, if it exists."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for path in Path(directory).iterdir():
            if TEMP_MARKER in path.name and path.is_file():
                with contextlib.suppress(OSError):
                    path.unlink()


def _write_error(final: Path, error: OSError) -> OutputError:
    """``OutputError("cannot write <final>: <reason>")`` with the errno of ``error``."""
    reason = error.strerror or str(error) or type(error).__name__
    output_error = OutputError(f"cannot write {final}: {' '.join(reason.split())}")
    output_error.errno = error.errno
    return output_error


def _is_about(error: BaseException, temp: Path) -> bool:
    """Whether ``error`` is an ``OSError`` naming ``temp`` (raised by a writer that opened it itself)."""
    return isinstance(error, OSError) and not isinstance(error, OutputError) and any(
        isinstance(name, (str, os.PathLike)) and os.fspath(name) == os.fspath(temp)
        for name in (error.filename, error.filename2))


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
        except OSError as error:  # no permission, no space (for a directory entry), read-only file system
            raise _write_error(final, error) from None


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
        try:
            yield temp
        except BaseException as error:
            if _is_about(error, temp):
                raise _write_error(final, error) from None
            raise
        try:
            _fsync_file(temp)
            os.replace(temp, final)
        except OSError as error:
            raise _write_error(final, error) from None
    except BaseException:
        with contextlib.suppress(OSError):
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
    final = Path(path)
    with atomic_path(final) as temp:
        try:
            file = open(temp, mode, **open_kwargs)
        except OSError as error:
            raise _write_error(final, error) from None
        checked = _CheckedFile(file, final)
        with checked:
            yield checked
            checked.flush()
            try:
                os.fsync(file.fileno())
            except OSError as error:
                raise _write_error(final, error) from None


class _CheckedFile:
    """An open file whose ``write``, ``writelines``, ``flush`` and ``close`` raise ``OutputError``
    (naming ``final``) for an ``OSError``; everything else is the file's own."""

    def __init__(self, file: IO, final: Path) -> None:
        self._file, self._final = file, final

    def __getattr__(self, name: str):
        return getattr(self._file, name)

    def __iter__(self):
        return iter(self._file)

    def __enter__(self) -> "_CheckedFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # the body's error wins; closing may fail again on a full disk
            with contextlib.suppress(OSError):
                self._file.close()

    def _checked(self, method: str, *args):
        try:
            return getattr(self._file, method)(*args)
        except OSError as error:
            raise _write_error(self._final, error) from None

    def write(self, data):
        return self._checked("write", data)

    def writelines(self, lines) -> None:
        self._checked("writelines", lines)

    def flush(self) -> None:
        self._checked("flush")

    def close(self) -> None:
        self._checked("close")
