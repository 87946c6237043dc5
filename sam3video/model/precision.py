"""Precision modes of a ``Sam3Image``, chosen with one flag (``--precision``).

    fp32   exact (the default): the official fp32 math, parity-tested to 1e-6.
    bf16   weights of the matmul layers (Linear, Conv, attention projections) cast to bfloat16 once, and
           autocast to bfloat16 around every model call, as the official code runs on CUDA. The result is
           the same as autocast alone (autocast casts those weights to the same values on every call);
           casting once saves the per-call cast of ~840 M weights and half their memory.
    fp16   the same with float16 (GPUs; slow on most CPUs).
    int8   the vision trunk (most of a frame's FLOPs) in int8, CPU only. In torch: its Linear layers
           quantized dynamically (int8 weights per output channel, activations quantized on the fly,
           ``torch.ao``), everything else fp32. In OpenVINO: the whole trunk statically quantized by NNCF
           (``openvino_trunk``), everything else bf16 on a CPU with bf16 units (``compute_dtype``).
    auto   the fastest of these this device runs well (``resolve_precision``).

The runtime of the vision trunk (``--runtime``): torch, or OpenVINO (``openvino_trunk``; CPU; fp32, bf16
or int8), which on a CPU with bf16 units runs the full-size trunk in bf16 in about 0.65x torch's bf16
time, and in int8 (with VNNI / AMX int8) faster still. auto: OpenVINO where it pays (``openvino_pays``),
torch otherwise (``resolve_runtime``).

``apply_precision(model, mode, runtime)`` converts a model in place (once; a model is in one mode for its
life) and ``autocast_context(model)`` is the context its forward passes run in.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import InputError
from ..video.session import PRECISIONS, RUNTIMES  # the torch-free lists the configs check against

logger = logging.getLogger(__name__)

LOW_PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MATMUL_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d, nn.MultiheadAttention)  # the modules autocast runs in low precision
# CPU flags that make bf16 matmuls faster than fp32 (AMX tiles; AVX-512 BF16 dot products)
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# auto picks int8 for trunks at least this wide. Measured on an AVX2 CPU (README, "Speed"): the full
# model (1024) runs 0.88x its fp32 time per frame in int8, the demo model (64) 1.09x (quantizing its
# activations costs more than its small matmuls save).
INT8_MIN_TRUNK_WIDTH = 1024
# auto runs trunks at least this wide in OpenVINO on a CPU with bf16 units. Measured on an AMD EPYC with
# AVX-512 BF16 (README, "Speed"): a full-size block takes 0.26x torch fp32's time in OpenVINO bf16, where
# torch bf16 leaves attention at fp32 speed (its CPU flash attention gains nothing from bf16).
OPENVINO_MIN_TRUNK_WIDTH = 1024
OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")
# CPU flags of int8 dot products: with bf16 units too, auto runs the full-size trunk in OpenVINO int8 (static,
# NNCF), the fastest mode measured there (README, "Speed": 0.24-0.26x the official fp32 frame, AVX-512 VNNI)
INT8_CPU_FLAGS = ("avx512_vnni", "amx_int8")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The flags of this CPU (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def openvino_pays(precision: str, trunk_width: int) -> bool:
    """Whether OpenVINO runs a trunk of ``trunk_width`` channels at ``precision`` faster than torch on this
    CPU (as measured, README "Speed"): a full-size trunk, openvino installed, bf16 units, and for int8
    also int8 dot products (without them its int8 gained nothing on an AVX2 CPU)."""
    flags = cpu_flags()
    if (trunk_width < OPENVINO_MIN_TRUNK_WIDTH or not flags & set(BF16_CPU_FLAGS)
            or importlib.util.find_spec("openvino") is None):
        return False
    return precision == "bf16" or (precision == "int8" and bool(flags & set(INT8_CPU_FLAGS)))


def resolve_precision(precision: str, device: torch.device, trunk_width: int = INT8_MIN_TRUNK_WIDTH,
                      runtime: str = "auto") -> str:
    """``precision`` with "auto" replaced by a concrete mode for ``device``, a vision trunk of
    ``trunk_width`` channels and the ``runtime`` asked for.

    auto: bf16 on GPUs that have it (fp16 on older ones); on a CPU, int8 where OpenVINO runs it fast
    (``openvino_pays``; not with runtime "torch"), else bf16 where it has bf16 matmul units (AMX or
    AVX-512 BF16), else int8 for a wide trunk (torch.ao dynamic quantization on AVX2 / AVX-512 VNNI
    integer dot products), else fp32.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise InputError(f"int8 runs on the CPU only (this model is on {device.type}): use bf16 there")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        if runtime != "torch" and openvino_pays("int8", trunk_width):
            return "int8"
        if cpu_flags() & set(BF16_CPU_FLAGS):
            return "bf16"
        return "int8" if trunk_width >= INT8_MIN_TRUNK_WIDTH else "fp32"
    return "fp32"


