"""Checkpoints: the official ``sam3.pt`` (local or from the Hugging Face hub) and plain state dicts.

Accepted layouts (``torch.load(..., weights_only=True)``, or safetensors for ``.safetensors`` files):
- the official release ``sam3.pt``: the video model's 1465 tensors, at the top level or under
  ``"model"``: ``detector.*`` (1156: the image model's 1134 and the 22 of the second vision neck,
  ``detector.backbone.vision_backbone.sam2_convs.*``) and ``tracker.*`` (309, the SAM 2-style memory
  tracker). The image model takes its 1134 (``detector.`` stripped); the second neck and the tracker
  are not used yet and are counted in ``LoadReport.left_out``;
- SAM 3.1's ``sam3.1_multiplex.pt`` (1623 tensors): ``detector.*`` (1166: the image model less ``convs.3``, which
  the ``sam3.1`` config does not have, plus the tri-neck's ``interactive_convs`` and ``propagation_convs``, 18 each)
  and ``tracker.model.*`` (457, the multiplex tracker). The image model takes its 1130; the tri-neck's tracker paths
  and the multiplex tracker are not used yet (``LoadReport.left_out``); ``LoadReport.version`` says which layout;
- a plain state dict of ``Sam3Image`` (with or without the second neck), or
  ``{"model": state_dict, "config": {...}}`` as we save them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import CheckpointError
from .build import Sam3Config, at_resolution, build_model, load_config
from .hf_layout import HF_TRACKER, HF_TRACKER_NECK
from .sam3_image import Sam3Image

if TYPE_CHECKING:
    from .hf_checkpoint import HfCheckpoint

logger = logging.getLogger(__name__)

DEFAULT_HUB_ID = "facebook/sam3"
DEMO = "demo"  # the small demo model shipped in the package, trained on the synthetic shapes world only
DEMO_VIDEO = "demo-video"  # the demo detector with the demo SAM 3 tracker (assets/demo_tracker.pt): clicks, the loop
HUB_FILENAME = "sam3.pt"
HUB_FILENAMES = {"facebook/sam3.1": "sam3.1_multiplex.pt"}  # repos whose checkpoint has another name
DETECTOR_PREFIX = "detector."
# Tensor groups of the released checkpoint that the image model does not use (yet), by key prefix in
# the checkpoint: the second vision neck feeds only the SAM 3 tracker.
SAM2_NECK_PREFIX = "backbone.vision_backbone.sam2_convs."
# SAM 3.1 (sam3.1_multiplex.pt): the tri-neck's two tracker paths and the multiplex tracker
SAM31_NECK_PREFIXES = ("backbone.vision_backbone.interactive_convs.", "backbone.vision_backbone.propagation_convs.")
SAM31_TRACKER_PREFIX = "tracker.model."
NOT_USED_YET = {
    DETECTOR_PREFIX + SAM2_NECK_PREFIX: "second vision neck (for the SAM 3 tracker)",
    SAM2_NECK_PREFIX: "second vision neck (for the SAM 3 tracker)",
    **{DETECTOR_PREFIX + p: "SAM 3.1 tri-neck path (for the SAM 3.1 tracker)" for p in SAM31_NECK_PREFIXES},
    SAM31_TRACKER_PREFIX: "SAM 3.1 multiplex tracker",
    "tracker.": "SAM 3 memory tracker",
}
HOW_TO_GET_WEIGHTS = (
    "the SAM 3 weights are gated: accept the licence at https://huggingface.co/facebook/sam3, "
    "log in (`hf auth login` or HF_TOKEN=...), or download sam3.pt and pass --checkpoint PATH"
)


@dataclass
class LoadReport:
    """What a checkpoint held besides the image model's weights."""

    source: str
    version: "str | None" = None  # "sam3" or "sam3.1" for the official layouts (``checkpoint_version``)
    num_loaded: int = 0
    left_out: dict[str, int] = field(default_factory=dict)  # key prefix in the checkpoint -> tensors skipped
    # model key (as in ``kept``) -> type name, for values that are not tensors (metadata, or damage)
    not_tensors: dict[str, str] = field(default_factory=dict)
    # model keys a transformers file cannot carry (the detector's point projections), set to zeros
    absent: list[str] = field(default_factory=list)
    # the global blocks' RoPE tables of a checkpoint made at another resolution, recomputed for the model's grid
    recomputed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        skipped = ", ".join(f"{n} {prefix}* ({NOT_USED_YET.get(prefix, 'unknown group')}, not used)"
                            for prefix, n in sorted(self.left_out.items()))
        version = f" ({self.version} layout)" if self.version else ""
        absent = (f"; {len(self.absent)} tensors not in the file (the detector's point projections: point prompts "
                  f"to the detector are refused)") if self.absent else ""
        recomputed = (f"; {len(self.recomputed)} RoPE tables recomputed for the model's resolution"
                      if self.recomputed else "")
        return (f"loaded {self.num_loaded} tensors from {self.source}{version}"
                + (f"; left out {skipped}" if skipped else "") + absent + recomputed)


