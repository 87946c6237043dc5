"""``detections.npz``: every frame's candidate detections of a run, what its tracker was given.

``sam3video retrack`` tracks them again (another tracker, other tracker thresholds) without the model.
A numpy ``.npz`` (zip of ``.npy`` arrays, deflate-compressed, no pickles: read it with
``np.load(path, allow_pickle=False)``), format ``"sam3video-detections"``, version 1:

==================  ================  =========================================================
array               shape, dtype      meaning
==================  ================  =========================================================
``format``          () str            ``"sam3video-detections"``
``version``         () int64          1
``height, width``   () int64          frame size in pixels (of every mask)
``fps``             () float64        the run's frame rate (its tracker's)
``num_frames``      () int64          T, frames of the run (frames without candidates included)
``class_names``     (P,) str          the prompts; ``class_id`` indexes them
``run``             () str            JSON: the run's input, model, prompts, exemplars, thresholds,
                                      detection / exemplar config, sampling (``summary.json``'s)
``frames``          (T,) int32        0-based frame indices, increasing
``windows``         (T,) int32        each frame's window (the run's segments)
``timestamps``      (T,) float64      each frame's time in seconds
``frame``           (N,) int32        per candidate: its frame index (0-based), rows sorted by frame
``xyxy``            (N, 4) float32    box in pixels (x1, y1 exclusive)
``confidence``      (N,) float32      score in [0, 1]
``class_id``        (N,) int32        prompt index
``embedding``       (N, D) float32    appearance (``data["embedding"]``); D = 0: none was given
``mask_offsets``    (N + 1,) int64    candidate i's mask is ``mask_rle[offsets[i]:offsets[i + 1]]``
``mask_rle``        (M,) uint8        COCO compressed RLE ``counts`` (pycocotools, column-major,
                                      ``height`` x ``width``), concatenated
``learn_*``         (K, ...)          on exemplar frames: the text-only candidates that
                                      ``ExemplarMemory.learn`` was given (``learn_frame``,
                                      ``learn_xyxy``, ``learn_confidence``, ``learn_class_id``,
                                      ``learn_embedding``; no masks: ``learn`` reads none)
``box_*``           (B, ...)          and each exemplar box's own embedding: ``box_frame`` (B,)
                                      int32, ``box`` (B, 4) float64 (the exemplar's box, pixels),
                                      ``box_embedding`` (B, D) float32
==================  ================  =========================================================

Candidates are stored exactly (float32 as computed; masks bit for bit), so re-tracking with the same
settings gives the same files. ``data["query"]`` (decoder queries; nothing downstream reads them) is
not stored. A run writes one segment per window in ``OUT/.partial`` (each a valid file of its window's
frames); the final file is assembled from them array by array, a window at a time (memory stays flat
in the length of the run). ``read_saved_detections`` checks everything (masks included, in numpy,
without pycocotools' C decoder) and raises ``InputError`` naming the file for anything wrong.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..detections import Detections
from ..errors import InputError
from .atomic import atomic_open
from .mots import encode_rle
from .tables import MAX_MASK_PIXELS

FORMAT = "sam3video-detections"
VERSION = 1
META = ("format", "version", "height", "width", "fps", "class_names", "run")  # equal in every segment
ROWS = {  # array -> (dtype, dimensions after the first); concatenated over segments
    "frames": ("int32", ()), "windows": ("int32", ()), "timestamps": ("float64", ()),
    "frame": ("int32", ()), "xyxy": ("float32", (4,)), "confidence": ("float32", ()), "class_id": ("int32", ()),
    "embedding": ("float32", None), "mask_offsets": ("int64", ()), "mask_rle": ("uint8", ()),
    "learn_frame": ("int32", ()), "learn_xyxy": ("float32", (4,)), "learn_confidence": ("float32", ()),
    "learn_class_id": ("int32", ()), "learn_embedding": ("float32", None),
    "box_frame": ("int32", ()), "box": ("float64", (4,)), "box_embedding": ("float32", None),
}
MAX_VALUE_CHARS = 7  # an RLE value of a mask of at most MAX_MASK_PIXELS (2**28) needs 6 characters
MAX_FRAME_MASK_PIXELS = 2**32  # the masks of one frame, decoded (a bound for damaged files; 4 GiB of bools)


@dataclass(frozen=True)
class StoreMeta:
    """What a detections file says about its run; ``run`` the JSON facts (see the module docstring)."""

    height: int
    width: int
    fps: float
    class_names: tuple[str, ...]
    run: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SavedFrame:
    """One frame as stored: 0-based ``index``, ``timestamp`` (s), ``window``, the ``candidates``
    (with masks and ``data["embedding"]``) and, on exemplar frames, ``learned``: (the text-only
    candidates, {exemplar box: (D,) embedding}) as ``ExemplarMemory.learn`` takes them."""

    index: int
    timestamp: float
    window: int
    candidates: Detections
    learned: tuple[Detections, dict] | None = None


class DetectionsWriter:
    """One window's segment: ``write(saved_frame)`` per frame, in order; on a clean exit of the
    ``with`` block the file is written atomically, on an exception nothing is."""

    def __init__(self, path: "str | Path", meta: StoreMeta):
        self.path, self.meta = Path(path), meta
        self._frames: list[tuple[int, int, float]] = []
        self._rows: list[dict] = []
        self._learned: list[dict] = []
        self._boxes: list[dict] = []

    def __enter__(self) -> "DetectionsWriter":
        return self

    def write(self, saved: SavedFrame) -> None:
        candidates = saved.candidates
        if candidates.mask is None:
            raise ValueError("detections.npz stores candidates with masks (candidates.mask is None)")
        if self._frames and saved.index <= self._frames[-1][0]:
            raise ValueError(f"frame indices must increase: {saved.index} after {self._frames[-1][0]}")
        self._frames.append((saved.index, saved.window, saved.timestamp))
        rles = [counts.encode("ascii") for counts in encode_rle(candidates.mask)]
        self._rows.append({"frame": np.full(len(candidates), saved.index), **_columns(candidates),
                           "mask_lengths": np.array([len(r) for r in rles], np.int64),
                           "mask_rle": np.frombuffer(b"".join(rles), np.uint8)})
        if saved.learned is not None:
            text_only, box_embeddings = saved.learned
            self._learned.append({"learn_frame": np.full(len(text_only), saved.index),
                                  **{f"learn_{k}": v for k, v in _columns(text_only).items()}})
            self._boxes.append({"box_frame": np.full(len(box_embeddings), saved.index),
                                "box": np.array(list(box_embeddings), np.float64).reshape(-1, 4),
                                "box_embedding": _stack([box_embeddings[b] for b in box_embeddings])})

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything written so far, as the arrays of a detections file."""
        meta = self.meta
        indices, windows, timestamps = zip(*self._frames) if self._frames else ((), (), ())
        rows = _concatenated(self._rows, ("frame", "xyxy", "confidence", "class_id", "embedding",
                                          "mask_lengths", "mask_rle"))
        arrays = {
            "format": np.array(FORMAT), "version": np.array(VERSION, np.int64),
            "height": np.array(meta.height, np.int64), "width": np.array(meta.width, np.int64),
            "fps": np.array(meta.fps, np.float64), "class_names": np.array(meta.class_names, dtype=str).reshape(-1),
            "run": np.array(json.dumps(meta.run, default=str)), "num_frames": np.array(len(indices), np.int64),
            "frames": np.array(indices), "windows": np.array(windows), "timestamps": np.array(timestamps),
            **{k: v for k, v in rows.items() if k != "mask_lengths"},
            "mask_offsets": np.concatenate([[0], np.cumsum(rows["mask_lengths"])]),
            **_concatenated(self._learned, ("learn_frame", "learn_xyxy", "learn_confidence", "learn_class_id",
                                            "learn_embedding")),
            **_concatenated(self._boxes, ("box_frame", "box", "box_embedding")),
        }
        return {k: _typed(k, v) for k, v in arrays.items()}

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            with atomic_open(self.path, "wb") as f:
                np.savez_compressed(f, **self.arrays())
        return False


