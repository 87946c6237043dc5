"""``--tracker sam3`` with a SAM 3.1 checkpoint: the official multiplex loop (``sam31.loop``) for every prompt,
with the same interface and run-wide id merging as the SAM 3 loop's ``Sam3Tracking``."""

from __future__ import annotations

import torch

from ..sam3.options import Sam3Options
from ..sam3.tracking import MEMORY_DTYPES, UNKNOWN_LENGTH, FrameDetections, Sam3Tracking
from .loop import ConfirmationBuffer, Sam31Features, Sam31Loop


def sam31_features(tracker, backbone_out: dict, row: int):
    """Row ``row`` of the detector's tri-neck outputs -> SAM 3.1's ``Sam31Features`` (the click path and the
    propagation path, each projected by its own decoder's conv_s0 / conv_s1, flattened, batch 1)."""
    paths = []
    with torch.inference_mode():
        for key, interactive in (("interactive", True), ("sam2_backbone_out", False)):
            one = {k: [x[row : row + 1] for x in backbone_out[key][k]] for k in ("backbone_fpn", "vision_pos_enc")}
            paths.append(tracker.tracker_features(one, interactive))
    return Sam31Features(*paths)


class Sam31Tracking(Sam3Tracking):
    """``--tracker sam3`` with a SAM 3.1 checkpoint: one ``Sam31Loop`` per prompt (the official multiplex loop)
    and its confirmation-hiding output buffer; the same interface and id merging as ``Sam3Tracking``. Exemplar
    boxes act through the detector only (SAM 3.1 appends them to the frame's geometric prompt)."""

    def __init__(self, tracker, config, num_prompts: int, num_frames: int | None, video_size: tuple[int, int],
                 options: Sam3Options = Sam3Options()):
        memory_dtype = MEMORY_DTYPES[options.memory_dtype]
        length = num_frames if num_frames else UNKNOWN_LENGTH
        self.options = options
        self.loops = [Sam31Loop(tracker, config, length, video_size, memory_dtype) for _ in range(num_prompts)]
        self.buffers = [ConfirmationBuffer(config.hotstart_delay, video_size, length) for _ in range(num_prompts)]
        self.ids = {}
        self.frames_seen = 0

    def step(self, frame_idx: int, detections: list[FrameDetections], features, allow_new_detections: bool = True,
             exemplar_boxes=None) -> list:
        ready = []
        for loop, buffer, dets in zip(self.loops, self.buffers, detections, strict=True):
            args = (frame_idx, dets.probs, dets.masks.float(), dets.boxes, features, allow_new_detections)
            if self.frames_seen == 0 and self.options.rerun_prompt_frame:  # official add_prompt: not streamed
                loop.step(*args)
            ready.append(buffer.push(loop.step(*args)))
        self.frames_seen += 1
        return self._merged(ready)
