"""Video file backends: decord, PyAV and OpenCV, each optional and imported only when used.

Each backend has a ``probe(path) -> VideoInfo`` (reads the container, decodes at most one frame) and a
``stamps(path, fps)`` generator of ``(source_index, timestamp_seconds, read)`` where ``read()`` returns
the (H, W, 3) uint8 RGB image; frames not kept by the sampler are never converted.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sam3video.errors import InputError

# "auto" tries them in this order. PyAV first: measured on a 30 s 640x360 clip with the demo model, the
# whole run peaked at 1473 MiB RSS with decord against 874 MiB with PyAV (decord alone: 59 MiB, so it is
# decord beside the model's threads), and PyAV decodes faster here (1120 against 931 frames/s).
BACKENDS = ("pyav", "decord", "opencv")
_BACKEND_MODULES = {"decord": "decord", "pyav": "av", "opencv": "cv2"}
_BACKEND_PACKAGES = {"decord": "decord", "pyav": "av", "opencv": "opencv-python"}
DEFAULT_SOURCE_FPS = 30.0  # frame rate assumed for arrays, iterables and folders

_Stamp = tuple[int, float, Callable[[], np.ndarray]]  # (source_index, timestamp, lazy RGB image)
_Opened = tuple["VideoInfo", Callable[[], Iterator[_Stamp]]]  # info, and a fresh stamp stream per call


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a source before decoding it; ``None`` where the source does not say."""

    source: str
    backend: str  # "decord" | "pyav" | "opencv" | "folder" | "array" | "iterable"
    fps: float  # average frame rate of the source
    num_frames: int | None  # as the container reports it (OpenCV may estimate it from the duration)
    width: int
    height: int
    duration: float | None  # seconds


def available_backends() -> tuple[str, ...]:
    """The video backends that are installed, in the order ``backend="auto"`` tries them."""
    return tuple(name for name in BACKENDS if importlib.util.find_spec(_BACKEND_MODULES[name]))


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration: FFmpeg (inside decord, PyAV and OpenCV)
    and decord's C++ logger print there, below Python, on files they cannot open. The reason still
    reaches the user through the backend's exception, as one line."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def open_file(path: str, backend: str) -> _Opened:
    """Probe ``path`` with the forced backend, or with each installed one in turn for "auto"; whatever
    the native libraries print while probing is silenced (a bad file ends in one InputError line)."""
    installed = available_backends()
    if backend != "auto" and backend not in installed:
        hint = f"pip install {_BACKEND_PACKAGES[backend]}; installed: {', '.join(installed) or 'none'}"
        raise InputError(f"video backend {backend!r} is not installed ({hint})")
    names = installed if backend == "auto" else (backend,)
    if not names:
        raise InputError("no video backend installed: pip install av (or opencv-python)")
    errors: dict[str, str] = {}
    for name in names:
        probe, stamps = _FILE_BACKENDS[name]
        try:
            with native_stderr_silenced():
                info = probe(path)
        except InputError as error:
            errors[name] = str(error)
            continue
        return info, functools.partial(stamps, path, info.fps)
    # One reason, the most telling: "no frames" beats "unreadable"; PyAV's wording beats decord's log lines.
    reasons = sorted(errors.items(), key=lambda item: ("frames" not in item[1], item[0] != "pyav"))
    tried = f" (tried {', '.join(errors)})" if len(errors) > 1 else ""
    raise InputError(reasons[0][1] + tried)


def _info(path: str, backend: str, fps: float, num_frames: int | None, size, duration=None) -> VideoInfo:
    """VideoInfo from a backend's report, ``size`` (width, height); no rate: 30 fps, no count: None."""
    if not (fps > 0 and math.isfinite(fps)):
        fps = DEFAULT_SOURCE_FPS  # no usable rate in the container; timestamps still drive sampling
    num_frames = num_frames if num_frames and num_frames > 0 else None
    if duration is None and num_frames is not None:
        duration = num_frames / fps
    return VideoInfo(path, backend, float(fps), num_frames, int(size[0]), int(size[1]), duration)


