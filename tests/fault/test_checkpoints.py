"""Damaged checkpoints: NaN/Inf values, wrong dtypes, values that are not tensors, odd keys, truncated
files. ``load_model`` raises ``CheckpointError`` naming the first bad tensor; ``sam3video track`` exits 2
with one line. Every case loads through the real path (``torch.save`` -> ``load_model``).
"""

from __future__ import annotations

import atexit
import math
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sam3video.cli import main
from sam3video.errors import CheckpointError
from sam3video.model.checkpoint import load_model
from tests.conftest import PARITY
from tests.fault.common import FAULT, assert_fails_well, outcome

CONFIG = PARITY / "config.json"
SCRATCH = Path(tempfile.mkdtemp(prefix="sam3video-fault-ckpt-"))
atexit.register(shutil.rmtree, SCRATCH, True)


@pytest.fixture(scope="module")
def state(parity_state_dict) -> dict[str, torch.Tensor]:
    """The tiny model's state dict (fp16, 4 complex ``freqs_cis``), in checkpoint order. Do not mutate."""
    return dict(parity_state_dict)


def _save(obj, name: str = "bad.pt") -> Path:
    path = SCRATCH / name
    torch.save(obj, path)
    return path


def _keys(state, *indices) -> list[str]:
    return [list(state)[i] for i in indices]


def _load_error(path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(path, config=kwargs.pop("config", CONFIG), device="cpu", **kwargs)
    assert_fails_well(info.value)
    return str(info.value)


@pytest.mark.parametrize("bad, dtype", [(math.nan, torch.float16), (math.inf, torch.float32),
                                        (-math.inf, torch.bfloat16)])
def test_non_finite_values_name_the_first_tensor(state, bad, dtype):
    """NaN, +Inf, -Inf (3 cases, one dtype each): three bad values in tensor #100 and one in #200 ->
    the message names #100 (the first in checkpoint order), its count, and the other tensor."""
    first, second = _keys(state, 100, 200)
    damaged = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    damaged[first] = damaged[first].clone()
    damaged[first][:3] = bad
    damaged[second] = damaged[second].clone()
    damaged[second][5] = bad
    message = _load_error(_save({"model": damaged}))
    n = damaged[first].numel()
    assert f"tensor {first} has 3 of {n} values NaN or Inf (and 1 more tensors)" in message


def test_non_finite_complex_tensor_is_named(state):
    """NaN in a complex (rotary) tensor (1 case) is named too."""
    (key,) = _keys(state, 4)
    assert state[key].is_complex()
    damaged = {**state, key: state[key].clone()}
    damaged[key][0, 0] = complex(math.nan, 0)
    assert f"tensor {key} has 1 of" in _load_error(_save({"model": damaged}))


@pytest.mark.parametrize("index, make, shown", [
    (5, lambda t: torch.ones(t.shape, dtype=torch.int64), "int64 vs model float32"),
    (10, lambda t: torch.ones(t.shape, dtype=torch.bool), "bool vs model float32"),
    (4, lambda t: torch.ones(t.shape, dtype=torch.float32), "float32 vs model complex64"),
])
def test_wrong_dtype_kind_is_named(state, index, make, shown):
    """Integer, bool weights where floats belong, floats where complex belongs (3 cases): named as a
    dtype mismatch (a precision change, fp16 for fp32, is fine: the tiny checkpoint is fp16)."""
    (key,) = _keys(state, index)
    message = _load_error(_save({"model": {**state, key: make(state[key])}}))
    assert f"1 dtype mismatch ({key} {shown})" in message


@pytest.mark.parametrize("value", [[1.0, 2.0], "weights", None, {"a": torch.zeros(1)}])
def test_value_that_is_not_a_tensor_is_named(state, value):
    """A list, text, None, a dict where a tensor belongs (4 cases): named, not reported as missing."""
    (key,) = _keys(state, 200)
    message = _load_error(_save({"model": {**state, key: value}}))
    assert f"1 not a tensor ({key} is a {type(value).__name__})" in message
    assert "missing" not in message


def test_key_that_is_not_text(state):
    """An integer key among the tensor names (1 case): ``CheckpointError``, not ``AttributeError``."""
    message = _load_error(_save({"model": {**state, 7: torch.zeros(1)}}))
    assert "key 7 is a int" in message


def test_metadata_beside_a_top_level_state_dict_still_loads(state):
    """Guard (1 case): non-tensor metadata that the model does not expect ("step", "note") is ignored."""
    model = load_model(_save({**state, "step": 3, "note": "x"}), config=CONFIG, device="cpu")
    assert torch.isfinite(next(model.parameters())).all()


def test_truncated_checkpoint(state):
    """The checkpoint cut at 10 offsets from byte 0 to one byte short (10 cases): each a one-line
    ``CheckpointError`` saying it is truncated."""
    data = _save({"model": state}, "full.pt").read_bytes()
    n = len(data)
    for offset in (0, 1, 64, 1000, n // 10, n // 4, n // 2, 3 * n // 4, n - 100, n - 1):
        path = SCRATCH / "cut.pt"
        path.write_bytes(data[:offset])
        assert "truncated or not a PyTorch checkpoint" in _load_error(path), offset


# ---- property: random damage to the real checkpoint ----------------------------------------------

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int64, torch.bool,
          torch.complex64]
DAMAGE = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 301)),
    st.tuples(st.just("dtype"), st.integers(0, 301), st.sampled_from(DTYPES)),
    st.tuples(st.just("shape"), st.integers(0, 301), st.lists(st.integers(0, 3), max_size=3)),
    st.tuples(st.just("value"), st.integers(0, 301), st.sampled_from([math.nan, math.inf, -math.inf, 1e30, 1e300])),
    st.tuples(st.just("object"), st.integers(0, 301), st.sampled_from([None, 1, 1.5, "x", [1], {"k": 1}, b"\0"])),
    st.tuples(st.just("extra"), st.sampled_from(["x", "detector.x", "tracker.x", "backbone.extra.weight", ""]),
              st.sampled_from([torch.zeros(2), 3, "s"])),
)