def resolve_device(device: "str | torch.device | None" = "auto") -> torch.device:
    """``auto`` (or None) -> cuda if available, else mps, else cpu; anything else as given."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise CheckpointError(f"unknown device {device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' requested but CUDA is not available (use --device cpu)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CheckpointError("device 'mps' requested but MPS is not available (use --device cpu)")
    return device


def is_hub_id(checkpoint: str) -> bool:
    """``owner/name`` that is not an existing local path."""
    parts = checkpoint.split("/")
    return len(parts) == 2 and all(parts) and not os.path.exists(checkpoint) and not checkpoint.endswith(".pt")


def demo_checkpoint(name: str = "demo.pt") -> Path:
    """Path of shipped demo weights (``sam3video/assets/demo.pt``, or ``name`` there)."""
    from importlib import resources

    path = Path(str(resources.files("sam3video") / "assets" / name))
    if not path.is_file():
        raise CheckpointError(f"the demo weights are not in this install ({path}); pass --checkpoint")
    return path


def is_demo(checkpoint: "str | Path | None") -> bool:
    """Whether ``checkpoint`` names a shipped demo model (None, "demo", "demo-video")."""
    return checkpoint is None or str(checkpoint) in (DEMO, DEMO_VIDEO)


def demo_video_checkpoint() -> dict:
    """The demo video model in the official layout (``{"model": detector.* + tracker.*, "config"}``): the demo
    detector (``demo.pt``) and the demo tracker with its second neck (``demo_tracker.pt``, both fp16)."""
    detector, tracker = read_checkpoint(demo_checkpoint()), read_checkpoint(demo_checkpoint("demo_tracker.pt"))
    state = {DETECTOR_PREFIX + k: v for k, v in detector["model"].items()} | tracker["model"]
    return {"model": state, "config": {**detector["config"], "tracker": tracker["config"]["tracker"]}}


def resolve_checkpoint(checkpoint: "str | Path | None") -> Path:
    """A local path for ``checkpoint``: None or "demo" -> the shipped demo weights; a hub id
    (``owner/name``) -> its ``sam3.pt`` (cached or downloaded), or the transformers ``model.safetensors`` when only
    that is cached; a folder -> its ``sam3.pt`` or ``model.safetensors``; anything else -> that file."""
    from .hf_checkpoint import HF_FILENAME

    checkpoint = DEMO if checkpoint is None else str(checkpoint)
    if checkpoint == DEMO:
        return demo_checkpoint()
    path = Path(checkpoint)
    if path.is_dir():
        for name in (HUB_FILENAME, *HUB_FILENAMES.values(), HF_FILENAME):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"checkpoint folder {path} holds no {HUB_FILENAME} nor {HF_FILENAME}")
    if not is_hub_id(checkpoint):
        return path
    filename = HUB_FILENAMES.get(checkpoint.lower(), HUB_FILENAME)
    cached = _cached(checkpoint, filename) or _cached(checkpoint, HF_FILENAME)
    return cached or download_checkpoint(checkpoint, filename)


def _cached(repo_id: str, filename: str) -> "Path | None":
    """``filename`` of ``repo_id`` in the local hub cache, or None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id=repo_id, filename=filename)
    return Path(found) if isinstance(found, str) else None


def download_checkpoint(repo_id: str = DEFAULT_HUB_ID, filename: str = HUB_FILENAME) -> Path:
    """Path of ``filename`` from hub repo ``repo_id`` (cached by huggingface_hub; uses HF_TOKEN)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        try:  # a cached copy first: no network, no retries, nothing printed
            return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=True))
        except LocalEntryNotFoundError:
            pass
        with _hub_warnings_silenced():  # its retry warnings would precede our one-line error
            return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: test it first
        raise CheckpointError(f"cannot download {repo_id}/{filename}: offline and not in the local cache; "
                              f"{HOW_TO_GET_WEIGHTS}") from None
    except GatedRepoError:
        raise CheckpointError(f"access to {repo_id} is gated; {HOW_TO_GET_WEIGHTS}") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"hub repository {repo_id} not found (or not visible without login); "
                              f"{HOW_TO_GET_WEIGHTS}") from None
    except EntryNotFoundError:
        raise CheckpointError(f"hub repository {repo_id} has no file {filename}") from None
    except (HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"cannot download {repo_id}/{filename} ({type(e).__name__}); "
                              f"{HOW_TO_GET_WEIGHTS}") from None


@contextlib.contextmanager
def _hub_warnings_silenced():
    """huggingface_hub's logger and Python warnings at error level only, for the duration."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hub_logger.setLevel(level)