def _columns(detections: Detections) -> dict[str, np.ndarray]:
    embedding = detections.data.get("embedding")
    return {"xyxy": detections.xyxy, "confidence": detections.confidence, "class_id": detections.class_id,
            "embedding": np.zeros((len(detections), 0), np.float32) if embedding is None else embedding}


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)


def _concatenated(parts: list[dict], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Per key, the parts' arrays concatenated (embeddings: every part of the same width)."""
    out = {}
    for key in keys:
        dtype, tail = ROWS.get(key, ("int64", ()))
        values = [p[key] for p in parts if len(p[key])]
        if tail is None:  # (n, D): D from the parts; none: D = 0
            widths = {v.shape[1] for v in values}
            if len(widths) > 1:
                raise ValueError(f"{key}: embeddings of different widths {sorted(widths)}")
            tail = (widths.pop(),) if widths else (0,)
        out[key] = np.concatenate(values).astype(dtype) if values else np.zeros((0, *tail), dtype)
    return out


def _typed(key: str, value: np.ndarray) -> np.ndarray:
    return value.astype(ROWS[key][0]) if key in ROWS else value


# ---- assembling the final file from the window segments ---------------------------------------------

def concatenate_segments(segments: Sequence[Path], out: Path) -> None:
    """Write into ``out`` (a temp path) the detections file of ``segments`` (windows, in order),
    streaming: one segment's array in memory at a time."""
    if len(segments) == 1:
        shutil.copyfile(segments[0], out)
        return
    sources = [np.load(s, allow_pickle=False) for s in segments]
    try:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for key in META:
                values = [s[key] for s in sources]
                if any(not np.array_equal(v, values[0]) for v in values[1:]):
                    raise ValueError(f"detections segments differ in {key}")
                with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, values[0], allow_pickle=False)
            with zf.open("num_frames.npy", "w", force_zip64=True) as member:
                total = sum(int(s["num_frames"]) for s in sources)
                np.lib.format.write_array(member, np.array(total, np.int64), allow_pickle=False)
            for key in ROWS:
                _write_concatenated(zf, key, sources)
    finally:
        for source in sources:
            source.close()


