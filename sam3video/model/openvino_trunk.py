"""The vision trunk run by OpenVINO (``--runtime openvino``); the rest of the model stays in torch.

The trunk (about 85 % of a full-size frame on a CPU) is cut into stages that end at its global-attention
blocks (``trunk_stages``: 4 stages of 8 blocks at full size). Each stage is exported once with
``openvino.convert_model`` (real-valued RoPE, ``vitdet.use_real_rope``), saved as OpenVINO IR in a cache
directory keyed by its weights, and compiled for the CPU at one of:

    fp32  the ``f32`` inference hint: fp32 math, agrees with torch to ~3e-6 on the full-size blocks;
    bf16  the ``bf16`` hint: bf16 matmuls and attention on AVX-512 BF16 / AMX (elsewhere OpenVINO runs f32);
    int8  NNCF post-training quantization with static activation scales calibrated on
          ``CALIBRATION_FRAMES`` synthetic frames (``calibration_images``), int8 dot products on VNNI /
          AMX; what is not quantized runs at the plugin's default precision (bf16 where the CPU has it).

The first run converts (about 50 s a full-size stage, int8 then calibrates); later runs read the IR back
in a second. A full-size stage is converted in its own interpreter (``openvino_child``: ``sys.executable -m``,
so scripts need no ``__main__`` guard): tracing it holds ~5 GB that the converting process never gives back.
Stages, not blocks, are compiled because every compiled model keeps its own scratch memory (~0.2 GB for a
full-size block).

Token maps cross the boundary as (B, H, W, C) float32 numpy arrays (no copy on the way in); the batch
dimension is dynamic, the token grid fixed by the model's resolution.

``OpenVinoAttention`` is OpenVINO's scaled dot-product attention for any shape; ``use_openvino_attention``
gives it to the fusion encoder's self-attention (5184 tokens at full size), where torch's CPU flash
attention runs bf16 at fp32 speed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from . import openvino_child
from .vitdet import ViT, use_real_rope

# precision -> OpenVINO INFERENCE_PRECISION_HINT (int8: the plugin's default for what is not quantized)
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": None}
IR_NAME = "stage.xml"
IR_FORMAT = "2"  # bump when the export changes: old cache entries are then never read
CACHE_ENV = "SAM3VIDEO_CACHE"  # the cache root (default ~/.cache/sam3video); IR goes to ROOT/openvino
# int8: frames whose token maps set the static activation scales, half from the classic synthetic world,
# half from its randomised split. On the demo model's trunk (8 classic frames held out) the relative error
# of the output was 13.7 % with 4 randomised frames and NNCF's SmoothQuant, 3.7 % without SmoothQuant,
# 2.3 % with these 8 frames without it (bf16: 0.33 %).
CALIBRATION_FRAMES = 8
CALIBRATION_RECIPE = "classic+train, no SmoothQuant"  # part of the int8 cache key
# stages at least this large are converted in their own interpreter (``openvino_child``); the environment variable
# CHILD_ENV overrides it (tests set 0 so that the tiny model takes that path)
CHILD_MIN_PARAMETERS = 50_000_000
CHILD_ENV = "SAM3VIDEO_OPENVINO_CHILD_MIN_PARAMETERS"


def import_openvino():
    """The ``openvino`` module, or an ``InputError`` that says how to get it."""
    try:
        import openvino
    except ImportError as e:
        raise InputError(f"--runtime openvino needs the openvino package ({e}): pip install openvino") from e
    return openvino


def default_cache_dir() -> Path:
    """Where converted stages are kept: ``$SAM3VIDEO_CACHE/openvino`` or ``~/.cache/sam3video/openvino``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sam3video"
    return Path(root) / "openvino"


def compile_options(precision: str, threads: int | None = None) -> dict:
    """OpenVINO CPU options for ``precision``: latency, ``threads`` (default: torch's), its hint."""
    options = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
    if OPENVINO_HINTS[precision] is not None:
        options["INFERENCE_PRECISION_HINT"] = OPENVINO_HINTS[precision]
    return options


def runs_in_child(parameters: int) -> bool:
    """Whether a stage of this many parameters is converted / quantized in its own interpreter."""
    return parameters >= int(os.environ.get(CHILD_ENV, CHILD_MIN_PARAMETERS))


def as_float32_array(x: torch.Tensor) -> np.ndarray:
    """``x`` as a contiguous float32 numpy array for OpenVINO (no copy when it already is one)."""
    return x.detach().to(torch.float32).contiguous().numpy()


class OpenVinoStage(nn.Module):
    """Consecutive trunk blocks compiled by OpenVINO: (B, H, W, C) tokens -> (B, H, W, C) float32 tokens."""

    def __init__(self, compiled, source: Path, num_blocks: int):
        super().__init__()
        self.compiled = compiled
        self.source = source  # the IR it was compiled from (its cache entry)
        self.num_blocks = num_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.compiled(as_float32_array(x), share_inputs=True)[0])

    def extra_repr(self) -> str:
        return f"blocks={self.num_blocks}, source={self.source}"