def read_checkpoint(path: "str | Path") -> "dict | HfCheckpoint":
    """The raw object saved in ``path`` (a dict), read safely on the CPU; for a transformers file, an
    ``HfCheckpoint`` (read lazily once the model's size is known: ``image_model_from`` / ``video_model_from``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from .hf_checkpoint import open_hf_checkpoint

        hf = open_hf_checkpoint(path)
        if hf is not None:
            return hf
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types (KeyError, UnpicklingError, RuntimeError ...)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or not a PyTorch checkpoint ({reason})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors")
    return obj


def checkpoint_version(obj: dict, source: str = "checkpoint") -> "str | None":
    """"sam3.1" for the ``sam3.1_multiplex.pt`` layout (the tri-neck's ``interactive_convs`` / ``propagation_convs``,
    or ``tracker.model.*``), "sam3" for the ``sam3.pt`` layout (``detector.*`` otherwise) and a transformers file,
    None for a plain state dict. ``CheckpointError`` for a file that mixes the two (a ``sam2_convs`` beside the
    tri-neck or the multiplex tracker)."""
    from .hf_checkpoint import HfCheckpoint

    if isinstance(obj, HfCheckpoint):
        return "sam3"
    state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    keys = [k for k in state if isinstance(k, str)]
    sam31 = any(k.startswith((SAM31_TRACKER_PREFIX, *(DETECTOR_PREFIX + p for p in SAM31_NECK_PREFIXES))) for k in keys)
    sam3 = any(k.startswith(DETECTOR_PREFIX + SAM2_NECK_PREFIX) for k in keys) or any(
        k.startswith("tracker.") and not k.startswith(SAM31_TRACKER_PREFIX) for k in keys)
    if sam31 and sam3:
        raise CheckpointError(f"checkpoint {source} mixes the SAM 3 (sam3.pt) and SAM 3.1 (sam3.1_multiplex.pt) "
                              "layouts: it is neither")
    if sam31:
        return "sam3.1"
    return "sam3" if any(k.startswith(DETECTOR_PREFIX) for k in keys) else None


def extract_state_dict(obj: dict, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The image model's state dict from an official or plain checkpoint, and what was left out.

    Official layout (any ``detector.*`` key): ``detector.*`` is kept with the prefix stripped, every
    other top-level group (``tracker.*``) is left out. In either layout the second vision neck
    (``sam2_convs``) is left out. Whatever else is there is kept, for ``check_state_dict`` to name.
    """
    state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    bad_key = next((k for k in state if not isinstance(k, str)), None)
    if bad_key is not None:
        raise CheckpointError(f"checkpoint {source}: key {bad_key!r} is a {type(bad_key).__name__}, "
                              "expected tensor names (text)")
    report = LoadReport(source=source, version=checkpoint_version(obj, source))
    official = any(k.startswith(DETECTOR_PREFIX) for k in state)
    kept = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            if not official or key.startswith(DETECTOR_PREFIX):
                report.not_tensors[key[len(DETECTOR_PREFIX):] if official else key] = type(value).__name__
            continue
        group = next((prefix for prefix in NOT_USED_YET if key.startswith(prefix)), None)
        if group is None and official and not key.startswith(DETECTOR_PREFIX):
            group = key.split(".", 1)[0] + "."
        if group is not None:
            report.left_out[group] = report.left_out.get(group, 0) + 1
        else:
            kept[key[len(DETECTOR_PREFIX):] if official else key] = value
    report.num_loaded = len(kept)
    return kept, report