def _write_concatenated(zf: zipfile.ZipFile, key: str, sources: list) -> None:
    """Member ``key.npy`` of ``zf``: the segments' arrays one after the other (``mask_offsets``
    shifted to index the concatenated ``mask_rle``), written a segment at a time."""
    shapes = [_member_shape(s, key) for s in sources]
    rows = sum(shape[0] for shape in shapes) - (len(shapes) - 1 if key == "mask_offsets" else 0)
    tails = {shape[1:] for shape in shapes if shape[0]} or {shapes[0][1:]}
    if len(tails) > 1:
        raise ValueError(f"detections segments differ in the shape of {key}: {sorted(tails)}")
    dtype = np.dtype(ROWS[key][0])
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, *tails.pop())}
    with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_2_0(member, header)
        base = 0
        for i, source in enumerate(sources):
            array = source[key].astype(dtype, copy=False)
            if key == "mask_offsets":
                array, base = (array if i == 0 else array[1:]) + base, base + int(array[-1])
            member.write(np.ascontiguousarray(array).tobytes())


def _member_shape(npz, key: str) -> tuple[int, ...]:
    """The shape of array ``key`` of an open ``.npz``, from its header (the data is not read)."""
    with npz.zip.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read(f)
    return tuple(shape)


# ---- reading -------------------------------------------------------------------------------------

