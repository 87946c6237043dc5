"""Property tests of what ``sam3video retrack`` reads: a damaged ``detections.npz`` (bytes cut or
flipped), one whose arrays were replaced by others (a valid zip with wrong dtypes, shapes, offsets,
malformed or oversized mask RLE), and MOTChallenge detection files. Each returns frames with the
documented shapes (masks decoded to the frame size, never past it) or raises one of our one-line
errors. 200 cases per property (``FAULT``), plus explicit ones.
"""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sam3video.detections import Detections
from sam3video.export.detections_store import DetectionsWriter, SavedFrame, StoreMeta, read_saved_detections
from sam3video.export.mot import read_detection_file
from tests.fault.common import FAULT, outcome

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # casts of NaN while making bad arrays

SCRATCH = Path(tempfile.mkdtemp(prefix="sam3video-fault-store-"))
atexit.register(shutil.rmtree, SCRATCH, True)
HEIGHT, WIDTH = 7, 9


def _valid_store() -> bytes:
    """A small valid detections file: 3 frames (one empty), masks with several runs, exemplar data."""
    rng = np.random.default_rng(1)
    path = SCRATCH / "valid.npz"
    with DetectionsWriter(path, StoreMeta(HEIGHT, WIDTH, 10.0, ("a", "b"), {"k": 1})) as writer:
        for index, count in enumerate([2, 0, 3]):
            mask = rng.random((count, HEIGHT, WIDTH)) < 0.5
            candidates = Detections(rng.random((count, 4)) * 9, rng.random(count), rng.integers(0, 2, count), mask=mask,
                                    data={"embedding": rng.standard_normal((count, 4)).astype(np.float32)})
            learned = None
            if index == 2:
                learned = (Detections(rng.random((2, 4)), rng.random(2), [0, 1],
                                      data={"embedding": np.ones((2, 4), np.float32)}),
                           {(1.0, 1.0, 5.0, 5.0): np.ones(4, np.float32)})
            writer.write(SavedFrame(index, index / 10, 0, candidates, learned))
    return path.read_bytes()


VALID = _valid_store()
with np.load(io.BytesIO(VALID)) as _z:
    ARRAYS = {k: _z[k] for k in _z.files}


def _read_all(path: Path) -> list[SavedFrame]:
    """Every frame of ``path``, masks decoded, checked for the documented shapes."""
    meta, frames = read_saved_detections(path)
    read = list(frames)
    for frame in read:
        n = len(frame.candidates)
        assert frame.candidates.mask.shape == (n, meta.height, meta.width)
        assert frame.candidates.mask.dtype == bool and frame.candidates.class_id.dtype == np.int64
    return read


@FAULT
@given(st.one_of(
    st.builds(lambda cut: ("cut", cut), st.integers(0, len(VALID) - 1)),
    st.builds(lambda at, value: ("flip", at, value), st.lists(st.integers(0, len(VALID) - 1), min_size=1, max_size=4),
              st.integers(1, 255)),
))
@example(("cut", 0))
@example(("cut", len(VALID) - 1))
def test_damaged_file_fails_well(damage):
    """The valid file cut at any offset, or 1-4 of its bytes xor-ed (200 cases + 2 explicit: empty, one
    byte short): frames with the documented shapes, or a one-line ``InputError`` naming the file."""
    data = bytearray(VALID)
    if damage[0] == "cut":
        data = data[: damage[1]]
    else:
        for at in damage[1]:
            data[at] ^= damage[2]
    path = SCRATCH / "damaged.npz"
    path.write_bytes(bytes(data))
    outcome(_read_all, path)


ALPHABET = bytes(range(48, 112))
RLE = st.one_of(st.binary(max_size=40), st.lists(st.sampled_from(list(ALPHABET)), max_size=40).map(bytes),
                st.lists(st.sampled_from(list(ALPHABET[:32])), min_size=5, max_size=30).map(bytes))  # no "more" bits


