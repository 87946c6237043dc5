"""Bad and unusual inputs to the processor: a clear error or documented handling, never a torch crash."""

import warnings

import numpy as np
import PIL.Image
import pytest
import torch

from sam3video import InputError, Sam3Processor
from sam3video.processor import check_box_cxcywh, image_to_uint8_chw

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)


@pytest.fixture()
def processor(tiny_model):
    return Sam3Processor(tiny_model, confidence_threshold=0.0)


@pytest.mark.parametrize(
    "image",
    [
        PIL.Image.fromarray(RGB),
        RGB,
        torch.from_numpy(RGB).permute(2, 0, 1),
    ],
    ids=["pil", "numpy_hwc", "torch_chw"],
)
def test_rgb_inputs_agree(image):
    assert torch.equal(image_to_uint8_chw(image), torch.from_numpy(RGB).permute(2, 0, 1))


def test_grayscale_is_repeated_to_rgb():
    gray = RGB[..., 0]
    for image in (gray, PIL.Image.fromarray(gray), torch.from_numpy(gray), gray[..., None]):
        chw = image_to_uint8_chw(image)
        assert chw.shape == (3, 48, 64)
        assert torch.equal(chw[0], chw[2]) and torch.equal(chw[0], torch.from_numpy(gray))


def test_rgba_drops_alpha():
    rgba = np.concatenate([RGB, np.full((48, 64, 1), 7, np.uint8)], axis=-1)
    for image in (rgba, PIL.Image.fromarray(rgba, "RGBA")):
        assert torch.equal(image_to_uint8_chw(image), torch.from_numpy(RGB).permute(2, 0, 1))


def test_16_bit_is_scaled_to_8_bit():
    rgb16 = RGB.astype(np.uint16) * 257  # 255 -> 65535
    assert torch.equal(image_to_uint8_chw(rgb16), torch.from_numpy(RGB).permute(2, 0, 1))
    gray16 = PIL.Image.fromarray(rgb16[..., 0])
    assert torch.equal(image_to_uint8_chw(gray16)[0], torch.from_numpy(RGB[..., 0]))


def test_float_image_in_unit_range():
    chw = image_to_uint8_chw(RGB.astype(np.float32) / 255.0)
    assert (chw.int() - torch.from_numpy(RGB).permute(2, 0, 1).int()).abs().max() <= 1
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        image_to_uint8_chw(RGB.astype(np.float32))


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((2, 48, 64, 3), np.uint8), "shape"),
        (np.zeros((48, 64, 2), np.uint8), "shape"),
        (torch.zeros(2, 3, 48, 64, dtype=torch.uint8), "shape"),
        (torch.zeros(3, 0, 64, dtype=torch.uint8), "empty"),
        ("image.png", "PIL image, numpy array or torch tensor"),
        (np.full((8, 8, 3), -3, np.int32), r"\[0, 255\]"),
    ],
)
def test_bad_images_raise_input_error(image, message, processor):
    with pytest.raises(InputError, match=message):
        processor.set_image(image)


def test_prompt_before_image(processor):
    with pytest.raises(InputError, match="set_image"):
        processor.set_text_prompt("dog", {})


@pytest.mark.parametrize("prompt", ["", "   ", "\n"])
def test_empty_prompt(prompt, processor):
    state = processor.set_image(RGB)
    with pytest.raises(InputError, match="empty prompt"):
        processor.set_text_prompt(prompt, state)


def test_non_string_prompt(processor):
    with pytest.raises(InputError, match="must be a string"):
        processor.set_text_prompt(["dog"], processor.set_image(RGB))


def test_long_prompt_is_truncated_with_a_warning(processor):
    state = processor.set_image(RGB)
    long_prompt = "red " * 40
    with pytest.warns(UserWarning, match="truncated"):
        state = processor.set_text_prompt(long_prompt, state)
    truncated = processor.model.backbone.forward_text(["red " * 30], device="cpu")
    assert torch.allclose(state["backbone_out"]["language_features"], truncated["language_features"])


def test_non_ascii_prompt_is_encoded(processor):
    state = processor.set_image(RGB)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = processor.set_text_prompt("café crème 猫", state)
    assert state["scores"].ndim == 1 and state["masks"].shape[-2:] == (48, 64)


def test_results_are_in_original_pixels(processor):
    state = processor.set_text_prompt("dog", processor.set_image(RGB))
    n = len(state["scores"])
    assert n == processor.model.config.num_queries  # threshold 0 keeps every query
    assert state["boxes"].shape == (n, 4) and state["masks_logits"].shape == (n, 1, 48, 64)
    assert ((state["scores"] >= 0) & (state["scores"] <= 1)).all()
    processor.set_confidence_threshold(1.0, state)
    assert len(state["scores"]) == 0 and state["masks"].shape == (0, 1, 48, 64)


@pytest.mark.parametrize(
    "box, message",
    [
        ([0.5, 0.5, -0.1, 0.2], "non-positive size"),
        ([0.5, 0.5, 0.0, 0.2], "non-positive size"),
        ([1.5, 0.5, 0.2, 0.2], "outside the image"),
        ([0.5, -0.4, 0.2, 0.2], "outside the image"),
        ([0.5, 0.5, 0.2], "4 finite numbers"),
        ([0.5, float("nan"), 0.2, 0.2], "4 finite numbers"),
    ],
)
def test_bad_boxes(box, message, processor):
    state = processor.set_image(RGB)
    with pytest.raises(InputError, match=message):
        processor.add_geometric_prompt(box, True, state)


def test_box_partly_outside_is_clipped():
    box, clipped = check_box_cxcywh([0.95, 0.5, 0.2, 0.2])
    assert clipped and box == pytest.approx([0.925, 0.5, 0.15, 0.2])


def test_boxes_only_prompt_uses_visual_text(processor):
    state = processor.set_image(RGB)
    state = processor.add_geometric_prompt([0.3, 0.3, 0.2, 0.2], True, state)
    visual = processor.model.backbone.forward_text(["visual"], device="cpu")
    assert torch.equal(state["backbone_out"]["language_features"], visual["language_features"])
    assert state["geometric_prompt"].box_embeddings.shape == (1, 1, 4)
    processor.reset_all_prompts(state)
    assert "language_features" not in state["backbone_out"] and "boxes" not in state


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), "0.5"])
def test_bad_threshold(threshold, tiny_model):
    with pytest.raises(InputError, match="threshold"):
        Sam3Processor(tiny_model, confidence_threshold=threshold)
