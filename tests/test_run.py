"""The run module: one job from the video to every file, atomic outputs, windows, resuming, notes."""

import json

import av
import numpy as np
import pytest

from sam3video.data.synthetic import WorldConfig
from sam3video.data.clips import generate_clip
from sam3video.detections import Detections
from sam3video.errors import InputError
from sam3video.export.outputs import PARTIAL_DIR, per_prompt_names, prepare_out_dir
from sam3video.run import TrackJob, demo_vocabulary_notes, prepare
from sam3video.thresholds import Thresholds

# every query is a detection and every detection a track at once: the tiny random model makes tracks
LOW = Thresholds(score_threshold=0.0, low_score_threshold=0.0, new_track_threshold=0.0, min_hits=1)
FINALS = {"overlay.mp4", "summary.json", "tracks.txt", "tracks.mots.txt", "detections.npz", "predictions.veval.json"}


@pytest.fixture(scope="module")
def frames():
    """15 frames of 161x97 (odd on purpose); an array plays at 30 fps: 1/6 s windows hold 5 frames each."""
    clip = generate_clip(5, WorldConfig(width=162, height=98, duration_s=1.5, fps=10, radius_px=(8.0, 20.0)))
    return np.ascontiguousarray(np.stack([clip.image(t) for t in range(clip.num_frames)])[:, :97, :161])


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def job(frames, out, **kwargs):
    defaults = dict(prompts=("red circle", "square"), thresholds=LOW, window_seconds=5 / 30, checkpoint="tiny.pt")
    return TrackJob(frames, out, **{**defaults, **kwargs})


def interrupt_at(frame_index):
    def check(result):
        if result.frame_index == frame_index:
            raise KeyboardInterrupt

    return check


def visible(out):
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))


def test_writes_every_output_over_windows(frames, model, tmp_path):
    summary = prepare(job(frames, tmp_path), model).execute()
    assert visible(tmp_path) == sorted(FINALS | {"tracks.red_circle.txt", "tracks.square.txt"})
    assert not (tmp_path / PARTIAL_DIR).exists()
    assert summary["frames"] == 15 and summary["windows"] == 3 and summary["tracks"]
    assert json.loads((tmp_path / "summary.json").read_text())["frames"] == 15
    with av.open(str(tmp_path / "overlay.mp4")) as container:
        decoded = sum(1 for _ in container.decode(video=0))
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (162, 98)
    assert decoded == 15  # the three windows' segments remuxed into one video
    assert summary["outputs"]["overlay_size"]["padded"] == {"right": 1, "bottom": 1}


def test_interrupted_run_leaves_no_final_file(frames, model, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        prepare(job(frames, tmp_path), model).execute(on_result=interrupt_at(7))
    assert visible(tmp_path) == []


def test_interrupted_rerun_keeps_the_previous_outputs(frames, model, tmp_path):
    prepare(job(frames, tmp_path, render=False), model).execute()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        prepare(job(frames, tmp_path, render=False), model).execute(on_result=interrupt_at(2))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.startswith(".")} == before


