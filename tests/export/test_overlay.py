"""overlay.mp4: annotate() draws track colours in RGB order; OverlayWriter encodes frames, fps and size."""

from fractions import Fraction

import av
import numpy as np
import pytest

from sam3video.detections import Detections
from sam3video.export.overlay import PALETTE, OverlayWriter, annotate, color_for


def _scene(h=96, w=128, track_id=1):
    """Grey frame; one rectangular mask (rows 40:88, cols 20:100) with its box, tracked as ``track_id``."""
    frame = np.full((h, w, 3), 100, np.uint8)
    mask = np.zeros((1, h, w), bool)
    mask[0, 40:88, 20:100] = True
    dets = Detections([[20, 40, 100, 88]], [0.87], [0], mask=mask, tracker_id=[track_id])
    return frame, dets


def test_palette_is_fixed_and_wraps():
    assert color_for(1) == PALETTE[0] == color_for(1 + len(PALETTE))
    assert len(set(PALETTE)) == len(PALETTE)


def test_annotate_blends_mask_draws_box_and_label_in_rgb():
    frame, dets = _scene()
    out = annotate(frame, dets, ["dog"], mask_alpha=0.5)
    assert (frame == 100).all(), "input must not be modified"
    color = np.array(color_for(1))  # E6194B: red, so a BGR mix-up would show
    assert color[0] > color[2]
    np.testing.assert_array_equal(out[70, 60], np.rint(0.5 * 100 + 0.5 * color))  # inside mask, off the box
    np.testing.assert_array_equal(out[40, 60], color)  # on the top edge of the box (thickness 2)
    np.testing.assert_array_equal(out[20, 5], [100, 100, 100])  # far from everything
    label_area = out[:40, 20:128]  # label sits above the box
    assert (label_area != 100).any()


def test_annotate_label_text_and_untracked_colour():
    frame, dets = _scene()
    dets.tracker_id = None
    out = annotate(frame, dets, [], mask_alpha=1.0)
    np.testing.assert_array_equal(out[70, 60], color_for(dets.class_id[0] + 1))
    with pytest.raises(ValueError, match="masks"):
        annotate(np.zeros((10, 10, 3), np.uint8), dets)


def _decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.average_rate, stream.codec_context.name


@pytest.mark.parametrize(
    "fps, rate", [(30000 / 1001, Fraction(30000, 1001)), (29.97, Fraction(2997, 100)), (25.0, Fraction(25))]
)
@pytest.mark.parametrize("codec, decoded_name", [(None, "h264"), ("mpeg4", "mpeg4")])
def test_overlay_video_frames_fps_size_and_colour(tmp_path, fps, rate, codec, decoded_name):
    frame, dets = _scene()
    path = tmp_path / "overlay.mp4"
    with OverlayWriter(path, fps=fps, width=128, height=96, codec=codec) as out:
        for _ in range(7):
            out.write(annotate(frame, dets, ["dog"]))
    assert out.num_frames == 7
    frames, average_rate, name = _decode(path)
    assert (len(frames), average_rate, name) == (7, rate, decoded_name)
    assert frames[0].shape == (96, 128, 3)
    expected = 0.5 * 100 + 0.5 * np.array(color_for(1))
    np.testing.assert_allclose(frames[-1][64:72, 56:64].mean((0, 1)), expected, atol=12)  # lossy, yuv420p


@pytest.mark.parametrize("width, height", [(33, 21), (32, 21), (33, 20)])
def test_odd_sizes_are_padded_to_even(tmp_path, width, height):
    path = tmp_path / "overlay.mp4"
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, :, 1] = 200
    with OverlayWriter(path, fps=10.0, width=width, height=height) as out:
        for _ in range(3):
            out.write(frame)
    frames, _, _ = _decode(path)
    assert len(frames) == 3
    assert frames[0].shape == (height + height % 2, width + width % 2, 3) == out.output_size[::-1] + (3,)
    np.testing.assert_allclose(frames[0][-1, -1], [0, 200, 0], atol=16)  # padding repeats the edge


def test_wrong_frame_shape_is_refused_and_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        with OverlayWriter(tmp_path / "o.mp4", fps=10.0, width=16, height=16) as out:
            out.write(np.zeros((16, 17, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_falls_back_to_mpeg4_without_libx264(tmp_path, monkeypatch):
    real_codec = av.codec.Codec

    def no_x264(name, mode="r"):
        if name == "libx264":
            raise av.codec.codec.UnknownCodecError(name)
        return real_codec(name, mode)

    monkeypatch.setattr(av.codec, "Codec", no_x264)
    with OverlayWriter(tmp_path / "o.mp4", fps=12.5, width=16, height=16) as out:
        out.write(np.zeros((16, 16, 3), np.uint8))
    assert out.codec == "mpeg4"
    frames, rate, name = _decode(tmp_path / "o.mp4")
    assert (len(frames), rate, name) == (1, Fraction(25, 2), "mpeg4")
