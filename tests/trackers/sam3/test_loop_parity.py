"""The official SAM 3 loop, end to end against the official code (sam3 0.1.4 ``Sam3VideoInference``: ``add_prompt``
on frame 0, then ``propagate_in_video``; in the cases made with ``--interactive``, then clicks, a removal and
partial propagation both ways, replayed through ``VideoSession``) on the tiny video model with random weights and
lowered thresholds, CPU:
the stored cases of tests/data/video_loop_parity (made by tools/make_video_loop_fixture.py, see its README), checked
by tools/check_sam3_loop_parity.py exactly as by hand: every step's detections, tracker masks, object-score logits,
area-shrinkage decisions and planning decisions, then every yielded frame. Knife-edge decisions (marked by the maker:
the official outcome moves under a 1e-4 shift) take the official outcome; everything else must be equal.
tools/loop_parity_sweep.py runs the same check over 24 cases."""


import numpy as np
import pytest
import torch

from sam3video.trackers.sam3.loop import HotstartBuffer, LoopFrame, TrackerBucket
from sam3video.trackers.sam3 import loop as sam3_loop
from tests.conftest import DATA
from tests.helpers import load_tool

FOLDER = DATA / "video_loop_parity"
CASES = sorted(p.name.split(".")[0] for p in FOLDER.glob("*.pt.xz"))


check = load_tool("check_sam3_loop_parity")


@pytest.fixture(scope="module", params=CASES)
def case(request):
    """(name, fixture, model, frames): one stored official run, our model with the same weights, our detector's
    outputs on its frames."""
    torch.set_grad_enabled(False)
    fixture = check.read_fixture(FOLDER / f"{request.param}.pt.xz")
    model = check.load_model("tiny", None, fixture)
    frames = check.run_detector(model, fixture)
    yield request.param, fixture, model, frames
    torch.set_grad_enabled(True)


def test_the_stored_cases_cover_scenes_and_memory_storage():
    fixtures = {name: check.read_fixture(FOLDER / f"{name}.pt.xz") for name in CASES}
    kinds = {(fx["scene"], fx["memory_dtype"]) for fx in fixtures.values()}
    assert {("three", "fp32"), ("dense", "fp32"), ("three", "bf16")} <= kinds
    dense = [fx for fx in fixtures.values() if fx["scene"] == "dense"]
    assert max(len(s["plan"]["new_det_obj_ids"]) for fx in dense for s in fx["steps"]) >= 3  # several births a frame
    assert max(len(b) for fx in dense for s in fx["steps"] for b in s["buckets_after"]) >= 3
    # one case where the official code's own decisions sit on a knife edge
    assert any(any(s.get("mem", {}).get("shrink_knife_edge", [])) for fx in fixtures.values() for s in fx["steps"])


def test_every_tracker_setting_is_the_fixtures(case):
    _, fixture, model, _ = case
    assert check.tracker_settings_problems(model, fixture) == []


