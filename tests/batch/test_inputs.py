"""The videos of ``sam3video batch``'s INPUTS (no Ray, no model): files, folders, lists, names, exemplars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sam3video.batch import collect_videos
from sam3video.errors import InputError


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folders_are_searched_recursively(tmp_path):
    """Video files at any depth and folders of frames, sorted; hidden entries, other files and the
    output folder are skipped."""
    root = tmp_path / "in"
    for name in ("b.mp4", "a.MOV", "sub/c.mkv", "notes.json", ".hidden.mp4", ".cache/d.mp4", "out/x/overlay.mp4",
                 "frames/000.jpg", "frames/001.jpg"):
        _touch(root / name)
    videos = collect_videos([root], out_dir=root / "out")
    assert [Path(v.source).relative_to(root).as_posix() for v in videos] == ["a.MOV", "b.mp4", "frames", "sub/c.mkv"]
    assert [v.name for v in videos] == ["a", "b", "frames", "c"]
    assert all(Path(v.source).is_absolute() for v in videos)


def test_list_files_are_relative_to_the_list(tmp_path):
    """One path per line; blank lines and # comments skipped; a listed path that is missing is kept
    (it fails as that video alone); a video given twice is one video."""
    _touch(tmp_path / "clips/one.mp4")
    _touch(tmp_path / "clips/two.mp4")
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists/day.txt"
    listing.write_text("# morning\n../clips/one.mp4\n\n  ../clips/two.mp4  \n../clips/gone.mp4\n")
    videos = collect_videos([listing, tmp_path / "clips/one.mp4"], out_dir=tmp_path / "out")
    assert [v.name for v in videos] == ["one", "two", "gone"]
    assert videos[2].source == str((tmp_path / "clips/gone.mp4").resolve())


def test_names_are_unique_and_earlier_names_are_kept(tmp_path):
    """Same stems get -2, -3; names a manifest already gave (``known``) stay, whatever is added."""
    first, second = _touch(tmp_path / "x/clip.mp4"), _touch(tmp_path / "y/clip.mp4")
    odd = _touch(tmp_path / "z/my clip (1).mp4")
    videos = collect_videos([first, second, odd], out_dir=tmp_path / "out")
    assert [v.name for v in videos] == ["clip", "clip-2", "my_clip_1_"]
    known = {str(second.resolve()): "clip"}  # an earlier batch had only y/clip.mp4
    assert [v.name for v in collect_videos([first, second], tmp_path / "out", known=known)] == ["clip-2", "clip"]


def test_exemplars_come_from_the_video_name(tmp_path):
    _touch(tmp_path / "in/a.mp4")
    _touch(tmp_path / "in/b.mp4")
    (tmp_path / "ex").mkdir()
    (tmp_path / "ex/b.json").write_text(json.dumps([{"frame": 2, "box": [1, 2, 30, 40], "label": "neg"}]))
    a, b = collect_videos([tmp_path / "in"], tmp_path / "out", exemplars_dir=tmp_path / "ex")
    assert a.exemplars == ()
    assert [(e.frame, e.box, e.positive) for e in b.exemplars] == [(2, (1.0, 2.0, 30.0, 40.0), False)]


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing.mp4", "no such file or folder"),
    (lambda root: _touch(root / "notes.json"), "not a video file"),
    (lambda root: (root / "empty").mkdir() or root / "empty", "no videos in"),
])
def test_bad_inputs(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        collect_videos([make(tmp_path)], out_dir=tmp_path / "out")
