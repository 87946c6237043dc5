"""Test helpers: write small videos with PyAV and frames whose content encodes their index.

``write_video(path, frames, fps)`` turns (H, W, 3) uint8 RGB frames into a video file (H.264 for
.mp4/.mov/.mkv when libx264 is there, else MPEG-4 Part 2; VP9 for .webm; MPEG-4 Part 2 for .avi).
``index_frame(i)`` draws ``i`` as a row of black/white 16x16 cells that survive lossy compression;
``read_index(image)`` decodes it back.
"""

from __future__ import annotations

import itertools
import tomllib
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import av
import numpy as np

CELL = 16  # side of one bit cell in pixels
BITS = 8  # index range 0..255


def _codec_for(suffix: str) -> str:
    if suffix == ".webm":
        return "libvpx-vp9"
    if suffix == ".avi":
        return "mpeg4"
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - any failure means "not built in"
        return "mpeg4"


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float = 30.0,
    timestamps: Sequence[float] | None = None,
    codec: str | None = None,
    size: tuple[int, int] = (128, 64),
) -> Path:
    """Encode RGB uint8 (H, W, 3) frames (H, W even) to ``path``; the container follows the suffix.

    ``timestamps`` (seconds, increasing) gives each frame its own presentation time, for variable
    frame rate videos; by default frame ``i`` is shown at ``i / fps``. ``size`` (width, height) is
    used only when ``frames`` is empty (a valid video with zero frames).
    """
    path = Path(path)
    frames = iter(frames)
    first = next(frames, None)
    height, width = first.shape[:2] if first is not None else size[::-1]
    codec = codec or _codec_for(path.suffix.lower())
    rate = Fraction(fps).limit_denominator(1001)
    time_base = Fraction(1, 1000) if timestamps is not None else 1 / rate
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.width, stream.height = width, height
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}
        elif codec == "libvpx-vp9":
            stream.options = {"crf": "10", "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
        else:
            stream.bit_rate = 8_000_000
        container.start_encoding()
        for i, image in enumerate(itertools.chain([first] if first is not None else [], frames)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.time_base = time_base
            frame.pts = round(timestamps[i] / time_base) if timestamps is not None else i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def index_frame(index: int, width: int = 128, height: int = 64, color=(0, 0, 0)) -> np.ndarray:
    """A (height, width, 3) uint8 frame, ``color`` background, ``index`` as white bit cells on the top row."""
    if not 0 <= index < 2**BITS or width < BITS * CELL or height < CELL:
        raise ValueError("index or size out of range")
    image = np.empty((height, width, 3), np.uint8)
    image[:] = color
    image[:CELL, : BITS * CELL] = 0
    for bit in range(BITS):
        if index >> bit & 1:
            image[:CELL, bit * CELL : (bit + 1) * CELL] = 255
    return image


def read_index(image: np.ndarray) -> int:
    """The index drawn by ``index_frame``, read from the mean brightness of the inner part of each cell."""
    cells = image[2 : CELL - 2, : BITS * CELL].reshape(CELL - 4, BITS, CELL, 3)[:, :, 2:-2]
    bits = cells.mean(axis=(0, 2, 3)) > 128
    return int(sum(1 << b for b in range(BITS) if bits[b]))


def load_tool(name: str):
    """``tools/NAME.py`` as a module (registered in ``sys.modules``: its dataclasses look their module up)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_tiny_video_setup(root: Path) -> Path:
    """``root/clip.mp4`` (a 1 s synthetic 160x96 clip at 10 fps, seed 3) and ``root/tiny_video.pt`` (the tiny video
    model, detector + tracker, seeded random weights in the official layout); returns the checkpoint's path."""
    import torch

    from sam3video.data.synthetic import WorldConfig
    from sam3video.data.clips import generate_clip
    from sam3video.model.build_video import build_video_model, load_video_config

    clip = generate_clip(3, WorldConfig(width=160, height=96, duration_s=1.0, fps=10, radius_px=(8.0, 20.0)))
    write_video(root / "clip.mp4", (clip.image(t) for t in range(clip.num_frames)), fps=10)
    torch.manual_seed(5)
    video = load_video_config("tiny")
    config = {**video.detector.to_dict(), "tracker": video.tracker.to_dict()}
    torch.save({"model": build_video_model("tiny").state_dict(), "config": config}, root / "tiny_video.pt")
    return root / "tiny_video.pt"


def small_config() -> dict:
    """tiny.toml with d_model 128 and mem_dim 64, what transformers' SAM 3 can also build: it fixes the memory
    attention's key width at 64, and a memory projection exists only when mem_dim differs from d_model (as in the
    released model)."""
    config = tomllib.loads((resources.files("sam3video") / "configs" / "tiny.toml").read_text())
    config["d_model"] = 128
    config["tracker"]["mem_dim"] = 64
    return config
