"""The app without a browser: ``AppWork`` (what a tab does) on the tiny video model (seeded random weights, official
layout), its bad input, and ``sam3video app``'s checks before it serves. The page itself: test_app_browser.py."""

import json

import numpy as np
import pytest
import torch

from sam3video import run as runs
from sam3video.app.work import AppWork
from sam3video.cli import build_parser, main
from sam3video.errors import InputError
from sam3video.export.edits import ClickEdit, RemoveEdit
from sam3video.thresholds import Thresholds
from tests.helpers import write_tiny_video_setup, write_video

THRESHOLDS = Thresholds(score_threshold=0.2, new_track_threshold=0.25)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from sam3video.model.video_checkpoint import load_video_model

    root = tmp_path_factory.mktemp("app")
    return root, load_video_model(write_tiny_video_setup(root), device="cpu")


def test_a_tab_tracks_clicks_removes_and_exports_what_track_writes(setup, tmp_path, capsys):
    root, model = setup
    work = AppWork(model, str(root / "tiny_video.pt"), tmp_path / "work", THRESHOLDS)
    assert work.open(root / "clip.mp4") == "clip.mp4: 160x96, 10 fps, 10 frames, 1.0 s"
    seen = []
    work.track(["square"], progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (10, 10)
    before = {row.track_id for row in work.tracks()}
    assert before == {1}
    new_id = work.click(3, 120.0, 70.0, True, "square")  # a new object: clicks wait for propagate()
    assert new_id == 2 and work.click(3, 130.0, 70.0, False, new_id) == 2
    assert [label for label, _ in work.targets()] == ["#1 square", "#2 square", "new square"]
    assert work.propagate() == 10 and work.propagate() == 0  # both ways from frame 3; nothing waits then
    work.remove(1)
    assert work.view(3).shape == (96, 160, 3)
    folder, archive = work.export(render=False)
    assert work.edits == [ClickEdit(3, 2, ((120.0, 70.0),), (1,), prompt="square", keep_old_points=True,
                                    propagate=False),
                          ClickEdit(3, 2, ((130.0, 70.0),), (0,), keep_old_points=True), RemoveEdit(1)]
    assert json.loads((folder / "edits.json").read_text()) == [e.describe() for e in work.edits]
    job = runs.TrackJob(source=str(root / "clip.mp4"), out_dir=tmp_path / "track", prompts=("square",),
                        checkpoint=str(root / "tiny_video.pt"), thresholds=THRESHOLDS, edits=tuple(work.edits),
                        render=False)
    runs.track(job, model)
    for name in ("tracks.txt", "tracks.mots.txt"):
        assert (folder / name).read_bytes() == (tmp_path / "track" / name).read_bytes()
    assert {row.track_id for row in work.tracks()} == {2} and archive.is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert [e["tracked_again"] for e in summary["edits"]] == [0, 10, 0]
    # the folder is a run folder: render, refine and retrack take it (the summary names the video, not its path)
    assert main(["render", str(folder)]) == 2 and "give --video PATH" in capsys.readouterr().err
    assert main(["render", str(folder), "--video", str(root / "clip.mp4")]) == 0 and (folder / "overlay.mp4").is_file()
    assert main(["refine", str(folder), "--video", str(root / "clip.mp4"), "--edits", str(folder / "edits.json"),
                 "--out", str(tmp_path / "refined"), "--no-render", "--quiet"]) == 0
    assert (tmp_path / "refined" / "tracks.mots.txt").read_bytes() == (folder / "tracks.mots.txt").read_bytes()
    assert main(["retrack", str(folder), "--tracker", "sam3video", "--score-threshold", "0.2", "--out",
                 str(tmp_path / "retracked"), "--no-render", "--quiet"]) == 0
    assert (tmp_path / "retracked" / "tracks.txt").read_text()
    work.close()
    assert work.clip is None and not folder.exists()


def test_exemplar_and_object_boxes_export_what_track_writes_with_them(setup, tmp_path, capsys):
    """Exemplar boxes drawn before Track (frame 0) and after it (frame 3) act at the next Track; an object box makes
    a new track. The export (exemplars.json, edits.json) equals ``track --exemplars --edits`` with those files."""
    from sam3video.export.edits import load_edits
    from sam3video.trackers.association.exemplars import load_exemplars

    root, model = setup
    work = AppWork(model, str(root / "tiny_video.pt"), tmp_path / "work", THRESHOLDS)
    work.open(root / "clip.mp4")
    assert work.view(5).shape == (96, 160, 3)  # frame 0 before the first Track
    assert [label for label, _ in work.targets(["square", " ", "square"])] == ["new square"]
    assert "positive exemplar box 1 for 'square' on frame 0" in work.add_exemplar(0, (100, 40, 150, 90), True, "square")
    with pytest.raises(InputError, match="only frame 0 is shown"):
        work.add_exemplar(3, (20, 20, 80, 70), True, "square")
    assert "with 1 exemplar boxes" in work.track(["square"])
    work.add_exemplar(3, (20, 20, 80, 70), True, work.prompt_of(1))
    work.add_exemplar(3, (90, 10, 120, 40), False, "square")
    with pytest.raises(InputError, match="exemplar box 1 is for 'square', not a prompt now"):
        work.track(["red circle"])
    work.track(["square"])
    new_id = work.box(6, (10, 10, 60, 50), "square")
    assert new_id == max(row.track_id for row in work.tracks() if row.track_id != new_id) + 1
    assert work.view(6)[10, 35].tolist() == [255, 200, 0]  # the object box is drawn (top edge)
    folder, _ = work.export(render=False)
    assert [e.describe() for e in work.edits] == [{"frame": 6, "obj_id": new_id, "box": [10.0, 10.0, 60.0, 50.0],
                                                   "prompt": "square"}]  # propagated by the export
    job = runs.TrackJob(source=str(root / "clip.mp4"), out_dir=tmp_path / "track", prompts=("square",),
                        checkpoint=str(root / "tiny_video.pt"), thresholds=THRESHOLDS, render=False,
                        exemplars=tuple(load_exemplars(folder / "exemplars.json")),
                        edits=tuple(load_edits(folder / "edits.json")))
    runs.track(job, model)
    for name in ("tracks.txt", "tracks.mots.txt"):
        assert (folder / name).read_bytes() == (tmp_path / "track" / name).read_bytes()
    assert len(json.loads((folder / "summary.json").read_text())["exemplars"]) == 3
    assert not (folder / "detections.npz").exists()  # the sessions do not compute what exemplars learn
    assert main(["retrack", str(folder), "--out", str(tmp_path / "retracked")]) == 2
    assert "with exemplar boxes keep none; use refine on it" in capsys.readouterr().err
    with pytest.raises(InputError, match="empty or outside"):
        work.box(6, (10, 10, 170, 50), 1)
    with pytest.raises(InputError, match="no track 99"):
        work.box(6, (10, 10, 60, 50), 99)
    work.clear_exemplars()
    assert "exemplar" not in work.track(["square"])
    work.close()


def test_a_tab_refuses_bad_requests_in_one_line(setup, tmp_path):
    root, model = setup
    work = AppWork(model, "tiny", tmp_path / "work", THRESHOLDS)
    with pytest.raises(InputError, match="choose or upload a video first"):
        work.track(["square"])
    long = tmp_path / "long.mp4"
    write_video(long, (np.zeros((16, 16, 3), np.uint8) for _ in range(32)), fps=1)
    with pytest.raises(InputError, match="long.mp4 is 32.0 s: the app takes clips of at most 30 s"):
        work.open(long)
    work.open(root / "clip.mp4")
    with pytest.raises(InputError, match="track a prompt first"):
        work.click(0, 1, 1, True, "square")
    with pytest.raises(InputError, match="type a prompt"):
        work.track([" ", ""])
    with pytest.raises(InputError, match="a prompt is given twice"):
        work.track(["square", "square"])
    work.track(["square"])
    with pytest.raises(InputError, match=r"point \(170, 5\) is outside the 160x96 frame"):
        work.click(0, 170, 5, True, 1)
    with pytest.raises(InputError, match="no track 7"):
        work.click(0, 5, 5, True, 7)
    with pytest.raises(InputError, match="no track 7 to remove"):
        work.remove(7)
    assert work.edits == []  # nothing refused was recorded
    work.close()


def test_app_checks_its_videos_before_serving(tmp_path, capsys):
    assert main(["app", str(tmp_path / "missing.mp4")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"sam3video app: error: video {tmp_path / 'missing.mp4'} does not exist"]
    assert main(["app", "--checkpoint", "demo"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "the page needs a checkpoint with tracker weights" in err[0] and "demo has none" in err[0]
    args = build_parser().parse_args(["app"])
    assert (args.host, args.port, args.checkpoint) == ("127.0.0.1", 7860, None)  # this machine only, by default


def test_the_demo_video_model_is_the_demo_detector_with_the_demo_tracker():
    from sam3video.model.checkpoint import load_model
    from sam3video.model.video_checkpoint import load_for_tracker

    model, tracker = load_for_tracker("demo-video", device="cpu")
    assert tracker == "sam3" and type(model).__name__ == "Sam3VideoModel"
    detector = load_model("demo", device="cpu").state_dict()
    for key, value in model.detector.state_dict().items():
        if ".sam2_convs." not in key:
            assert torch.equal(value, detector[key]), key
    _, image_tracker = load_for_tracker("demo", device="cpu")
    assert image_tracker == "sam3video"  # make demo keeps its tracker


def test_the_server_refuses_big_uploads_and_files_it_does_not_serve(setup):
    import socket
    import urllib.error
    import urllib.request
    import uuid

    from sam3video.app import serve

    _, model = setup
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    page = serve([], "tiny", port=port, block=False, model=model, max_upload_mb=0.001)  # 1048 bytes

    def status(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
        request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
        try:
            return urllib.request.urlopen(request, timeout=30).status
        except urllib.error.HTTPError as error:
            return error.code

    def upload(size: int) -> int:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.mp4\"\r\n"
                f"Content-Type: video/mp4\r\n\r\n").encode() + b"x" * size + f"\r\n--{boundary}--\r\n".encode()
        return status(page.local_url + "gradio_api/upload", body,
                      {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    try:
        assert upload(100) == 200 and upload(5000) == 413
        assert status(page.local_url + "gradio_api/file=/etc/passwd") in (403, 404)
    finally:
        page.close()