@st.composite
def replaced_arrays(draw) -> dict[str, np.ndarray]:
    """The valid file's arrays with one or two replaced: random RLE bytes and offsets, a wrong dtype
    or shape, out-of-range values."""
    arrays = dict(ARRAYS)
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(arrays)))
        kind = draw(st.sampled_from(["rle", "offsets", "dtype", "shape", "values"]))
        if kind == "rle":  # random RLE strings for the 5 masks (offsets that fit), or random bytes
            rle = draw(RLE)
            arrays["mask_rle"] = np.frombuffer(rle, np.uint8)
            if len(rle) >= 5 and draw(st.booleans()):
                cuts = draw(st.lists(st.integers(1, len(rle) - 1), min_size=4, max_size=4, unique=True))
                arrays["mask_offsets"] = np.array([0, *sorted(cuts), len(rle)], np.int64)
        elif kind == "offsets":
            arrays["mask_offsets"] = np.asarray(draw(st.lists(st.integers(-5, 60), max_size=7)), np.int64)
        elif kind == "dtype":
            target = draw(st.sampled_from([np.float64, np.int8, np.uint16, str]))
            arrays[key] = np.zeros(arrays[key].shape, target) if arrays[key].dtype.kind == "U" else \
                arrays[key].astype(target)
        elif kind == "shape":
            arrays[key] = arrays[key].reshape(-1)[:draw(st.integers(0, 3))]
        elif arrays[key].dtype.kind in "iuf" and arrays[key].size:
            top = np.iinfo(arrays[key].dtype).max if arrays[key].dtype.kind in "iu" else 1e30  # dtype may be replaced
            fills = {"f": [-1.0, np.nan, 1e30], "i": [-1, top], "u": [0, top]}[arrays[key].dtype.kind]
            arrays[key] = np.full_like(arrays[key], draw(st.sampled_from(fills)))
    return arrays


@FAULT
@given(replaced_arrays())
@example({**ARRAYS, "mask_rle": np.frombuffer(b"o" * 6 + b"0", np.uint8), "mask_offsets": np.array([0, 7, 7, 7, 7, 7, 7])})
@example({**ARRAYS, "height": np.array(2**20), "width": np.array(2**20)})
def test_replaced_arrays_fail_well(arrays):
    """A valid zip whose arrays do not fit together (200 cases + 2 explicit: a run of 2**30 pixels for
    a 7x9 mask, a frame of 2**40 pixels): frames decoded to the frame size, or a one-line ``InputError``."""
    path = SCRATCH / "replaced.npz"
    np.savez(path, **arrays)
    outcome(_read_all, path)


def test_the_valid_file_is_read():
    """Guard for the properties above (1 case): the undamaged file reads, 3 frames, 5 masks."""
    path = SCRATCH / "valid-again.npz"
    path.write_bytes(VALID)
    frames = _read_all(path)
    assert [len(f.candidates) for f in frames] == [2, 0, 3] and frames[2].learned is not None


DET_LINE = st.one_of(
    st.text(max_size=40),
    st.builds(lambda f, x, y, w, h, s: f"{f},-1,{x},{y},{w},{h},{s}", st.integers(-2, 10**12).map(str),
              st.floats(allow_nan=True).map(repr), st.floats(-10, 500).map(repr), st.floats(-1, 50).map(repr),
              st.floats(-1, 50).map(repr), st.floats(allow_nan=True, allow_infinity=True).map(repr)),
)


@FAULT
@given(st.one_of(st.lists(DET_LINE, max_size=6).map("\n".join), st.binary(max_size=40)))
def test_detection_file_fails_well(content):
    """``read_detection_file`` (what ``retrack --detections`` reads) on arbitrary content (200 cases):
    per-frame boxes with frames in [0, bound), or a one-line ``InputError``."""
    path = SCRATCH / "det.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    frames = outcome(read_detection_file, path, max_frames=1000)
    if frames is not None:
        assert all(0 <= k < 1000 and d.xyxy.shape == (len(d), 4) for k, d in frames.items())