@pytest.mark.parametrize("stop_at", [3, 7, 14])
def test_resume_gives_the_same_files_as_an_uninterrupted_run(frames, model, tmp_path, stop_at):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    prepare(job(frames, whole), model).execute()
    with pytest.raises(KeyboardInterrupt):
        prepare(job(frames, resumed), model).execute(on_result=interrupt_at(stop_at))
    done_windows = stop_at // 5  # the windows complete before the interruption are not tracked again
    tracked_again = []
    summary = prepare(job(frames, resumed, resume=True), model).execute(
        on_result=lambda r: tracked_again.append(r.frame_index))
    assert tracked_again == list(range(5 * done_windows, 15))
    for name in ("tracks.txt", "tracks.mots.txt", "tracks.red_circle.txt", "tracks.square.txt"):
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name
    expected = json.loads((whole / "summary.json").read_text())
    assert summary["tracks"] == expected["tracks"] and summary["frames"] == 15
    with av.open(str(resumed / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 15
    assert not (resumed / PARTIAL_DIR).exists()


def test_resume_refuses_other_settings(frames, model, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        prepare(job(frames, tmp_path), model).execute(on_result=interrupt_at(7))
    with pytest.raises(InputError, match="cannot resume: .*prompts differ"):
        prepare(job(frames, tmp_path, prompts=("dog",), resume=True), model).execute()


class _Payload:
    """Unpickling this creates ``path``: proof that a pickle was read."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_resume_never_unpickles_what_is_in_the_output_folder(frames, model, tmp_path):
    """An old-format (or planted) ``state.pkl`` is refused in one line without being read; a damaged or foreign
    JSON state too."""
    import pickle

    from sam3video.export.run_state import TREE_NAME

    out, marker = tmp_path / "out", tmp_path / "payload-ran"
    with pytest.raises(KeyboardInterrupt):
        prepare(job(frames, out, render=False), model).execute(on_result=interrupt_at(7))
    partial = out / PARTIAL_DIR
    assert (partial / TREE_NAME).is_file() and not list(partial.glob("*.pkl"))  # what a run writes now
    (partial / "state.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(InputError, match=r"state.pkl is from an older sam3video \(a pickle, which is never read\)"):
        prepare(job(frames, out, render=False, resume=True), model).execute()
    assert not marker.exists()
    (partial / "state.pkl").unlink()
    tree = json.loads((partial / TREE_NAME).read_text())
    tree["state"] = {"__object__": "builtins:open", "attrs": {}}
    (partial / TREE_NAME).write_text(json.dumps(tree))
    with pytest.raises(InputError, match="cannot resume: the state in .* was refused \\(class builtins:open"):
        prepare(job(frames, out, render=False, resume=True), model).execute()
    (partial / TREE_NAME).write_text("{damaged")
    with pytest.raises(InputError, match="was refused \\(unreadable"):
        prepare(job(frames, out, render=False, resume=True), model).execute()


def test_resume_without_a_partial_run_starts_over(frames, model, tmp_path):
    summary = prepare(job(frames, tmp_path, resume=True, render=False), model).execute()
    assert summary["frames"] == 15


def test_prompts_and_exemplars_go_to_the_session_or_to_track_not_both(frames, model):
    from sam3video.video.predictor import VideoPredictor

    predictor = VideoPredictor(model)
    session = predictor.start_session(["dog"])
    with pytest.raises(InputError, match="not to both"):
        next(predictor.track(frames, ["cat"], session=session))


def test_demo_vocabulary_notes():
    assert demo_vocabulary_notes(["red circle", "Star"]) == []
    (note,) = demo_vocabulary_notes(["bicycle", "red circle"])
    assert "'bicycle'" in note and "--checkpoint" in note and "\n" not in note


def test_unknown_word_with_the_demo_model_is_one_note_and_exit_0(tmp_path, capsys):
    from sam3video.cli import main

    frames = np.zeros((3, 64, 64, 3), np.uint8)
    np.save(tmp_path / "clip.npy", frames)
    code = main(["track", str(tmp_path / "clip.npy"), "--prompt", "bicycle", "--out", str(tmp_path / "run"),
                 "--quiet", "--no-render"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0
    assert len(err) == 1 and err[0].startswith("sam3video track: note:") and "'bicycle'" in err[0]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["notes"] == [err[0].split("note: ", 1)[1]]


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write to output directory"):
        prepare_out_dir(blocker / "run")


def test_per_prompt_names_are_unique():
    assert per_prompt_names(["red circle", "Red Circle", "dog"]) == [
        "tracks.red_circle.txt", "tracks.red_circle_2.txt", "tracks.dog.txt"]


@pytest.fixture()
def two_objects(monkeypatch):
    """Every frame: a confident still object of each prompt (the random tiny model scores low, under
    the peers' own activation thresholds)."""
    import sam3video.video.predictor as predictor_module

    def scripted(outputs, frame_size, config, features=None):
        height, width = frame_size
        boxes = [[4, 10, 20, 30], [30, 50, 50, 80]]
        mask = np.zeros((2, height, width), bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            mask[i, y0:y1, x0:x1] = True
        return Detections(xyxy=boxes, confidence=[0.9, 0.85], class_id=[0, 1], mask=mask)

    monkeypatch.setattr(predictor_module, "postprocess", scripted)


@pytest.mark.parametrize("name", ["bytetrack", "sort", "ocsort", "botsort"])
def test_peer_trackers_give_every_output(frames, model, tmp_path, name, two_objects):
    """``--tracker NAME``: a peer of the `trackers` package, the same files; the summary names it."""
    summary = prepare(job(frames, tmp_path, tracker=name, render=False), model).execute()
    assert visible(tmp_path) == sorted({"summary.json", "tracks.txt", "tracks.mots.txt", "tracks.red_circle.txt",
                                        "tracks.square.txt", "detections.npz", "predictions.veval.json"})
    assert summary["tracker"]["name"] == name and summary["config"]["tracker"] is None
    classes = {t["track_id"]: t["class_name"] for t in summary["tracks"]}
    assert sorted(classes.values()) == ["red circle", "square"]  # one track per object, class-aware
    assert sorted(classes) == [1, 2]  # our ids: 1-based, no gaps


def test_peer_tracker_resumes_like_ours(frames, model, tmp_path, two_objects):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    prepare(job(frames, whole, tracker="bytetrack", render=False), model).execute()
    with pytest.raises(KeyboardInterrupt):
        prepare(job(frames, resumed, tracker="bytetrack", render=False), model).execute(on_result=interrupt_at(8))
    prepare(job(frames, resumed, tracker="bytetrack", render=False, resume=True), model).execute()
    assert (resumed / "tracks.txt").read_bytes() == (whole / "tracks.txt").read_bytes()


def test_carried_boxes_need_our_tracker(frames, model, tmp_path):
    with pytest.raises(InputError, match="needs the sam3video tracker"):
        prepare(job(frames, tmp_path, tracker="sort", carry_exemplar_boxes=True), model)


def test_the_summary_names_the_precision_that_ran(frames, tiny_model, tmp_path, monkeypatch):
    """--precision auto on an AVX2-only CPU: fp32 for a small model (int8 would be slower), recorded."""
    import copy

    from sam3video.model import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    summary = prepare(job(frames, tmp_path / "auto", precision="auto", render=False), copy.deepcopy(tiny_model)).execute()
    assert summary["model"]["precision"] == "fp32"
    summary = prepare(job(frames, tmp_path / "int8", precision="int8", render=False), copy.deepcopy(tiny_model)).execute()
    assert summary["model"]["precision"] == "int8"
    assert json.loads((tmp_path / "int8" / "summary.json").read_text())["model"]["precision"] == "int8"


def test_camera_motion_runs_resumes_alike_and_is_recorded(frames, model, tmp_path):
    """``--camera-motion``: the frames reach our tracker (its motion estimate is part of the resume
    state: an interrupted run resumes to the same files); the summary records the setting."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    summary = prepare(job(frames, whole, camera_motion=True, render=False), model).execute()
    assert summary["config"]["camera_motion"] is True
    with pytest.raises(KeyboardInterrupt):
        prepare(job(frames, resumed, camera_motion=True, render=False), model).execute(on_result=interrupt_at(8))
    prepare(job(frames, resumed, camera_motion=True, render=False, resume=True), model).execute()
    assert (resumed / "tracks.txt").read_bytes() == (whole / "tracks.txt").read_bytes()
    assert len((whole / "tracks.txt").read_text().splitlines()) > 15
    from sam3video.run import RetrackJob, prepare_retrack

    again = prepare_retrack(RetrackJob(whole, tmp_path / "again", render=False)).execute()
    assert any("retrack has no frames" in note for note in again["notes"])
