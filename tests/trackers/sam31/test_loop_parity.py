"""The official SAM 3.1 loop, end to end against Meta's multiplex predictor (GitHub main @96914d2 on the CPU:
``add_prompt`` text on frame 0, then ``propagate_in_video``) on the tiny SAM 3.1 model with seeded weights and
lowered thresholds: the stored scenes of tests/data/sam31_parity/loop (tools/make_sam31_loop_fixture.py, commands in
that folder's README), checked by tools/check_sam31_loop_parity.py — every step's detections, tracker logits, raw
outputs, unconfirmed ids and bucket slots, then every response. Scenes: births on later frames backfilled into the
existing state; three states filled over three frames (40 objects, our cap); 32 objects in two buckets; a hot-start
removal of every object (and the official flash of unconfirmed objects before it); outputs shown (confirmation
off). The interactive scenes go on through ``VideoSession``: a click on a detected object (moved out of its shared
state), partial propagation, a new object by clicks, a removal, a fetch, a "both" propagation from a later click."""

import pytest
import torch

from tests.conftest import DATA
from tests.helpers import load_tool

FIXTURES = sorted((DATA / "sam31_parity" / "loop").glob("*.pt.xz"))



check = load_tool("check_sam31_loop_parity")


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name.split(".")[0] for p in FIXTURES])
def test_the_loop_matches_the_official_multiplex_predictor(fixture):
    report = check.check_fixture(fixture)
    assert report.ok, report.problems[:10]
    assert report.compared["steps"] >= 9 and report.compared["responses"] >= 8
    assert report.compared.get("tracker object-score logits", 0) > 0
    assert all(v < 1e-5 for k, v in report.max_diff.items() if "logits" in k or "prob" in k), report.max_diff
    if fixture.name.startswith("interactive"):
        assert report.compared["interactive requests"] == 9 and report.compared["interactive masks"] > 40


def test_the_check_catches_a_wrong_click_score(monkeypatch):
    """The interactive check can fail: a clicked object keeping its detection score (instead of the official 1.0)
    shows in the responses' probabilities, and the check says so."""
    from sam3video import session

    monkeypatch.setattr(session, "CLICK_SCORE", 0.5)
    report = check.check_fixture(DATA / "sam31_parity" / "loop" / "interactive_s1.pt.xz")
    assert not report.ok
    assert any("probabilities differ" in p for p in report.problems)



def test_the_check_catches_a_wrong_rule(monkeypatch):
    """The loop check can fail: SAM 3's rule for births (every birth frame opens its own state) instead of 3.1's
    backfill into the fullest state that fits changes the states and the tracker outputs, and the check says so."""
    from sam3video.trackers.sam31.loop import MultiplexTrackerState

    monkeypatch.setattr(MultiplexTrackerState, "available_slots", property(lambda self: 0))
    report = check.check_fixture(DATA / "sam31_parity" / "loop" / "births_s0.pt.xz")
    assert not report.ok
    assert any("states" in p for p in report.problems)


def test_memories_are_stored_in_bf16_by_default():
    """As officially on every device: the loop stores memory maps in bf16 (the CPU oracle keeps fp32, so the
    parity check runs ours in fp32)."""
    from sam3video.trackers.sam31.loop import Sam31Loop

    assert Sam31Loop.__dataclass_fields__["memory_dtype"].default == torch.bfloat16
