"""Loading the transformers checkpoint of SAM 3 (``facebook/sam3``'s ``model.safetensors``, ``Sam3VideoModel``) into
the official names, so that it runs like ``sam3.pt``.

The file is read lazily (``safetensors.safe_open``: one tensor at a time, never the whole file twice) and mapped
by ``hf_layout.hf_sources``: fused projections joined again, the text projection transposed back, the position
embedding's class row restored (zeros: the official model never reads it), the prompt encoder's point
embeddings split, the RoPE tables computed from the config. The detector's point projections
(``geometry_encoder.points_*``) are not in a transformers file: they are set to zeros, reported in
``LoadReport.absent``, and a point prompt to such a detector is refused in one line. Every tensor of the file
is used (the Gaussian matrix stored twice must hold the same values twice).

``config.json`` beside the file, when present, must be a SAM 3 one (``model_type`` ``sam3_video`` or ``sam3``). The
model size comes from ``--config`` (default: the released ``sam3`` size).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError
from .hf_layout import DUPLICATES, HF_DETECTOR, HF_TRACKER, HF_TRACKER_NECK, hf_sources

HF_FILENAME = "model.safetensors"
HF_MODEL_TYPES = ("sam3_video", "sam3")
SAVED_TRACKER_PREFIX = HF_TRACKER + HF_TRACKER  # how transformers 5.23's save_pretrained writes the tracker's keys


def is_hf_layout(keys) -> bool:
    """Whether tensor names are transformers' ``Sam3VideoModel`` (or ``Sam3Model``-in-video) layout."""
    return any(k.startswith((HF_DETECTOR, HF_TRACKER, HF_TRACKER_NECK)) for k in keys)


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


@dataclass
class HfCheckpoint:
    """A transformers SAM 3 file, open lazily. ``names``: the layout's key -> the key in the file (transformers
    5.23 saves the tracker as ``tracker_model.tracker_model.*``; the converted hub file as ``tracker_model.*``)."""

    path: Path
    names: dict[str, str]
    model_type: str | None = None
    absent: list[str] = field(default_factory=list)

    @property
    def has_tracker(self) -> bool:
        return any(k.startswith(HF_TRACKER) for k in self.names)

    def to_official(self, expected: dict[str, torch.Tensor], module_of: Callable[[str], torch.nn.Module],
                    left_out: tuple[str, ...] = ()) -> dict:
        """``{"model": state dict}`` under the official names ``expected`` (a model's state dict on the meta device,
        official keys); ``module_of(key)`` gives the module that owns an official key (for the RoPE tables);
        tensors under the prefixes ``left_out`` are not read (the tracker, for the image model).
        ``CheckpointError`` when the file lacks a tensor the model needs, or holds one it does not."""
        from safetensors import safe_open

        sources = hf_sources(expected)
        needed = {k for s in sources.values() for k in s.keys}
        missing = sorted(needed - set(self.names))
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise CheckpointError(f"transformers checkpoint {self.path} lacks {len(missing)} tensors this model needs "
                                  f"({shown}): a checkpoint of another model or size (give --config)")
        wanted_by_model = needed | {copy for copy, original in DUPLICATES.items() if original in needed}
        unused = sorted(k for k in set(self.names) - wanted_by_model if not k.startswith(left_out))
        if unused:
            shown = ", ".join(unused[:3]) + (", ..." if len(unused) > 3 else "")
            raise CheckpointError(f"transformers checkpoint {self.path} holds {len(unused)} tensors this model does not "
                                  f"have ({shown}): a checkpoint of another model or size (give --config)")
        state: dict[str, torch.Tensor] = {}
        self.absent = []
        try:
            with safe_open(str(self.path), framework="pt", device="cpu") as f:
                read = lambda key: f.get_tensor(self.names[key])  # noqa: E731
                for key, source in sources.items():
                    state[key] = self._value(key, source, read, expected[key], module_of)
                for copy, original in DUPLICATES.items():
                    if copy in self.names and original in self.names and not torch.equal(read(copy), read(original)):
                        raise CheckpointError(f"transformers checkpoint {self.path}: {copy} differs from {original} "
                                              "(the same Gaussian matrix, stored twice)")
        except CheckpointError:
            raise
        except Exception as e:  # safetensors raises its own errors for a damaged file
            raise CheckpointError(f"cannot read checkpoint {self.path}: {_one_line(e)}") from None
        return {"model": state}

    def _value(self, key, source, read, like: torch.Tensor, module_of) -> torch.Tensor:
        if source.op == "copy":
            return read(source.keys[0])
        if source.op == "qkv":
            return torch.cat([read(k) for k in source.keys], dim=0)
        if source.op == "transpose":
            return read(source.keys[0]).t().contiguous()
        if source.op == "cls_row":
            value = read(source.keys[0])
            return torch.cat([value.new_zeros(value.shape[0], 1, value.shape[2]), value], dim=1)
        if source.op == "row":
            return read(source.keys[0])[source.index:source.index + 1].clone()
        if source.op == "computed":
            with torch.device("cpu"):  # not the meta device the model was built on
                return module_of(key).rope_table()
        self.absent.append(key)  # "absent": not in any transformers file
        return torch.zeros(like.shape, dtype=torch.float32)


def open_hf_checkpoint(path: Path) -> HfCheckpoint | None:
    """An ``HfCheckpoint`` for a ``.safetensors`` file in the transformers layout, None for any other layout;
    ``CheckpointError`` for a file safetensors cannot open, or a ``config.json`` of another model beside it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or not a safetensors file ({_one_line(e)})") from None
    if not is_hf_layout(keys):
        return None
    names = {(HF_TRACKER + k[len(SAVED_TRACKER_PREFIX):] if k.startswith(SAVED_TRACKER_PREFIX) else k): k for k in keys}
    model_type = None
    config = path.parent / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            raise CheckpointError(f"{config} (beside {path.name}) is not a transformers config (JSON)") from None
        if model_type not in HF_MODEL_TYPES:
            raise CheckpointError(f"{path} is a transformers checkpoint of another model (model_type {model_type!r} in "
                                  f"{config}; SAM 3 is {' or '.join(HF_MODEL_TYPES)})")
    return HfCheckpoint(path, names, model_type)
