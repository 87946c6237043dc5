"""load_video_model: official-layout checkpoints (detector.* + tracker.*) into Sam3VideoModel, strictly."""

import pytest
import torch

from sam3video.errors import CheckpointError
from sam3video.model.build import build_model
from sam3video.model.build_video import build_video_model, load_video_config
from sam3video.model.checkpoint import check_state_dict
from sam3video.model.video_checkpoint import load_video_model, video_state_dict
from tests.conftest import official_video_rows


@pytest.fixture(scope="module")
def tiny_state_dict():
    torch.manual_seed(3)
    return {k: v.clone() for k, v in build_video_model("tiny").state_dict().items()}


def assert_loaded(model, sd):
    got = model.state_dict()
    assert set(got) == set(sd)
    unequal = [k for k in sd if not torch.equal(got[k], sd[k].float() if sd[k].is_floating_point() else sd[k])]
    assert unequal == []
    assert not model.training
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("layout", ["official", "plain", "safetensors"])
def test_loads_every_tensor(tmp_path, tiny_state_dict, layout):
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "sam3.safetensors"
        save_file({k: v.contiguous() for k, v in tiny_state_dict.items()}, str(path))
    else:
        path = tmp_path / "sam3.pt"
        torch.save({"model": tiny_state_dict} if layout == "official" else tiny_state_dict, path)
    model = load_video_model(path, config="tiny", device="cpu")
    assert_loaded(model, tiny_state_dict)
    assert model.config == load_video_config("tiny")


def test_config_saved_in_checkpoint_and_half_precision(tmp_path, tiny_state_dict):
    video = load_video_config("tiny")
    config = {**video.detector.to_dict(), "tracker": video.tracker.to_dict()}
    half = {k: v.half() if v.is_floating_point() else v for k, v in tiny_state_dict.items()}
    torch.save({"model": half, "config": config}, tmp_path / "sam3.pt")
    model = load_video_model(tmp_path / "sam3.pt", device="cpu")  # config from the checkpoint
    assert model.config == video
    assert_loaded(model, half)


def test_missing_or_misshaped_tensor_is_named(tmp_path, tiny_state_dict):
    sd = dict(tiny_state_dict)
    del sd["tracker.no_obj_ptr"]
    torch.save({"model": sd}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"1 missing \(tracker\.no_obj_ptr\)"):
        load_video_model(tmp_path / "missing.pt", config="tiny", device="cpu")
    sd = {**tiny_state_dict, "tracker.maskmem_tpos_enc": torch.zeros(6, 1, 1, 16)}
    torch.save({"model": sd}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatch \(tracker\.maskmem_tpos_enc \(6, 1, 1, 16\) vs model "
                                              r"\(7, 1, 1, 16\)\)"):
        load_video_model(tmp_path / "shape.pt", config="tiny", device="cpu")


def test_image_only_checkpoints_are_refused(tmp_path, tiny_state_dict):
    torch.manual_seed(0)
    torch.save(build_model("tiny").state_dict(), tmp_path / "image.pt")
    detector_only = {k: v for k, v in tiny_state_dict.items() if k.startswith("detector.")}
    torch.save({"model": detector_only}, tmp_path / "detector.pt")
    for path in (tmp_path / "image.pt", tmp_path / "detector.pt", "demo"):
        with pytest.raises(CheckpointError, match=r"has no tracker weights \(no tracker\.\* tensors\)") as e:
            load_video_model(path, config="tiny", device="cpu")
        assert "\n" not in str(e.value)


def test_full_size_key_check_on_meta():
    """The loader's checks on sam3.pt's 1465 tensors (as meta tensors of the TSV's shapes and dtypes)."""
    with torch.device("meta"):
        model = build_video_model("sam3")
    sd = {name: torch.empty([] if shape == "scalar" else [int(n) for n in shape.split("x")],
                            dtype=getattr(torch, dtype), device="meta")
          for name, shape, dtype in official_video_rows()}
    tensors, not_tensors = video_state_dict({"model": sd})
    assert len(tensors) == 1465 and not_tensors == {}
    check_state_dict(model, tensors)
    name = "tracker.sam_mask_decoder.conv_s0.weight"
    with pytest.raises(CheckpointError, match=rf"1 missing \({name}\)"):
        check_state_dict(model, {k: v for k, v in tensors.items() if k != name})
    with pytest.raises(CheckpointError, match="has no tracker weights"):
        video_state_dict({k: v for k, v in sd.items() if not k.startswith("tracker.")})
