"""Property tests: every parser of user files and values returns normally or raises one of our errors
(``Sam3VideoError``) with a one-line message — never another exception type — and what it returns
holds the documented types. Each property runs at most 200 cases (``FAULT``; ``max_examples``).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as mask_utils

from sam3video.detections import Detections
from sam3video.export import read_mot, read_mots
from sam3video.export import tables as eval_io
from sam3video.model.build import Sam3Config, load_config
from sam3video.trackers.association.exemplars import Exemplar, load_exemplars, parse_exemplar
from tests.fault.common import FAULT, outcome

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning",  # pycocotools under numpy 2
    "ignore::RuntimeWarning", "ignore::numpy.exceptions.ComplexWarning",  # casts of odd arrays in Detections
)

SCRATCH = Path(tempfile.mkdtemp(prefix="sam3video-fault-"))  # one file per parser, rewritten per case
atexit.register(shutil.rmtree, SCRATCH, True)


def _file(name: str, content: "str | bytes") -> Path:
    path = SCRATCH / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return path


# ---- shared strategies ---------------------------------------------------------------------------

NUMBER_TEXT = st.one_of(
    st.integers(-5, 50).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "-0", "1_0", "0x10", "", " ", "1.5", "٣", "１"]),
    st.text(max_size=4),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=20,
)
DEEP = "[" * 5000 + "]" * 5000  # deeper than the recursion limit (1000)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- exemplars -----------------------------------------------------------------------------------

EXEMPLAR_TEXT = st.one_of(
    st.text(max_size=30),
    st.builds(lambda frame, box, label: f"{frame}:{','.join(box)}{label}", NUMBER_TEXT,
              st.lists(NUMBER_TEXT, min_size=0, max_size=6),
              st.sampled_from(["", ":neg", ":pos", ":NEG", ":positive", ":x", "::", ":neg:1", ":\n"])),
)


def _check_exemplar(exemplar) -> None:
    assert isinstance(exemplar, Exemplar)
    assert _is_int(exemplar.frame)
    assert isinstance(exemplar.box, tuple) and len(exemplar.box) == 4
    assert all(type(v) is float for v in exemplar.box)
    assert isinstance(exemplar.positive, bool)
    assert exemplar.prompt is None or isinstance(exemplar.prompt, str)


@FAULT
@given(EXEMPLAR_TEXT)
@example("1e400:0,0,1,1")
@example("0:1,2,3,4\n:neg")
@example("9" * 5000 + ":0,0,1,1")
def test_parse_exemplar(text):
    """``parse_exemplar`` on arbitrary text (200 cases + 3 explicit): an ``Exemplar`` of the documented
    types, or a one-line ``InputError``."""
    result = outcome(parse_exemplar, text)
    if result is not None:
        _check_exemplar(result)


EXEMPLAR_ITEM = st.fixed_dictionaries(
    {"frame": st.one_of(st.integers(-3, 100), st.floats(), JSON), "box": st.one_of(
        st.lists(st.one_of(st.integers(-5, 500), st.integers(-(2**1100), 2**1100), st.floats(), st.booleans()),
                 min_size=3, max_size=5),
        st.text(min_size=4, max_size=4), JSON)},
    optional={"label": st.one_of(st.sampled_from(["pos", "neg", "NEG", "x"]), JSON), "prompt": JSON},
)
EXEMPLARS_FILE = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=40),
    JSON.map(json.dumps),
    st.lists(st.one_of(EXEMPLAR_ITEM, JSON), max_size=4).map(json.dumps),
)


@FAULT
@given(EXEMPLARS_FILE)
@example(json.dumps([{"frame": float("inf"), "box": [0, 0, 1, 1]}]))
@example(json.dumps([{"frame": 0, "box": "1234"}]))
@example(json.dumps([{"frame": 0, "box": [0, 0, 1, 1], "prompt": ["a"]}]))
@example(json.dumps([{"frame": 10**400, "box": [0, 0, 1, 10**400]}]))
@example(DEEP)
def test_load_exemplars(content):
    """``load_exemplars`` on arbitrary file content (200 cases + 5 explicit: an infinite frame, a box
    given as a string, a prompt that is not text, 400-digit numbers, nesting deeper than the recursion
    limit): a list of ``Exemplar`` of the documented types, or a one-line ``InputError``."""
    result = outcome(load_exemplars, _file("exemplars.json", content))
    if result is not None:
        assert isinstance(result, list)
        for exemplar in result:
            _check_exemplar(exemplar)


def test_load_exemplars_on_a_folder():
    """A folder given as the exemplars file (1 case): one-line ``InputError``."""
    assert outcome(load_exemplars, SCRATCH) is None


# ---- MOT / MOTS readers --------------------------------------------------------------------------

MOT_LINE = st.one_of(
    st.text(max_size=40),
    st.builds(lambda fields, sep, tail: sep.join(fields) + tail, st.lists(NUMBER_TEXT, min_size=4, max_size=11),
              st.sampled_from([",", ", ", " ", "\t", " ,", ",,"]), st.sampled_from(["", ",", " ", "\r"])),
    st.builds(lambda f, i, x, y, w, h: f"{f},{i},{x},{y},{w},{h},1,-1,-1,-1",
              st.integers(-1, 2**64).map(str) | NUMBER_TEXT, st.integers(-1, 2**64).map(str) | NUMBER_TEXT,
              NUMBER_TEXT, NUMBER_TEXT, NUMBER_TEXT, NUMBER_TEXT),
)
MOT_FILE = st.one_of(st.lists(MOT_LINE, max_size=6).map("\n".join), st.text(max_size=80), st.binary(max_size=40))


def _check_table(table, kind: str, first_frame: int = 1) -> None:
    assert table.kind == kind
    n = len(table)
    for column in (table.frames, table.ids, table.lines, table.class_ids):
        assert column.shape == (n,) and column.dtype == np.int64
    assert np.all(table.frames >= first_frame) and np.all(table.ids >= 0)
    assert np.all(np.diff(table.frames) >= 0)
    if kind == "mot":
        assert table.boxes.shape == (n, 4) and np.all(np.isfinite(table.boxes))
        assert np.all(table.boxes[:, 2:] >= 0)


@FAULT
@given(MOT_FILE, st.booleans())
@example("1e300,1,0,0,1,1", False)
@example("1,99999999999999999999,0,0,1,1", False)
def test_read_mot(content, is_gt):
    """``export.tables.read_tracks(kind="mot")`` and ``export.read_mot`` on arbitrary file content (200 cases
    + 2 explicit: a frame and an id beyond int64): a table whose frames are >= 1 and ids >= 0 (the rules
    the reader checks), or a one-line ``InputError``."""
    path = _file("tracks.txt", content)
    table = outcome(eval_io.read_tracks, path, "mot", is_gt=is_gt)
    if table is not None:
        _check_table(table, "mot")
    frames = outcome(read_mot, path)
    if frames is not None:
        assert all(_is_int(k) and k >= 0 and isinstance(v, Detections) for k, v in frames.items())


@st.composite
def mots_line(draw) -> str:
    """A MOTS line: mostly well formed (a real RLE of a small random mask), with one part spoilt."""
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    mask = np.asfortranarray(draw(hnp.arrays(np.uint8, (h, w), elements=st.integers(0, 1))))
    counts = mask_utils.encode(mask)["counts"].decode("ascii")
    fields = [str(draw(st.integers(0, 4))), str(draw(st.integers(0, 3))), "1", str(h), str(w), counts]
    spoil = draw(st.sampled_from(["none", "field", "size", "rle", "drop", "line"]))
    if spoil == "field":
        fields[draw(st.integers(0, 5))] = draw(NUMBER_TEXT)
    elif spoil == "size":  # sizes that do not fit the RLE, far too big, or beyond int64
        fields[draw(st.sampled_from([3, 4]))] = str(draw(st.sampled_from([0, h + 1, 100_000, 2**31, 2**64])))
    elif spoil == "rle":
        alphabet = "".join(chr(c) for c in range(48, 112))
        fields[5] = draw(st.one_of(st.text(alphabet, min_size=1, max_size=8), st.just(counts[:-1] or "0"),
                                   st.just(counts + draw(st.sampled_from(list(alphabet))))))
    elif spoil == "drop":
        del fields[draw(st.integers(0, 5))]
    elif spoil == "line":
        return draw(st.text(max_size=30))
    return " ".join(fields)


MOTS_FILE = st.one_of(st.lists(mots_line(), max_size=5).map("\n".join), st.text(max_size=60),
                      st.binary(max_size=40))


@FAULT
@given(MOTS_FILE, st.booleans())
@example("1 1 1 100000 100000 " + "o" * 6 + "0", False)  # a short string for a 10^10-pixel mask
@example("1 1 1 2 2 4", False)
@example("99999999999999999999 1 1 2 2 4", False)
def test_read_mots(content, allow_overlap):
    """``export.tables.read_tracks(kind="mots")``, ``export.tables.read_mots`` and ``export.read_mots`` on arbitrary
    file content (200 cases + 3 explicit: a huge mask size, a valid 2x2 mask, a frame beyond int64):
    a table of masks that decode to the stated size, or a one-line ``InputError``."""
    path = _file("tracks.mots.txt", content)
    table = outcome(eval_io.read_tracks, path, "mots", allow_overlap=allow_overlap)
    if table is not None:
        _check_table(table, "mots")
        for rle in table.rles:
            assert mask_utils.decode(rle).shape == tuple(rle["size"]) == table.image_size
    frames = outcome(read_mots, path)
    if frames is not None:
        for index, dets in frames.items():
            assert _is_int(index) and index >= 0 and dets.mask.shape[1:] == table.image_size
            assert dets.mask.sum(0).max(initial=0) <= 1  # disjoint, as read_mots checks


def test_read_mots_example_is_parsed():
    """Guard for the property above (1 case): its valid example really parses (a 2x2 mask, all set)."""
    path = _file("tracks.mots.txt", "1 1 1 2 2 04")
    (dets,) = read_mots(path).values()
    assert dets.mask.shape == (1, 2, 2) and dets.mask.all()


# ---- config --------------------------------------------------------------------------------------

FIELDS = {f.name: f.default for f in dataclasses.fields(Sam3Config)}
CONFIG_KEY = st.one_of(st.sampled_from(sorted(FIELDS) + ["name", "seed", "parameters"]), st.text(max_size=8))
CONFIG_VALUE = st.one_of(
    st.integers(-3, 2048), st.integers(-(2**1100), 2**1100), st.floats(), st.booleans(), st.text(max_size=5),
    st.lists(st.one_of(st.integers(-2, 40), st.floats(), st.integers(2**1023, 2**1100)), max_size=4), JSON,
)
CONFIG_DICT = st.one_of(st.dictionaries(CONFIG_KEY, CONFIG_VALUE, max_size=6),
                        st.dictionaries(st.one_of(st.integers(), st.none(), st.booleans()), CONFIG_VALUE, max_size=3))


def _check_config(config) -> None:
    assert isinstance(config, Sam3Config)
    for name, default in FIELDS.items():
        value = getattr(config, name)
        if isinstance(default, tuple):
            assert isinstance(value, tuple) and all(type(v) is type(default[0]) for v in value), (name, value)
        else:
            assert type(value) is type(default), (name, value)
            if isinstance(value, float):
                assert math.isfinite(value), (name, value)


@FAULT
@given(CONFIG_DICT)
@example({"vit_mlp_ratio": 10**400})
@example({"neck_scales": [10**400]})
@example({"vit_dimm\nx": 1})
def test_load_config_dict(values):
    """``load_config`` on arbitrary dicts (200 cases + 3 explicit: ints too big for a float, a key with
    a newline): a ``Sam3Config`` whose every field has its default's type (floats finite), or a
    one-line ``ConfigError``."""
    config = outcome(load_config, values)
    if config is not None:
        _check_config(config)


TOML_LITERAL = st.one_of(
    st.sampled_from(["1", "0", "-1", "1.5", "1e400", "inf", "nan", "true", "'x'", '"a\\nb"', "[1, 2]", "[1.0, 2.5]",
                     "[[1]]", "[]", "{a = 1}", "1979-05-27", str(2**63 - 1), "9" * 400, "[" + "9" * 400 + "]"]),
    st.text(max_size=6),
)
TOML_LINE = st.builds(lambda key, value: f"{key} = {value}", CONFIG_KEY, TOML_LITERAL)
CONFIG_FILE = st.one_of(
    st.tuples(st.just(".toml"), st.one_of(st.lists(TOML_LINE, max_size=6).map("\n".join), st.text(max_size=60),
                                          st.binary(max_size=40))),
    st.tuples(st.just(".json"), st.one_of(CONFIG_DICT.map(lambda d: json.dumps(d, default=str)), JSON.map(json.dumps),
                                          st.text(max_size=60), st.binary(max_size=40))),
)


@FAULT
@given(CONFIG_FILE)
@example((".toml", "vit_mlp_ratio = " + "9" * 400))
@example((".json", '{"vit_mlp_ratio": 1' + "0" * 400 + "}"))
@example((".json", DEEP))
@example((".toml", "a = " + DEEP))
def test_load_config_file(case):
    """``load_config`` on arbitrary .toml and .json file content (200 cases + 4 explicit: a 400-digit
    number, nesting deeper than the recursion limit): a ``Sam3Config`` of the documented types, or a
    one-line ``ConfigError``."""
    suffix, content = case
    config = outcome(load_config, _file("config" + suffix, content))
    if config is not None:
        _check_config(config)


# ---- Detections ----------------------------------------------------------------------------------

DTYPES = st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(max_len=3), hnp.unicode_string_dtypes(max_len=3),
                   st.just(np.dtype(object)))


def _array(n: int, tail: tuple[int, ...]):
    """An array of a random dtype, shaped (n, *tail) or any small shape."""
    shape = st.one_of(st.just((n, *tail)), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    return st.one_of(
        DTYPES.flatmap(lambda dtype: hnp.arrays(dtype, shape)),
        hnp.arrays(np.float64, shape, elements=st.floats()),
        st.just([0.5] * n), st.none(), st.text(max_size=3), st.integers(),
    )


@st.composite
def detections_args(draw) -> dict:
    n = draw(st.integers(0, 3))
    h, w = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    args = {"xyxy": draw(_array(n, (4,))), "confidence": draw(_array(n, ())), "class_id": draw(_array(n, ()))}
    if draw(st.booleans()):
        args["mask"] = draw(_array(n, (h, w)))
    if draw(st.booleans()):
        args["tracker_id"] = draw(_array(n, ()))
    if draw(st.booleans()):
        args["data"] = draw(st.one_of(st.dictionaries(st.text(max_size=3), _array(n, (2,)), max_size=2),
                                      st.lists(st.integers(), max_size=2), st.none()))
    return args


@FAULT
@given(detections_args())
@example({"xyxy": np.zeros((2, 6)), "confidence": np.zeros(3), "class_id": np.zeros(3)})
@example({"xyxy": np.zeros((1, 4)), "confidence": [0.5], "class_id": [np.nan]})
@example({"xyxy": np.zeros((1, 4)), "confidence": [0.5], "class_id": [0], "data": {"e": 1.0}})
def test_detections_constructor(args):
    """``Detections(...)`` with arbitrary arrays, shapes and dtypes (200 cases + 3 explicit: (2, 6)
    boxes, a NaN class id, a scalar in ``data``): detections with the documented shapes and dtypes, or a
    one-line ``InputError``."""
    dets = outcome(Detections, **args)
    if dets is not None:
        n = len(dets)
        assert dets.xyxy.shape == (n, 4) and dets.xyxy.dtype == np.float32
        assert dets.confidence.shape == (n,) and dets.confidence.dtype == np.float32
        assert dets.class_id.shape == (n,) and dets.class_id.dtype == np.int64
        assert dets.mask is None or (dets.mask.ndim == 3 and len(dets.mask) == n and dets.mask.dtype == bool)
        assert dets.tracker_id is None or (dets.tracker_id.shape == (n,) and dets.tracker_id.dtype == np.int64)
        assert isinstance(dets.data, dict) and all(len(v) == n for v in dets.data.values())


def test_detections_error_is_still_a_value_error():
    """Callers that catch ``ValueError`` keep working (1 case): the constructor's error is both."""
    with pytest.raises(ValueError, match="confidence has 2 entries"):
        Detections(np.zeros((1, 4)), [0.1, 0.2], [0])

