"""The vision trunk run by OpenVINO (``--runtime openvino``); the rest of the model stays in torch.

The trunk (about 85 % of a full-size frame on a CPU) is cut into stages that end at its global-attention
blocks (``trunk_stages``: 4 stages of 8 blocks at full size). Each stage is saved once as OpenVINO IR in a
cache directory keyed by its weights, and compiled for the CPU at one of:

    fp32  the ``f32`` inference hint: fp32 math, agrees with torch to ~3e-6 on the full-size blocks;
    bf16  the ``bf16`` hint: bf16 matmuls and attention on AVX-512 BF16 / AMX (elsewhere OpenVINO runs f32);
    int8  NNCF post-training quantization with static activation scales calibrated on
          ``CALIBRATION_FRAMES`` synthetic frames (``calibration_images``), int8 dot products on VNNI /
          AMX; what is not quantized runs at the plugin's default precision (bf16 where the CPU has it).

A stage's graph: ``openvino.convert_model`` traces one block of each kind (``BlockTemplate``: a window
block and a global block at full size, real-valued RoPE, ``vitdet.use_real_rope``) and every block is a
copy of its template's graph with its own weights put in, joined into stages (``chain``): about 10 s a
template instead of ~100 s a traced stage. int8 then quantizes stage by stage, the calibration frames
carried from one stage to the next through the stages just quantized. The first run shows a bar with the
time left (``ConversionProgress``); later runs read the IR back in seconds. A full-size conversion runs in
its own interpreter (``openvino_child``: ``sys.executable -m``, so scripts need no ``__main__`` guard):
tracing holds memory that the converting process never gives back. Stages, not blocks, are compiled
because every compiled model keeps its own scratch memory (~0.2 GB for a full-size block).

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
import sys
import tempfile
import threading
import time
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
# 2.3 % with 8 of these frames without it (bf16: 0.33 %). Each frame costs a full-size fp32 trunk pass in
# the first run (~1 minute on 2 AVX2 cores); ``tools/check_calibration.py`` found 4 as good as 8 (README).
CALIBRATION_FRAMES = 4
# NNCF's fast bias correction: no measurable effect here (tools/check_calibration.py), and ~0.6 s a layer to
# compile its subgraph (128 layers at full size)
BIAS_CORRECTION = False
# the precision the calibration frames are carried in from stage to stage ("int8": the stages just quantized)
CALIBRATION_CARRY = "int8"
CALIBRATION_RECIPE = "classic+train, no SmoothQuant"  # part of the int8 cache key
# seconds each step of a first run took at full size, 2 AVX2 cores (tools/profile_first_run.py): the progress
# bar's time left for a kind of step before one has run here (a block template traced, a block's graph
# from it, a stage's IR saved, a stage quantized by NNCF, the calibration frames carried through a stage,
# a stage compiled)
STEP_SECONDS = {"template": 22.0, "block": 0.1, "save": 0.9, "quantize": 87.0, "carry": 64.0, "compile": 1.8}
STEP_ORDER = ("template", "block", "save", "quantize", "carry", "compile")
STEP_LABELS = {"template": "converting", "block": "converting", "save": "saving", "quantize": "calibrating int8",
               "carry": "calibrating int8", "compile": "compiling"}
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


def convert_blocks(blocks: nn.Sequential, grid: tuple[int, int]):
    """``blocks`` traced and converted by ``openvino.convert_model`` (real-valued RoPE, dynamic batch)."""
    ov = import_openvino()
    channels = blocks[0].norm1.normalized_shape[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic
        return ov.convert_model(use_real_rope(blocks).eval(), example_input=torch.zeros(1, *grid, channels),
                                input=[ov.PartialShape([-1, *grid, channels])])


class UnplacedWeights(ValueError):
    """A block's weight is not a constant of its converted graph as it is (folded or transformed)."""


