"""Camera and sensor effects of randomised clips, applied to a composed frame.

Order per frame: lighting (a static illumination gradient times a per-channel gain that changes
smoothly over time), blur, gray conversion, sensor noise, quantisation to uint8, JPEG re-encoding.
These change appearance only, never the truth. Camera shake moves the whole scene (objects and
background) by whole pixels; ``styled`` adds the offsets to the objects' tracks, so the truth moves
with it. Signals over time are means of two sinusoids (periods from the style, phases from
``ClipStyle.signal_seed``), so they stay within [-1, 1] times their amplitude.
"""

from __future__ import annotations

import cv2
import numpy as np

from sam3video.data.styles import ClipStyle

#: ITU-R BT.601 luma weights: how a gray camera (or a gray video decoded to RGB) sees colours.
LUMA = (0.299, 0.587, 0.114)


def _wave(style: ClipStyle, stream: int, times: np.ndarray, periods: tuple[float, float]) -> np.ndarray:
    """(T,) smooth signal in [-1, 1]: the mean of two sinusoids of ``periods`` seconds."""
    phases = np.random.default_rng([style.signal_seed, stream]).uniform(0.0, 2 * np.pi, size=2)
    return np.mean([np.sin(2 * np.pi * times / p + phase) for p, phase in zip(periods, phases)], axis=0)


def lighting_gains(style: ClipStyle, num_frames: int, fps: float) -> np.ndarray:
    """(T, 3) float32 per-frame, per-channel gain: ``light_gain * (1 + tint) * (1 + flicker * wave(t))``."""
    times = np.arange(num_frames, dtype=np.float64) / fps
    flicker = 1.0 + style.light_flicker * _wave(style, 0, times, style.light_period_s)
    tint = 1.0 + np.asarray(style.light_tint, np.float64)
    return (style.light_gain * flicker[:, None] * tint[None, :]).astype(np.float32)


def illumination(style: ClipStyle) -> np.ndarray | None:
    """(H, W) float32 static illumination ``1 + light_gradient * ramp`` (ramp from -1 to 1 across the
    frame along ``light_angle``), or None when uniform."""
    if style.light_gradient <= 0:
        return None
    xs = np.arange(style.width, dtype=np.float32) - np.float32(style.width / 2)
    ys = np.arange(style.height, dtype=np.float32) - np.float32(style.height / 2)
    ramp = xs[None, :] * np.float32(np.cos(style.light_angle)) + ys[:, None] * np.float32(np.sin(style.light_angle))
    ramp /= max(float(np.abs(ramp).max()), 1e-6)
    return np.float32(1.0) + np.float32(style.light_gradient) * ramp


def shake_offsets(style: ClipStyle, num_frames: int, fps: float) -> np.ndarray:
    """(T, 2) int64 whole-pixel (dx, dy) offsets of the scene in each frame; |offset| <= shake_px + 0.5."""
    if style.shake_px <= 0:
        return np.zeros((num_frames, 2), np.int64)
    times = np.arange(num_frames, dtype=np.float64) / fps
    waves = [_wave(style, 1 + axis, times, style.shake_period_s) for axis in range(2)]
    return np.round(style.shake_px * np.stack(waves, axis=1)).astype(np.int64)


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 luma of an (H, W, 3) RGB image."""
    return cv2.transform(image.astype(np.float32, copy=False), np.array([LUMA], np.float32))


def gray_frame(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB ``image`` as a gray camera would give it (R = G = B = rounded luma)."""
    luma = np.clip(to_gray(image) + 0.5, 0.0, 255.0).astype(np.uint8)
    return np.repeat(luma[..., None], 3, axis=2)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` (H, W, 3) RGB or (H, W) gray uint8 through a JPEG encode/decode at ``quality`` (1-100,
    4:2:0 chroma subsampling: blocking, ringing and chroma bleeding like a compressed video)."""
    colour = image.ndim == 3
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if colour else image
    ok, encoded = cv2.imencode(".jpg", data, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB) if colour else decoded


def finish_frame(
    image: np.ndarray,
    style: ClipStyle,
    gain: np.ndarray,
    light: np.ndarray | None,
    noise: np.ndarray,
) -> np.ndarray:
    """The final (H, W, 3) uint8 RGB frame from the composed ``image`` (H, W, 3) float32 (modified in
    place): ``gain`` (3,) this frame's lighting gain, ``light`` the ``illumination`` or None, ``noise``
    (H, W, 3) float32 sensor noise (+ 0.5, so that truncation rounds). A gray frame has R = G = B."""
    if light is not None:
        image *= light[..., None]
    if gain[0] != 1.0 or gain[1] != 1.0 or gain[2] != 1.0:
        image *= gain
    if style.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), style.blur_sigma)
    if style.gray:
        image = to_gray(image)
        image += noise[..., 0]
    else:
        image += noise
    np.clip(image, 0.0, 255.0, out=image)
    out = image.astype(np.uint8)
    if style.jpeg_quality:
        out = jpeg(out, style.jpeg_quality)
    return np.repeat(out[..., None], 3, axis=2) if style.gray else out
