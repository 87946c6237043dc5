"""Frame loading: video files, image folders, numpy arrays, frame iterables -> a lazy stream of Frame.

Conventions: images are (H, W, 3) uint8 RGB; timestamps are presentation times in seconds from the
start of the stream, so variable frame rate videos keep their timing; fps is a float (29.97 stays
29.97); ``Frame.index`` counts output frames from 0, ``Frame.source_index`` counts source frames from 0.
Files are decoded forward, one frame at a time, with PyAV, decord or OpenCV (the first installed one
that can open the file); nothing holds the whole video in memory.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from sam3video.errors import InputError

from .backends import (  # noqa: F401 - VideoInfo and available_backends are public here
    BACKENDS,
    DEFAULT_SOURCE_FPS,
    VideoInfo,
    _Opened,
    _Stamp,
    available_backends,
)
from .backends import (
    open_file as _open_file,
)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
MAX_WINDOW_SECONDS = 30.0  # clips are processed in windows of at most this length
TIME_TOLERANCE = 1e-3  # seconds; Matroska/WebM store millisecond timestamps

VideoSource = Union[str, os.PathLike, np.ndarray, Iterable[Any]]
_EMPTY = object()


@dataclass(frozen=True, eq=False)
class Frame:
    """One output frame (compared by identity: it holds an image)."""

    index: int  # 0-based position in the output stream (after start and fps subsampling)
    source_index: int  # 0-based position in the source
    timestamp: float  # presentation time in seconds
    image: np.ndarray  # (H, W, 3) uint8 RGB
    window: int  # 0-based window of at most ``window_seconds``, counted from the first output frame


@dataclass(frozen=True)
class Sampling:
    """Which source frames the output keeps and how it is cut into windows; validated on creation.

    ``fps``: keep a frame when its timestamp reaches the next multiple of ``1 / fps`` (counted from
    the first kept frame or ``start``), so variable frame rate sources subsample by time, not stride.
    ``start``/``end``: seconds, ``end`` exclusive. Timestamps within ``tolerance`` of a grid point or
    boundary count as on it.
    """

    fps: float | None = None
    start: float | None = None
    end: float | None = None
    window_seconds: float = MAX_WINDOW_SECONDS
    tolerance: float = TIME_TOLERANCE

    def __post_init__(self) -> None:
        if self.fps is not None and not self.fps > 0:
            raise InputError(f"fps must be > 0, got {self.fps}")
        if not 0 < self.window_seconds <= MAX_WINDOW_SECONDS:
            limit = f"(0, {MAX_WINDOW_SECONDS:g}]"
            raise InputError(f"window_seconds must be in {limit}, got {self.window_seconds}")
        if self.start is not None and not self.start >= 0:
            raise InputError(f"start must be >= 0 seconds, got {self.start}")
        if self.end is not None and not self.end > (self.start or 0.0):
            raise InputError(f"start ({self.start or 0.0:g} s) must be before end ({self.end:g} s)")


def sample(
    stamps: Iterable[tuple[int, float, Any]], sampling: Sampling, source: str = "video"
) -> Iterator[tuple[int, int, float, int, Any]]:
    """Select frames: ``(source_index, timestamp, payload)`` in presentation order -> the kept ones
    as ``(index, source_index, timestamp, window, payload)``.

    Lazy: it yields each kept frame before reading the next one. Raises InputError if nothing is kept.
    """
    tol, origin, next_t = sampling.tolerance, sampling.start, -math.inf
    count, last_t = 0, None
    for source_index, t, payload in stamps:
        last_t = t
        if sampling.start is not None and t < sampling.start - tol:
            continue
        if sampling.end is not None and t >= sampling.end - tol:
            break
        if t < next_t - tol:
            continue
        origin = t if origin is None else origin
        if sampling.fps is not None:
            next_t = origin + (math.floor((t - origin + tol) * sampling.fps) + 1) / sampling.fps
        yield count, source_index, t, math.floor((t - origin + tol) / sampling.window_seconds), payload
        count += 1
    if count == 0 and last_t is None:
        raise InputError(f"{source}: no frames could be decoded")
    if count == 0:
        span = f"start={sampling.start} s and end={sampling.end} s"
        raise InputError(f"{source}: no frame between {span} (last frame at {last_t:.3f} s)")


def iter_windows(frames: Iterable[Frame]) -> Iterator[tuple[int, Iterator[Frame]]]:
    """Group consecutive frames by ``Frame.window``: yields ``(window, frames of that window)``, lazily.

    Like ``itertools.groupby``: consume a window's frames before asking for the next window.
    """
    for window, group in itertools.groupby(frames, key=lambda frame: frame.window):
        yield window, group


@dataclass(frozen=True)
class VideoReader:
    """A source opened for reading: ``info`` is probed up front, iterating decodes ``Frame``s lazily.

    File, folder and array sources can be iterated again (each pass decodes from the start); an
    iterator source can be iterated once.
    """

    info: VideoInfo
    sampling: Sampling
    num_output_frames: int | None  # expected (exact for constant frame rate); None if unknown
    _stamps: Callable[[], Iterator[_Stamp]] = field(repr=False)

    def __iter__(self) -> Iterator[Frame]:
        kept = sample(self._stamps(), self.sampling, self.info.source)
        for index, source_index, t, window, read in kept:
            yield Frame(index, source_index, float(t), read(), window)


def open_video(
    source: VideoSource,
    backend: str = "auto",
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    window_seconds: float = MAX_WINDOW_SECONDS,
    source_fps: float | None = None,
) -> VideoReader:
    """Open a video file or URL, a folder of JPEG/PNG frames, a (T, H, W, 3) uint8 RGB array, or an
    iterable of (H, W, 3) uint8 RGB frames (or ``(timestamp_seconds, frame)`` pairs).

    ``backend`` ("auto" | "decord" | "pyav" | "opencv") applies to files only. ``fps``, ``start``,
    ``end``, ``window_seconds``: see ``Sampling``. ``source_fps`` is the frame rate of sources without
    their own timing (arrays, iterables, folders; default 30). Raises InputError for unusable input.
    """
    if backend != "auto" and backend not in BACKENDS:
        raise InputError(f"unknown video backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    if source_fps is not None and not source_fps > 0:
        raise InputError(f"source_fps must be > 0, got {source_fps}")
    sampling = Sampling(fps=fps, start=start, end=end, window_seconds=window_seconds)
    rate = float(source_fps or DEFAULT_SOURCE_FPS)
    if isinstance(source, np.ndarray):
        info, stamps = _open_array(source, rate)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if "://" in path:
            info, stamps = _open_file(path, backend)
        elif not os.path.exists(path):
            raise InputError(f"no such file or folder: {path}")
        elif os.path.isdir(path):
            info, stamps = _open_folder(path, rate)
        else:
            info, stamps = _open_file(path, backend)
    elif isinstance(source, Iterable):
        info, stamps = _open_iterable(source, rate)
    else:
        kind = type(source).__name__
        raise InputError(f"cannot read video from a {kind}; give a path, an array or frames")
    if sampling.start is not None and info.duration is not None and sampling.start >= info.duration:
        where = f"{info.source} ({info.duration:.3f} s)"
        raise InputError(f"start={sampling.start:g} s is beyond the end of {where}")
    return VideoReader(info, sampling, _expected_output(info, sampling), stamps)


def _expected_output(info: VideoInfo, sampling: Sampling) -> int | None:
    """Output frames for nominal timestamps ``i / fps``: exact for constant frame rate sources."""
    if info.num_frames is None or (sampling.fps, sampling.start, sampling.end) == (None, None, None):
        return info.num_frames
    nominal = ((i, i / info.fps, None) for i in range(info.num_frames))
    try:
        return sum(1 for _ in sample(nominal, sampling))
    except InputError:
        return 0


def _check_image(image: Any, where: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """``image`` if it is an (H, W, 3) uint8 array (of ``size`` (H, W) if given), else InputError."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{where}: expected an (H, W, 3) uint8 RGB image, got a {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.dtype} array of shape {image.shape}"
        raise InputError(f"{where}: expected an (H, W, 3) uint8 RGB image, got a {got}")
    if size is not None and image.shape[:2] != size:
        got, want = f"{image.shape[1]}x{image.shape[0]}", f"{size[1]}x{size[0]}"
        raise InputError(f"{where}: size {got} differs from the first frame's {want}")
    return image