class BlockTemplate:
    """One block converted once, with stand-in weights, and where each weight sits in its graph: every
    block of the same shape and buffers becomes a copy of the graph with its own weights put in. Tracing
    and converting a full-size block takes ~10 s; a copy, well under one.

    The stand-ins are distinct random values, so a graph constant equal to one of them (flattened) is that
    weight, and nothing is folded away that a real weight would keep (a zero bias, a unit norm scale).
    A weight found in no constant raises ``UnplacedWeights`` (the caller then converts the blocks)."""

    def __init__(self, block: nn.Module, grid: tuple[int, int]):
        stand_in = copy.deepcopy(block)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for param in stand_in.parameters():
                param.copy_(torch.randn(param.shape, generator=generator))
        self.graph = convert_blocks(nn.Sequential(stand_in), grid)
        values = {name: param.detach().reshape(-1).numpy() for name, param in stand_in.named_parameters()}
        self.weights = {}  # constant's friendly name -> the parameter it holds
        for op in self.graph.get_ordered_ops():
            if op.get_type_name() == "Constant" and op.get_element_type().is_real():
                data = op.get_data().reshape(-1)
                for name, value in values.items():
                    if value.size == data.size and np.array_equal(value, data):
                        self.weights[op.get_friendly_name()] = name
                        break
        unplaced = sorted(set(values) - set(self.weights.values()))
        names = [op.get_friendly_name() for op in self.graph.get_ordered_ops() if op.get_type_name() == "Constant"]
        if unplaced or len(names) != len(set(names)):
            raise UnplacedWeights(f"weights not found as constants of the converted block: {unplaced}")

    def instance(self, block: nn.Module):
        """The template's graph with ``block``'s weights (a block of the same ``template_key``)."""
        ov = import_openvino()
        graph = self.graph.clone()
        weights = dict(block.named_parameters())
        for op in graph.get_ordered_ops():
            name = self.weights.get(op.get_friendly_name()) if op.get_type_name() == "Constant" else None
            if name is not None:
                value = weights[name].detach().to(torch.float32).reshape(tuple(op.get_output_shape(0)))
                op.output(0).replace(ov.opset13.constant(value.contiguous().numpy()).output(0))
        return graph


def template_key(block: nn.Module) -> str:
    """What a block's converted graph depends on besides its weights: its class, sizes and buffers."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((type(block).__name__, openvino_child.block_spec(block),
                        [(name, tuple(p.shape)) for name, p in block.named_parameters()])).encode())
    for name, buffer in block.named_buffers():
        values = torch.view_as_real(buffer) if buffer.is_complex() else buffer
        digest.update(name.encode() + values.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def chain(graphs: list):
    """One OpenVINO model running ``graphs`` (each one input, one output) one after another. The graphs'
    nodes are joined, not copied: each graph is used up. Node names get the graph's index as a prefix
    (NNCF wants them unique; copies of one template share theirs)."""
    ov = import_openvino()
    for i, graph in enumerate(graphs):
        for op in graph.get_ops():
            op.set_friendly_name(f"{i}.{op.get_friendly_name()}")
    results = [graphs[0].get_results()[0]]
    for graph in graphs[1:]:
        source = results[-1].input_value(0)
        for target in list(graph.get_parameters()[0].output(0).get_target_inputs()):
            target.replace_source_output(source)
        results.append(graph.get_results()[0])
    return ov.Model(results[-1:], [graphs[0].get_parameters()[0]])


def export_stages(stages: list[nn.Sequential], grid: tuple[int, int], entries: list[Path],
                  progress=None) -> None:
    """Each of ``stages`` (blocks in an ``nn.Sequential``) as IR at its entry: the blocks' graphs from one
    ``BlockTemplate`` per ``template_key`` (so a full-size trunk traces two blocks, not 32); a stage whose
    weights the template cannot place is converted whole. ``progress(kind)`` after each template, block and
    stage saved."""
    progress = progress or (lambda kind: None)
    templates = {}
    for stage, entry in zip(stages, entries):
        try:
            graphs = []
            for block in stage:
                key = template_key(block)
                if key not in templates:
                    templates[key] = BlockTemplate(block, grid)
                    progress("template")
                graphs.append(templates[key].instance(block))
                progress("block")
            graph = chain(graphs)
        except (UnplacedWeights, ValueError):  # block_spec: a block the child cannot rebuild is converted whole
            graph = convert_blocks(copy.deepcopy(stage), grid)
            for _ in range(len(stage) - len(graphs)):
                progress("block")
        save_ir(graph, entry)
        progress("save")


def quantize_stage(xml: Path, samples: np.ndarray, entry: Path, bias_correction: bool = False) -> None:
    """NNCF post-training int8 quantization of the IR at ``xml``, its activation scales set by ``samples``
    (N, H, W, C) of the stage's input (no SmoothQuant, see ``CALIBRATION_FRAMES``; NNCF's fast bias
    correction only with ``bias_correction``, see ``BIAS_CORRECTION``); the result saved at ``entry``."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # nncf's import: "no CUDA runtime"
    import nncf

    graph = import_openvino().Core().read_model(xml)
    nncf.set_log_level(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # its progress bars
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(graph, nncf.Dataset([samples[i:i + 1] for i in range(len(samples))]),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples),
                                  advanced_parameters=nncf.AdvancedQuantizationParameters(
                                      smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=-1),
                                      disable_bias_correction=not bias_correction))
    save_ir(quantized, entry)


