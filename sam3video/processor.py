"""``Sam3Processor``: the image API of the official code (``set_image`` -> ``set_text_prompt`` -> results).

State is a plain dict with the official keys so that official users feel at home:
``original_height``, ``original_width``, ``backbone_out``, ``geometric_prompt``, and after each prompt
``boxes`` (N, 4) xyxy in pixels of the original image, ``scores`` (N,) = sigmoid(logit) x
sigmoid(presence), ``masks_logits`` (N, 1, H, W) mask probabilities (named as officially) and
``masks`` (N, 1, H, W) bool.

Image handling (documented, tested): PIL images of any mode are converted to RGB; numpy arrays are
HWC (or HW grayscale), torch tensors CHW (or HW); 1 channel is repeated to RGB, an alpha channel is
dropped; uint16 is scaled to uint8 (>> 8, as ``ToDtype(uint8, scale=True)``), floats must lie in [0, 1].
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .errors import InputError
from .model.box_ops import box_cxcywh_to_xyxy
from .model.precision import autocast_context
from .model.sam3_image import FindStage, Sam3Image, instance_scores
from .preprocess import preprocess_image
from .thresholds import SCORE_THRESHOLD

VISUAL_PROMPT = "visual"  # the official text when a concept is given by exemplar boxes only


def image_to_uint8_chw(image) -> torch.Tensor:
    """Any supported image -> (3, H, W) uint8 RGB tensor. Raises ``InputError`` naming the problem."""
    if isinstance(image, PIL.Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = np.asarray(image).astype(np.uint32)
            image = (np.clip(image, 0, 65535) >> 8).astype(np.uint8)
        else:
            return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
            image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        elif image.ndim == 2:
            image = torch.from_numpy(np.ascontiguousarray(image))[None]
        else:
            raise InputError(f"numpy image must be HxWx3 (RGB), HxWx4 or HxW, got shape {image.shape}")
    if not isinstance(image, torch.Tensor):
        raise InputError(f"image must be a PIL image, numpy array or torch tensor, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise InputError(f"image tensor must be CxHxW with C in (1, 3, 4), got shape {tuple(image.shape)}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise InputError(f"image is empty: shape {tuple(image.shape)}")
    image = image[:3] if image.shape[0] == 4 else image.expand(3, -1, -1) if image.shape[0] == 1 else image
    return _to_uint8(image).contiguous()


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """uint8 as is; uint16 scaled by >> 8; other integers must already lie in [0, 255]; floats in [0, 1]."""
    if image.dtype == torch.uint8:
        return image
    if image.dtype == torch.uint16:
        return (image.to(torch.int32) >> 8).to(torch.uint8)
    if image.is_floating_point():
        if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise InputError("float images must hold finite values in [0, 1]")
        return TF.to_dtype(image, torch.uint8, scale=True)
    if image.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        if image.min() < 0 or image.max() > 255:
            raise InputError(f"{image.dtype} image values must lie in [0, 255] (use uint16 for 16-bit images)")
        return image.to(torch.uint8)
    raise InputError(f"unsupported image dtype {image.dtype}")


def check_box_cxcywh(box) -> tuple[list[float], bool]:
    """Validate a normalised cx, cy, w, h box; clip it to the image. Returns (box, was_clipped)."""
    values = torch.as_tensor(box, dtype=torch.float64).flatten()
    if values.numel() != 4 or not torch.isfinite(values).all():
        raise InputError(f"a box is 4 finite numbers (cx, cy, w, h, normalised to [0, 1]), got {box!r}")
    cx, cy, w, h = values.tolist()
    if w <= 0 or h <= 0:
        raise InputError(f"box has non-positive size (w={w:g}, h={h:g})")
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if x1 <= 0 or y1 <= 0 or x0 >= 1 or y0 >= 1:
        raise InputError(f"box ({x0:.3g}, {y0:.3g}, {x1:.3g}, {y1:.3g}) lies outside the image")
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0)
    clipped = (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)
    return [(cx0 + cx1) / 2, (cy0 + cy1) / 2, cx1 - cx0, cy1 - cy0], clipped


class Sam3Processor:
    """Runs a ``Sam3Image`` on one image at a time; device and resolution come from the model."""

    def __init__(self, model: Sam3Image, confidence_threshold: float | None = None, resolution: int | None = None):
        self.model = model
        config = getattr(model, "config", None)
        self.resolution = resolution or (config.resolution if config is not None else 1008)
        self.context_length = config.context_length if config is not None else 32
        if confidence_threshold is None:  # the model's calibrated operating point (0.5 for sam3.pt)
            confidence_threshold = config.score_threshold if config is not None else SCORE_THRESHOLD
        self.confidence_threshold = self._check_threshold(confidence_threshold)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _find_stage(self) -> FindStage:
        zero = torch.zeros(1, dtype=torch.long, device=self.device)
        return FindStage(img_ids=zero, text_ids=zero)

    @staticmethod
    def _check_threshold(threshold: float) -> float:
        if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0 and not math.isnan(threshold)):
            raise InputError(f"confidence threshold must be a number in [0, 1], got {threshold!r}")
        return float(threshold)

    def preprocess(self, image) -> torch.Tensor:
        """Image -> (1, 3, R, R) float on the model's device: antialiased resize of uint8, [0, 1],
        normalised with mean = std = 0.5 (the official transform)."""
        return preprocess_image(image_to_uint8_chw(image).to(self.device), self.resolution).unsqueeze(0)

    @torch.inference_mode()
    def set_image(self, image, state: dict | None = None) -> dict:
        """Run the vision backbone on ``image``; returns the state (a new dict unless given)."""
        state = {} if state is None else state
        chw = image_to_uint8_chw(image)
        state["original_height"], state["original_width"] = chw.shape[-2:]
        with autocast_context(self.model):  # the model's precision mode (model.precision; fp32: nothing)
            state["backbone_out"] = self.model.backbone.forward_image(self.preprocess(chw))
        return state

    def _require_image(self, state: dict) -> None:
        if not isinstance(state, dict) or "backbone_out" not in state:
            raise InputError("call set_image before prompting")

    @torch.inference_mode()
    def set_text_prompt(self, prompt: str, state: dict) -> dict:
        """Detect every instance of the noun phrase ``prompt`` in the state's image."""
        self._require_image(state)
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise InputError("empty prompt: give a noun phrase, or exemplar boxes with add_geometric_prompt")
        tokenizer = self.model.backbone.language_backbone.tokenizer
        num_tokens = tokenizer.count_tokens(prompt)  # with start and end tokens
        if num_tokens > self.context_length:
            warnings.warn(
                f"prompt has {num_tokens} tokens; truncated to the model's {self.context_length}",
                stacklevel=2,
            )
        with autocast_context(self.model):
            state["backbone_out"].update(self.model.backbone.forward_text([prompt], device=self.device))
        if "geometric_prompt" not in state:
            state["geometric_prompt"] = self.model._get_dummy_prompt()
        return self._forward_grounding(state)

    @torch.inference_mode()
    def add_geometric_prompt(self, box, label: bool, state: dict) -> dict:
        """Add an exemplar box (normalised cx, cy, w, h; ``label`` True = positive) and re-run.

        Without a text prompt the text is "visual", as officially: the boxes alone define the concept.
        A box partly outside the image is clipped to it (with a warning); one wholly outside, or with
        non-positive size, is an ``InputError``.
        """
        self._require_image(state)
        box, clipped = check_box_cxcywh(box)
        if clipped:
            warnings.warn("exemplar box extends past the image; clipped to it", stacklevel=2)
        if "language_features" not in state["backbone_out"]:
            with autocast_context(self.model):
                state["backbone_out"].update(self.model.backbone.forward_text([VISUAL_PROMPT], device=self.device))
        if "geometric_prompt" not in state:
            state["geometric_prompt"] = self.model._get_dummy_prompt()
        boxes = torch.tensor(box, device=self.device, dtype=torch.float32).view(1, 1, 4)
        labels = torch.tensor([bool(label)], device=self.device, dtype=torch.bool).view(1, 1)
        state["geometric_prompt"].append_boxes(boxes, labels)
        return self._forward_grounding(state)

    def reset_all_prompts(self, state: dict) -> None:
        """Remove text, boxes and results; keep the image features."""
        for key in ("language_features", "language_mask", "language_embeds"):
            state.get("backbone_out", {}).pop(key, None)
        for key in ("geometric_prompt", "boxes", "masks", "masks_logits", "scores"):
            state.pop(key, None)

    @torch.inference_mode()
    def set_confidence_threshold(self, threshold: float, state: dict | None = None) -> dict | None:
        """Change the score threshold; re-filters the results of ``state`` if it has any."""
        self.confidence_threshold = self._check_threshold(threshold)
        if state is not None and "boxes" in state:
            return self._forward_grounding(state)
        return state

    @torch.inference_mode()
    def _forward_grounding(self, state: dict) -> dict:
        with autocast_context(self.model):
            outputs = self.model.forward_grounding(
                backbone_out=state["backbone_out"],
                find_input=self._find_stage(),
                geometric_prompt=state["geometric_prompt"],
                find_target=None,
            )
        scores = instance_scores(outputs)  # (1, Q)
        keep = scores > self.confidence_threshold
        boxes = box_cxcywh_to_xyxy(outputs["pred_boxes"][keep])
        height, width = state["original_height"], state["original_width"]
        scale = torch.tensor([width, height, width, height], device=boxes.device, dtype=boxes.dtype)
        masks = outputs["pred_masks"][keep].unsqueeze(1)
        masks = F.interpolate(masks, (height, width), mode="bilinear", align_corners=False).sigmoid()
        state["masks_logits"] = masks
        state["masks"] = masks > 0.5
        state["boxes"] = boxes * scale
        state["scores"] = scores[keep]
        return state
