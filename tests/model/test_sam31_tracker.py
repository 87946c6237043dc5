"""SAM 3.1's multiplex tracker: buckets, loading sam3.1_multiplex.pt strictly, and module-by-module parity with
Meta's code (GitHub main @96914d2, fixtures of tools/make_sam31_module_fixture.py, checked by
tools/check_sam31_modules.py)."""

import pytest
import torch

from sam3video.errors import CheckpointError
from sam3video.model.build_video import build_video_model, load_video_config
from sam3video.model.checkpoint import check_state_dict
from sam3video.model.multiplex_utils import PADDING, REMOVED, MultiplexState, new_multiplex_state
from sam3video.model.sam31_video import Sam31VideoModel
from sam3video.model.video_checkpoint import load_video_model
from tests.conftest import DATA
from tests.helpers import load_tool

FIXTURES = sorted((DATA / "sam31_parity").glob("modules_s*.pt.xz"))
CONFIG = DATA / "sam31_parity" / "config.toml"
SAM31_TSV = DATA / "sam31_multiplex_state_dict.tsv"



check = load_tool("check_sam31_modules")


# -- buckets ----------------------------------------------------------------------------------------------------
def test_new_objects_fill_free_slots_then_open_buckets():
    state = new_multiplex_state(3, 4, torch.device("cpu"), object_ids=[7, 8, 9])
    assert state.assignments == [[0, 1, 2, PADDING]] and state.available_slots == 1
    state.add_objects([3, 4, 5], object_ids=[10, 11, 12], allow_new_buckets=True)
    assert state.assignments == [[0, 1, 2, 3], [4, 5, PADDING, PADDING]]
    assert state.object_ids == [7, 8, 9, 10, 11, 12]
    state.add_objects([6], object_ids=[13], allow_new_buckets=True, prefer_new_buckets=True)
    assert state.assignments[-1] == [6, PADDING, PADDING, PADDING] and state.num_buckets == 3
    with pytest.raises(ValueError, match="without new buckets"):
        new_multiplex_state(4, 4, torch.device("cpu")).add_objects([4])


def test_removed_slots_stay_removed_and_empty_buckets_are_dropped():
    state = new_multiplex_state(6, 4, torch.device("cpu"), object_ids=[10, 11, 12, 13, 14, 15])
    assert state.remove_objects([1]) == [0, 1]
    assert state.assignments == [[0, REMOVED, 1, 2], [3, 4, PADDING, PADDING]]
    assert state.object_ids == [10, 12, 13, 14, 15] and state.available_slots == 2  # a removed slot is not free
    assert state.remove_objects([3, 4]) == [0]  # bucket 1 had only those: dropped; the rest renumbered
    assert state.assignments == [[0, REMOVED, 1, 2]] and state.object_ids == [10, 12, 13]
    assert state.remove_objects([0, 1, 2]) == [] and state.assignments is None


def test_mux_and_demux_are_inverse_with_zeros_in_empty_slots():
    state = MultiplexState([[0, REMOVED, 2, PADDING], [1, PADDING, PADDING, PADDING]], torch.device("cpu"),
                           torch.float32, allowed_bucket_capacity=4)
    x = torch.arange(3 * 5, dtype=torch.float32).view(3, 5) + 1
    muxed = state.mux(x)
    assert muxed.shape == (2, 4, 5)
    assert torch.equal(muxed[0, 0], x[0]) and torch.equal(muxed[0, 2], x[2]) and torch.equal(muxed[1, 0], x[1])
    assert muxed[0, 1].abs().sum() == 0 and muxed[0, 3].abs().sum() == 0
    assert torch.equal(state.demux(muxed), x)
    assert state.get_valid_object_mask().tolist() == [[True, False, True, False], [True, False, False, False]]