class SavedFrames:
    """The frames of a detections file, in order; masks are decoded frame by frame while iterating."""

    def __init__(self, arrays: dict[str, np.ndarray], runs: np.ndarray, run_bounds: np.ndarray,
                 meta: StoreMeta):
        self._a, self._runs, self._run_bounds, self.meta = arrays, runs, run_bounds, meta
        a = arrays
        self._rows = np.searchsorted(a["frame"], a["frames"], side="left"), \
            np.searchsorted(a["frame"], a["frames"], side="right")
        self._learn = np.searchsorted(a["learn_frame"], a["frames"], side="left"), \
            np.searchsorted(a["learn_frame"], a["frames"], side="right")
        self._box = np.searchsorted(a["box_frame"], a["frames"], side="left"), \
            np.searchsorted(a["box_frame"], a["frames"], side="right")

    def __len__(self) -> int:
        return len(self._a["frames"])

    @property
    def indices(self) -> frozenset[int]:
        """The 0-based indices of the stored frames."""
        return frozenset(self._a["frames"].tolist())

    @property
    def learned_frames(self) -> frozenset[int]:
        """The frames with exemplar data (``SavedFrame.learned``)."""
        return frozenset(self._a["box_frame"].tolist())

    def __iter__(self) -> Iterator[SavedFrame]:
        for t in range(len(self)):
            yield self.frame(t)

    def frame(self, t: int) -> SavedFrame:
        """The ``t``-th stored frame (not frame index ``t``), its masks decoded."""
        a = self._a
        rows = slice(int(self._rows[0][t]), int(self._rows[1][t]))
        candidates = _detections(a["xyxy"][rows], a["confidence"][rows], a["class_id"][rows], a["embedding"][rows],
                                 self._masks(rows))
        learned = None
        boxes = slice(int(self._box[0][t]), int(self._box[1][t]))
        if boxes.stop > boxes.start:
            learn = slice(int(self._learn[0][t]), int(self._learn[1][t]))
            text_only = _detections(a["learn_xyxy"][learn], a["learn_confidence"][learn],
                                    a["learn_class_id"][learn], a["learn_embedding"][learn], None)
            learned = text_only, {tuple(float(v) for v in box): embedding
                                  for box, embedding in zip(a["box"][boxes], a["box_embedding"][boxes])}
        return SavedFrame(int(a["frames"][t]), float(a["timestamps"][t]), int(a["windows"][t]), candidates,
                          learned)

    def _masks(self, rows: slice) -> np.ndarray:
        """(n, H, W) bool masks of candidate rows ``rows``, from their validated run lengths."""
        height, width = self.meta.height, self.meta.width
        runs = slice(int(self._run_bounds[rows.start]), int(self._run_bounds[rows.stop]))
        lengths = self._runs[runs]
        parity = (np.arange(runs.start, runs.stop) - np.repeat(self._run_bounds[rows.start:rows.stop],
                                                                np.diff(self._run_bounds[rows.start:rows.stop + 1]))) % 2
        flat = np.repeat(parity.astype(bool), lengths)
        return np.ascontiguousarray(flat.reshape(rows.stop - rows.start, width, height).transpose(0, 2, 1))


def _detections(xyxy, confidence, class_id, embedding, mask) -> Detections:
    data = {"embedding": embedding} if embedding.shape[1] else {}
    return Detections(xyxy=xyxy, confidence=confidence, class_id=class_id.astype(np.int64), mask=mask, data=data)


