"""The transformers checkpoint (``Sam3VideoModel``'s ``model.safetensors``) loads into the official names, tested
against transformers itself: a small ``Sam3VideoModel`` holding seeded random weights in the official layout is
saved with ``save_pretrained`` and loaded back by us (every tensor equal), the detector's outputs equal
transformers' own (text prompts with the padding box that makes transformers run the geometry encoder, as the
official model always does; without it they differ), the tracker's modules equal transformers' module by
module; the rules reproduce the reference table of the released size; bad files are one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import transformers

from sam3video.cli import main
from sam3video.errors import CheckpointError, InputError
from sam3video.model.build_video import build_video_model, load_video_config
from sam3video.model.checkpoint import load_model
from sam3video.model.hf_layout import DUPLICATES, hf_config, hf_sources, to_hf_state_dict
from sam3video.model.sam3_image import FindStage
from sam3video.model.video_checkpoint import load_video_model
from tests.helpers import small_config

DATA = Path(__file__).parent.parent / "data" / "hf"
DEMO_VIDEO = Path(__file__).parent.parent.parent / "demos" / "shapes" / "video.mp4"


@pytest.fixture(scope="module")
def official_state() -> dict:
    """Seeded random weights of the small model, official names (every float tensor drawn anew; the RoPE
    tables as the model computes them)."""
    torch.manual_seed(0)
    model = build_video_model(load_video_config(small_config()))
    state = model.state_dict()
    for key, value in state.items():
        if value.is_floating_point():
            state[key] = torch.randn_like(value) * 0.3
    return state


@pytest.fixture(scope="module")
def hf_dir(official_state, tmp_path_factory) -> Path:
    """``save_pretrained`` of transformers' ``Sam3VideoModel`` holding ``official_state`` (loaded strictly)."""
    model = transformers.Sam3VideoModel(hf_config(load_video_config(small_config()))).eval()
    missing, unexpected = model.load_state_dict(to_hf_state_dict(official_state), strict=True)
    assert not missing and not unexpected
    folder = tmp_path_factory.mktemp("hf") / "sam3-small"
    model.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    return folder


@pytest.fixture(scope="module")
def hf_model(hf_dir):
    return transformers.Sam3VideoModel.from_pretrained(hf_dir).eval()


@pytest.fixture(scope="module")
def ours(hf_dir):
    return load_video_model(hf_dir / "model.safetensors", small_config(), "cpu")


def test_every_tensor_of_the_file_loads_back_under_its_official_name(ours, official_state):
    report = ours.detector.load_report
    assert report.version == "transformers"
    assert sorted(report.absent) == sorted(k.removeprefix("detector.") for k in official_state
                                           if ".geometry_encoder.points_" in f".{k}")
    assert len(report.absent) == 6 and report.num_loaded == len(official_state) - 6
    loaded = ours.state_dict()
    assert set(loaded) == set(official_state)
    for key, value in official_state.items():
        if ".geometry_encoder.points_" in key:
            assert not loaded[key].any(), key  # not in a transformers file: zeros, and refused
        elif key.endswith("trunk.pos_embed"):
            assert torch.equal(loaded[key][:, 1:], value[:, 1:]) and not loaded[key][:, :1].any()
        else:
            assert torch.equal(loaded[key], value), key


def test_the_folder_and_the_image_model_load_too(hf_dir, official_state):
    config = {k: v for k, v in small_config().items() if k != "tracker"}
    image = load_model(hf_dir, config, "cpu")
    assert image.load_report.left_out  # the tracker's tensors, not the image model's
    for key, value in image.state_dict().items():
        if "points_" not in key and not key.endswith("pos_embed"):
            assert torch.equal(value, official_state["detector." + key]), key


def _tokens(model, prompt: str):
    ids = model.backbone.language_backbone.tokenizer([prompt], context_length=32)
    return ids, (ids != 0).long()


