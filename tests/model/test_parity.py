"""The tiny model, loaded with the official weights, reproduces what the official code computed."""

import pytest
import torch

from sam3video import Sam3Processor
from sam3video.model.sam3_image import FindStage

ATOL = 1e-4
MASK_ATOL = 1e-3
GROUNDING_KEYS = ["pred_logits", "pred_boxes", "pred_boxes_xyxy", "pred_masks", "presence_logit_dec",
                  "queries", "semantic_seg"]


def assert_close(got, expected, atol, name):
    assert got.shape == expected.shape, f"{name}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    diff = (got.float() - expected.float()).abs().max().item()
    assert diff <= atol, f"{name}: max abs diff {diff:.2e} > {atol:g}"


@pytest.fixture(scope="module")
def image_backbone_out(tiny_model, parity_cases):
    with torch.inference_mode():
        return tiny_model.backbone.forward_image(parity_cases["image"]["input"])


def test_backbone_levels_and_position_encodings(image_backbone_out, parity_cases):
    case = parity_cases["image"]
    assert len(image_backbone_out["backbone_fpn"]) == len(case["backbone_fpn"]) == 3
    for i, (got, exp) in enumerate(zip(image_backbone_out["backbone_fpn"], case["backbone_fpn"])):
        assert_close(got, exp, ATOL, f"backbone_fpn[{i}]")
    for i, (got, exp) in enumerate(zip(image_backbone_out["vision_pos_enc"], case["vision_pos_enc"])):
        assert_close(got, exp, ATOL, f"vision_pos_enc[{i}]")
    assert_close(image_backbone_out["vision_features"], case["vision_features"], ATOL, "vision_features")


def run_grounding(model, backbone_out, prompt, boxes=None, labels=None):
    with torch.inference_mode():
        out = dict(backbone_out)
        out.update(model.backbone.forward_text([prompt], device="cpu"))
        geometric_prompt = model._get_dummy_prompt()
        if boxes is not None:
            geometric_prompt.append_boxes(boxes[:, None], labels[:, None])
        find = FindStage(img_ids=torch.tensor([0]), text_ids=torch.tensor([0]))
        return model.forward_grounding(backbone_out=out, find_input=find, geometric_prompt=geometric_prompt)


@pytest.mark.parametrize("case_name", ["grounding_text", "grounding_text_boxes", "grounding_boxes_only"])
def test_grounding_outputs(tiny_model, image_backbone_out, parity_cases, case_name):
    case = parity_cases[case_name]
    out = run_grounding(tiny_model, image_backbone_out, case["prompt"], case.get("boxes_cxcywh"), case.get("labels"))
    for key in GROUNDING_KEYS:
        atol = MASK_ATOL if key in ("pred_masks", "semantic_seg") else ATOL
        assert_close(out[key], case[key], atol, f"{case_name}.{key}")


def test_lazy_backbone_through_img_batch_all_stages(tiny_model, parity_cases):
    """Only ``img_batch_all_stages`` given: the backbone runs on the requested frame alone and
    ``id_mapping`` records it; results equal the precomputed path."""
    case = parity_cases["grounding_text"]
    x = parity_cases["image"]["input"][0]
    frames = [torch.zeros_like(x), x.half(), torch.ones_like(x)]  # fp16 frames on the CPU, as in video
    with torch.inference_mode():
        backbone_out = {"img_batch_all_stages": frames}
        backbone_out.update(tiny_model.backbone.forward_text([case["prompt"]], device="cpu"))
        find = FindStage(img_ids=torch.tensor([1]), text_ids=torch.tensor([0]))
        out = tiny_model.forward_grounding(backbone_out=backbone_out, find_input=find,
                                           geometric_prompt=tiny_model._get_dummy_prompt())
    cached = out["prev_encoder_out"]["backbone_out"]
    assert cached["id_mapping"].tolist() == [-1, 0, -1]
    assert cached["backbone_fpn"][0].shape[0] == 1
    # the fp16 frame differs from the fp32 input by rounding only
    assert_close(out["pred_boxes"], case["pred_boxes"], 5e-3, "pred_boxes")
    # Reusing the cached features (no recompute) gives the same result bit for bit.
    with torch.inference_mode():
        again = tiny_model.forward_grounding(backbone_out=cached, find_input=find,
                                             geometric_prompt=tiny_model._get_dummy_prompt())
    assert torch.equal(again["pred_logits"], out["pred_logits"])


def test_lazy_backbone_unknown_frame_is_an_error(tiny_model, parity_cases):
    x = parity_cases["image"]["input"][0]
    with torch.inference_mode():
        backbone_out = {"img_batch_all_stages": [x, x]}
        backbone_out.update(tiny_model.backbone.forward_text(["dog"], device="cpu"))
        find = FindStage(img_ids=torch.tensor([0]), text_ids=torch.tensor([0]))
        out = tiny_model.forward_grounding(backbone_out, find, tiny_model._get_dummy_prompt())
        cached = out["prev_encoder_out"]["backbone_out"]
        with pytest.raises(KeyError, match="not computed"):
            tiny_model.forward_grounding(cached, FindStage(torch.tensor([1]), torch.tensor([0])),
                                         tiny_model._get_dummy_prompt())


def test_processor_end_to_end(tiny_model, parity_cases):
    case = parity_cases["processor"]
    processor = Sam3Processor(tiny_model, confidence_threshold=case["confidence_threshold"])
    state = processor.set_image(case["image_uint8"].permute(2, 0, 1))  # torch CHW, as the official run
    state = processor.set_text_prompt(case["prompt"], state)
    assert_close(state["boxes"], case["boxes_xyxy"], ATOL, "boxes")
    assert_close(state["scores"], case["scores"], ATOL, "scores")
    assert_close(state["masks_logits"], case["masks_logits"], MASK_ATOL, "masks_logits")
    assert state["masks"].dtype == torch.bool
    # numpy HWC input gives the same result as torch CHW
    state_np = processor.set_text_prompt(case["prompt"], processor.set_image(case["image_uint8"].numpy()))
    assert torch.equal(state_np["scores"], state["scores"])