def _dtype_kind(tensor: torch.Tensor) -> str:
    """"float", "complex", "bool" or "int": what a tensor holds, whatever its precision."""
    if tensor.is_complex():
        return "complex"
    if tensor.is_floating_point():
        return "float"
    return "bool" if tensor.dtype == torch.bool else "int"


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def check_state_dict(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], not_tensors: "dict[str, str] | None" = None
) -> None:
    """Raise ``CheckpointError`` naming the first few missing/unexpected/mis-shaped/mis-typed keys, with
    counts, or else the first tensor holding NaN or Inf. ``not_tensors`` (key -> type name, from
    ``LoadReport.not_tensors``): non-tensor values, named where the model expects a tensor.

    A tensor's dtype may differ in precision (fp16 for fp32), not in kind (int64 for a float weight).
    Meta tensors (no values) are not checked for NaN/Inf.
    """
    expected = model.state_dict()
    not_tensors = {k: v for k, v in (not_tensors or {}).items() if k in expected and k not in state_dict}
    missing = [k for k in expected if k not in state_dict and k not in not_tensors]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_type = [f"{k} is a {name}" for k, name in not_tensors.items()]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    wrong_dtype = [
        f"{k} {_dtype_name(state_dict[k])} vs model {_dtype_name(expected[k])}"
        for k in expected
        if k in state_dict and _dtype_kind(state_dict[k]) != _dtype_kind(expected[k])
    ]
    problems = []
    for label, items in (("missing", missing), ("not a tensor", wrong_type), ("unexpected", unexpected),
                         ("shape mismatch", mismatched), ("dtype mismatch", wrong_dtype)):
        if items:
            shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
            problems.append(f"{len(items)} {label} ({shown})")
    if problems:
        raise CheckpointError("checkpoint does not fit the model config: " + "; ".join(problems))
    check_finite(state_dict)


def _non_finite(tensor: torch.Tensor) -> int:
    """How many values of a floating or complex tensor are NaN or Inf, real ones in float32 as the model
    will hold them (a float64 1e300 is Inf there). Fast path: a finite sum means none (NaN and Inf
    propagate through a sum; an overflowing sum falls back to the exact count), about 20x faster than
    ``isfinite`` on every value (the full model's 861M values: 0.4 s, not 8 s)."""
    if not tensor.is_complex() and tensor.dtype != torch.float32:  # fp16, bf16, fp8 (sum is fp32-only), fp64
        tensor = tensor.float()
    if bool(torch.isfinite(tensor.sum())):
        return 0
    return int((~torch.isfinite(tensor)).sum())


def check_finite(state_dict: dict[str, torch.Tensor]) -> None:
    """Raise ``CheckpointError`` naming the first floating or complex tensor (in checkpoint order) that
    holds NaN or Inf (real tensors as float32, the model's precision), how many of its values are bad,
    and how many tensors are affected. Meta tensors are skipped."""
    bad: list[tuple[str, int, int]] = []  # (key, non-finite values, values)
    for key, tensor in state_dict.items():
        if tensor.is_meta or not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        count = _non_finite(tensor)
        if count:
            bad.append((key, count, tensor.numel()))
    if bad:
        key, count, total = bad[0]
        others = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise CheckpointError(f"checkpoint is damaged: tensor {key} has {count} of {total} values NaN or Inf"
                              f"{others}")