def test_the_detector_equals_transformers_with_the_padding_box(ours, hf_model):
    detector = ours.detector
    torch.manual_seed(3)
    image = torch.randn(1, 3, 224, 224)
    ids, mask = _tokens(detector, "a red circle")
    with torch.inference_mode():
        out = detector.backbone.forward_image(image)
        out.update(detector.backbone.forward_text(["a red circle"], device="cpu"))
        ours_out = detector.forward_grounding(backbone_out=out, find_input=FindStage(img_ids=torch.tensor([0]),
                                              text_ids=torch.tensor([0])), geometric_prompt=detector._get_dummy_prompt())
        padded = hf_model.detector_model(pixel_values=image, input_ids=ids, attention_mask=mask,
                                         input_boxes=torch.zeros(1, 1, 4), input_boxes_labels=torch.full((1, 1), -10))
        text_only = hf_model.detector_model(pixel_values=image, input_ids=ids, attention_mask=mask)
    pairs = {"logits": (ours_out["pred_logits"].squeeze(-1), padded.pred_logits, text_only.pred_logits),
             "boxes": (ours_out["pred_boxes_xyxy"], padded.pred_boxes, text_only.pred_boxes),
             "presence": (ours_out["presence_logit_dec"], padded.presence_logits, text_only.presence_logits),
             "masks": (ours_out["pred_masks"], padded.pred_masks, text_only.pred_masks),
             "semantic": (ours_out["semantic_seg"], padded.semantic_seg, text_only.semantic_seg)}
    for name, (a, b, _) in pairs.items():
        scale = max(1.0, b.abs().max().item())
        assert (a.reshape(b.shape) - b).abs().max().item() <= 1e-4 * scale, name
    # text only, transformers skips the geometry encoder (and its CLS token) that the official model runs
    a, _, c = pairs["logits"]
    assert (a.reshape(c.shape) - c).abs().max().item() > 1e-3


def test_the_tracker_modules_equal_transformers(ours, hf_model):
    tracker, hf = ours.tracker, hf_model.tracker_model
    torch.manual_seed(4)

    def close(a, b, name):
        assert (a - b.reshape(a.shape)).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item()), name

    with torch.inference_mode():
        pix, masks = torch.randn(2, 128, 16, 16), torch.randn(2, 1, 256, 256) * 10
        memory = tracker.maskmem_backbone(pix, masks, skip_mask_sigmoid=True)
        features, position = hf.memory_encoder(pix, masks)
        close(memory["vision_features"], features, "memory encoder")
        close(memory["vision_pos_enc"][0], position, "memory encoder position")
        src, src_pos = torch.randn(256, 2, 128), torch.randn(256, 2, 128)
        mem, mem_pos = torch.randn(2 * 256 + 4, 2, 64), torch.randn(2 * 256 + 4, 2, 64)
        attended = tracker.transformer.encoder(src=src, prompt=mem, src_pos=src_pos, prompt_pos=mem_pos,
                                               num_obj_ptr_tokens=4)["memory"]
        close(attended, hf.memory_attention(src, mem, src_pos, mem_pos, num_object_pointer_tokens=4)[0].transpose(0, 1),
              "memory attention")
        coords = torch.tensor([[[60.0, 100.0], [150.0, 40.0]]]).repeat(2, 1, 1)
        labels = torch.tensor([[1, 0]]).repeat(2, 1)
        sparse, dense = tracker.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        hf_sparse, hf_dense = hf.prompt_encoder(input_points=coords[:, None], input_labels=labels[:, None],
                                                input_boxes=None, input_masks=None)
        close(sparse, hf_sparse, "prompt encoder sparse")
        close(dense, hf_dense, "prompt encoder dense")
        embeddings, pe = torch.randn(2, 128, 16, 16), tracker.sam_prompt_encoder.get_dense_pe()
        levels = [torch.randn(2, 128, 64, 64), torch.randn(2, 128, 32, 32)]
        decoder = tracker.sam_mask_decoder
        high = [decoder.conv_s0(levels[0]), decoder.conv_s1(levels[1])]
        for multimask in (True, False):
            ours_masks, ours_iou, _, ours_score = decoder(
                image_embeddings=embeddings, image_pe=pe, sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=multimask, repeat_image=False, high_res_features=high)
            hf_masks, hf_iou, _, hf_score = hf.mask_decoder(
                image_embeddings=embeddings, image_positional_embeddings=pe.repeat(2, 1, 1, 1),
                sparse_prompt_embeddings=hf_sparse, dense_prompt_embeddings=hf_dense, multimask_output=multimask,
                high_resolution_features=[hf.mask_decoder.conv_s0(levels[0]), hf.mask_decoder.conv_s1(levels[1])])
            close(ours_masks, hf_masks, f"mask decoder masks (multimask {multimask})")
            close(ours_iou, hf_iou, "mask decoder IoU")
            close(ours_score, hf_score, "mask decoder object score")


def test_point_prompts_to_a_transformers_detector_are_refused(ours):
    encoder = ours.detector.geometry_encoder
    points = torch.rand(1, 1, 2)
    with pytest.raises(InputError, match="no point projections: point prompts to the detector need the official"):
        encoder._encode_points(points, torch.zeros(1, 1, dtype=torch.bool), torch.ones(1, 1), torch.randn(1, 128, 16, 16))