# -- loading ----------------------------------------------------------------------------------------------------
def test_full_size_sam31_video_model_has_the_checkpoint_layout_exactly():
    """Our SAM 3.1 video model on the meta device: the 1623 names, shapes and dtypes of sam3.1_multiplex.pt (Meta's
    builder), every one used by a strict load."""
    rows = [tuple(line.split("\t")) for line in SAM31_TSV.read_text().splitlines()]
    with torch.device("meta"):
        model = build_video_model("sam3.1")
    assert isinstance(model, Sam31VideoModel) and model.config.version == "sam3.1"
    got = {k: ("x".join(map(str, v.shape)), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert got == {name: (shape, dtype) for name, shape, dtype in rows}
    state = {name: torch.empty([int(s) for s in shape.split("x")], dtype=getattr(torch, dtype), device="meta")
             for name, shape, dtype in rows}
    check_state_dict(model, state)
    assert round(sum(v.numel() for v in state.values()) / 1e6, 1) == 874.4  # counted as the reference does


@pytest.fixture(scope="module")
def seeded_tiny31():
    model = check.load_model(seed=0)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def test_a_tiny_sam31_checkpoint_loads_every_tensor(tmp_path, seeded_tiny31):
    """A checkpoint in the official layout ("model": detector.* + tracker.model.*, fp16 like a release, with our
    config): load_video_model gives a Sam31VideoModel holding exactly its values; the image loader takes the
    detector from the same file."""
    from sam3video import load_model

    _, state = seeded_tiny31
    video = load_video_config(CONFIG)
    config = {**video.detector.to_dict(), "multiplex_tracker": video.multiplex.to_dict()}
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"model": half, "config": config}, tmp_path / "sam3.1_multiplex.pt")
    model = load_video_model(tmp_path / "sam3.1_multiplex.pt", device="cpu")
    assert isinstance(model, Sam31VideoModel) and model.config == video
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert [k for k in state if not torch.equal(loaded[k], state[k])] == []
    assert model.detector.load_report.version == "sam3.1" and model.detector.load_report.num_loaded == len(state)
    image = load_model(tmp_path / "sam3.1_multiplex.pt", device="cpu")
    assert image.load_report.left_out == {"detector.backbone.vision_backbone.interactive_convs.": 18,
                                          "detector.backbone.vision_backbone.propagation_convs.": 18,
                                          "tracker.model.": sum(k.startswith("tracker.model.") for k in state)}


def test_a_sam31_checkpoint_missing_a_tracker_tensor_or_read_as_sam3_is_one_clear_error(tmp_path, seeded_tiny31):
    _, state = seeded_tiny31
    video = load_video_config(CONFIG)
    config = {**video.detector.to_dict(), "multiplex_tracker": video.multiplex.to_dict()}
    partial = {k: v for k, v in state.items() if k != "tracker.model.output_valid_embed"}
    torch.save({"model": partial, "config": config}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"1 missing \(tracker\.model\.output_valid_embed\)"):
        load_video_model(tmp_path / "partial.pt", device="cpu")
    torch.save({"model": state}, tmp_path / "sam3.1_multiplex.pt")
    with pytest.raises(CheckpointError, match="SAM 3.1 checkpoint but the config builds a SAM 3 video model") as e:
        load_video_model(tmp_path / "sam3.1_multiplex.pt", config="tiny", device="cpu")
    assert "\n" not in str(e.value)


# -- parity with Meta's code ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name.split(".")[0] for p in FIXTURES])
def test_modules_match_the_official_code(fixture, seeded_tiny31):
    """Tri-neck features, memory encoder, memory attention, multiplex mask decoder, interactive heads, and two
    track_step sequences (births into free slots, a click on a tracked frame, a reconditioned object; 18 objects
    in two buckets) agree with the official outputs within 1e-5 + 1e-4 |x|."""
    model = seeded_tiny31[0] if "_s0." in fixture.name else None
    report = check.check_fixture(fixture, model)
    bad = [row for row in report.rows if not row[2]]
    assert report.ok, bad[:10]
    assert len(report.rows) > 100


def test_the_check_fails_when_a_module_differs(seeded_tiny31):
    """The parity check can fail: one slot embedding moved by 1e-3 is caught."""
    model = check.load_model(seed=0)
    with torch.no_grad():
        model.tracker.model.output_valid_embed[2] += 1e-3
    report = check.check_fixture(FIXTURES[0], model)
    assert not report.ok
    assert any("mask decoder" in what and not ok for what, _, ok in report.rows)
