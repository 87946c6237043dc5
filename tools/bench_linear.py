"""The full model's dominant op on this CPU in each precision: the ViT trunk's MLP (Linear 1024 -> 4736,
GELU, Linear 4736 -> 1024) on one 1008 px frame's 72 x 72 = 5184 tokens, about 100 GFLOP.

    python tools/bench_linear.py              # fp32, bf16, int8 (torch.ao dynamic, as --precision int8)
    python tools/bench_linear.py --torchao    # also torchao's int8 dynamic config (if installed)
    python tools/bench_linear.py --compile    # also torch.compile of fp32 and of each int8 variant

Prints ms per call, GFLOP/s and the max |difference| from fp32 (outputs are O(1)), with the CPU's flags.
This is what ``--precision auto`` rests on: the linear layers are about two thirds of a full-size
frame (see ``tools/bench_official.py --profile``). Asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
import torch.nn as nn

from sam3video.model.precision import BF16_CPU_FLAGS, cpu_flags

TOKENS, WIDTH, HIDDEN = 72 * 72, 1024, 4736  # sam3.toml: vit_dim 1024, mlp ratio 4.625
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def time_call(fn, repeats: int) -> float:
    """Seconds per call (after one untimed call)."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def variants(mlp: nn.Module, x: torch.Tensor, args) -> dict:
    """name -> (module, its input)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    found = {"fp32": (mlp, x), "bf16 (weights cast once)": (copy.deepcopy(mlp).to(torch.bfloat16), x.bfloat16())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found["int8 torch.ao dynamic"] = (quantize_dynamic(copy.deepcopy(mlp), {nn.Linear: per_channel_dynamic_qconfig}), x)
    if args.torchao:
        try:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        except ImportError:
            print("torchao is not installed: skipped")
        else:
            module = copy.deepcopy(mlp)
            quantize_(module, Int8DynamicActivationInt8WeightConfig())
            found["int8 torchao dynamic"] = (module, x)
    if args.compile:
        for name in [n for n in found if n != "bf16 (weights cast once)"]:
            module, inputs = found[name]
            found[f"{name} + torch.compile"] = (torch.compile(module), inputs)
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torchao", action="store_true", help="also torchao's Int8DynamicActivationInt8WeightConfig")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (compile time printed)")
    args = parser.parse_args(argv)
    flags = cpu_flags()
    print("CPU flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in FLAGS)
          + f"; bf16 matmul units: {'yes' if flags & set(BF16_CPU_FLAGS) else 'no'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(WIDTH, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, WIDTH)).eval()
    x = torch.randn(TOKENS, WIDTH)
    flop = 2 * 2 * TOKENS * WIDTH * HIDDEN
    print(f"{'variant':36s} {'ms/call':>9s} {'GFLOP/s':>8s} {'x fp32':>7s} {'max |diff|':>10s}")
    with torch.inference_mode():
        reference = mlp(x)
        base = None
        for name, (module, inputs) in variants(mlp, x, args).items():
            start = time.perf_counter()
            out = module(inputs).float()
            first = time.perf_counter() - start
            seconds = time_call(lambda: module(inputs), args.repeats)  # noqa: B023 - called at once
            base = base or seconds
            note = f"  (first call {first:.1f} s)" if "compile" in name else ""
            print(f"{name:36s} {seconds * 1e3:9.0f} {flop / seconds / 1e9:8.0f} {seconds / base:7.2f} "
                  f"{(out - reference).abs().max().item():10.4f}{note}")


if __name__ == "__main__":
    main()
