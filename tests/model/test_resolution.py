"""``--resolution``: a checkpoint made at one input size runs at another, as transformers runs its custom image size.

A small model's seeded random weights in the official layout, saved at its own 224 px (global blocks' RoPE tables
included, as sam3.pt stores them), are loaded at 112, 168 and 280 px (token grids 8, 12 and 20: one window, windows
padded from 12 to 16 and from 20 to 24) and compared with transformers' ``Sam3VideoModel`` built at that image size
on the same weights: the detector's outputs and the tracker's prompt encoding. At the checkpoint's own size nothing
changes; a stored table that is not the RoPE rule's is refused; both official loops run at another size."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import transformers

from sam3video.cli import main
from sam3video.errors import CheckpointError, ConfigError
from sam3video.model.build import at_resolution, load_config
from sam3video.model.build_video import build_video_model, load_video_config
from sam3video.model.hf_layout import hf_config, to_hf_state_dict
from sam3video.model.sam3_image import FindStage
from sam3video.model.video_checkpoint import load_video_model
from sam3video.model.vitdet import Attention, compute_axial_cis
from tests.helpers import load_tool, small_config

SIZES = (112, 168, 280)


@pytest.fixture(scope="module")
def official_state() -> dict:
    """Seeded random weights of the small model at 224 px, official names (the RoPE tables as the model computes
    them; scaled up so that attention is sharp and positions matter)."""
    torch.manual_seed(0)
    state = build_video_model(load_video_config(small_config())).state_dict()
    return {k: torch.randn_like(v) * 0.3 if v.is_floating_point() else v for k, v in state.items()}


@pytest.fixture(scope="module")
def checkpoint(official_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("resolution") / "small.pt"
    torch.save({"model": official_state}, path)
    return path


def transformers_at(resolution: int, official_state: dict):
    video = load_video_config(small_config())
    config = hf_config(replace(video, detector=at_resolution(video.detector, resolution)))
    model = transformers.Sam3VideoModel(config).eval()
    model.load_state_dict(to_hf_state_dict(official_state), strict=True)
    return model


def detector_outputs(detector, image: torch.Tensor) -> dict:
    with torch.inference_mode():
        out = detector.backbone.forward_image(image)
        out.update(detector.backbone.forward_text(["a red circle"], device="cpu"))
        return detector.forward_grounding(backbone_out=out, find_input=FindStage(img_ids=torch.tensor([0]),
                                          text_ids=torch.tensor([0])), geometric_prompt=detector._get_dummy_prompt())


def largest_difference(ours: dict, theirs) -> float:
    pairs = [(ours["pred_logits"].squeeze(-1), theirs.pred_logits), (ours["pred_boxes_xyxy"], theirs.pred_boxes),
             (ours["presence_logit_dec"], theirs.presence_logits), (ours["pred_masks"], theirs.pred_masks),
             (ours["semantic_seg"], theirs.semantic_seg)]
    return max((a.reshape(b.shape) - b).abs().max().item() / max(1.0, b.abs().max().item()) for a, b in pairs)


def run_transformers(model, detector, image: torch.Tensor):
    """transformers' detector with the padding box (label -10) that makes it run the geometry encoder, as the
    official model always does."""
    ids = detector.backbone.language_backbone.tokenizer(["a red circle"], context_length=32)
    with torch.inference_mode():
        return model.detector_model(pixel_values=image, input_ids=ids, attention_mask=(ids != 0).long(),
                                    input_boxes=torch.zeros(1, 1, 4), input_boxes_labels=torch.full((1, 1), -10))


@pytest.mark.parametrize("resolution", SIZES)
def test_another_size_equals_transformers_at_that_image_size(checkpoint, official_state, resolution):
    ours = load_video_model(checkpoint, small_config(), "cpu", resolution=resolution)
    assert ours.detector.config.resolution == resolution and ours.tracker.image_size == resolution
    assert len(ours.detector.load_report.recomputed) == 2  # the global blocks 1 and 3
    hf = transformers_at(resolution, official_state)
    torch.manual_seed(resolution)
    image = torch.randn(1, 3, resolution, resolution)
    mine = detector_outputs(ours.detector, image)
    assert mine["pred_masks"].shape[-1] == resolution // 14 * 4
    assert largest_difference(mine, run_transformers(hf, ours.detector, image)) <= 1e-4

    side = resolution // 14
    coords = torch.tensor([[[0.2, 0.7], [0.9, 0.1]]]) * resolution  # pixels of the model input
    labels = torch.tensor([[1, 0]])
    with torch.inference_mode():
        sparse, dense = ours.tracker.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        hf_sparse, hf_dense = hf.tracker_model.prompt_encoder(input_points=coords[:, None], input_labels=labels[:, None],
                                                              input_boxes=None, input_masks=None)
        pe, hf_pe = ours.tracker.sam_prompt_encoder.get_dense_pe(), hf.tracker_model.get_image_wide_positional_embeddings()
    assert dense.shape[-2:] == (side, side) and pe.shape[-2:] == (side, side)
    for a, b in ((sparse, hf_sparse), (dense, hf_dense), (pe, hf_pe)):
        assert (a - b.reshape(a.shape)).abs().max().item() <= 1e-5


def test_the_recomputed_tables_matter(checkpoint, official_state):
    """The check above can fail: the global blocks at 168 px with positions not rescaled to the pre-training window
    (the rule's ``rope_interp``) differ from transformers."""
    ours = load_video_model(checkpoint, small_config(), "cpu", resolution=168)
    for module in ours.detector.modules():
        if isinstance(module, Attention) and module.freqs_cis.shape[0] == 12 * 12:
            module.freqs_cis = compute_axial_cis(module.head_dim, 12, 12)
    torch.manual_seed(168)
    image = torch.randn(1, 3, 168, 168)
    difference = largest_difference(detector_outputs(ours.detector, image),
                                    run_transformers(transformers_at(168, official_state), ours.detector, image))
    assert difference > 1e-2


def test_the_checkpoint_size_changes_nothing(checkpoint):
    native = load_video_model(checkpoint, small_config(), "cpu")
    same = load_video_model(checkpoint, small_config(), "cpu", resolution=224)
    assert not same.detector.load_report.recomputed
    a, b = native.state_dict(), same.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_table_that_is_not_the_rule_is_refused(official_state, tmp_path):
    key = "detector.backbone.vision_backbone.trunk.blocks.1.attn.freqs_cis"
    state = {**official_state, key: official_state[key] * 1j}
    torch.save({"model": state}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="not the RoPE table of a 16x16 token grid"):
        load_video_model(tmp_path / "odd.pt", small_config(), "cpu", resolution=168)


@pytest.mark.parametrize("resolution", [150, 98, 0, True])
def test_sizes_that_cannot_be_built_are_one_line(resolution):
    with pytest.raises(ConfigError, match="multiple of the patch size 14 of at least 112"):
        at_resolution(load_config("sam3"), resolution)


def test_bad_resolution_from_the_command_line_is_exit_2(tmp_path, capsys):
    assert main(["track", "demos/shapes/video.mp4", "--prompt", "yellow circle", "--resolution", "150",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resolution must be a multiple of the patch size 14" in err
    assert not (tmp_path / "out" / "summary.json").exists()


def sam31_checkpoint(folder) -> tuple:
    check = load_tool("check_sam31_loop_parity")
    torch.save({"model": check.load_model(seed=0).state_dict()}, folder / "sam31.pt")
    return folder / "sam31.pt", check.CONFIG


@pytest.mark.parametrize("version", ["sam3", "sam3.1"])
def test_both_loops_run_at_another_size(version, checkpoint, tmp_path):
    """The small SAM 3 model and the tiny SAM 3.1 one (seeded weights, official layout) at 168 px: a click starts an
    object on frame 1 (after a text prompt that finds nothing) and propagation both ways gives its mask at the video's size on every frame."""
    from sam3video.session import VideoSession

    path, config = (checkpoint, small_config()) if version == "sam3" else sam31_checkpoint(tmp_path)
    model = load_video_model(path, config, "cpu", resolution=168)
    tracker = getattr(model.tracker, "model", model.tracker)  # SAM 3.1: tracker.model
    assert tracker.image_size == 168 and len(model.detector.load_report.recomputed) == 2
    video = np.random.default_rng(0).integers(0, 255, (4, 48, 64, 3), dtype=np.uint8)
    session = VideoSession(model, video, memory_dtype=torch.float32, source_fps=10)
    session.add_prompt(0, text="a red circle")  # random weights: no detection reaches the official thresholds
    session.add_prompt(1, points=[[30, 20]], point_labels=[1], obj_id=1)
    frames = sorted(session.propagate(direction="both"), key=lambda f: f.frame_index)
    assert [f.frame_index for f in frames] == [0, 1, 2, 3]
    assert all(f.detections.mask.shape[1:] == (48, 64) for f in frames)
    assert list(frames[1].detections.tracker_id) == [1]