def test_loop_matches_the_official_run(case):
    """Every step and every yielded frame (the whole comparison of tools/check_sam3_loop_parity.py)."""
    name, fixture, model, frames = case
    report = check.check_fixture(model, fixture, frames, name)
    assert report.ok, "\n".join(report.problems[:8])
    steps = fixture["num_frames"] + 1
    assert report.compared["steps"] == steps and report.compared["frames"] == fixture["num_frames"]
    assert report.compared["decisions"] == 11 * steps
    assert report.compared["tracker_masks"] >= 8 and report.compared["output_masks"] >= 5
    # the refereed decisions are exactly the ones the maker marked, and most are still compared
    marked = sum(sum(s.get("mem", {}).get("shrink_knife_edge", [])) for s in fixture["steps"])
    assert sum(len(rows) for rows in report.forced.values()) == marked
    assert report.compared["shrink_decisions"] >= 10
    if fixture.get("interactive"):  # then VideoSession through the official interactive requests
        assert report.compared["interactive_requests"] == 13 and report.compared["interactive_masks"] >= 40
        # the last three: the text again on the middle frame, the full loop forward then in reverse from there
        last = fixture["interactive"][-3:]
        assert [s["request"].get("text") for s in last] == [fixture["prompt"], None, None]
        assert [s["request"].get("reverse") for s in last[1:]] == [False, True]
        assert [int(o["frame_idx"]) for o in last[2]["outputs"]] == list(range(fixture["num_frames"] // 2 - 1, -1, -1))


def test_the_interactive_check_catches_a_wrong_click_score(monkeypatch):
    """The interactive comparison can fail: a clicked object keeping its detection score instead of the official
    1.0 shows in the responses' probabilities."""
    from sam3video import session

    fixture = check.read_fixture(FOLDER / "three_fp32_n0_c0.pt.xz")
    assert fixture["interactive"]
    model = check.load_model("tiny", None, fixture)
    monkeypatch.setattr(session, "CLICK_SCORE", 0.5)
    problems, compared = [], {}
    check.check_interactive(model, fixture, check.loop_config(fixture), problems, compared)
    assert any("probabilities" in p for p in problems)


def test_a_swap_of_two_objects_inside_a_bucket_is_caught(case, monkeypatch):
    """The failure the issue feared: two objects of one bucket exchange their tracked outputs (masks and object
    scores) from frame 1 on. The comparison must see it (object-score logits, masks or decisions) on every stored
    case (in each, two objects of one bucket differ by more than 1 in object score on some frame)."""
    name, fixture, model, frames = case
    propagate = TrackerBucket.propagate
    swapped = []

    def swap_first_two(bucket, frame_idx, features, *args, **kwargs):
        masks, scores = propagate(bucket, frame_idx, features, *args, **kwargs)
        if len(bucket) >= 2 and frame_idx >= 1:
            order = [1, 0, *range(2, len(bucket))]
            masks, scores = masks[order], scores[order]
            swapped.append(frame_idx)
        return masks, scores

    monkeypatch.setattr(TrackerBucket, "propagate", swap_first_two)
    report = check.check_fixture(model, fixture, frames, name)
    assert swapped
    assert not report.ok
    assert any("object-score" in p or "tracker mask" in p or "decision" in p for p in report.problems)


def test_without_the_referee_only_knife_edges_can_differ(case):
    """Our own decisions everywhere: the run may part from the official one, but only at a step where the maker
    marked a knife edge (or later)."""
    name, fixture, model, frames = case
    report = check.check_fixture(model, fixture, frames, name, use_referee=False)
    marked = [k for k, s in enumerate(fixture["steps"]) if any(s.get("mem", {}).get("shrink_knife_edge", []))]
    diverged = [r["step"] for r in report.steps if r["problems"]]
    if diverged:
        assert marked and min(diverged) >= min(marked), (diverged, marked)
    else:
        assert report.ok


def test_referee_restores_the_loop(case):
    """The referee patches the module's area-shrinkage rule and ``Sam3Loop.step`` only while active."""
    _, fixture, _, _ = case
    rule, step = sam3_loop.suppress_object_pw_area_shrinkage, sam3_loop.Sam3Loop.step
    with check.Referee(fixture["steps"]).active():
        assert sam3_loop.suppress_object_pw_area_shrinkage is not rule
    assert sam3_loop.suppress_object_pw_area_shrinkage is rule and sam3_loop.Sam3Loop.step is step


def test_hotstart_buffer_matches_the_official_yield_schedule():
    fixture = check.read_fixture(FOLDER / f"{CASES[0]}.pt.xz")
    buffer = HotstartBuffer(fixture["config"]["hotstart_delay"], (4, 4))
    after = []
    for k in range(1, len(fixture["steps"])):  # step 0 (add_prompt) is not streamed
        got = buffer.push(LoopFrame(k - 1, {}, {}, {}, frozenset(), frozenset()))
        after += [k] * len(got)
    after += [len(fixture["steps"]) - 1] * len(buffer.flush())
    assert after == fixture["yield_after_step"]


def test_knife_edge_pixels_and_boxes_rule():
    edge = np.zeros((6, 8), bool)
    edge[2, 5] = True
    assert check.box_explained(np.array([1.0, 1, 4, 4]), np.array([1.0, 1, 4, 4]), edge)
    assert check.box_explained(np.array([1.0, 1, 6, 4]), np.array([1.0, 1, 4, 4]), edge)  # x1 reaches column 5
    assert not check.box_explained(np.array([1.0, 1, 7, 4]), np.array([1.0, 1, 4, 4]), edge)  # column 6: no edge
    assert not check.box_explained(np.array([0.0, 1, 4, 4]), np.array([1.0, 1, 4, 4]), edge)
    logits = torch.tensor([[2.0, -2.0, 5e-4, -5e-4]])
    assert check.unexplained_pixels(torch.tensor([[1.0, -1.0, -1.0, 1.0]]), logits, 1e-3) == 0
    assert check.unexplained_pixels(torch.tensor([[-1.0, 1.0, 1.0, -1.0]]), logits, 1e-3) == 2