# ---- arrays, iterables, folders -------------------------------------------------------------------


def _open_array(array: np.ndarray, fps: float) -> _Opened:
    """Frames are views of ``array``, shown at ``i / fps``."""
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8 or array.shape[0] == 0:
        got = f"{array.dtype} {array.shape}"
        raise InputError(f"expected a (T, H, W, 3) uint8 RGB array with T >= 1, got {got}")
    t, h, w = array.shape[:3]
    info = VideoInfo("<array>", "array", fps, t, w, h, t / fps)
    return info, lambda: ((i, i / fps, functools.partial(array.__getitem__, i)) for i in range(t))


def _split_item(item: Any, i: int, fps: float) -> tuple[float, Any]:
    """An iterable's item: a frame (shown at ``i / fps``) or a ``(timestamp_seconds, frame)`` pair."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], numbers.Real):
        return float(item[0]), item[1]
    return i / fps, item


def _given(image: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: image


def _open_iterable(frames: Iterable[Any], fps: float) -> _Opened:
    """The first item is read now (for the frame size); the rest as the caller iterates."""
    num_frames = len(frames) if isinstance(frames, Sized) else None
    items = iter(frames)
    first = next(items, _EMPTY)
    if first is _EMPTY:
        raise InputError("the frame iterable is empty")
    height, width = _check_image(_split_item(first, 0, fps)[1], "frame 0").shape[:2]
    timed = isinstance(first, tuple)  # its own timestamps: the duration is not num_frames / fps
    duration = num_frames / fps if num_frames is not None and not timed else None
    info = VideoInfo("<iterable>", "iterable", fps, num_frames, width, height, duration)
    passes = itertools.count()

    def stamps() -> Iterator[_Stamp]:
        first_pass = next(passes) == 0
        if not first_pass and items is frames:
            raise InputError("an iterator of frames can be read only once")
        for i, item in enumerate(itertools.chain([first], items) if first_pass else frames):
            t, image = _split_item(item, i, fps)
            yield i, t, _given(_check_image(image, f"frame {i}", (height, width)))

    return info, stamps


def _natural_key(name: str) -> list[Any]:
    """Sort key putting frame2 before frame10: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", name)]


def _read_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as error:
        raise InputError(f"cannot read image {path}: {error}") from None
    return _check_image(array, str(path), size)


def _open_folder(folder: str, fps: float) -> _Opened:
    """JPEG/PNG files of ``folder`` in natural order, shown at ``i / fps``; read one at a time."""
    paths = sorted(
        (p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: _natural_key(p.name),
    )
    if not paths:
        raise InputError(f"no JPEG or PNG images in folder {folder}")
    size = _read_image(paths[0], None).shape[:2]
    info = VideoInfo(folder, "folder", fps, len(paths), size[1], size[0], len(paths) / fps)

    def stamps() -> Iterator[_Stamp]:
        for i, path in enumerate(paths):
            yield i, i / fps, functools.partial(_read_image, path, size)

    return info, stamps
