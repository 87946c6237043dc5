"""Saved detections (``detections.npz``) and ``sam3video retrack``: the store round trip, re-tracking
byte for byte as ``track`` (text, exemplars, other thresholds, a peer tracker), detection files, bad
files, what retrack refuses, and resuming with the new output."""

import json
import shutil

import av
import numpy as np
import pytest

from sam3video.cli import main
from sam3video.data.synthetic import WorldConfig
from sam3video.data.clips import generate_clip
from sam3video.detections import Detections
from sam3video.errors import InputError
from sam3video.export.detections_store import (
    DetectionsWriter,
    SavedFrame,
    StoreMeta,
    concatenate_segments,
    read_saved_detections,
)
from sam3video.export.mots import encode_rle
from sam3video.run import RetrackJob, TrackJob, prepare, prepare_retrack
from sam3video.thresholds import Thresholds
from sam3video.trackers.association.exemplars import Exemplar

# every query is a detection and every detection a track at once: the tiny random model makes tracks
LOW = Thresholds(score_threshold=0.0, low_score_threshold=0.0, new_track_threshold=0.0, min_hits=1)
TRACK_FILES = ("tracks.txt", "tracks.mots.txt", "tracks.red_circle.txt", "tracks.square.txt")
EXEMPLARS = (Exemplar(3, (10.0, 10.0, 60.0, 50.0)), Exemplar(6, (80.0, 20.0, 120.0, 60.0), positive=False),
             Exemplar(6, (20.0, 30.0, 70.0, 90.0), prompt="square"))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """15 frames of 161x97 as a .npy file (a path the run can name); at 30 fps, windows of 5 frames."""
    clip = generate_clip(5, WorldConfig(width=162, height=98, duration_s=1.5, fps=10, radius_px=(8.0, 20.0)))
    frames = np.ascontiguousarray(np.stack([clip.image(t) for t in range(clip.num_frames)])[:, :97, :161])
    path = tmp_path_factory.mktemp("retrack") / "clip.npy"
    np.save(path, frames)
    return path


def job(video, out, **kwargs):
    defaults = dict(prompts=("red circle", "square"), thresholds=LOW, window_seconds=5 / 30, checkpoint="tiny.pt",
                    render=False, source_name=str(video))
    return TrackJob(str(video), out, **{**defaults, **kwargs})


@pytest.fixture(scope="module")
def runs(video, tiny_model, tmp_path_factory):
    """Two `track` runs: text prompts (with the overlay) and with exemplars; their candidates as given."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, kwargs in (("text", {"render": True}), ("exemplars", {"exemplars": EXEMPLARS})):
        results = []
        summary = prepare(job(video, root / name, **kwargs), tiny_model).execute(on_result=results.append)
        made[name] = (root / name, summary, [(r.frame_index, r.candidates, r.learned) for r in results])
    return made


def same_files(a, b, names=TRACK_FILES):
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def same_detections(a, b, close=()):
    """Two detections.npz hold the same arrays (their ``run`` facts aside; ``close``: within 1e-6)."""
    with np.load(a) as x, np.load(b) as y:
        assert set(x.files) == set(y.files)
        for key in set(x.files) - {"run"}:
            assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape, key
            if key in close:
                np.testing.assert_allclose(x[key], y[key], rtol=0, atol=1e-6, err_msg=key)
            else:
                assert np.array_equal(x[key], y[key]), key


def rewrite(src, dst, **changes):
    """A copy of detections file ``src`` with some arrays replaced (``run``: a function of the facts)."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    for key, value in changes.items():
        arrays[key] = np.array(json.dumps(value(json.loads(str(arrays["run"]))))) if key == "run" else value
    np.savez_compressed(dst, **arrays)
    return dst


def assert_same_detections(a: Detections, b: Detections, masks=True):
    for name in ("xyxy", "confidence", "class_id") + (("mask",) if masks else ()):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert ("embedding" in a.data) == ("embedding" in b.data)
    if "embedding" in a.data:
        assert a.data["embedding"].dtype == np.float32 and np.array_equal(a.data["embedding"], b.data["embedding"])