def convert_stages(stages: list[list[nn.Module]], grid: tuple[int, int], entries: list[Path], progress=None) -> None:
    """Export each stage (its blocks) at its entry: in one interpreter of its own when large (``openvino_child``).
    ``progress(kind)`` as ``export_stages``."""
    sequences = [nn.Sequential(*blocks) for blocks in stages]  # the blocks themselves: nothing here changes them
    if not runs_in_child(sum(p.numel() for stage in sequences for p in stage.parameters())):
        export_stages(sequences, grid, entries, progress)
        return
    with tempfile.TemporaryDirectory(prefix="sam3video_stage_") as tmp:
        arguments = []
        for i, (stage, entry) in enumerate(zip(sequences, entries)):
            folder = Path(tmp) / f"stage{i}"
            folder.mkdir()
            openvino_child.save_stage(stage, grid, folder)
            arguments += [folder, entry]
        openvino_child.run("export", *arguments, progress=progress)


def calibration_images(resolution: int, count: int | None = None, first_seed: int = 0) -> torch.Tensor:
    """(count, 3, R, R) normalised frames (default ``CALIBRATION_FRAMES``: those int8 calibrates on): frame 2
    of 1 s clips (4 fps) of seeds ``first_seed``, ``first_seed`` + 1, ... of the classic synthetic world and of
    its randomised split (backgrounds, textures, noise, lighting), half each, 640x480, preprocessed as the
    video path does."""
    from ..data.styles import StyleConfig
    from ..data.synthetic import WorldConfig
    from ..data.clips import generate_clip
    from ..preprocess import preprocess_image

    frames = []
    for style in (None, StyleConfig(split="train")):
        world = WorldConfig(width=640, height=480, duration_s=1.0, fps=4, style=style)
        for seed in range(first_seed, first_seed + (count or CALIBRATION_FRAMES) // 2):
            image = generate_clip(seed, world).image(2)
            frames.append(preprocess_image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
                                           resolution))
    return torch.stack(frames)


