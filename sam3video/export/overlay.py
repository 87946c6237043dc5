"""``overlay.mp4``: frames annotated with masks, boxes and labels, encoded H.264 through PyAV.

Frames are RGB (H, W, 3) uint8 throughout; colours are RGB tuples and are passed to OpenCV's drawing
functions as they are (OpenCV draws channel values, it does not care about the order — only
``cv2.imshow``/``imwrite`` assume BGR, and neither is used here).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ..detections import Detections
from ..geometry import even_size
from .atomic import atomic_path

# A fixed palette (RGB): track id t gets PALETTE[(t - 1) % len(PALETTE)], so colours are deterministic.
PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    for h in (
        "E6194B", "3CB44B", "FFE119", "4363D8", "F58231", "911EB4", "46F0F0", "F032E6", "BCF60C", "FABEBE",
        "008080", "E6BEFF", "9A6324", "FFFAC8", "800000", "AAFFC3", "808000", "FFD8B1", "000075", "808080",
    )
)
FPS_MAX_DENOMINATOR = 1001  # float fps -> Fraction: 29.97002997 -> 30000/1001, 25.0 -> 25/1
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(track_id: int) -> tuple[int, int, int]:
    """The RGB palette colour of a 1-based track id (ids <= 0 wrap around the palette too)."""
    return PALETTE[(int(track_id) - 1) % len(PALETTE)]


def _label(detections: Detections, i: int, class_names: Sequence[str]) -> str:
    class_id = int(detections.class_id[i])
    name = class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)
    track = "" if detections.tracker_id is None else f" #{int(detections.tracker_id[i])}"
    return f"{name}{track} {float(detections.confidence[i]):.2f}"


def _draw_label(frame: np.ndarray, text: str, x0: int, y0: int, color, font_scale: float, thickness: int) -> None:
    """Filled label box just above (x0, y0), moved inside the frame when it would leave it."""
    (tw, th), baseline = cv2.getTextSize(text, _FONT, font_scale, thickness)
    pad = max(1, thickness)
    box_h, box_w = th + baseline + 2 * pad, tw + 2 * pad
    top = y0 - box_h if y0 - box_h >= 0 else y0
    left = min(max(x0, 0), max(frame.shape[1] - box_w, 0))
    cv2.rectangle(frame, (left, top), (left + box_w - 1, top + box_h - 1), color, thickness=cv2.FILLED)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    text_color = (0, 0, 0) if luminance > 128 else (255, 255, 255)
    cv2.putText(frame, text, (left + pad, top + pad + th), _FONT, font_scale, text_color, thickness, cv2.LINE_AA)


def annotate(
    frame_rgb: np.ndarray,
    detections: Detections,
    class_names: Sequence[str] = (),
    *,
    mask_alpha: float = 0.5,
    box_thickness: int = 2,
    font_scale: float = 0.5,
    text_thickness: int = 1,
) -> np.ndarray:
    """A new (H, W, 3) uint8 RGB frame with masks blended, boxes outlined and ``"name #id score"`` labels.

    Colour per track id (``color_for``), or per ``class_id + 1`` when untracked. A mask pixel becomes
    ``(1 - mask_alpha) * pixel + mask_alpha * colour``; masks are blended in detection order.
    Labels are drawn after all boxes, least confident first. ``class_names[class_id]`` names the prompt
    (the id itself if missing). The input is not modified.
    """
    frame = np.array(frame_rgb, dtype=np.uint8, order="C", copy=True)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame_rgb must be (H, W, 3), got {frame.shape}")
    keys = detections.class_id + 1 if detections.tracker_id is None else detections.tracker_id
    colors = [color_for(k) for k in keys]
    if detections.mask is not None:
        if detections.mask.shape[1:] != frame.shape[:2]:
            raise ValueError(f"masks are {detections.mask.shape[1:]}, frame is {frame.shape[:2]}")
        for mask, color in zip(detections.mask, colors):
            blended = (1.0 - mask_alpha) * frame[mask] + mask_alpha * np.asarray(color, np.float32)
            frame[mask] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    corners = np.rint(detections.xyxy).astype(int)
    for (x0, y0, x1, y1), color in zip(corners, colors):
        cv2.rectangle(frame, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), color, box_thickness)
    for i in np.argsort(detections.confidence, kind="stable"):  # the most confident label ends on top
        x0, y0 = int(corners[i, 0]), int(corners[i, 1])
        _draw_label(frame, _label(detections, i, class_names), x0, y0, colors[i], font_scale, text_thickness)
    return frame


def _as_fraction(fps: float | Fraction) -> Fraction:
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(FPS_MAX_DENOMINATOR)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def _pick_codec(codec: str | None) -> str:
    """``codec`` if given, else libx264 when this PyAV/FFmpeg build can encode it, else mpeg4."""
    if codec is not None:
        return codec
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except ValueError:  # UnknownCodecError (a ValueError): FFmpeg built without libx264
        return "mpeg4"


class OverlayWriter:
    """Context manager encoding RGB frames to an H.264 mp4 (yuv420p) atomically.

    >>> with OverlayWriter("overlay.mp4", fps=29.97, width=w, height=h) as out:
    ...     for frame_rgb in frames:
    ...         out.write(frame_rgb)

    ``fps`` (float or Fraction) is stored as a Fraction (30000/1001 stays NTSC). yuv420p needs even
    sizes: an odd width or height is padded by repeating the last column/row, so the video is
    ``output_size`` = (width rounded up to even, height rounded up to even). ``codec`` None picks
    libx264 (``crf`` quality) and falls back to mpeg4 (``mpeg4_bit_rate``) when libx264 is missing;
    after ``__enter__`` ``codec`` is the encoder in use. ``container_format`` is the FFmpeg muxer
    (given explicitly because the temporary file's name has no usable suffix).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        width: int,
        height: int,
        *,
        codec: str | None = None,
        container_format: str = "mp4",
        crf: int = 20,
        mpeg4_bit_rate: int = 8_000_000,
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        self.path = Path(path)
        self.rate = _as_fraction(fps)
        self.width, self.height = int(width), int(height)
        self.output_size = even_size(self.width, self.height)
        self.codec, self.crf, self.mpeg4_bit_rate = codec, crf, mpeg4_bit_rate
        self.container_format = container_format
        self.num_frames = 0
        self._stack: ExitStack | None = None
        self._container = self._stream = None

    def __enter__(self) -> "OverlayWriter":
        self._stack = ExitStack()
        temp = self._stack.enter_context(atomic_path(self.path))
        codec = _pick_codec(self.codec)
        try:
            self._container = av.open(str(temp), mode="w", format=self.container_format)
            stream = self._container.add_stream(codec, rate=self.rate)
            stream.width, stream.height = self.output_size
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(self.crf)}
            else:
                stream.bit_rate = self.mpeg4_bit_rate
        except BaseException as error:
            self._finish(error)
            raise
        self._stream, self.codec = stream, codec  # self.codec: the encoder actually used
        return self

    def write(self, frame_rgb: np.ndarray) -> None:
        """Encode one (height, width, 3) uint8 RGB frame."""
        if self._stream is None:
            raise RuntimeError("OverlayWriter.write called outside its with-block")
        frame = np.asarray(frame_rgb)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            expected = (self.height, self.width, 3)
            raise ValueError(f"expected a {expected} uint8 frame, got {frame.shape} {frame.dtype}")
        pad_y, pad_x = self.output_size[1] - self.height, self.output_size[0] - self.width
        if pad_x or pad_y:
            frame = np.pad(frame, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.num_frames += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        error = exc
        if error is None:
            try:
                for packet in self._stream.encode():  # flush the encoder
                    self._container.mux(packet)
            except BaseException as flush_error:
                error = flush_error
        error = self._finish(error)
        if error is not None and error is not exc:
            raise error
        return False

    def _finish(self, error: BaseException | None) -> BaseException | None:
        """Close the container, then rename (no error) or delete the temp file; the error to raise, if any."""
        container, self._container, self._stream = self._container, None, None
        stack, self._stack = self._stack, None
        try:
            if container is not None:
                container.close()
        except BaseException as close_error:
            error = error or close_error
        if error is None:
            stack.__exit__(None, None, None)
        else:
            stack.__exit__(type(error), error, error.__traceback__)
        return error
