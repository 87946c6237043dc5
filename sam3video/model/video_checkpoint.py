"""Loading the video model from an official-layout checkpoint, at the top level or under ``"model"`` (``.pt``
or ``.safetensors``): ``sam3.pt``'s 1465 tensors ``detector.*`` and ``tracker.*`` (``Sam3VideoModel``), or
``sam3.1_multiplex.pt``'s 1623 ``detector.*`` and ``tracker.model.*`` (``Sam31VideoModel``). Every tensor is
used; none may be missing.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import CheckpointError, InputError
from .build import Sam3Config, at_resolution
from .build_video import VideoConfig, build_video_model, load_video_config
from .checkpoint import (
    DEMO_VIDEO,
    LoadReport,
    build_and_load,
    checkpoint_version,
    demo_checkpoint,
    demo_video_checkpoint,
    image_model_from,
    read_checkpoint,
    refuse_detector_points,
    resolve_checkpoint,
    resolve_device,
    saved_config,
)
from .hf_checkpoint import HfCheckpoint
from .sam31_video import Sam31VideoModel
from .sam3_video import Sam3VideoModel

logger = logging.getLogger(__name__)

TRACKER_PREFIX = "tracker."


def video_state_dict(obj: dict, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The video model's state dict from a checkpoint object (keys as stored) and its non-tensor values
    (key -> type name). Raises ``CheckpointError`` when it holds no ``tracker.*`` tensors."""
    state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    bad_key = next((k for k in state if not isinstance(k, str)), None)
    if bad_key is not None:
        raise CheckpointError(f"checkpoint {source}: key {bad_key!r} is a {type(bad_key).__name__}, "
                              "expected tensor names (text)")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not any(k.startswith(TRACKER_PREFIX) for k in tensors):
        raise CheckpointError(f"checkpoint {source} has no tracker weights (no tracker.* tensors): the video model "
                              "needs the official sam3.pt layout, not an image-model checkpoint")
    return tensors, {k: type(v).__name__ for k, v in state.items() if not isinstance(v, torch.Tensor)}


def load_video_model(
    checkpoint: "str | Path",
    config: "str | Path | dict | Sam3Config | VideoConfig | None" = None,
    device: "str | torch.device | None" = "auto",
    resolution: "int | None" = None,
) -> "Sam3VideoModel | Sam31VideoModel":
    """The video model in eval mode with every tensor of ``checkpoint`` (strict), on ``device``:
    ``Sam3VideoModel`` for ``sam3.pt``'s layout, ``Sam31VideoModel`` for ``sam3.1_multiplex.pt``'s.

    ``checkpoint``: a local file, a hub id (``owner/name``; ``facebook/sam3`` -> ``sam3.pt``,
    ``facebook/sam3.1`` -> ``sam3.1_multiplex.pt``) or "demo-video". ``config``: preset name, file, dict or
    config; None means the config saved in the checkpoint, else the full official size of its layout. fp16 / bf16
    tensors are loaded as fp32. ``resolution``: another square input size for the detector and the tracker
    (``build.at_resolution``; None: the config's).
    """
    if checkpoint == DEMO_VIDEO:
        return video_model_from(demo_video_checkpoint(), demo_checkpoint("demo_tracker.pt"), config, device,
                                resolution)
    path = resolve_checkpoint(checkpoint)
    return video_model_from(read_checkpoint(path), path, config, device, resolution)


def video_model_from(obj: dict, path: Path, config=None, device: "str | torch.device | None" = "auto",
                     resolution: "int | None" = None) -> "Sam3VideoModel | Sam31VideoModel":
    """``load_video_model`` of a checkpoint object already read from ``path``."""
    device = resolve_device(device)
    version = checkpoint_version(obj, str(path))
    hf = obj if isinstance(obj, HfCheckpoint) else None
    video = load_video_config(saved_config(obj, version or "sam3") if config is None and hf is None else
                              config or "sam3")
    video = replace(video, detector=at_resolution(video.detector, resolution))
    if version is not None and video.version != version:
        raise CheckpointError(f"{path.name} is a {version.upper().replace('SAM', 'SAM ')} checkpoint but the config "
                              f"builds a {video.version.upper().replace('SAM', 'SAM ')} video model")
    if hf is not None:  # its tensors under the official names of a model of this size
        if not hf.has_tracker:
            raise CheckpointError(f"transformers checkpoint {path} has no tracker (tracker_model.*): the video model "
                                  "needs Sam3VideoModel's file, not Sam3Model's")
        with torch.device("meta"):
            meta = build_video_model(video)
        obj = hf.to_official(meta.state_dict(), lambda key: meta.get_submodule(key.rpartition(".")[0]))
    state_dict, not_tensors = video_state_dict(obj, source=str(path))
    model = build_and_load(build_video_model, video, state_dict, not_tensors)
    logger.info("loaded %d tensors from %s", len(state_dict), path)
    model.detector.load_report = LoadReport(str(path), version="transformers" if hf else version,
                                            num_loaded=len(state_dict) - len(hf.absent if hf else ()),
                                            absent=[k.removeprefix("detector.") for k in (hf.absent if hf else ())],
                                            recomputed=model.recomputed_rope_tables)
    if hf is not None:
        refuse_detector_points(model.detector, path)
    return model.to(device).eval()


def holds_tracker_weights(obj: "dict | HfCheckpoint") -> bool:
    """Whether a checkpoint object has the SAM 3 tracker's tensors (``tracker.*``, as ``sam3.pt``; ``tracker_model.*``
    in a transformers file)."""
    if isinstance(obj, HfCheckpoint):
        return obj.has_tracker
    state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    return any(isinstance(k, str) and k.startswith(TRACKER_PREFIX) for k in state)


def load_for_tracker(
    checkpoint: "str | Path | None",
    config: "str | Path | dict | Sam3Config | VideoConfig | None" = None,
    device: "str | torch.device | None" = "auto",
    tracker: "str | None" = None,
    resolution: "int | None" = None,
) -> "tuple[torch.nn.Module, str]":
    """The model a run with ``tracker`` needs, and the tracker's name, reading the checkpoint once.

    ``tracker`` None: "sam3" (the official loop: a ``Sam3VideoModel`` for sam3.pt, a ``Sam31VideoModel`` and the
    multiplex loop for sam3.1_multiplex.pt) when the checkpoint holds the tracker's weights, else "sam3video" (a
    ``Sam3Image``). "sam3" without tracker weights is an ``InputError``; any other tracker gets the image model."""
    path = demo_checkpoint("demo_tracker.pt") if checkpoint == DEMO_VIDEO else resolve_checkpoint(checkpoint)
    obj = demo_video_checkpoint() if checkpoint == DEMO_VIDEO else read_checkpoint(path)
    holds = holds_tracker_weights(obj)
    name = tracker or ("sam3" if holds else "sam3video")
    if name != "sam3":
        return image_model_from(obj, path, config, device, resolution), name
    if not holds:
        raise InputError(f"--tracker sam3 needs the SAM 3 tracker weights (tracker.*, as in the official sam3.pt); "
                         f"{path.name} has none: use --tracker sam3video")
    return video_model_from(obj, path, config, device, resolution), name
