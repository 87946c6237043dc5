"""``--tracker sam3``: the official SAM 3 loop (``loop``) for every prompt of a run, fed by the
detector's per-frame outputs and the tracker features of the same ViT pass.

The official code tracks one text prompt per session; here each prompt has its own loop (its own
planning state, buckets and ids) on shared frames, and the outputs are merged per frame with run-wide
1-based ids in the order objects are first shown. Outputs are delayed by the hot-start delay only.
"""

from __future__ import annotations

import numpy as np
import torch

from sam3video.detections import Detections
from sam3video.model.box_ops import box_cxcywh_to_xyxy, box_iou
from sam3video.model.sam3_tracker_base import Sam3TrackerBase

from .loop import FrameDetections, HotstartBuffer, LoopOutput, Sam3Loop, detector_probs
from .options import Sam3Options
from .planning import Sam3LoopConfig
from .propagation import FrameFeatures

MEMORY_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}  # Sam3Options.memory_dtype -> the stored dtype
UNKNOWN_LENGTH = 10_000  # num_frames when a source does not say (only min(num_frames, 16) is read)


def frame_detections(outputs: dict) -> list[FrameDetections]:
    """One frame's ``forward_grounding`` outputs for P prompts (``split_frames``) -> P ``FrameDetections``."""
    boxes = box_cxcywh_to_xyxy(outputs["pred_boxes"].float())
    presence = outputs.get("presence_logit_dec")
    return [FrameDetections(detector_probs(outputs["pred_logits"][p, :, 0], None if presence is None else presence[p]),
                            outputs["pred_masks"][p], boxes[p])
            for p in range(outputs["pred_logits"].shape[0])]


def exemplar_queries(detections: FrameDetections, boxes: list[tuple]) -> tuple[int, ...]:
    """For each normalised xyxy box, the query whose predicted box overlaps it most (box IoU)."""
    if not boxes:
        return ()
    ious, _ = box_iou(torch.as_tensor(boxes, dtype=torch.float32), detections.boxes.float().cpu())
    return tuple(sorted({int(i) for i in ious.argmax(dim=1)}))


def tracker_features(tracker: Sam3TrackerBase, sam2_backbone_out: dict, row: int) -> FrameFeatures:
    """Row ``row`` of the detector's ``sam2_backbone_out`` (the second neck) -> the tracker's features
    of that frame (conv_s0 / conv_s1 applied, flattened seq-first, batch 1)."""
    one = {key: [x[row : row + 1] for x in sam2_backbone_out[key]] for key in ("backbone_fpn", "vision_pos_enc")}
    with torch.inference_mode():
        _, feats, pos, sizes = tracker._prepare_backbone_features(tracker.tracker_backbone_out(one))
    return FrameFeatures(feats, pos, sizes)


class Sam3Tracking:
    """One ``Sam3Loop`` per prompt; ``step`` takes frames in order and returns the frames now ready."""

    def __init__(self, tracker: Sam3TrackerBase, config: Sam3LoopConfig, num_prompts: int,
                 num_frames: int | None, video_size: tuple[int, int],
                 options: Sam3Options = Sam3Options()):
        memory_dtype = MEMORY_DTYPES[options.memory_dtype]
        length = num_frames if num_frames else UNKNOWN_LENGTH
        self.options = options
        self.loops = [Sam3Loop(tracker, config, length, video_size, memory_dtype) for _ in range(num_prompts)]
        self.buffers = [HotstartBuffer(config.hotstart_delay, video_size) for _ in range(num_prompts)]
        self.ids: dict[tuple[int, int], int] = {}  # (prompt, official id) -> run-wide id, 1-based
        self.frames_seen = 0

    def step(self, frame_idx: int, detections: list[FrameDetections], features: FrameFeatures,
             allow_new_detections: bool = True, exemplar_boxes: list[list[tuple]] | None = None
             ) -> list[tuple[int, Detections]]:
        """One frame's detections (one per prompt) -> [(frame index, its tracked ``Detections``)] of the
        frames now ready, in order (the hot-start delay holds back ``hotstart_delay - 1`` frames).
        ``allow_new_detections`` False: no object starts here (officially, a frame without text or box
        prompt). ``exemplar_boxes``: per prompt, this frame's positive exemplar boxes (normalised xyxy);
        with ``options.exemplar_conditioning`` the query whose box overlaps each most conditions the
        tracker (``Sam3Loop.step``)."""
        ready: list[list[LoopOutput]] = []
        for p, (loop, buffer, dets) in enumerate(zip(self.loops, self.buffers, detections, strict=True)):
            boxes = exemplar_boxes[p] if exemplar_boxes and self.options.exemplar_conditioning else []
            queries = exemplar_queries(dets, boxes)
            if self.frames_seen == 0 and self.options.rerun_prompt_frame:  # official add_prompt: not streamed
                loop.step(frame_idx, dets, features, allow_new_detections, queries)
            ready.append(buffer.push(loop.step(frame_idx, dets, features, allow_new_detections, queries)))
        self.frames_seen += 1
        return self._merged(ready)

    def flush(self) -> list[tuple[int, Detections]]:
        """The frames still held, at the end of the video."""
        return self._merged([buffer.flush() for buffer in self.buffers])

    def _merged(self, ready: list[list[LoopOutput]]) -> list[tuple[int, Detections]]:
        frames = []
        for per_prompt in zip(*ready, strict=True):
            parts = []
            for prompt, out in enumerate(per_prompt):
                ids = [self.ids.setdefault((prompt, int(i)), len(self.ids) + 1) for i in out.obj_ids]
                parts.append(Detections(xyxy=out.boxes_xyxy, confidence=out.probs, class_id=np.full(len(ids), prompt),
                                        mask=out.masks, tracker_id=np.asarray(ids, np.int64),
                                        data={"tracker_score": out.tracker_probs}))
            frames.append((per_prompt[0].frame_idx, Detections.merge(parts)))
        return frames