def test_the_rules_reproduce_the_reference_table_of_the_released_model():
    """``official_to_hf.tsv`` (every official tensor of sam3.pt and its transformers name, ``shared/reference``)."""
    rows = list(csv.reader(open(DATA / "official_to_hf.tsv"), delimiter="\t"))[1:]
    expected: dict[str, set] = {}
    for official, hf, op in rows:
        expected.setdefault(official, set()).add((hf, op))
    assert len(expected) == 1464 and len(rows) == 1837
    sources = hf_sources(expected)
    for official, entries in expected.items():
        source = sources[official]
        got = {"copy": lambda s: {(s.keys[0], "copy")}, "transpose": lambda s: {(s.keys[0], "transpose")},
               "cls_row": lambda s: {(s.keys[0], "no_cls_row")}, "row": lambda s: {(s.keys[0], f"row{s.index}")},
               "qkv": lambda s: {(k, p) for k, p in zip(s.keys, "qkv")}}.get(source.op, lambda s: set())(source)
        kept = {(hf, op) for hf, op in entries if op != "dup" and not op.startswith("drop")}
        assert got == kept, official
        if source.op in ("computed", "absent"):
            assert all(op.startswith("drop") for _, op in entries), official
    dups = {hf for entries in expected.values() for hf, op in entries if op == "dup"}
    assert dups == set(DUPLICATES)


def test_the_config_of_the_released_size_is_transformers_default():
    """``hf_config`` of the official ``sam3`` size gives transformers' ``Sam3VideoConfig()`` (the released
    facebook/sam3) field for field; a memory width transformers cannot express is refused."""
    def fields(config):
        return {k: fields(v) if isinstance(v, dict) else v for k, v in config.items()
                if k not in ("transformers_version", "_name_or_path", "architectures", "dtype")}

    assert fields(hf_config(load_video_config("sam3")).to_dict()) == fields(transformers.Sam3VideoConfig().to_dict())
    with pytest.raises(ValueError, match="memory width at 64"):
        hf_config(load_video_config("tiny"))


def _save(tensors: dict, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d, s: _save({"encoder.layer.0.weight": torch.zeros(2)}, d / "model.safetensors"), "does not fit"),
    (lambda d, s: (d / "model.safetensors").write_bytes((s / "model.safetensors").read_bytes()[:5000]),
     "truncated or not a safetensors file"),
    (lambda d, s: (_save({"detector_model.text_projection.weight": torch.zeros(2)}, d / "model.safetensors"),
                   (d / "config.json").write_text(json.dumps({"model_type": "bert"}))), "of another model"),
    (lambda d, s: _save({"detector_model.text_projection.weight": torch.zeros(2, 2)}, d / "model.safetensors"),
     "lacks"),
])
def test_bad_transformers_files_are_one_line(tmp_path, hf_dir, capsys, make, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    make(folder, hf_dir)
    code = main(["track", str(DEMO_VIDEO), "--prompt", "x", "--checkpoint", str(folder / "model.safetensors"),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_int_tensors_where_floats_belong_are_refused(tmp_path, hf_dir, official_state):
    """A dtype surprise (an integer tensor for a weight) is named; fp16 / bf16 files load as fp32."""
    hf = to_hf_state_dict(official_state)
    key = "detector_model.text_projection.weight"
    _save({**hf, key: hf[key].to(torch.int32)}, tmp_path / "int" / "model.safetensors")
    with pytest.raises(CheckpointError, match="dtype mismatch"):
        load_video_model(tmp_path / "int" / "model.safetensors", small_config(), "cpu")
    _save({k: v.to(torch.bfloat16) for k, v in hf.items()}, tmp_path / "bf16" / "model.safetensors")
    model = load_video_model(tmp_path / "bf16" / "model.safetensors", small_config(), "cpu")
    value = model.state_dict()["detector.transformer.decoder.query_embed.weight"]
    assert value.dtype == torch.float32
    assert torch.equal(value, official_state["detector.transformer.decoder.query_embed.weight"].bfloat16().float())


def test_a_hub_id_with_only_the_transformers_file_cached(hf_dir, tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--facebook--sam3" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        (snapshot / name).write_bytes((hf_dir / name).read_bytes())
    (tmp_path / "hub" / "models--facebook--sam3" / "refs").mkdir()
    (tmp_path / "hub" / "models--facebook--sam3" / "refs" / "main").write_text("abc123")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_video_model("facebook/sam3", small_config(), "cpu")
    assert model.detector.load_report.version == "transformers"
