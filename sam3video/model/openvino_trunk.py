"""The vision trunk's blocks run by OpenVINO (``--runtime openvino``): the rest of the model stays in torch.

Each ``vitdet.Block`` of the trunk (about 85 % of a full-size frame on a CPU) is exported once with
``openvino.convert_model`` (real-valued RoPE, ``vitdet.use_real_rope``), saved as OpenVINO IR in a cache
directory keyed by the block's weights, and compiled for the CPU with an inference precision hint:
``f32`` (fp32 math; agrees with torch to ~3e-6 on the full-size block) or ``bf16`` (bf16 matmuls and
attention on AVX-512 BF16 / AMX; on other CPUs OpenVINO runs it as f32). The first run converts (about
7 s a full-size block, 32 blocks); later runs read the IR back in milliseconds.

Token maps cross the boundary as (B, H, W, C) float32 numpy arrays without a copy on the way in; the
batch dimension is dynamic, the token grid fixed by the model's resolution.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import InputError
from .vitdet import ViT, use_real_rope

OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16"}  # precision -> OpenVINO INFERENCE_PRECISION_HINT
IR_FORMAT = "1"  # bump when the export changes: old cache entries are then never read
CACHE_ENV = "SAM3VIDEO_CACHE"  # the cache root (default ~/.cache/sam3video); IR goes to ROOT/openvino


def import_openvino():
    """The ``openvino`` module, or an ``InputError`` that says how to get it."""
    try:
        import openvino
    except ImportError as e:
        raise InputError(f"--runtime openvino needs the openvino package ({e}): pip install openvino") from e
    return openvino


def default_cache_dir() -> Path:
    """Where converted blocks are kept: ``$SAM3VIDEO_CACHE/openvino`` or ``~/.cache/sam3video/openvino``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sam3video"
    return Path(root) / "openvino"


class OpenVinoBlock(nn.Module):
    """A trunk block compiled by OpenVINO: (B, H, W, C) tokens -> (B, H, W, C) float32 tokens."""

    def __init__(self, compiled, source: Path):
        super().__init__()
        self.compiled = compiled
        self.source = source  # the IR it was compiled from (cache entry)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.detach().to(torch.float32).contiguous().numpy()
        return torch.from_numpy(self.compiled(tokens, share_inputs=True)[0])

    def extra_repr(self) -> str:
        return f"source={self.source}"


def block_key(block: nn.Module, grid: tuple[int, int], openvino_version: str) -> str:
    """A digest of everything the exported graph depends on: the block's class, window size, token grid,
    heads, the OpenVINO version, this module's IR format, and every parameter and buffer (name, dtype,
    shape, values)."""
    digest = hashlib.blake2b(digest_size=16)
    attn = block.attn
    header = (type(block).__name__, block.window_size, grid, attn.num_heads, attn.use_rope, openvino_version,
              IR_FORMAT)
    digest.update(repr(header).encode())
    for name, tensor in list(block.named_parameters()) + list(block.named_buffers()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        values = tensor.detach().contiguous()
        if values.is_complex():
            values = torch.view_as_real(values)
        digest.update(values.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def export_block(block: nn.Module, grid: tuple[int, int], entry: Path) -> Path:
    """Convert ``block`` (real-valued RoPE, dynamic batch) to OpenVINO IR at ``entry/block.xml``, written
    atomically: a temporary directory beside ``entry`` renamed into place. Returns the .xml path."""
    ov = import_openvino()
    channels = block.norm1.normalized_shape[0]
    example = torch.zeros(1, *grid, channels)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic
        graph = ov.convert_model(use_real_rope(copy.deepcopy(block)).eval(), example_input=example,
                                 input=[ov.PartialShape([-1, *grid, channels])])
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        ov.save_model(graph, staging / "block.xml", compress_to_fp16=False)
        os.replace(staging, entry)
    except OSError:
        if not (entry / "block.xml").exists():  # not another process's finished entry: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry / "block.xml"


def trunk_grid(trunk: ViT) -> tuple[int, int]:
    """The (H, W) token grid the trunk's global blocks attend over (fixed by the model's resolution)."""
    return tuple(trunk.blocks[trunk.full_attn_ids[0]].attn.input_size)


def compile_trunk(trunk: ViT, precision: str, cache_dir: "str | Path | None" = None, threads: int | None = None,
                  on_convert=None) -> dict[str, int]:
    """Replace every block of ``trunk`` by an ``OpenVinoBlock`` compiled at ``precision`` (fp32 or bf16), in
    place. ``threads``: OpenVINO's CPU threads (default: torch's). ``on_convert(missing, total)`` is called once
    before blocks that are not cached yet are converted. Returns {"converted": ..., "cached": ...} block counts."""
    if precision not in OPENVINO_HINTS:
        raise InputError(f"--runtime openvino runs fp32 or bf16, not {precision}")
    ov = import_openvino()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    grid = trunk_grid(trunk)
    core = ov.Core()
    options = {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
               "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
    for block in trunk.blocks:
        if isinstance(block, OpenVinoBlock):
            raise InputError("this trunk already runs in OpenVINO; load the model again for another mode")
    entries = [cache / block_key(block, grid, ov.__version__) for block in trunk.blocks]
    missing = [i for i, entry in enumerate(entries) if not (entry / "block.xml").exists()]
    if missing and on_convert is not None:
        on_convert(len(missing), len(entries))
    for i, entry in enumerate(entries):
        xml = export_block(trunk.blocks[i], grid, entry) if i in missing else entry / "block.xml"
        trunk.blocks[i] = OpenVinoBlock(core.compile_model(core.read_model(xml), "CPU", options), xml)
    return {"converted": len(missing), "cached": len(entries) - len(missing)}
