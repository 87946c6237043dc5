"""Atomic output: success renames, any exception (KeyboardInterrupt too) leaves no final and no temp file."""

import os

import numpy as np
import pytest

from sam3video.detections import Detections
from sam3video.errors import InputError
from sam3video.export.atomic import TEMP_MARKER, atomic_open, atomic_path
from sam3video.export.mot import MOTWriter
from sam3video.export.mots import MOTSWriter
from sam3video.export.overlay import OverlayWriter
from sam3video.export.summary import write_summary


class Boom(Exception):
    pass


def _dets(h=16, w=20):
    mask = np.zeros((1, h, w), bool)
    mask[0, 2:8, 3:9] = True
    return Detections([[3, 2, 9, 8]], [0.9], [0], mask=mask, tracker_id=[1])


def test_atomic_open_writes_and_leaves_no_temp(tmp_path):
    with atomic_open(tmp_path / "a.txt") as f:
        f.write("hello\n")
        assert not (tmp_path / "a.txt").exists()  # not visible under its final name while writing
        (temp,) = [p for p in tmp_path.iterdir()]
        assert temp.name.startswith(".a.txt" + TEMP_MARKER)
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_file_gets_umask_permissions_not_0600(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_open(tmp_path / "a.txt") as f:
        f.write("x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
@pytest.mark.parametrize("existing", [None, "old content\n"])
def test_atomic_open_failure_keeps_previous_state(tmp_path, error, existing):
    final = tmp_path / "out.txt"
    if existing is not None:
        final.write_text(existing)
    with pytest.raises(error):
        with atomic_open(final) as f:
            f.write("partial")
            raise error()
    assert os.listdir(tmp_path) == ([] if existing is None else ["out.txt"])
    if existing is not None:
        assert final.read_text() == existing


def test_atomic_path_failure_removes_temp(tmp_path):
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "v.bin") as temp:
            temp.write_bytes(b"123")
            raise Boom
    assert os.listdir(tmp_path) == []


def test_atomic_open_rejects_read_mode_and_missing_directory(tmp_path):
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "a.txt", "r"):
            pass
    with pytest.raises(InputError, match="does not exist"):
        with atomic_open(tmp_path / "missing" / "a.txt"):
            pass


def _use_mot(path, body):
    with MOTWriter(path) as w:
        w.write(0, _dets())
        body()


def _use_mots(path, body):
    with MOTSWriter(path) as w:
        w.write(0, _dets())
        body()


def _use_overlay(path, body):
    with OverlayWriter(path, fps=25.0, width=20, height=16) as w:
        for _ in range(3):
            w.write(np.zeros((16, 20, 3), np.uint8))
        body()


WRITERS = {"tracks.txt": _use_mot, "tracks.mots.txt": _use_mots, "overlay.mp4": _use_overlay}


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_interrupted_writer_leaves_no_file(tmp_path, name, error):
    def fail():
        raise error()

    with pytest.raises(error):
        WRITERS[name](tmp_path / name, fail)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_completed_writer_leaves_only_the_final_file(tmp_path, name):
    WRITERS[name](tmp_path / name, lambda: None)
    assert os.listdir(tmp_path) == [name]
    assert (tmp_path / name).stat().st_size > 0


def test_write_summary_replaces_atomically(tmp_path):
    final = tmp_path / "summary.json"
    write_summary(final, {"a": 1})
    with pytest.raises(TypeError):  # not JSON-serialisable: the old summary stays
        write_summary(final, {"bad": object()})
    assert os.listdir(tmp_path) == ["summary.json"]
    assert final.read_text() == '{\n  "a": 1\n}\n'