def trunk_grid(trunk: ViT) -> tuple[int, int]:
    """The (H, W) token grid the trunk's global blocks attend over (fixed by the model's resolution)."""
    return tuple(trunk.blocks[trunk.full_attn_ids[0]].attn.input_size)


def trunk_stages(trunk: ViT) -> list[range]:
    """Block indices of each stage: up to and including each global-attention block (whose outputs the
    trunk may return), then the blocks after the last one."""
    stages, start = [], 0
    for end in sorted(trunk.full_attn_ids):
        stages.append(range(start, end + 1))
        start = end + 1
    if start < len(trunk.blocks):
        stages.append(range(start, len(trunk.blocks)))
    return stages


def stage_key(blocks: list[nn.Module], grid: tuple[int, int], openvino_version: str) -> str:
    """A digest of everything a stage's exported graph depends on: each block's class, window size and
    heads, the token grid, the OpenVINO version, this module's IR format, and every parameter and buffer
    (name, dtype, shape, values)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((grid, openvino_version, IR_FORMAT)).encode())
    for block in blocks:
        digest.update(repr((type(block).__name__, block.window_size, block.attn.num_heads)).encode())
        for name, tensor in list(block.named_parameters()) + list(block.named_buffers()):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            values = tensor.detach().contiguous()
            if values.is_complex():
                values = torch.view_as_real(values).contiguous()
            digest.update(values.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_ir(graph, entry: Path) -> Path:
    """``graph`` as IR at ``entry/stage.xml`` (+ .bin), written atomically: a temporary directory beside
    ``entry`` renamed into place (another process's finished entry is kept). Returns the .xml path."""
    ov = import_openvino()
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        ov.save_model(graph, staging / IR_NAME, compress_to_fp16=False)
        os.replace(staging, entry)
    except OSError:
        if not (entry / IR_NAME).exists():  # not another process's finished entry: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry / IR_NAME


def export_stage(stage: nn.Module, grid: tuple[int, int], entry: Path) -> None:
    """Convert ``stage`` (blocks in an ``nn.Sequential``; real-valued RoPE, dynamic batch) to IR at ``entry``."""
    ov = import_openvino()
    channels = stage[0].norm1.normalized_shape[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic
        graph = ov.convert_model(use_real_rope(stage).eval(), example_input=torch.zeros(1, *grid, channels),
                                 input=[ov.PartialShape([-1, *grid, channels])])
    save_ir(graph, entry)


def quantize_stage(xml: Path, samples: np.ndarray, entry: Path) -> None:
    """NNCF post-training int8 quantization of the IR at ``xml``, its activation scales set by ``samples``
    (N, H, W, C) of the stage's input; the result saved at ``entry``."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # nncf's import: "no CUDA runtime"
    import nncf

    graph = import_openvino().Core().read_model(xml)
    nncf.set_log_level(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # its progress bars
        warnings.simplefilter("ignore")
        no_smooth_quant = nncf.AdvancedSmoothQuantParameters(matmul=-1)  # see CALIBRATION_FRAMES
        quantized = nncf.quantize(graph, nncf.Dataset([samples[i:i + 1] for i in range(len(samples))]),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples),
                                  advanced_parameters=nncf.AdvancedQuantizationParameters(
                                      smooth_quant_alphas=no_smooth_quant))
    save_ir(quantized, entry)


def convert_stage(blocks: list[nn.Module], grid: tuple[int, int], entry: Path) -> None:
    """Export ``blocks`` as one stage at ``entry``: in its own interpreter when large (``openvino_child``)."""
    stage = copy.deepcopy(nn.Sequential(*blocks))
    if not runs_in_child(sum(p.numel() for p in stage.parameters())):
        export_stage(stage, grid, entry)
        return
    with tempfile.TemporaryDirectory(prefix="sam3video_stage_") as tmp:
        openvino_child.save_stage(stage, grid, Path(tmp))
        del stage
        openvino_child.run("export", tmp, entry)


def calibration_images(resolution: int) -> torch.Tensor:
    """(CALIBRATION_FRAMES, 3, R, R) normalised frames int8 calibrates on: frame 2 of 1 s clips (4 fps) of
    seeds 0, 1, ... of the classic synthetic world and of its randomised split (backgrounds, textures,
    noise, lighting), half each, 640x480, preprocessed as the video path does."""
    from ..data.styles import StyleConfig
    from ..data.synthetic import WorldConfig
    from ..data.clips import generate_clip
    from ..preprocess import preprocess_image

    frames = []
    for style in (None, StyleConfig(split="train")):
        world = WorldConfig(width=640, height=480, duration_s=1.0, fps=4, style=style)
        for seed in range(CALIBRATION_FRAMES // 2):
            image = generate_clip(seed, world).image(2)
            frames.append(preprocess_image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
                                           resolution))
    return torch.stack(frames)


def calibration_key(trunk: ViT, keys: list[str]) -> str:
    """What an int8 stage's scales depend on besides its own weights: the calibration frames and every
    weight before the stage (the embedding's, and the stage keys of all stages, for short)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"calibration:{CALIBRATION_FRAMES}:{CALIBRATION_RECIPE}:{IR_FORMAT}:{','.join(keys)}".encode())
    for name, tensor in list(trunk.patch_embed.state_dict().items()) + [("pos_embed", trunk.pos_embed)]:
        if tensor is not None:
            digest.update(name.encode() + tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def quantize_stages(trunk: ViT, f32_xmls: list[Path], missing: list[int], entries: list[Path], core) -> None:
    """int8 entries for the stages ``missing``: each calibrated on the calibration frames' token maps at
    its input, propagated through the fp32 stages before it."""
    resolution = trunk_grid(trunk)[0] * trunk.patch_embed.proj.stride[0]
    with torch.inference_mode():
        tokens = trunk.embed(calibration_images(resolution)).numpy()
    with tempfile.TemporaryDirectory(prefix="sam3video_calibration_") as tmp:
        for i, xml in enumerate(f32_xmls):
            if i in missing:
                if not runs_in_child(os.path.getsize(xml.with_suffix(".bin")) // 4):  # fp32 weights
                    quantize_stage(xml, tokens, entries[i])
                else:
                    np.save(Path(tmp) / "samples.npy", tokens, allow_pickle=False)
                    openvino_child.run("quantize", xml, Path(tmp) / "samples.npy", entries[i])
            if any(j > i for j in missing):
                tokens = core.compile_model(core.read_model(xml), "CPU", compile_options("fp32"))(tokens)[0]


def compile_trunk(trunk: ViT, precision: str, cache_dir: "str | Path | None" = None, threads: int | None = None,
                  on_convert=None) -> dict[str, int]:
    """Run ``trunk``'s blocks in OpenVINO at ``precision`` (fp32, bf16 or int8), in place: the last block
    of each stage becomes an ``OpenVinoStage`` running the whole stage, the others ``nn.Identity``.
    ``threads``: OpenVINO's CPU threads (default: torch's). ``on_convert(missing, total)`` is called once
    before stages not cached yet are converted. Returns {"converted": ..., "cached": ...} stage counts."""
    if precision not in OPENVINO_HINTS:
        raise InputError(f"--runtime openvino runs {', '.join(OPENVINO_HINTS)}, not {precision}")
    if any(isinstance(block, (OpenVinoStage, nn.Identity)) for block in trunk.blocks):
        raise InputError("this trunk already runs in OpenVINO; load the model again for another mode")
    ov = import_openvino()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    grid, stages = trunk_grid(trunk), trunk_stages(trunk)
    keys = [stage_key([trunk.blocks[i] for i in stage], grid, ov.__version__) for stage in stages]
    f32_entries = [cache / key for key in keys]
    entries = f32_entries
    if precision == "int8":
        calibrated = calibration_key(trunk, keys)
        entries = [cache / f"{key}-int8-{calibrated}" for key in keys]
    missing = [i for i, entry in enumerate(entries) if not (entry / IR_NAME).exists()]
    if missing and on_convert is not None:
        on_convert(len(missing), len(entries))
    needs_f32 = range(len(stages)) if precision == "int8" and missing else missing  # int8 calibrates through all
    for i in needs_f32:
        if not (f32_entries[i] / IR_NAME).exists():
            convert_stage([trunk.blocks[j] for j in stages[i]], grid, f32_entries[i])
    core = ov.Core()
    if precision == "int8" and missing:
        quantize_stages(trunk, [entry / IR_NAME for entry in f32_entries], missing, entries, core)
    options = compile_options(precision, threads)
    for stage, entry in zip(stages, entries):
        compiled = core.compile_model(core.read_model(entry / IR_NAME), "CPU", options)
        for j in stage:
            trunk.blocks[j] = nn.Identity()
        trunk.blocks[stage[-1]] = OpenVinoStage(compiled, entry / IR_NAME, len(stage))
    return {"converted": len(missing), "cached": len(entries) - len(missing)}


class OpenVinoAttention:
    """OpenVINO's scaled dot-product attention, (B, heads, L, d) q, k, v (any float dtype) -> float32,
    compiled once for any shape at ``precision``'s hint. Torch's CPU flash attention runs bf16 at fp32
    speed; OpenVINO's took half its time on the fusion encoder's 5184-token self-attention (README)."""

    def __init__(self, precision: str, threads: int | None = None):
        ov = import_openvino()

        class Attention(nn.Module):
            def forward(self, q, k, v):
                return F.scaled_dot_product_attention(q, k, v)

        example = tuple(torch.zeros(1, 1, 2, 4) for _ in range(3))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = ov.convert_model(Attention(), example_input=example, input=[ov.PartialShape([-1] * 4)] * 3)
        self.compiled = ov.Core().compile_model(graph, "CPU", compile_options(precision, threads))

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        arrays = [as_float32_array(x) for x in (q, k, v)]
        return torch.from_numpy(self.compiled(arrays, share_inputs=True)[0])


def use_openvino_attention(encoder: nn.Module, precision: str) -> int:
    """Give the self-attention of every layer of ``encoder`` OpenVINO's attention kernel (one compiled
    model shared); returns how many layers."""
    kernel = OpenVinoAttention(precision)
    for layer in encoder.layers:
        layer.self_attn.attention_kernel = kernel
    return len(encoder.layers)
