"""tools/bench_tracker.py on a small generated MOTChallenge sequence: every tracker runs and is scored."""

import importlib.util
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool():
    spec = importlib.util.spec_from_file_location("bench_tracker", TOOLS / "bench_tracker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_sequence(folder: Path, frames: int = 40, fps: int = 10) -> None:
    """Three people walking with noisy detections, one missed for 5 frames; gt and det as in MOT15."""
    rng = np.random.default_rng(0)
    (folder / "det").mkdir(parents=True)
    (folder / "gt").mkdir()
    (folder / "seqinfo.ini").write_text(f"[Sequence]\nname={folder.name}\nframeRate={fps}\nseqLength={frames}\n"
                                        "imWidth=640\nimHeight=480\n")
    gt, det = [], []
    for t in range(frames):
        for person, (x, y, vx) in enumerate([(20, 100, 6), (300, 120, -5), (100, 300, 3)]):
            box = np.array([x + vx * t, y, 40, 100], float)
            gt.append(f"{t + 1},{person + 1},{box[0]:.1f},{box[1]:.1f},{box[2]:.1f},{box[3]:.1f},1,-1,-1,-1")
            if person == 2 and 15 <= t < 20:
                continue  # occluded
            noisy = box + rng.normal(0, 1.5, 4)
            det.append(f"{t + 1},-1,{noisy[0]:.2f},{noisy[1]:.2f},{noisy[2]:.2f},{noisy[3]:.2f},0.9,-1,-1,-1")
    (folder / "gt" / "gt.txt").write_text("\n".join(gt) + "\n")
    (folder / "det" / "det.txt").write_text("\n".join(det) + "\n")


TRACKERS = ("sam3video", "sort", "bytetrack", "ocsort", "botsort", "cbiou", "mcbyte")


def test_every_tracker_runs_and_is_scored(tmp_path, capsys):
    write_sequence(tmp_path / "data" / "WALK-01")
    load_tool().main(["--mot", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--per-sequence"])
    printed = capsys.readouterr().out
    assert "MOT15 rules" in printed  # no classes in the ground truth: no distractor preprocessing
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines()
            if line.split() and line.split()[0] in TRACKERS}
    assert set(rows) == set(TRACKERS)
    for name in rows:
        assert (tmp_path / "out" / "mot" / "data" / name / "data" / "WALK-01.txt").is_file()
    hota = float(rows["sam3video"][0])
    assert 50 < hota <= 100, printed  # three clean tracks: every tracker should do well


def test_mot_challenge_rules_remove_predictions_on_distractors_and_sets_combine(tmp_path, capsys):
    """Ground truth with classes (KITTI / MOT17 form): a fourth walker marked distractor (class 8) is
    tracked by every tracker but costs no false positives; zero-marked rows are dropped. Two sets give
    a table each and one over all their sequences."""
    write_sequence(tmp_path / "plain" / "WALK-01")
    folder = tmp_path / "classes" / "WALK-02"
    write_sequence(folder)
    gt = [line.rsplit(",", 4)[0] + ",1,1,1.0" for line in (folder / "gt" / "gt.txt").read_text().splitlines()]
    det = (folder / "det" / "det.txt").read_text().splitlines()
    for t in range(40):
        gt.append(f"{t + 1},9,500,300,40,100,0,8,1.0")
        det.append(f"{t + 1},-1,500.5,300.2,40.1,99.8,0.9,-1,-1,-1")
    (folder / "gt" / "gt.txt").write_text("\n".join(gt) + "\n")
    (folder / "det" / "det.txt").write_text("\n".join(det) + "\n")
    load_tool().main(["--mot", str(tmp_path / "plain"), str(tmp_path / "classes"), "--trackers", "sam3video",
                      "sort", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    tables = printed.split("\n\n")
    assert "MOT15 rules" in tables[0] and "MOT17 rules" in tables[1] and tables[2].startswith("all 2 sets")
    plain, classes = (float(t.splitlines()[2].split()[5]) for t in tables[:2])  # MOTA of sam3video
    assert classes == plain > 80, printed  # the distractor's track is neither a hit nor a false positive
    assert "2 sequences" in tables[2]


def test_synthetic_mode_re_tracks_saved_runs_as_track_did(tmp_path, tiny_model, capsys):
    """A `make benchmark`-shaped folder with one tiny-model run: our tracker on its saved candidates
    gives the run's own tracks.txt; every peer runs and is scored against the suite's ground truth."""
    from sam3video.data.synthetic import WorldConfig
    from sam3video.data.clips import generate_clip
    from sam3video.run import TrackJob, prepare
    from sam3video.thresholds import Thresholds

    clip = generate_clip(5, WorldConfig(width=96, height=64, duration_s=1.0, fps=10, radius_px=(8.0, 14.0)))
    frames = np.stack([clip.image(t) for t in range(clip.num_frames)])
    run = tmp_path / "bench" / "sam3video" / "clip_00__red_circle"
    low = Thresholds(score_threshold=0.0, low_score_threshold=0.0, new_track_threshold=0.0, min_hits=1)
    prepare(TrackJob(frames, run, prompts=("red circle",), thresholds=low, checkpoint="tiny.pt", render=False,
                     fps=10), tiny_model).execute()
    gt = tmp_path / "bench" / "suite" / "clip_00" / "gt" / "red_circle" / "gt.txt"
    gt.parent.mkdir(parents=True)
    assert len((run / "tracks.txt").read_text().splitlines()) > 20
    gt.write_text((run / "tracks.txt").read_text())  # the run's own tracks as the truth: HOTA 100 for ours
    load_tool().main(["--synthetic", str(tmp_path / "bench"), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    ours = tmp_path / "out" / "synthetic" / "sam3video" / "clip_00__red_circle.txt"
    assert ours.read_bytes() == (run / "tracks.txt").read_bytes()
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines() if line.split()}
    assert float(rows["sam3video"][0]) == 100.0, printed
    assert {"sort", "bytetrack", "ocsort", "botsort"} <= set(rows)
    # --frames: the clip's frames reach the trackers (camera motion compensation; a still camera here)
    from tests.helpers import write_video

    write_video(gt.parents[2] / "video.mp4", iter(frames), fps=10)
    load_tool().main(["--synthetic", str(tmp_path / "bench"), "--out", str(tmp_path / "framed"), "--frames",
                      "--trackers", "sam3video", "botsort"])
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines() if line.split()}
    # the camera is still, but on 96x64 frames of plain background the optical flow follows the circles
    # themselves, so a few frames match otherwise than in the run (tracked without frames): 89.2 here
    assert 80 < float(rows["sam3video"][0]) < 100 and "botsort" in rows


def test_set_overrides_our_tracker_config_and_refuses_unknown_fields(tmp_path, capsys):
    import pytest

    write_sequence(tmp_path / "data" / "WALK-01")
    tool = load_tool()
    args = ["--mot", str(tmp_path / "data"), "--trackers", "sam3video", "--out", str(tmp_path / "out")]
    tool.main(args + ["--set", "min_hits=100"])  # longer than the sequence: no track is ever reported
    assert (tmp_path / "out" / "mot" / "data" / "sam3video" / "data" / "WALK-01.txt").read_text() == ""
    with pytest.raises(SystemExit) as exit_info:
        tool.main(args + ["--set", "no_such_field=1"])
    assert exit_info.value.code == 2 and "no_such_field" in capsys.readouterr().err


def test_gaps_are_filled_for_ours_and_for_the_peers_when_asked(tmp_path):
    """The third walker is missed for 5 frames (0.5 s at 10 fps): our track completion fills them, with boxes
    on its path; SORT's output has the hole, and with --fill-peer-gaps 0.5 it is filled the same way."""
    write_sequence(tmp_path / "data" / "WALK-01")

    def rows_in_gap(out, name):
        lines = (out / "mot" / "data" / name / "data" / "WALK-01.txt").read_text().splitlines()
        return [[float(v) for v in line.split(",")[:4]] for line in lines if 16 <= int(line.split(",")[0]) <= 20]

    for fill in (None, "0.5"):
        out = tmp_path / f"out{fill}"
        load_tool().main(["--mot", str(tmp_path / "data"), "--trackers", "sam3video", "sort", "--out", str(out)]
                         + (["--fill-peer-gaps", fill] if fill else []))
        ours, sort = rows_in_gap(out, "sam3video"), rows_in_gap(out, "sort")
        assert len(ours) == 15
        assert len(sort) == (15 if fill else 10)
    walker = {int(f): x for f, _, x, y in ours if y > 250}  # the third walker: x = 100 + 3 t, t = frame - 1
    assert sorted(walker) == [16, 17, 18, 19, 20]
    assert all(abs(x - (100 + 3 * (f - 1))) < 4 for f, x in walker.items())