def _to_model_dtype(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Real floating tensors to fp32 (checkpoints may be stored in fp16/bf16); complex/int unchanged."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}


def load_model(
    checkpoint: "str | Path | None" = None,
    config: "str | Path | dict | Sam3Config | None" = None,
    device: "str | torch.device | None" = "auto",
    resolution: "int | None" = None,
) -> Sam3Image:
    """A ``Sam3Image`` in eval mode with weights from ``checkpoint``, on ``device``.

    ``checkpoint``: a local file (official ``sam3.pt`` layout or a plain state dict), a hub id
    (``owner/name``, file ``sam3.pt``, e.g. the official ``facebook/sam3``), or None / "demo" for the
    shipped demo model (synthetic shapes only: real videos need ``sam3.pt``). ``config``: preset name,
    file or dict; None means the config saved in the checkpoint, else the full ``sam3`` size. ``resolution``:
    another square input size (``build.at_resolution``; None: the config's).
    """
    path = resolve_checkpoint(checkpoint)
    return image_model_from(read_checkpoint(path), path, config, device, resolution)


def image_model_from(obj: "dict | HfCheckpoint", path: Path, config=None, device: "str | torch.device | None" = "auto",
                     resolution: "int | None" = None) -> Sam3Image:
    """``load_model`` of a checkpoint object already read from ``path``."""
    from .hf_checkpoint import HfCheckpoint

    device = resolve_device(device)
    hf = obj if isinstance(obj, HfCheckpoint) else None
    if hf is not None:  # its tensors under the official names of a model of this size
        with torch.device("meta"):
            meta = build_model(at_resolution(load_config("sam3" if config is None else config), resolution))
        obj = hf.to_official({DETECTOR_PREFIX + k: v for k, v in meta.state_dict().items()},
                             lambda key: meta.get_submodule(key.removeprefix(DETECTOR_PREFIX).rpartition(".")[0]),
                             left_out=(HF_TRACKER, HF_TRACKER_NECK))
    state_dict, report = extract_state_dict(obj, source=str(path))
    if config is None:  # the config saved in the checkpoint, else the official size of its layout
        config = saved_config(obj, "sam3.1" if report.version == "sam3.1" else "sam3")
    cfg = at_resolution(load_config(config), resolution)
    model = build_and_load(build_model, cfg, state_dict, report.not_tensors)
    report.recomputed = model.recomputed_rope_tables
    if hf is not None:
        report.version, report.absent = "transformers", [k.removeprefix(DETECTOR_PREFIX) for k in hf.absent]
        report.num_loaded -= len(report.absent)
        if hf.has_tracker:
            report.left_out["tracker_model. / tracker_neck. (transformers)"] = sum(
                k.startswith((HF_TRACKER, HF_TRACKER_NECK)) for k in hf.names)
        refuse_detector_points(model, path)
    logger.info("%s", report)
    model.load_report = report
    return model.to(device).eval()


def refuse_detector_points(image_model: Sam3Image, path: Path) -> None:
    """A detector loaded without its point projections (a transformers file) refuses point prompts in one line."""
    image_model.geometry_encoder.points_refused = (
        f"the detector loaded from {path.name} (transformers layout) has no point projections: point prompts to the "
        "detector need the official sam3.pt (box and text prompts work)")


def build_and_load(build, config, state_dict: dict, not_tensors: dict):
    """``build(config)`` on the meta device, ``state_dict`` checked against it (``CheckpointError``
    naming what does not fit) and assigned strictly (as fp32), non-persistent buffers rebuilt; RoPE tables of
    another resolution recomputed (their keys in ``model.recomputed_rope_tables``)."""
    with torch.device("meta"):
        model = build(config)
    state_dict, recomputed = refit_rope_tables(model, state_dict)
    check_state_dict(model, state_dict, not_tensors)
    model.load_state_dict(_to_model_dtype(state_dict), strict=True, assign=True)
    _materialise_non_persistent_buffers(model)
    model.recomputed_rope_tables = recomputed
    return model


def refit_rope_tables(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state_dict`` with the RoPE tables (``freqs_cis``) of the model's global attention blocks recomputed where
    the checkpoint was made at another resolution (another token grid, so another table length), and their keys.
    A table is a function of its grid alone: each stored one is first checked to be what the same rule gives for
    its own (square) grid, so nothing learnt is replaced (``CheckpointError`` otherwise)."""
    from .vitdet import Attention, Block

    state_dict, recomputed = dict(state_dict), []
    for name, block in model.named_modules():
        key = f"{name}.attn.freqs_cis"
        if not (isinstance(block, Block) and block.window_size == 0 and isinstance(block.attn, Attention)
                and block.attn.use_rope and key in state_dict):
            continue
        stored, expected = state_dict[key], block.attn.freqs_cis
        side = int(round(stored.shape[0] ** 0.5)) if stored.dim() == 2 else 0
        if stored.shape == expected.shape or side * side != stored.shape[0] or not stored.is_complex():
            continue  # the same grid, or not a table at all: check_state_dict names what is wrong
        own = block.attn.rope_table((side, side))
        if own.shape != stored.shape or not torch.allclose(stored.to(own.dtype), own, atol=1e-5):
            raise CheckpointError(f"{key} is not the RoPE table of a {side}x{side} token grid: it cannot be "
                                  f"recomputed for another resolution")
        state_dict[key] = block.attn.rope_table()
        recomputed.append(key)
    return state_dict, recomputed


def saved_config(obj: dict, default: str = "sam3") -> "dict | str":
    """The model config a checkpoint object carries (ours, or a training run's ``last.pt``), else ``default``."""
    config = obj.get("config") if isinstance(obj.get("config"), dict) else default
    if isinstance(config, dict) and isinstance(config.get("model"), dict):  # a training run's last.pt
        config = config["model"]
    return config


def _materialise_non_persistent_buffers(model: torch.nn.Module) -> None:
    """Buffers not saved in checkpoints (the text encoder's causal mask) are still on the meta device
    after an ``assign`` load: rebuild them on the CPU from the module that owns them."""
    for name, buffer in list(model.named_buffers()):
        if not buffer.is_meta:
            continue
        module_name, _, buffer_name = name.rpartition(".")
        module = model.get_submodule(module_name)
        if buffer_name == "attn_mask" and hasattr(module, "build_causal_mask"):
            with torch.device("cpu"):
                module._buffers[buffer_name] = module.build_causal_mask()
        else:
            raise CheckpointError(f"checkpoint does not fit the model config: no value for buffer {name}")