def _pyav_open(path: str):
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or error
        raise InputError(f"not a readable video: {path} ({reason})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"no video stream with frames in {path}")
    if container.streams.video[0].codec_context is None:  # decoding such a stream segfaults (PyAV 16)
        container.close()
        raise InputError(f"no decodable video stream in {path} (unknown codec or damaged header)")
    return container


def _pyav_probe(path: str) -> VideoInfo:
    """Container metadata, plus the first frame decoded to prove the stream is readable."""
    with _pyav_open(path) as container:
        stream = container.streams.video[0]
        first = next(_pyav_decode(path, container), None)
        if first is None:
            raise InputError(f"no decodable frames in {path}")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or 0
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = container.duration / 1e6 if container.duration else None
        height, width = first[2]().shape[:2]
        return _info(path, "pyav", float(rate), stream.frames, (width, height), duration)


def _pyav_decode(path: str, container, fps: float = DEFAULT_SOURCE_FPS) -> Iterator[_Stamp]:
    import av

    stream = container.streams.video[0]
    offset = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    t = -1 / fps
    try:
        for i, frame in enumerate(container.decode(stream)):
            t = frame.time - offset if frame.time is not None else t + 1 / fps  # from the stream start
            yield i, t, functools.partial(frame.to_ndarray, format="rgb24")
    except av.error.FFmpegError as error:
        raise InputError(f"cannot decode {path} ({error})") from None


def _pyav_stamps(path: str, fps: float) -> Iterator[_Stamp]:
    with _pyav_open(path) as container:
        container.streams.video[0].thread_type = "AUTO"
        yield from _pyav_decode(path, container, fps)


@contextlib.contextmanager
def _opencv_capture(path: str) -> Iterator[Any]:
    import cv2

    # FFmpeg's log, quiet (read when the first capture opens): on a damaged stream it prints a line per
    # bad macroblock to fd 2 while frames decode, in the decoding thread, past native_stderr_silenced.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise InputError(f"not a readable video: {path} (OpenCV cannot open it)")
        yield capture
    finally:
        capture.release()


def _opencv_probe(path: str) -> VideoInfo:
    import cv2

    with _opencv_capture(path) as capture:
        if not capture.grab():
            raise InputError(f"no decodable frames in {path}")
        get = capture.get
        size = get(cv2.CAP_PROP_FRAME_WIDTH), get(cv2.CAP_PROP_FRAME_HEIGHT)
        return _info(path, "opencv", get(cv2.CAP_PROP_FPS), int(get(cv2.CAP_PROP_FRAME_COUNT)), size)


def _opencv_stamps(path: str, fps: float) -> Iterator[_Stamp]:
    """Timestamps from CAP_PROP_POS_MSEC; skipped frames are grabbed, not converted; BGR -> RGB."""
    import cv2

    with _opencv_capture(path) as capture:

        def retrieve(i: int) -> np.ndarray:  # valid until the next grab
            ok, bgr = capture.retrieve()
            if not ok:
                raise InputError(f"cannot decode frame {i} of {path}")
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

        for i in itertools.count():
            if not capture.grab():
                return
            yield i, capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, functools.partial(retrieve, i)


def _decord_open(path: str):
    import decord

    # FFmpeg's log, quiet (as for OpenCV above): damaged streams still decode, with concealed errors.
    decord.logging.set_level(decord.logging.QUIET)
    try:
        return decord.VideoReader(path, ctx=decord.cpu(0))
    except Exception as error:  # noqa: BLE001 - decord raises bare RuntimeError/DECORDError
        raise InputError(f"not a readable video: {path} (decord: {_decord_reason(error)})") from None


def _decord_reason(error: Exception) -> str:
    """decord's message, one line: its first, without the "[09:36:17] /github/.../video_reader.cc:151: "."""
    lines = str(error).splitlines()
    return re.sub(r"^(\[[\d:]+\] \S+:\d+: )+", "", lines[0] if lines else type(error).__name__)[:120]


def _decord_probe(path: str) -> VideoInfo:
    reader = _decord_open(path)
    if len(reader) == 0:
        raise InputError(f"no decodable frames in {path}")
    height, width = reader[0].shape[:2]
    return _info(path, "decord", reader.get_avg_fps(), len(reader), (width, height))


def _decord_stamps(path: str, fps: float) -> Iterator[_Stamp]:
    """Timestamps come from decord's index; frames are decoded forward, skipped ones not converted."""
    reader = _decord_open(path)
    try:
        times = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0].astype(np.float64)
    except Exception as error:  # noqa: BLE001 - DECORDError: a damaged index
        raise InputError(f"not a readable video: {path} (decord: {_decord_reason(error)})") from None
    position = [0]  # the frame reader.next() returns

    def read(i: int) -> np.ndarray:
        try:
            if i > position[0]:
                reader.skip_frames(i - position[0])
            position[0] = i + 1
            return reader.next().asnumpy()
        except Exception as error:  # noqa: BLE001 - DECORDError mid-stream (a file cut short), StopIteration
            raise InputError(f"cannot decode frame {i} of {path} (decord: {_decord_reason(error)})") from None

    return ((i, float(t), functools.partial(read, i)) for i, t in enumerate(times))


_Probe = Callable[[str], VideoInfo]
_FILE_BACKENDS: dict[str, tuple[_Probe, Callable[[str, float], Iterator[_Stamp]]]] = {
    "decord": (_decord_probe, _decord_stamps),
    "pyav": (_pyav_probe, _pyav_stamps),
    "opencv": (_opencv_probe, _opencv_stamps),
}
