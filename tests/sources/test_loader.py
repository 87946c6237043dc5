"""Frame loader: every backend and source kind gives RGB frames in order with the right timing."""

import itertools

import numpy as np
import pytest
from PIL import Image

from sam3video.errors import InputError
from sam3video.sources.loader import Frame, Sampling, iter_windows, open_video, sample
from sam3video.sources import backends, loader
from tests.helpers import index_frame, read_index, write_video

BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in loader.available_backends(), reason=f"{name} not installed"))
    for name in loader.BACKENDS
]
VFR_TIMES = [i * 0.1 for i in range(10)] + [1.0 + i * 0.025 for i in range(20)]  # 10 fps, then 40 fps


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Small clips whose frames show their index: 2.5 s at 30 fps (mp4, mkv), 29.97 fps, VFR, red."""
    root = tmp_path_factory.mktemp("videos")
    clip = [index_frame(i) for i in range(75)]
    return {
        "clip": write_video(root / "clip.mp4", clip, 30),
        "mkv": write_video(root / "clip.mkv", clip, 30),
        "ntsc": write_video(root / "ntsc.mp4", clip[:10], 30000 / 1001),
        "vfr": write_video(root / "vfr.mp4", clip[:30], 20, timestamps=VFR_TIMES),
        "red": write_video(root / "red.mp4", [index_frame(0, color=(255, 0, 0))] * 3, 30),
        "zero": write_video(root / "zero.mp4", [], 30),
    }


def indices(frames):
    return [read_index(frame.image) for frame in frames]


@pytest.mark.parametrize("backend", BACKENDS)
def test_file_frames_in_order_with_info(videos, backend):
    reader = open_video(videos["clip"], backend=backend)
    assert (reader.info.backend, reader.info.fps, reader.info.num_frames) == (backend, 30.0, 75)
    assert (reader.info.width, reader.info.height) == (128, 64)
    assert reader.info.duration == pytest.approx(2.5, abs=0.04)
    frames = list(reader)
    assert reader.num_output_frames == len(frames) == 75
    assert indices(frames) == list(range(75))
    assert [f.index for f in frames] == [f.source_index for f in frames] == list(range(75))
    assert [f.timestamp for f in frames] == pytest.approx([i / 30 for i in range(75)], abs=1e-3)
    assert all(f.image.shape == (64, 128, 3) and f.image.dtype == np.uint8 for f in frames)
    assert {f.window for f in frames} == {0}


@pytest.mark.parametrize("backend", BACKENDS)
def test_fps_is_not_truncated(videos, backend):
    info = open_video(videos["ntsc"], backend=backend).info
    assert isinstance(info.fps, float) and info.fps == pytest.approx(29.97, abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_red_decodes_as_red(videos, backend):
    image = next(iter(open_video(videos["red"], backend=backend))).image
    r, g, b = image[32:, :].reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 50 and b < 50


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".avi", ".webm"])
def test_containers(tmp_path, suffix):
    path = write_video(tmp_path / f"v{suffix}", [index_frame(i) for i in range(12)], 24)
    frames = list(open_video(path))
    assert indices(frames) == list(range(12))
    assert [f.timestamp for f in frames] == pytest.approx([i / 24 for i in range(12)], abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fps_subsampling_keeps_every_third_frame(videos, backend):
    reader = open_video(videos["clip"], backend=backend, fps=10)
    frames = list(reader)
    assert [f.source_index for f in frames] == list(range(0, 75, 3))
    assert indices(frames) == list(range(0, 75, 3))
    assert [f.index for f in frames] == list(range(25)) and reader.num_output_frames == 25
    assert [f.timestamp for f in frames] == pytest.approx([k / 10 for k in range(25)], abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_millisecond_timestamps_subsample_exactly(videos, backend):
    """Matroska rounds 1/30 s steps to ms (frame 4 at 0.133 s < 4/30 s): still every 2nd frame at 15 fps."""
    frames = list(open_video(videos["mkv"], backend=backend, fps=15))
    assert [f.source_index for f in frames] == list(range(0, 75, 2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_uses_timestamps(videos, backend):
    frames = list(open_video(videos["vfr"], backend=backend))
    assert [f.timestamp for f in frames] == pytest.approx(VFR_TIMES, abs=1e-3)
    kept = list(open_video(videos["vfr"], backend=backend, fps=10))
    assert [f.source_index for f in kept] == list(range(10)) + [10, 14, 18, 22, 26]  # by time, not stride
    assert indices(kept) == [f.source_index for f in kept]
    assert [f.timestamp for f in kept] == pytest.approx([k / 10 for k in range(15)], abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_start_end(videos, backend):
    reader = open_video(videos["clip"], backend=backend, start=0.5, end=1.5)
    frames = list(reader)
    assert [f.source_index for f in frames] == indices(frames) == list(range(15, 45))
    assert [f.index for f in frames] == list(range(30)) and reader.num_output_frames == 30
    assert frames[0].timestamp == pytest.approx(0.5, abs=1e-3)


def test_windows(videos):
    reader = open_video(videos["clip"], window_seconds=1.0)
    windows = [(w, [f.source_index for f in group]) for w, group in iter_windows(reader)]
    assert windows == [(0, list(range(30))), (1, list(range(30, 60))), (2, list(range(60, 75)))]


def test_windows_count_from_start_after_subsampling(videos):
    frames = list(open_video(videos["clip"], fps=10, start=0.5, window_seconds=0.5))
    assert [f.source_index for f in frames] == list(range(15, 75, 3))
    assert [f.window for f in frames] == [k // 5 for k in range(20)]


def test_iter_windows_is_lazy():
    pulled = []

    def live():
        for i in itertools.count():
            pulled.append(i)
            yield index_frame(i % 256)

    reader = open_video(live(), source_fps=10, window_seconds=1.0)
    first_window, group = next(iter_windows(reader))
    assert first_window == 0 and next(group).source_index == 0
    assert len(pulled) <= 2  # nothing is decoded ahead of the caller


def test_folder_natural_sort(tmp_path):
    for i in [1, 2, 10, 3, 11]:
        Image.fromarray(index_frame(i)).save(tmp_path / f"frame{i}.png")
    Image.fromarray(index_frame(20)).save(tmp_path / "frame20.JPG", quality=95)
    (tmp_path / "notes.txt").write_text("not a frame")
    reader = open_video(tmp_path, source_fps=5)
    assert (reader.info.backend, reader.info.num_frames, reader.info.fps) == ("folder", 6, 5.0)
    frames = list(reader)
    assert indices(frames) == [1, 2, 3, 10, 11, 20]
    assert [f.timestamp for f in frames] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_folder_with_mixed_sizes(tmp_path):
    Image.fromarray(index_frame(0)).save(tmp_path / "a1.png")
    Image.fromarray(index_frame(1, width=160)).save(tmp_path / "a2.png")
    with pytest.raises(InputError, match="differs"):
        list(open_video(tmp_path))


def test_numpy_input():
    array = np.stack([index_frame(i) for i in range(12)])
    reader = open_video(array, fps=10, source_fps=20)
    assert (reader.info.fps, reader.info.num_frames, reader.info.duration) == (20.0, 12, 0.6)
    frames = list(reader)
    assert [f.source_index for f in frames] == list(range(0, 12, 2)) and reader.num_output_frames == 6
    assert all(np.array_equal(f.image, array[f.source_index]) for f in frames)
    assert open_video(array).info.fps == 30.0


def test_iterator_input_with_unknown_length():
    reader = open_video(index_frame(i) for i in range(7))
    assert reader.info.num_frames is None and reader.num_output_frames is None
    assert reader.info.backend == "iterable" and (reader.info.width, reader.info.height) == (128, 64)
    assert indices(reader) == list(range(7))
    with pytest.raises(InputError, match="only once"):
        list(reader)


def test_list_input_can_be_read_twice():
    reader = open_video([index_frame(i) for i in range(4)])
    assert reader.num_output_frames == 4 and indices(reader) == indices(reader) == [0, 1, 2, 3]


def test_iterator_with_own_timestamps():
    items = ((t, index_frame(i)) for i, t in enumerate(VFR_TIMES))
    frames = list(open_video(items, fps=10))
    assert [f.source_index for f in frames] == list(range(10)) + [10, 14, 18, 22, 26]


def test_bad_frame_in_stream():
    frames = [index_frame(0), index_frame(1).astype(np.float32)]
    with pytest.raises(InputError, match="frame 1: expected an \\(H, W, 3\\) uint8"):
        list(open_video(iter(frames)))


def test_sample_is_lazy_and_stops_at_end():
    stamps = ((i, i / 30, None) for i in itertools.count())  # endless live source
    kept = list(sample(stamps, Sampling(fps=7.5, end=1.0)))
    assert [s[1] for s in kept] == [0, 4, 8, 12, 16, 20, 24, 28]


def test_sample_ntsc_to_10_fps_keeps_the_time_grid():
    stamps = [(i, i * 1001 / 30000, None) for i in range(300)]
    times = [s[2] for s in sample(stamps, Sampling(fps=10))]
    assert len(times) == 100  # 10.01 s of video
    assert all(k / 10 <= t < k / 10 + 1001 / 30000 for k, t in enumerate(times))


def test_forced_backend_not_installed(videos, monkeypatch):
    monkeypatch.setattr(backends, "available_backends", lambda: ("pyav",))
    with pytest.raises(InputError, match="'opencv' is not installed"):
        open_video(videos["clip"], backend="opencv")
    with pytest.raises(InputError, match="unknown video backend"):
        open_video(videos["clip"], backend="ffmpeg")


def test_auto_tries_the_next_backend(videos, monkeypatch):
    if not {"pyav", "opencv"} <= set(loader.available_backends()):
        pytest.skip("needs PyAV and OpenCV")

    def refuse(path):
        raise InputError("refused")

    monkeypatch.setattr(backends, "available_backends", lambda: ("pyav", "opencv"))
    assert open_video(videos["clip"]).info.backend == "pyav"
    monkeypatch.setitem(backends._FILE_BACKENDS, "pyav", (refuse, None))
    assert open_video(videos["clip"]).info.backend == "opencv"


def _text_as_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    return path


def _empty_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def _text_only_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    return tmp_path


@pytest.mark.parametrize(
    ("make_source", "kwargs", "message"),
    [
        (lambda tmp, v: tmp / "missing.mp4", {}, "no such file"),
        (lambda tmp, v: _text_as_mp4(tmp), {}, "not a readable video"),
        (lambda tmp, v: v["zero"], {}, "no video stream|no decodable frames|not a readable video"),
        (lambda tmp, v: _empty_dir(tmp), {}, "no JPEG or PNG"),
        (lambda tmp, v: _text_only_dir(tmp), {}, "no JPEG or PNG"),
        (lambda tmp, v: np.zeros((4, 8, 8), np.uint8), {}, "expected a \\(T, H, W, 3\\) uint8"),
        (lambda tmp, v: np.zeros((4, 8, 8, 3), np.float32), {}, "expected a \\(T, H, W, 3\\) uint8"),
        (lambda tmp, v: np.zeros((4, 8, 8, 4), np.uint8), {}, "expected a \\(T, H, W, 3\\) uint8"),
        (lambda tmp, v: np.zeros((0, 8, 8, 3), np.uint8), {}, "T >= 1"),
        (lambda tmp, v: iter([]), {}, "empty"),
        (lambda tmp, v: 5, {}, "cannot read video from a int"),
        (lambda tmp, v: v["clip"], {"start": 1.0, "end": 1.0}, "must be before end"),
        (lambda tmp, v: v["clip"], {"start": 5.0}, "beyond the end"),
        (lambda tmp, v: v["clip"], {"start": -1.0}, "start must be >= 0"),
        (lambda tmp, v: v["clip"], {"fps": 0}, "fps must be > 0"),
        (lambda tmp, v: v["clip"], {"fps": -5}, "fps must be > 0"),
        (lambda tmp, v: v["clip"], {"window_seconds": 0}, "window_seconds"),
        (lambda tmp, v: v["clip"], {"window_seconds": 31}, "window_seconds"),
        (lambda tmp, v: [index_frame(0)], {"source_fps": 0}, "source_fps"),
    ],
)
def test_bad_input(tmp_path, videos, make_source, kwargs, message):
    with pytest.raises(InputError, match=message) as error:
        open_video(make_source(tmp_path, videos), **kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_file_with_forced_backend(tmp_path, backend):
    with pytest.raises(InputError, match="not a readable video"):
        open_video(_text_as_mp4(tmp_path), backend=backend)


def test_start_beyond_end_of_a_stream_of_unknown_length():
    reader = open_video((index_frame(i) for i in range(10)), start=2.0)
    with pytest.raises(InputError, match="no frame between start=2.0 s and end=None s"):
        list(reader)


def test_frame_is_frozen(videos):
    frame = next(iter(open_video(videos["clip"])))
    assert isinstance(frame, Frame)
    with pytest.raises(AttributeError):
        frame.window = 3