# ---- the store ------------------------------------------------------------------------------------

def saved_frames(rng, height=37, width=53, dim=8):
    """Frames with 0..5 candidates (random, empty and full masks), two with exemplar data."""
    frames = []
    for index, count in enumerate([3, 0, 5, 1, 0, 2, 4]):
        mask = rng.random((count, height, width)) < rng.random()
        mask[:1] = False
        mask[2:3] = True
        candidates = Detections(rng.random((count, 4)).astype(np.float32) * 50, rng.random(count), rng.integers(0, 2, count),
                                mask=mask, data={"embedding": rng.standard_normal((count, dim)).astype(np.float32)})
        learned = None
        if index in (1, 4):
            text_only = Detections(rng.random((3, 4)) * 50, rng.random(3), [0, 1, 1],
                                   data={"embedding": rng.standard_normal((3, dim)).astype(np.float32)})
            learned = text_only, {(1.0, 2.5, 30.0, 40.0): rng.standard_normal(dim).astype(np.float32),
                                  (0.1, 0.2, 0.3, 0.7): rng.standard_normal(dim).astype(np.float32)}
        frames.append(SavedFrame(index * 2, index / 15, index // 3, candidates, learned))
    return frames


def write_store(tmp_path, frames, windows=None):
    meta = StoreMeta(37, 53, 15.0, ("a", "b"), {"note": "test"})
    segments = []
    for window in sorted({f.window for f in frames}) if windows is None else windows:
        segments.append(tmp_path / f"window-{window}.npz")
        with DetectionsWriter(segments[-1], meta) as writer:
            for frame in frames:
                if frame.window == window:
                    writer.write(frame)
    concatenate_segments(segments, tmp_path / "detections.npz")
    return tmp_path / "detections.npz"


@pytest.mark.parametrize("one_segment", [False, True])
def test_store_round_trip(tmp_path, one_segment):
    """Masks bit for bit, float32 embeddings equal, frames without candidates kept, exemplar data too."""
    frames = saved_frames(np.random.default_rng(0))
    if one_segment:
        frames = [SavedFrame(f.index, f.timestamp, 0, f.candidates, f.learned) for f in frames]
    meta, read = read_saved_detections(write_store(tmp_path, frames))
    assert (meta.height, meta.width, meta.fps, meta.class_names, meta.run) == (37, 53, 15.0, ("a", "b"),
                                                                               {"note": "test"})
    assert len(read) == len(frames) and read.learned_frames == {2, 8}
    for given, back in zip(frames, read):
        assert (back.index, back.timestamp, back.window) == (given.index, given.timestamp, given.window)
        assert_same_detections(given.candidates, back.candidates)
        assert (back.learned is None) == (given.learned is None)
        if given.learned is not None:
            assert_same_detections(given.learned[0], back.learned[0], masks=False)
            assert list(back.learned[1]) == list(given.learned[1])
            for box, embedding in given.learned[1].items():
                assert np.array_equal(back.learned[1][box], embedding)


def test_store_without_embeddings(tmp_path):
    """Candidates without ``data["embedding"]`` (box-only trackers' inputs) come back without one."""
    mask = np.zeros((2, 37, 53), bool)
    mask[0, 3:9, 4:20] = True
    frames = [SavedFrame(0, 0.0, 0, Detections([[0, 0, 5, 5], [1, 1, 9, 9]], [0.9, 0.4], [0, 1], mask=mask))]
    _, read = read_saved_detections(write_store(tmp_path, frames))
    back = next(iter(read)).candidates
    assert_same_detections(frames[0].candidates, back)
    assert "embedding" not in back.data


def test_masks_decode_as_pycocotools_encodes(tmp_path):
    """Larger random masks with many runs (values of several RLE characters) decode bit for bit."""
    rng = np.random.default_rng(3)
    masks = rng.random((6, 120, 200)) < 0.5
    masks[1] = False
    masks[2, :, :100] = True
    candidates = Detections(np.zeros((6, 4)), np.ones(6), np.zeros(6), mask=masks)
    path = tmp_path / "one.npz"
    with DetectionsWriter(path, StoreMeta(120, 200, 30.0, ("x",))) as writer:
        writer.write(SavedFrame(0, 0.0, 0, candidates))
    with np.load(path) as z:
        assert bytes(z["mask_rle"]) == "".join(encode_rle(masks)).encode()
    _, read = read_saved_detections(path)
    assert np.array_equal(next(iter(read)).candidates.mask, masks)


# ---- track writes them, retrack replays them ------------------------------------------------------

@pytest.mark.parametrize("name", ["text", "exemplars"])
def test_track_saves_what_the_tracker_was_given(runs, name):
    out, summary, given = runs[name]
    assert summary["outputs"]["detections"] == "detections.npz"
    meta, read = read_saved_detections(out / "detections.npz")
    assert meta.class_names == ("red circle", "square") and (meta.height, meta.width) == (97, 161)
    assert [f.index for f in read] == [index for index, _, _ in given] == list(range(15))
    assert [f.window for f in read] == [i // 5 for i in range(15)]
    for (index, candidates, learned), back in zip(given, read):
        assert_same_detections(candidates, back.candidates)
        assert (learned is None) == (back.learned is None)
    if name == "exemplars":
        assert read.learned_frames == {3, 6}


@pytest.mark.parametrize("name", ["text", "exemplars"])
def test_retrack_gives_the_same_files(runs, tmp_path, name):
    """Same settings: every track file byte for byte, the same tracks and exemplar effect."""
    out = runs[name][0]
    prepare_retrack(RetrackJob(out, tmp_path / "again", render=False)).execute()
    summary, again = (json.loads((folder / "summary.json").read_text()) for folder in (out, tmp_path / "again"))
    same_files(out, tmp_path / "again")
    same_detections(out / "detections.npz", tmp_path / "again" / "detections.npz")
    assert again["tracks"] == summary["tracks"] and again["frames"] == 15 and again["windows"] == 3
    assert again.get("exemplar_effect") == summary.get("exemplar_effect")
    assert again["retracked_from"] == {"run": str(out), "detections": str(out / "detections.npz")}
    assert again["tracker"] == summary["tracker"] and again["config"] == summary["config"]
    assert again["input"] == summary["input"] and again["model"] == summary["model"]


def test_retrack_at_other_thresholds_equals_a_fresh_track(runs, video, tiny_model, tmp_path):
    """A raised low score threshold (about half the candidates go), other score / new-track / min-hits /
    lost-buffer values: the files of a fresh `track` with them, byte for byte. (The fresh run pools the
    embeddings of fewer masks at once: they may differ in the last float32 bit.)"""
    out = runs["exemplars"][0]
    flags = dict(score_threshold=0.22, low_score_threshold=0.22, new_track_threshold=0.23, min_hits=2,
                 lost_buffer_s=0.1)
    prepare(job(video, tmp_path / "fresh", exemplars=EXEMPLARS, thresholds=Thresholds(**flags)), tiny_model).execute()
    prepare_retrack(RetrackJob(out, tmp_path / "again", thresholds=flags, render=False)).execute()
    fresh, again = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("fresh", "again"))
    assert fresh["tracks"] and again["tracks"] == fresh["tracks"]
    same_files(tmp_path / "fresh", tmp_path / "again")
    same_detections(tmp_path / "fresh" / "detections.npz", tmp_path / "again" / "detections.npz",
                    close=("embedding",))
    assert again["config"] == fresh["config"]


class Scripted:
    """In place of ``postprocess``: three objects moving on a line, scores 0.5-0.95, one gone on
    frames 6-8 (the random tiny model scores below the peers' own thresholds)."""

    def __init__(self):
        self.frame = 0

    def __call__(self, outputs, frame_size, config, features=None):
        height, width = frame_size
        t, self.frame = self.frame, self.frame + 1
        rows = [(0, 4 + 3 * t, 10, 0.9), (1, 100 - 2 * t, 50, 0.7 + 0.02 * (t % 5))]
        if not 6 <= t <= 8:
            rows.append((0, 60, 5 + 2 * t, 0.55 + 0.03 * (t % 4)))
        boxes = np.array([[x, y, x + 20, y + 25] for _, x, y, _ in rows], np.float32)
        mask = np.zeros((len(rows), height, width), bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            mask[i, y0:y1, x0:x1] = True
        embedding = np.eye(8, dtype=np.float32)[[0, 1, 2][: len(rows)]]
        return Detections(xyxy=boxes, confidence=[r[3] for r in rows], class_id=[r[0] for r in rows], mask=mask,
                          data={"embedding": embedding})


@pytest.mark.parametrize("name", ["bytetrack", "sort"])
def test_retrack_with_a_peer_equals_a_fresh_track_with_it(video, tiny_model, tmp_path, monkeypatch, name):
    import sam3video.video.predictor as predictor_module

    runs = {}
    for tracker, out in (("sam3video", "ours"), (name, "fresh")):
        monkeypatch.setattr(predictor_module, "postprocess", Scripted())
        runs[out] = prepare(job(video, tmp_path / out, tracker=tracker, thresholds=Thresholds()), tiny_model).execute()
    again = prepare_retrack(RetrackJob(tmp_path / "ours", tmp_path / "again", tracker=name, render=False)).execute()
    assert runs["fresh"]["tracks"] and again["tracks"] == runs["fresh"]["tracks"]
    same_files(tmp_path / "fresh", tmp_path / "again")
    assert again["tracker"]["name"] == name and again["config"]["tracker"] is None


def test_retrack_cli_renders_the_overlay_from_the_runs_video(runs, tmp_path, capsys):
    out = runs["text"][0]
    assert main(["retrack", str(out), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert "15 frames" in capsys.readouterr().out
    with av.open(str(tmp_path / "again" / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 15
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["retracked_from"]["video"] == summary["input"]["source"]
    same_files(out, tmp_path / "again")


def test_retrack_without_the_video_says_so_and_skips_the_overlay(runs, tmp_path, capsys):
    moved = tmp_path / "run"
    moved.mkdir()
    rewrite(runs["text"][0] / "detections.npz", moved / "detections.npz",
            run=lambda run: {**run, "input": {**run["input"], "source": str(tmp_path / "gone.npy")}})
    assert main(["retrack", str(moved), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sam3video retrack: note:") and "--video" in err[0]
    assert not (tmp_path / "again" / "overlay.mp4").exists()
    assert main(["retrack", str(moved), "--out", str(tmp_path / "again2"), "--quiet", "--video",
                 runs["text"][1]["input"]["source"]]) == 0
    assert (tmp_path / "again2" / "overlay.mp4").exists()


@pytest.mark.parametrize("flags, message", [
    (["--low-score-threshold", "0"], None),  # the run's own: fine
    (["--score-threshold", "0.3", "--low-score-threshold", "0.3"], None),
    (["--nms-iou", "0.6"], "--nms-iou 0.6 differs from the run's 0.5: mask NMS ran before"),
    (["--fps", "10"], "--fps is for --detections files"),
    (["--min-hits", "0"], "--min-hits must be >= 1"),
])
def test_retrack_settings(runs, tmp_path, capsys, flags, message):
    code = main(["retrack", str(runs["text"][0]), "--out", str(tmp_path / "again"), "--quiet", "--no-render", *flags])
    err = capsys.readouterr().err.strip()
    if message is None:
        assert code == 0 and err == ""
    else:
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
        assert not (tmp_path / "again" / "tracks.txt").exists()


def test_retrack_refuses_a_lower_low_score_threshold(runs, tmp_path):
    raised = prepare_retrack(RetrackJob(runs["text"][0], tmp_path / "raised", render=False,
                                        thresholds={"score_threshold": 0.2, "low_score_threshold": 0.2}))
    raised.execute()
    with pytest.raises(InputError, match="--low-score-threshold 0.1 is below the 0.2 the detections were saved at"):
        prepare_retrack(RetrackJob(tmp_path / "raised", tmp_path / "lower", render=False,
                                   thresholds={"score_threshold": 0.2, "low_score_threshold": 0.1}))


def test_retrack_of_a_run_that_carried_exemplar_boxes_only_repeats_it(runs, tmp_path):
    store = rewrite(runs["exemplars"][0] / "detections.npz", tmp_path / "carried.npz", run=lambda run: {
        **run, "config": {**run["config"], "exemplar": {**run["config"]["exemplar"], "carry_boxes": True}}})
    prepare_retrack(RetrackJob(store, tmp_path / "same", render=False))  # the same settings: fine
    for change in ({"tracker": "sort"}, {"thresholds": {"min_hits": 2}}):
        with pytest.raises(InputError, match="carried exemplar boxes"):
            prepare_retrack(RetrackJob(store, tmp_path / "other", render=False, **change))


def test_retrack_into_the_run_folder_is_refused(runs):
    with pytest.raises(InputError, match="is the run folder itself"):
        prepare_retrack(RetrackJob(runs["text"][0], runs["text"][0], render=False))


def test_resume_with_saved_detections(video, tiny_model, runs, tmp_path):
    """Interrupted in its second window and resumed: the same detections.npz (and tracks) as a whole run."""
    def stop(result):
        if result.frame_index == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare(job(video, tmp_path), tiny_model).execute(on_result=stop)
    assert not (tmp_path / "detections.npz").exists()
    prepare(job(video, tmp_path, resume=True), tiny_model).execute()
    same_detections(runs["text"][0] / "detections.npz", tmp_path / "detections.npz")
    same_files(runs["text"][0], tmp_path)


# ---- bad stores ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_stores(runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    good = (runs["text"][0] / "detections.npz").read_bytes()
    (root / "truncated.npz").write_bytes(good[: len(good) // 2])
    (root / "flipped.npz").write_bytes(good[:2000] + bytes([good[2000] ^ 0xFF]) + good[2001:])
    (root / "text.npz").write_text("not a zip\n")
    np.save(root / "array.npy", np.zeros(3))
    src = runs["text"][0] / "detections.npz"
    rewrite(src, root / "version.npz", version=np.array(2))
    rewrite(src, root / "format.npz", format=np.array("something-else"))
    with np.load(src) as z:
        rle, offsets = z["mask_rle"].copy(), z["mask_offsets"]
    rle[offsets[1] - 1] = ord("o")  # the first mask's last character now says "more follows"
    rewrite(src, root / "rle.npz", mask_rle=rle)
    rewrite(src, root / "offsets.npz", mask_offsets=offsets[:-1])
    run_dir = root / "run"
    run_dir.mkdir()
    shutil.copy(root / "truncated.npz", run_dir / "detections.npz")
    return root


@pytest.mark.parametrize("name, message", [
    ("truncated.npz", "not a readable sam3video detections file"),
    ("flipped.npz", "not a readable sam3video detections file"),
    ("text.npz", "not a sam3video detections file (not a zip archive"),
    ("array.npy", "one numpy array, not a sam3video detections file"),
    ("version.npz", "detections format version 2; this sam3video reads version 1"),
    ("format.npz", "not a sam3video detections file"),
    ("rle.npz", "damaged detections file: a mask RLE ends inside a value"),
    ("offsets.npz", "damaged detections file: candidate arrays differ in length"),
    ("missing.npz", "no such file"),
    ("run", "not a readable sam3video detections file"),
])
def test_bad_store_is_one_line_naming_the_file(bad_stores, tmp_path, capsys, name, message):
    code = main(["retrack", str(bad_stores / name), "--out", str(tmp_path / "out"), "--no-render"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and captured.out == "", captured
    assert len(lines) == 1 and message in lines[0] and name in lines[0], lines
    assert lines[0].startswith("sam3video retrack: error:")
    assert not (tmp_path / "out" / "tracks.txt").exists()


# ---- MOTChallenge detection files ----------------------------------------------------------------

def detection_lines(frames=20, gap=(8, 10)):
    """Two boxes moving apart for ``frames`` frames (1-based), none on the frames of ``gap``."""
    lines = []
    for t in range(1, frames + 1):
        if gap[0] <= t <= gap[1]:
            continue
        lines.append(f"{t},-1,{10 + 3 * t},{20},{30},{40},0.9,-1,-1,-1")
        lines.append(f"{t},-1,{300 - 3 * t},{25},{28},{44},{0.6 + 0.01 * t:.2f},-1,-1,-1")
    lines.append("20,-1,0,0,5,5,0.05,-1,-1,-1")  # below the low score threshold: dropped
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("tracker", ["sam3video", "sort"])
def test_retrack_a_detection_file(tmp_path, capsys, tracker):
    det = tmp_path / "det.txt"
    det.write_text(detection_lines())
    out = tmp_path / "out"
    assert main(["retrack", "--detections", str(det), "--out", str(out), "--tracker", tracker, "--fps", "25",
                 "--quiet", "--lost-buffer", "0.5"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "tracks.txt"]
    from sam3video.export import read_mot

    tracks = read_mot(out / "tracks.txt")
    ids = set(np.concatenate([d.tracker_id for d in tracks.values()]).tolist())
    assert ids == {1, 2}  # both boxes, the same ids after the gap
    assert max(tracks) == 19 and not set(tracks) & {7, 8, 9}  # 0-based frames; none in the gap
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 20 and summary["input"]["kind"] == "MOTChallenge detections"
    assert summary["input"]["fps"] == 25 and summary["tracker"]["name"] == tracker
    assert summary["config"]["detection"]["low_score_threshold"] == 0.1 and summary["model"] is None


@pytest.mark.parametrize("content, message", [
    ("1,-1,10,20,30,40,0.9\n2,-1,10,20,30\n", "det.txt:2: expected 6 to 10 fields"),
    ("1,-1,10,20,30,40,0.9\n0,-1,10,20,30,40,0.9\n", "det.txt:2: frame must be an integer in [1, 2**53)"),
    ("1,-1,10,20,30,40,0.9\n3,-1,10,x,30,40,0.9\n", "det.txt:2: field 'x' is not a number"),
    ("99999999999,-1,10,20,30,40,0.9\n", "det.txt:1: frame 99999999999 is beyond the"),
    ("\n", "det.txt: no detections in it"),
])
def test_bad_detection_file_is_one_line_with_file_and_line(tmp_path, capsys, content, message):
    det = tmp_path / "det.txt"
    det.write_text(content)
    code = main(["retrack", "--detections", str(det), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and captured.out == "" and len(lines) == 1, captured
    assert message in lines[0] and "Traceback" not in captured.err, lines
    assert not (tmp_path / "out" / "tracks.txt").exists()


@pytest.mark.parametrize("args, message", [
    ([], "retrack needs a run folder (RUN_DIR) or --detections FILE"),
    (["RUN", "--detections", "det.txt"], "retrack needs a run folder (RUN_DIR) or --detections FILE"),
    (["--detections", "det.txt", "--nms-iou", "0.4"], "--nms-iou is for a run's masks"),
    (["--detections", "det.txt", "--video", "clip.mp4"], "--video draws a run's masks"),
])
def test_retrack_usage(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "det.txt").write_text(detection_lines())
    code = main(["retrack", *args, "--out", "out"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_retrack_does_not_import_torch(runs, tmp_path):
    """``sam3video retrack`` works from the saved detections alone: torch is never imported (nor loaded)."""
    import subprocess
    import sys

    folder = runs["text"][0]
    code = ("import sys\nfrom sam3video.cli import main\n"
            f"status = main(['retrack', {str(folder)!r}, '--out', {str(tmp_path / 'again')!r}, '--quiet'])\n"
            "print(status, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "0 False", (done.stdout, done.stderr[-2000:])
    assert (tmp_path / "again" / "tracks.txt").is_file()