def calibration_key(trunk: ViT, keys: list[str]) -> str:
    """What an int8 stage's scales depend on besides its own weights: the calibration frames and every
    weight before the stage (the embedding's, and the stage keys of all stages, for short)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"calibration:{CALIBRATION_FRAMES}:{CALIBRATION_RECIPE}:{BIAS_CORRECTION}:{CALIBRATION_CARRY}:"
                  f"{IR_FORMAT}:{','.join(keys)}".encode())
    for name, tensor in list(trunk.patch_embed.state_dict().items()) + [("pos_embed", trunk.pos_embed)]:
        if tensor is not None:
            digest.update(name.encode() + tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def quantize_stages(trunk: ViT, f32_xmls: list[Path], missing: list[int], entries: list[Path], core,
                    progress=None) -> None:
    """int8 entries for the stages ``missing``, in order: each calibrated on the calibration frames' token
    maps at its input, carried there through the int8 stages before it (what it will be fed; on VNNI / AMX
    also 2-3x faster than fp32). ``progress(kind)`` after each stage quantized and each carried."""
    progress = progress or (lambda kind: None)
    resolution = trunk_grid(trunk)[0] * trunk.patch_embed.proj.stride[0]
    with torch.inference_mode():
        tokens = trunk.embed(calibration_images(resolution)).numpy()
    with tempfile.TemporaryDirectory(prefix="sam3video_calibration_") as tmp:
        for i, xml in enumerate(f32_xmls[:max(missing) + 1]):
            if i in missing:
                if not runs_in_child(os.path.getsize(xml.with_suffix(".bin")) // 4):  # fp32 weights
                    quantize_stage(xml, tokens, entries[i], BIAS_CORRECTION)
                else:
                    np.save(Path(tmp) / "samples.npy", tokens, allow_pickle=False)
                    openvino_child.run("quantize", xml, Path(tmp) / "samples.npy", entries[i],
                                       *(["--bias-correction"] if BIAS_CORRECTION else []))
                progress("quantize")
            if i < max(missing):
                carry = entries[i] / IR_NAME if CALIBRATION_CARRY == "int8" else xml
                stage = core.compile_model(core.read_model(carry), "CPU", compile_options(CALIBRATION_CARRY))
                tokens = np.concatenate([stage(tokens[j:j + 1])[0] for j in range(len(tokens))])
                progress("carry")


class ConversionProgress:
    """The time a first run has left, as a bar on a terminal (stderr; drawn nowhere else): each step still
    to run (``STEP_SECONDS``' kinds) at the mean seconds its kind has taken here, or, for a kind not run
    yet, at ``STEP_SECONDS`` scaled by how the kinds run so far compare with theirs. Call it with a kind
    when a step of that kind ends; ``close()`` when done."""

    def __init__(self, steps: dict[str, int], description: str, show: "bool | None" = None):
        from tqdm import tqdm

        self.left = {kind: count for kind, count in steps.items() if count}
        self.taken: dict[str, list[float]] = {}
        self.start = self.last = time.monotonic()
        self.kind = next(iter(self.left), "")
        self.bar = tqdm(total=max(1, round(self.remaining())), desc=description, unit="s", file=sys.stderr,
                        disable=None if show is None else not show, dynamic_ncols=True, leave=False,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        self.description = description
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.refresh()
        if not self.bar.disable:  # the clock moves between steps
            threading.Thread(target=self._tick, daemon=True).start()

    def remaining(self) -> float:
        """Seconds the steps left are expected to take (the one running counted from its start)."""
        prior = sum(STEP_SECONDS[kind] * len(seconds) for kind, seconds in self.taken.items())
        scale = sum(map(sum, self.taken.values())) / prior if prior else 1.0
        mean = {kind: sum(seconds) / len(seconds) for kind, seconds in self.taken.items()}
        return sum(count * mean.get(kind, STEP_SECONDS[kind] * scale) for kind, count in self.left.items())

    def refresh(self) -> None:
        with self.lock:
            elapsed = time.monotonic() - self.start
            left = max(self.remaining() - (time.monotonic() - self.last), 1.0 if self.left else 0.0)
            self.bar.total = max(1, round(elapsed + left))
            self.bar.n = min(round(elapsed), self.bar.total)
            self.bar.set_description_str(f"{self.description}, {STEP_LABELS.get(self.kind, 'done')}", refresh=False)
            self.bar.refresh()

    def _tick(self) -> None:
        while not self.done.wait(1.0):
            self.refresh()

    def __call__(self, kind: str) -> None:
        now = time.monotonic()
        self.taken.setdefault(kind, []).append(now - self.last)
        self.last = now
        self.left[kind] = max(0, self.left.get(kind, 0) - 1)
        self.kind = next((k for k in STEP_ORDER if self.left.get(k)), "")
        self.refresh()

    def close(self) -> None:
        self.done.set()
        self.bar.close()


def compile_trunk(trunk: ViT, precision: str, cache_dir: "str | Path | None" = None, threads: int | None = None,
                  on_convert=None, show_progress: bool = True) -> dict[str, int]:
    """Run ``trunk``'s blocks in OpenVINO at ``precision`` (fp32, bf16 or int8), in place: the last block
    of each stage becomes an ``OpenVinoStage`` running the whole stage, the others ``nn.Identity``.
    ``threads``: OpenVINO's CPU threads (default: torch's). ``on_convert(missing, total)`` is called once
    before stages not cached yet are converted, which ``show_progress`` shows as a bar with the time left
    on a terminal (``ConversionProgress``). Returns {"converted": ..., "cached": ...} stage counts."""
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
    needs_f32 = range(max(missing) + 1) if precision == "int8" and missing else missing  # int8 calibrates through
    to_convert = [i for i in needs_f32 if not (f32_entries[i] / IR_NAME).exists()]
    blocks = [[trunk.blocks[j] for j in stages[i]] for i in to_convert]
    progress = ConversionProgress({
        "template": len({template_key(block) for stage in blocks for block in stage}),
        "block": sum(map(len, blocks)), "save": len(blocks),
        "quantize": len(missing) if precision == "int8" else 0,
        "carry": max(missing) if precision == "int8" and missing else 0,
        "compile": len(stages)}, f"OpenVINO {precision}: first run with these weights",
        show=None if show_progress and missing else False)
    try:
        if to_convert:
            convert_stages(blocks, grid, [f32_entries[i] for i in to_convert], progress)
        core = ov.Core()
        if precision == "int8" and missing:
            quantize_stages(trunk, [entry / IR_NAME for entry in f32_entries], missing, entries, core, progress)
        options = compile_options(precision, threads)
        for stage, entry in zip(stages, entries):
            compiled = core.compile_model(core.read_model(entry / IR_NAME), "CPU", options)
            for j in stage:
                trunk.blocks[j] = nn.Identity()
            trunk.blocks[stage[-1]] = OpenVinoStage(compiled, entry / IR_NAME, len(stage))
            progress("compile")
    finally:
        progress.close()
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
