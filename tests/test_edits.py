"""Edits from the command line: the JSON file (``export.edits``), ``track --edits`` and ``refine`` on the tiny video
model (seeded random weights, official layout): the files equal those of ``track`` without edits, the edits equal
the same requests made to a ``VideoSession`` directly, and bad edits are one line, exit 2, nothing written."""

import json

import numpy as np
import pytest

from sam3video.cli import main
from sam3video.errors import InputError
from sam3video.export import read_mots
from sam3video.export.edits import ClickEdit, RemoveEdit, check_edits, load_edits, parse_edits
from sam3video.export.mots import make_disjoint
from tests.helpers import write_tiny_video_setup

THRESHOLDS = ["--score-threshold", "0.2", "--new-track-threshold", "0.25"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A 1 s synthetic clip and the tiny video model (detector + tracker) saved in the official layout."""
    root = tmp_path_factory.mktemp("edits")
    write_tiny_video_setup(root)
    return root


def tiny_session(workdir):
    """A ``VideoSession`` of the tiny model on the clip, with the run's thresholds, tracked forward on "square"."""
    from sam3video.model.video_checkpoint import load_video_model
    from sam3video.session import VideoSession
    from sam3video.sources.loader import open_video
    from sam3video.thresholds import Sam3LoopConfig

    model = load_video_model(workdir / "tiny_video.pt", device="cpu")
    images = np.stack([f.image for f in open_video(str(workdir / "clip.mp4"))])
    session = VideoSession(model, images, config=Sam3LoopConfig(score_threshold_detection=0.2, new_det_thresh=0.25),
                           source_fps=10, frames_fp16=True)
    session.add_prompt(0, text="square")
    list(session.propagate("forward", start_frame=0))
    return session


def run(*args) -> int:
    return main([str(a) for a in args])


def track(workdir, out, *extra) -> int:
    return run("track", workdir / "clip.mp4", "--prompt", "square", "--checkpoint", workdir / "tiny_video.pt",
               "--out", workdir / out, "--quiet", *THRESHOLDS, *extra)


def write_edits(workdir, name, edits) -> str:
    path = workdir / name
    path.write_text(json.dumps(edits))
    return path


# -- the file ----------------------------------------------------------------------------------------------------
def test_an_edits_file_reads_into_typed_actions(tmp_path):
    path = tmp_path / "e.json"
    path.write_text(json.dumps([
        {"frame": 12, "obj_id": 3, "points": [[310, 200], [330.5, 260]], "labels": [1, 0]},
        {"frame": 40, "obj_id": 7, "box": [100, 80, 180, 160]},
        {"frame": 2, "obj_id": 9, "points": [[1, 2]], "labels": [1], "prompt": "dog", "keep_old_points": True},
        {"remove": 5}]))
    edits = load_edits(path)
    assert edits == [ClickEdit(12, 3, ((310.0, 200.0), (330.5, 260.0)), (1, 0)),
                     ClickEdit(40, 7, box=(100.0, 80.0, 180.0, 160.0)),
                     ClickEdit(2, 9, ((1.0, 2.0),), (1,), prompt="dog", keep_old_points=True),
                     RemoveEdit(5)]
    assert [e.describe() for e in edits][3] == {"remove": 5}


@pytest.mark.parametrize("entries, message", [
    ({"frame": 1}, "expected a JSON list"),
    ([{"frame": 1, "obj_id": 2, "points": [[1, 2]], "labels": [1]}, 5], "entry 1: expected an object"),
    ([{"obj_id": 2, "points": [[1, 2]], "labels": [1]}], "entry 0: missing 'frame'"),
    ([{"frame": 1, "obj_id": 2}], "entry 0: give \"points\" with \"labels\", or a \"box\""),
    ([{"frame": -1, "obj_id": 2, "box": [0, 0, 5, 5]}], "entry 0: frame must be a whole number >= 0"),
    ([{"frame": 1, "obj_id": 0, "box": [0, 0, 5, 5]}], "entry 0: obj_id must be a track id"),
    ([{"frame": 1, "obj_id": 2, "points": [[1, 2]], "labels": [2]}], "entry 0: labels must be a list of 1"),
    ([{"frame": 1, "obj_id": 2, "points": [[1, 2], [3, 4]], "labels": [1]}], "one per point (2)"),
    ([{"frame": 1, "obj_id": 2, "points": [[1, "a"]], "labels": [1]}], "each point must be a list of 2 numbers"),
    ([{"frame": 1, "obj_id": 2, "box": [5, 0, 1, 5]}], "x1 < x2"),
    ([{"frame": 1, "obj_id": 2, "box": [0, 0, 5, 5], "keep_old_points": True}], "drop keep_old_points"),
    ([{"frame": 1, "obj_id": 2, "box": [0, 0, 5, 5], "colour": "red"}], "unknown key 'colour'"),
    ([{"remove": 3, "frame": 2}], "a remove action has only \"remove\""),
    ([{"remove": True}], "remove must be a track id"),
])
def test_a_malformed_edits_file_names_the_entry(entries, message):
    with pytest.raises(InputError, match="^fixes.json: ") as error:
        parse_edits(entries, "fixes.json")
    assert message in str(error.value)


def test_edits_outside_the_clip_are_refused_before_tracking():
    click = ClickEdit(3, 1, ((10.0, 10.0),), (1,))
    check_edits([click, RemoveEdit(4)], 10, 160, 96, ["dog"], "e.json")
    for edit, message in [(ClickEdit(10, 1, ((1.0, 1.0),), (1,)), "entry 0: frame 10 is past the end"),
                          (ClickEdit(0, 1, ((161.0, 1.0),), (1,)), "point (161, 1) is outside the 160x96 frame"),
                          (ClickEdit(0, 1, box=(0.0, 0.0, 50.0, 97.0)), "outside the 160x96 frame"),
                          (ClickEdit(0, 1, ((1.0, 1.0),), (1,), prompt="cat"), "prompt 'cat' is not one of")]:
        with pytest.raises(InputError, match="^e.json: ") as error:
            check_edits([edit], 10, 160, 96, ["dog"], "e.json")
        assert message in str(error.value)


# -- track --edits and refine --------------------------------------------------------------------------------------
def test_no_edits_give_the_files_of_track(workdir, capsys):
    """The sessions' full pass (one per prompt) is the official loop of ``track``: the same ids and masks."""
    assert track(workdir, "plain", "--no-render") == 0
    assert track(workdir, "none", "--no-render", "--edits", write_edits(workdir, "none.json", [])) == 0
    capsys.readouterr()
    for name in ("tracks.txt", "tracks.mots.txt"):
        assert (workdir / "none" / name).read_bytes() == (workdir / "plain" / name).read_bytes()
    summary = json.loads((workdir / "none" / "summary.json").read_text())
    assert summary["edits"] == [] and summary["recomputed"]["edits"]["frames_tracked_again"] == 0
    # the full pass's candidates are those of track: the same detections.npz arrays (scores within a float32 step:
    # track's detector runs 4 frames at a time, a session's one), the same files from retrack
    plain = np.load(workdir / "plain" / "detections.npz", allow_pickle=False)
    sessions = np.load(workdir / "none" / "detections.npz", allow_pickle=False)
    assert set(plain.files) == set(sessions.files)
    assert np.allclose(plain["confidence"], sessions["confidence"], rtol=0, atol=1e-6)
    for name in plain.files:
        if name not in ("run", "confidence"):  # run: the run's facts (the sessions' summary lists edits)
            assert np.array_equal(plain[name], sessions[name]), name
    assert len(plain["confidence"]) > 10
    for run_dir in ("plain", "none"):
        assert run("retrack", workdir / run_dir, "--tracker", "bytetrack", "--out", workdir / f"retracked_{run_dir}",
                   "--no-render", "--quiet") == 0
    for name in ("tracks.txt", "tracks.mots.txt"):
        assert (workdir / "retracked_none" / name).read_bytes() == (workdir / "retracked_plain" / name).read_bytes()


def test_edits_are_the_session_requests_and_refine_gives_the_same_files(workdir, capsys):
    """A click on track 1, a new track 9 by a box, a new track 4 by a click then removed: tracks.mots.txt equals a
    ``VideoSession`` given the same requests directly (one propagation both ways after each click); ``refine`` on
    the plain run writes the same files."""
    if not (workdir / "plain" / "tracks.txt").exists():
        assert track(workdir, "plain", "--no-render") == 0
    plain = read_mots(workdir / "plain" / "tracks.mots.txt")
    assert {int(i) for d in plain.values() for i in d.tracker_id} == {1}
    edits = [{"frame": 4, "obj_id": 1, "points": [[40, 30], [100, 60]], "labels": [1, 0]},
             {"frame": 6, "obj_id": 9, "box": [10, 10, 60, 50]},
             {"frame": 3, "obj_id": 4, "points": [[120, 70]], "labels": [1]},
             {"remove": 4}]
    path = write_edits(workdir, "fixes.json", edits)
    assert track(workdir, "edited", "--no-render", "--edits", path) == 0
    assert run("refine", workdir / "plain", "--edits", path, "--out", workdir / "refined", "--no-render",
               "--quiet") == 0
    capsys.readouterr()
    for name in ("tracks.txt", "tracks.mots.txt"):
        assert (workdir / "refined" / name).read_bytes() == (workdir / "edited" / name).read_bytes()
    summary = json.loads((workdir / "refined" / "summary.json").read_text())
    assert summary["refined_from"]["run"] == str(workdir / "plain")
    assert [e["tracked_again"] for e in summary["edits"]] == [10, 10, 10, 0]  # both ways from each frame

    session = tiny_session(workdir)
    first_shown = []  # run ids are given in the order objects are first shown
    for t in range(session.num_frames):
        first_shown += [int(i) for i in session.output(t).detections.tracker_id if int(i) not in first_shown]
    official = {run_id: obj_id for run_id, obj_id in enumerate(first_shown, start=1)}
    session.add_prompt(4, points=[[40, 30], [100, 60]], point_labels=[1, 0], obj_id=official[1])
    list(session.propagate("both", start_frame=4))
    official[9] = session.max_obj_id + 1
    session.add_prompt(6, box=[10, 10, 60, 50], obj_id=official[9])
    list(session.propagate("both", start_frame=6))
    official[4] = session.max_obj_id + 1
    session.add_prompt(3, points=[[120, 70]], point_labels=[1], obj_id=official[4])
    list(session.propagate("both", start_frame=3))
    session.remove_object(official.pop(4))
    to_run = {obj_id: run_id for run_id, obj_id in official.items()}
    edited = read_mots(workdir / "edited" / "tracks.mots.txt")
    for t in range(session.num_frames):
        expected = session.output(t).detections
        expected = expected[np.argsort([to_run[int(i)] for i in expected.tracker_id])]
        masks = make_disjoint(expected.mask, expected.confidence)  # as the MOTS writer does, by run id
        shown = [(to_run[int(i)], m) for i, m in zip(expected.tracker_id, masks) if m.any()]
        got = edited.get(t)
        assert [i for i, _ in shown] == (got.tracker_id.tolist() if got else [])
        for (_, mask), got_mask in zip(shown, got.mask if got else []):
            assert np.array_equal(got_mask, mask)
    assert {int(i) for d in edited.values() for i in d.tracker_id} == {1, 9}
    assert len(edited) == 10  # the clicked objects are shown on every frame they are found


def test_exemplar_boxes_in_sessions_are_those_of_track(workdir, capsys):
    """Exemplar boxes (a positive one on frame 0, a positive and a negative on frame 3) through the sessions
    (``--edits []``, then ``refine`` of that run) give the files of the official loop's ``track`` with them; the
    boxes change the tracks (an object the text alone does not start)."""
    boxes = ["--exemplar", "0:100,40,150,90", "--exemplar", "3:20,20,80,70", "--exemplar", "3:90,10,120,40:neg"]
    if not (workdir / "plain" / "tracks.txt").exists():
        assert track(workdir, "plain", "--no-render") == 0
    assert track(workdir, "boxes", "--no-render", *boxes) == 0
    assert track(workdir, "boxes_sessions", "--no-render", *boxes, "--edits", write_edits(workdir, "none.json", [])) == 0
    assert run("refine", workdir / "boxes_sessions", "--edits", workdir / "none.json", "--out",
               workdir / "boxes_refined", "--no-render", "--quiet") == 0
    capsys.readouterr()
    for name in ("tracks.txt", "tracks.mots.txt"):
        expected = (workdir / "boxes" / name).read_bytes()
        assert (workdir / "boxes_sessions" / name).read_bytes() == expected
        assert (workdir / "boxes_refined" / name).read_bytes() == expected
    assert (workdir / "boxes" / "tracks.txt").read_bytes() != (workdir / "plain" / "tracks.txt").read_bytes()
    summary = json.loads((workdir / "boxes_refined" / "summary.json").read_text())
    assert [e["frame"] for e in summary["exemplars"]] == [0, 3, 3]
    assert track(workdir, "boxes_carried", *boxes, "--carry-exemplar-boxes", "--edits", workdir / "none.json") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "do not carry exemplar boxes forward" in err[0]


def test_bad_edits_are_one_line_exit_2_and_nothing_is_written(workdir, capsys):
    cases = [
        ([{"remove": 77}], "fixes_bad.json: entry 0: no track 77 to remove"),
        ([{"frame": 10, "obj_id": 1, "points": [[1, 1]], "labels": [1]}], "entry 0: frame 10 is past the end"),
        ([{"frame": 1, "obj_id": 1, "points": [[170, 1]], "labels": [1]}], "outside the 160x96 frame"),
        ([{"frame": 1, "obj_id": 1, "points": [[1, 1]], "labels": [1], "prompt": "dog"}],
         "prompt 'dog' is not one of the run's (square)"),
    ]
    for i, (edits, message) in enumerate(cases):
        path = write_edits(workdir, "fixes_bad.json", edits)
        out = workdir / f"bad{i}"
        assert track(workdir, f"bad{i}", "--edits", path) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not (out / "tracks.txt").exists() and not (out / "summary.json").exists()
    (workdir / "broken.json").write_text("[{\"remove\": 1,}]")
    assert track(workdir, "bad_json", "--edits", workdir / "broken.json") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "broken.json: not JSON" in err[0] and not (workdir / "bad_json").exists()


def test_edits_need_the_official_loop(workdir, capsys):
    path = write_edits(workdir, "one.json", [{"remove": 1}])
    assert track(workdir, "assoc", "--tracker", "sam3video", "--edits", path) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "edits need the official loop" in err[0]
    assert track(workdir, "assoc_run", "--tracker", "sam3video", "--no-render") == 0
    capsys.readouterr()
    assert run("refine", workdir / "assoc_run", "--edits", path, "--out", workdir / "assoc_refined") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "refine edits runs of the official loop" in err[0]
    assert run("refine", workdir / "nothing_here", "--edits", path, "--out", workdir / "x") == 2
    assert "not a run folder" in capsys.readouterr().err


def test_direction_both_tracks_late_objects_back_and_keeps_the_rest(workdir, capsys):
    """``--direction both``: the objects first shown on the last frame (a 10-frame clip, both prompts) get masks on
    the frames before it too; the frames they had are unchanged; the summary counts the frames tracked back."""
    common = ["--prompt", "red circle", "--no-render"]
    assert track(workdir, "forward2", *common) == 0
    assert track(workdir, "both2", *common, "--direction", "both") == 0
    capsys.readouterr()
    forward = read_mots(workdir / "forward2" / "tracks.mots.txt")
    both = read_mots(workdir / "both2" / "tracks.mots.txt")
    assert sorted(forward) == [9]
    assert np.array_equal(both[9].mask, forward[9].mask) and both[9].tracker_id.tolist() == forward[9].tracker_id.tolist()
    assert len(both) == 10 and all(set(both[t].tracker_id) <= set(forward[9].tracker_id) for t in both)
    summary = json.loads((workdir / "both2" / "summary.json").read_text())
    assert summary["recomputed"]["tracked_back"]["frames"] >= 9 and summary["config"]["direction"] == "both"
    assert track(workdir, "both_assoc", "--direction", "both", "--tracker", "sam3video") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--direction both need the official loop" in err[0]


def test_clicks_that_wait_are_propagated_once_as_a_session_would(workdir, capsys):
    """Two clicks on track 1 (the first waits: ``"propagate": false``) are one propagation after both, as a
    ``VideoSession`` given those requests; a click still waiting at the end of the list is propagated then."""
    clicks = [{"frame": 4, "obj_id": 1, "points": [[40, 30]], "labels": [1], "propagate": False},
              {"frame": 4, "obj_id": 1, "points": [[100, 60]], "labels": [0], "keep_old_points": True}]
    assert track(workdir, "waited", "--no-render", "--edits", write_edits(workdir, "waited.json", clicks)) == 0
    trailing = [{**clicks[1], "propagate": False}]
    assert track(workdir, "trailing", "--no-render", "--edits", write_edits(workdir, "trailing.json", trailing)) == 0
    assert track(workdir, "flagless", "--no-render", "--edits", write_edits(workdir, "flagless.json",
                                                                             [clicks[1]])) == 0
    capsys.readouterr()
    summary = json.loads((workdir / "waited" / "summary.json").read_text())
    assert [e["tracked_again"] for e in summary["edits"]] == [0, 10]
    summary = json.loads((workdir / "trailing" / "summary.json").read_text())
    assert [e["tracked_again"] for e in summary["edits"]] == [10] and "propagate" not in summary["edits"][0]
    for name in ("tracks.txt", "tracks.mots.txt"):
        assert (workdir / "trailing" / name).read_bytes() == (workdir / "flagless" / name).read_bytes()

    session = tiny_session(workdir)
    (obj_id,) = {int(i) for t in range(session.num_frames) for i in session.output(t).detections.tracker_id}
    session.add_prompt(4, points=[[40, 30]], point_labels=[1], obj_id=obj_id)
    session.add_prompt(4, points=[[100, 60]], point_labels=[0], obj_id=obj_id, clear_old_points=False)
    list(session.propagate("both", start_frame=4))
    waited = read_mots(workdir / "waited" / "tracks.mots.txt")
    for t in range(session.num_frames):
        expected = session.output(t).detections
        got = waited.get(t)
        assert len(expected) == (len(got) if got else 0)
        if got:
            assert np.array_equal(got.mask[0], expected.mask[0])


def test_propagate_must_be_true_or_false():
    with pytest.raises(InputError, match="entry 0: propagate must be true or false, got 'no'"):
        parse_edits([{"frame": 1, "obj_id": 2, "points": [[1, 2]], "labels": [1], "propagate": "no"}])
    (edit,) = parse_edits([{"frame": 1, "obj_id": 2, "points": [[1, 2]], "labels": [1], "propagate": False}])
    assert edit.propagate is False and edit.describe()["propagate"] is False