def resolve_runtime(runtime: str, precision: str, device: torch.device,
                    trunk_width: int = OPENVINO_MIN_TRUNK_WIDTH) -> str:
    """``runtime`` ("auto", "torch" or "openvino") for the trunk at the resolved ``precision`` on ``device``.

    auto: "openvino" on a CPU where it ``openvino_pays`` (bf16 or int8, full-size trunk); "torch"
    otherwise (fp32 stays in torch, exact). "openvino" asked for runs fp32, bf16 or int8 on the CPU only.
    """
    if runtime not in RUNTIMES:
        raise InputError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "openvino":
        if device.type != "cpu":
            raise InputError(f"--runtime openvino runs on the CPU only (this model is on {device.type})")
        if precision not in OPENVINO_PRECISIONS:
            raise InputError(f"--runtime openvino runs {', '.join(OPENVINO_PRECISIONS)}, not {precision}")
        return runtime
    if runtime == "torch":
        return runtime
    return "openvino" if device.type == "cpu" and openvino_pays(precision, trunk_width) else "torch"


def full_precision_modules(model: nn.Module) -> set[nn.Module]:
    """Modules that run outside autocast (a module lists them in ``full_precision_children``): their
    weights must stay fp32."""
    kept = set()
    for module in model.modules():
        for name in getattr(module, "full_precision_children", ()):
            kept.update(getattr(module, name).modules())
    return kept


def cast_matmul_weights(model: nn.Module, dtype: torch.dtype) -> int:
    """Cast the parameters of the matmul modules (``MATMUL_MODULES``) that run under autocast to ``dtype``,
    in place; returns how many tensors were cast. Norms, embeddings and free parameters stay fp32, as
    autocast keeps them."""
    kept = full_precision_modules(model)
    cast = 0
    for module in model.modules():
        if isinstance(module, MATMUL_MODULES) and module not in kept:
            for name, param in module.named_parameters(recurse=False):
                if param.is_floating_point() and param.dtype != dtype:
                    module._parameters[name] = nn.Parameter(param.detach().to(dtype), requires_grad=False)
                    cast += 1
    return cast


def quantize_trunk_int8(model: nn.Module) -> int:
    """Dynamic int8 quantization of every Linear of the vision trunk, in place (``torch.ao``'s dynamic
    Linear: int8 weights per output channel, activations quantized per call, fbgemm / oneDNN kernels);
    returns how many layers. torchao's int8 configs were measured too: on an AVX2 CPU they ran 25x slower
    than fp32, eager or compiled, while this runs 1.6-1.9x faster (see README, "Speed")."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    trunk = model.backbone.vision_backbone.trunk
    count = sum(isinstance(m, nn.Linear) for m in trunk.modules())
    with warnings.catch_warnings():  # torch.ao asks eager users to move to torchao (slow on CPUs, above)
        warnings.simplefilter("ignore")
        quantize_dynamic(trunk, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    return count


def apply_precision(model: nn.Module, precision: str, runtime: str = "auto", cache_dir=None) -> str:
    """Put ``model`` (eval, inference only) in ``precision`` with its trunk in ``runtime``, in place;
    returns the mode (auto resolved) and sets ``model.precision`` and ``model.runtime``.

    A model is converted once: asking a converted model for another mode raises ``InputError``.
    ``cache_dir``: where OpenVINO keeps converted stages (``openvino_trunk.default_cache_dir``).
    """
    device = next(model.parameters()).device
    mode = resolve_precision(precision, device, model.config.vit_dim, runtime)
    engine = resolve_runtime(runtime, mode, device, model.config.vit_dim)
    current = (getattr(model, "precision", "fp32"), getattr(model, "runtime", "torch"))
    if (mode, engine) == current:
        model.precision, model.runtime = current
        return mode
    if current != ("fp32", "torch"):
        raise InputError(f"this model was converted to {current[0]} ({current[1]}); load it again for {mode} "
                         f"({engine})")
    compute = compute_dtype(mode, engine)
    if engine == "openvino":
        from .openvino_trunk import compile_trunk, use_openvino_attention

        counts = compile_trunk(model.backbone.vision_backbone.trunk, mode, cache_dir, on_convert=_log_convert)
        logger.debug("OpenVINO trunk: %s", counts)
        use_openvino_attention(model.transformer.encoder, "fp32" if compute is None else "bf16")
    elif mode == "int8":
        quantize_trunk_int8(model)
    if compute is not None:
        cast_matmul_weights(model, compute)
    model.precision, model.runtime = mode, engine
    return mode


def compute_dtype(mode: str, runtime: str) -> torch.dtype | None:
    """The autocast dtype of what torch runs in ``mode`` (None: fp32). bf16 / fp16 themselves; int8 in
    OpenVINO on a CPU with bf16 units: bf16 (the neck and heads, as OpenVINO runs the trunk's
    unquantized ops there); otherwise fp32."""
    if mode in LOW_PRECISION_DTYPES:
        return LOW_PRECISION_DTYPES[mode]
    if mode == "int8" and runtime == "openvino" and cpu_flags() & set(BF16_CPU_FLAGS):
        return torch.bfloat16
    return None


def _log_convert(missing: int, count: int) -> None:
    """Say that the trunk is being converted: the first run with these weights takes minutes."""
    logger.warning("converting %d of the vision trunk's %d stages to OpenVINO (the first run with these "
                   "weights, a few minutes at full size; cached for later runs)", missing, count)


def autocast_context(model: nn.Module):
    """The context the model's forward passes run in: autocast to its ``compute_dtype``, or nothing."""
    dtype = compute_dtype(getattr(model, "precision", "fp32"), getattr(model, "runtime", "torch"))
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=next(model.parameters()).device.type, dtype=dtype)