def read_saved_detections(path: "str | Path") -> tuple[StoreMeta, SavedFrames]:
    """``(meta, frames)`` of a detections file; ``frames`` yields a ``SavedFrame`` per frame (empty
    frames included) with candidates equal to what the tracker was given. ``InputError`` naming the
    file (one line) for a file that is missing, unreadable, damaged, of another format or version, or
    inconsistent."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise InputError(f"{path}: one numpy array, not a sam3video detections file (.npz)")
        if not magic.startswith(b"PK"):
            raise InputError(f"{path}: not a sam3video detections file (not a zip archive: .npz)")
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            head = {k: npz[k] for k in ("format", "version") if k in names}
            _check_format(path, head)
            missing = sorted((set(META) | {"num_frames"} | set(ROWS)) - names)
            if missing:
                raise InputError(f"{path}: not a complete detections file (no {', '.join(missing)})")
            arrays = {k: npz[k] for k in (*META, "num_frames", *ROWS)}
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to read means a damaged file (zip, zlib, numpy)
        reason = " ".join(str(e).split())[:120] or type(e).__name__
        raise InputError(f"{path}: not a readable sam3video detections file ({reason})") from None
    meta = _check_arrays(path, arrays)
    runs, run_bounds = _mask_runs(path, arrays, meta)
    return meta, SavedFrames(arrays, runs, run_bounds, meta)


def _check_format(path: Path, head: dict) -> None:
    fmt = head.get("format")
    if fmt is None or fmt.dtype.kind != "U" or fmt.shape != () or str(fmt) != FORMAT:
        raise InputError(f"{path}: not a sam3video detections file (no format {FORMAT!r})")
    version = head.get("version")
    if version is None or version.dtype.kind not in "iu" or version.shape != ():
        raise InputError(f"{path}: detections file without a version number")
    if int(version) != VERSION:
        raise InputError(f"{path}: detections format version {int(version)}; this sam3video reads version "
                         f"{VERSION} (track the video again)")


def _check_arrays(path: Path, a: dict[str, np.ndarray]) -> StoreMeta:
    """The meta of checked arrays ``a`` (dtypes, shapes, and how they fit together)."""
    def fail(problem: str) -> InputError:
        return InputError(f"{path}: damaged detections file: {problem}")

    kinds = {"height": "iu", "width": "iu", "num_frames": "iu", "fps": "f", "class_names": "U", "run": "U"}
    for key, kind in kinds.items():
        if a[key].dtype.kind not in kind or a[key].ndim != (1 if key == "class_names" else 0):
            raise fail(f"{key} is a {a[key].dtype} array of shape {a[key].shape}")
    for key, (dtype, tail) in ROWS.items():
        value = a[key]
        if value.dtype != np.dtype(dtype) or value.ndim != 1 + (1 if tail is None else len(tail)) or (
                tail is not None and value.shape[1:] != tail):
            raise fail(f"{key} is a {value.dtype} array of shape {value.shape}")
    height, width, frames = int(a["height"]), int(a["width"]), a["frames"]
    if not (0 < height and 0 < width and height * width <= MAX_MASK_PIXELS):
        raise fail(f"frame size {width}x{height}")
    if not np.isfinite(float(a["fps"])) or float(a["fps"]) <= 0:
        raise fail(f"fps {float(a['fps'])}")
    n, k, b = len(a["frame"]), len(a["learn_frame"]), len(a["box_frame"])  # candidates, learnt, boxes
    checks = [
        (len(frames) == int(a["num_frames"]) == len(a["windows"]) == len(a["timestamps"]),
         "num_frames, frames, windows and timestamps differ in length"),
        (np.all(np.diff(frames) > 0) and (len(frames) == 0 or frames[0] >= 0), "frames do not increase"),
        (np.all(np.diff(a["windows"]) >= 0) and np.all(a["windows"] >= 0), "windows do not increase"),
        (all(len(a[key]) == n for key in ("xyxy", "confidence", "class_id", "embedding"))
         and len(a["mask_offsets"]) == n + 1, "candidate arrays differ in length"),
        (all(len(a[key]) == k for key in ("learn_xyxy", "learn_confidence", "learn_class_id", "learn_embedding"))
         and len(a["box"]) == len(a["box_embedding"]) == b, "exemplar arrays differ in length"),
        (all(np.all(np.diff(a[key]) >= 0) and np.isin(a[key], frames).all()
             for key in ("frame", "learn_frame", "box_frame")), "rows not sorted by stored frames"),
        (np.isin(np.unique(a["learn_frame"]), a["box_frame"]).all(), "exemplar candidates without exemplar boxes"),
        (np.unique(a["frame"], return_counts=True)[1].max(initial=0) * height * width <= MAX_FRAME_MASK_PIXELS,
         f"more masks on one frame than {MAX_FRAME_MASK_PIXELS} pixels"),
        (all(np.all((a[key] >= 0) & (a[key] < len(a["class_names"]))) for key in ("class_id", "learn_class_id")),
         "class ids outside the prompts"),
        (all(np.isfinite(a[key]).all() for key in ("timestamps", "xyxy", "confidence", "embedding", "learn_xyxy",
                                                     "learn_confidence", "learn_embedding", "box", "box_embedding")),
         "values that are not finite numbers"),
    ]
    for ok, problem in checks:
        if not ok:
            raise fail(problem)
    try:
        run = json.loads(str(a["run"]))
    except ValueError:
        raise fail("run is not JSON") from None
    if not isinstance(run, dict):
        raise fail("run is not a JSON object")
    return StoreMeta(height, width, float(a["fps"]), tuple(str(c) for c in a["class_names"]), run)


def _mask_runs(path: Path, a: dict[str, np.ndarray], meta: StoreMeta) -> tuple[np.ndarray, np.ndarray]:
    """(run lengths of every mask, concatenated; (N + 1,) where each mask's runs start), decoded from
    the compressed RLE strings as pycocotools' ``rleFrString`` does, all at once in numpy. Each mask's
    runs must cover exactly ``height x width`` pixels (so decoding them cannot overrun)."""
    def fail(problem: str) -> InputError:
        return InputError(f"{path}: damaged detections file: {problem}")

    offsets, rle = a["mask_offsets"], a["mask_rle"]
    lengths = np.diff(offsets)
    if len(offsets) == 0 or offsets[0] != 0 or np.any(lengths <= 0) or offsets[-1] != len(rle):
        raise fail("mask offsets do not index the RLE bytes")
    if len(rle) == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    c = rle.astype(np.int64) - 48
    if np.any((c < 0) | (c >= 64)):
        raise fail("a mask RLE holds characters outside '0'..'o'")
    ends = np.flatnonzero((c & 0x20) == 0)  # the last character of each value
    if not np.isin(offsets[1:] - 1, ends).all():
        raise fail("a mask RLE ends inside a value")
    starts = np.concatenate([[0], ends[:-1] + 1])
    chars = ends - starts + 1
    if np.any(chars > MAX_VALUE_CHARS):
        raise fail("a mask RLE value is too long")
    shift = 5 * (np.arange(len(c)) - np.repeat(starts, chars))
    values = np.add.reduceat((c & 0x1F) << shift, starts)
    values = np.where(c[ends] & 0x10, values - (np.int64(1) << (5 * chars)), values)
    first = np.searchsorted(starts, offsets[:-1])  # each mask's first value
    mask_of = np.repeat(np.arange(len(first)), np.diff(np.concatenate([first, [len(values)]])))
    j = np.arange(len(values)) - first[mask_of]  # a value's place in its mask
    runs = values.copy()
    for parity, since in ((1, 1), (0, 2)):  # runs[j] = values[j] + runs[j - 2] from j = 3 on
        part = np.where((j >= since) & (j % 2 == parity), values, 0)
        total = np.cumsum(part)
        later = j >= since
        runs[later & (j % 2 == parity)] = (total - total[first[mask_of]])[later & (j % 2 == parity)]
    pixels = meta.height * meta.width
    if np.any(runs < 0) or np.any(runs > pixels):
        raise fail("a mask RLE has a negative or oversized run")
    if np.any(np.add.reduceat(runs, first) != pixels):
        raise fail(f"a mask RLE does not cover the {meta.width}x{meta.height} frame")
    return runs, np.concatenate([first, [len(values)]])