def _damaged(state: dict, damage: list[tuple]) -> dict:
    """A copy of ``state`` with each damage applied in turn (a later one may repair an earlier one)."""
    state, keys = dict(state), list(state)
    for kind, *args in damage:
        if kind == "extra":
            state[args[0]] = args[1]
            continue
        key, old = keys[args[0]], state.get(keys[args[0]])
        if kind == "delete":
            state.pop(key, None)
        elif kind == "dtype" and isinstance(old, torch.Tensor):
            state[key] = old.to(args[1])
        elif kind == "shape":
            state[key] = torch.zeros(args[1])
        elif kind == "value" and isinstance(old, torch.Tensor) and old.numel() and (
                old.is_floating_point() or old.is_complex()):
            state[key] = old.clone()
            state[key].view(-1)[0] = args[1]
        elif kind == "object":
            state[key] = args[1]
    return state


def _kind(tensor: torch.Tensor) -> str:
    return "complex" if tensor.is_complex() else "float" if tensor.is_floating_point() else "other"


def _fits(damaged: dict, pristine: dict) -> bool:
    """The oracle: whether the model can load ``damaged`` — every tensor it expects there, of its shape
    and dtype kind, finite once in the model's precision (fp32); no other tensor but ``tracker.*``
    (left out); no ``detector.*`` key (that would make it the released layout, without the rest)."""
    if any(k.startswith("detector.") for k in damaged):
        return False
    if any(isinstance(v, torch.Tensor) and k not in pristine and not k.startswith("tracker.")
           for k, v in damaged.items()):
        return False
    for key, reference in pristine.items():
        value = damaged.get(key)
        if not isinstance(value, torch.Tensor) or value.shape != reference.shape or _kind(value) != _kind(reference):
            return False
        if not bool(torch.isfinite(value.float() if value.is_floating_point() else value).all()):
            return False
    return True


@settings(FAULT, max_examples=15)
@given(st.lists(DAMAGE, min_size=1, max_size=3), st.booleans())
@example([("value", 200, 1e300), ("dtype", 200, torch.float64)], True)  # fp64 1e300: Inf once in fp32
@example([("dtype", 100, torch.int64), ("shape", 100, [64])], False)  # repaired: loads
def test_random_damage_fails_well(state, damage, nested):
    """1-3 random damages (delete, retype, reshape, NaN/Inf/huge value, non-tensor, extra key) to the
    real checkpoint, at the top level or under "model" (15 cases + 2 explicit; each builds the model,
    ~0.5 s): ``load_model`` loads exactly when the oracle ``_fits`` says it can (then every weight is
    finite), and otherwise raises a one-line ``CheckpointError``."""
    damaged = _damaged(state, damage)
    fits = _fits(damaged, state)
    path = _save({"model": damaged} if nested else damaged, "random.pt")
    model = outcome(load_model, path, config=CONFIG, device="cpu")
    if model is None:
        assert not fits, f"a checkpoint that fits was refused: {damage}"
    else:
        assert fits, f"a damaged checkpoint loaded: {damage}"
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ---- the CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["nan", "int64", "truncated"])
def test_track_with_a_bad_checkpoint_exits_2_with_one_line(fault_dir, state, damage, capsys):
    """``sam3video track clip.mp4 --checkpoint bad.pt`` (3 cases: NaN weights, int64 weights, cut in
    half): exit 2, one stderr line ``sam3video track: error: ...`` naming the problem, no output files."""
    key = list(state)[100]
    if damage == "truncated":
        data = (fault_dir / "tiny.pt").read_bytes()
        path = SCRATCH / "cli.pt"
        path.write_bytes(data[: len(data) // 2])
    else:
        value = state[key].clone()
        value[0] = math.nan
        path = _save({"model": {**state, key: value if damage == "nan" else value.to(torch.int64)}}, "cli.pt")
    out = fault_dir / f"bad_checkpoint_{damage}"
    code = main(["track", str(fault_dir / "clip.mp4"), "--prompt", "circle", "--checkpoint", str(path),
                 "--config", str(CONFIG), "--out", str(out), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("sam3video track: error: "), err
    expected = {"nan": key, "int64": "dtype mismatch", "truncated": "truncated"}[damage]
    assert expected in err
    assert not (out.exists() and list(out.iterdir())), f"files left in {out}: {list(out.iterdir())}"
