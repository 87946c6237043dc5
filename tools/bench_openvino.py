"""OpenVINO against torch on the ViT trunk, the part of a frame that dominates its cost.

    python tools/bench_openvino.py                      # full size (sam3.toml), 2 threads
    python tools/bench_openvino.py --size tiny --repeats 1
    python tools/bench_openvino.py --whole-trunk        # also converts the whole trunk (minutes, ~19 GB)

Times one window block and one global block of the trunk on a 1008 px frame's (1, 72, 72, 1024) token map
(seeded random weights and tokens), in each mode, and estimates the trunk as (window blocks x window
time + global blocks x global time). Modes: torch fp32 (eager, as ``--precision fp32``), torch int8
(``torch.ao`` dynamic, as ``--precision int8``), and OpenVINO ``convert_model`` of the same block
(real-valued RoPE, ``vitdet.use_real_rope``) compiled for the CPU in f32, with a bf16 inference hint,
int8 after NNCF post-training quantization (calibrated on ``--calibration`` random token maps), and
int8 weights with OpenVINO's dynamic activation quantization. ``max |diff|`` is against torch fp32 on
another token map (outputs are O(1)). Prints the CPU's flags and the versions; asserts nothing.
OpenVINO and NNCF are dependencies of the package (``--runtime openvino``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sam3video.errors import ConfigError  # noqa: E402
from sam3video.model.build import build_vit, load_config  # noqa: E402
from sam3video.model.precision import cpu_flags  # noqa: E402
from sam3video.model.vitdet import ViT, use_real_rope  # noqa: E402

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def trunk_prefix(config) -> ViT:
    """The trunk's first blocks up to its first global one (block 0 windowed, the last global), seeded."""
    first_global = config.vit_global_blocks[0]
    torch.manual_seed(0)
    return build_vit(replace(config, vit_depth=first_global + 1, vit_global_blocks=[first_global])).eval()


def seconds(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def openvino_modes(block: torch.nn.Module, tokens: torch.Tensor, calibration: int, threads: int) -> dict:
    """name -> a callable (numpy tokens -> numpy output) for each OpenVINO mode of ``block``."""
    import nncf
    import openvino as ov

    core = ov.Core()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = ov.convert_model(use_real_rope(copy.deepcopy(block)), example_input=tokens)
    rng = np.random.default_rng(1)
    samples = [rng.standard_normal(tuple(tokens.shape)).astype(np.float32) for _ in range(calibration)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        static = nncf.quantize(graph, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                               subset_size=calibration)
        weights_only = nncf.compress_weights(graph.clone(), mode=nncf.CompressWeightsMode.INT8_ASYM)
    threads_option = {"INFERENCE_NUM_THREADS": threads}
    compiled = {
        "openvino f32": core.compile_model(graph, "CPU", {**threads_option, "INFERENCE_PRECISION_HINT": "f32"}),
        "openvino bf16 hint": core.compile_model(graph, "CPU", {**threads_option, "INFERENCE_PRECISION_HINT": "bf16"}),
        "openvino int8 (NNCF static)": core.compile_model(static, "CPU", threads_option),
        "openvino int8 weights + dynamic": core.compile_model(
            weights_only, "CPU", {**threads_option, "DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"}),
    }
    for name, model in compiled.items():
        hint = model.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        print(f"{name}: runs as {hint}", flush=True)
    return {name: (lambda x, m=model: m(x)[0]) for name, model in compiled.items()}


def block_rows(vit: ViT, tokens: torch.Tensor, probe: torch.Tensor, args) -> dict:
    """mode -> (window block s, global block s, max |diff| over both) on ``tokens``."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    blocks = {"window": vit.blocks[0], "global": vit.blocks[-1]}
    rows: dict[str, dict] = {}
    for kind, block in blocks.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            int8 = quantize_dynamic(copy.deepcopy(block), {torch.nn.Linear: per_channel_dynamic_qconfig})
        with torch.no_grad():
            reference = block(probe).numpy()
            runners = {"torch fp32": lambda x, b=block: b(torch.from_numpy(x)).numpy(),
                       "torch int8 (torch.ao dynamic)": lambda x, b=int8: b(torch.from_numpy(x)).numpy()}
            runners.update(openvino_modes(block, tokens, args.calibration, args.threads))
            x, p = tokens.numpy(), probe.numpy()
            for name, run in runners.items():
                row = rows.setdefault(name, {"diff": 0.0})
                row[kind] = seconds(lambda: run(x), args.repeats)
                row["diff"] = max(row["diff"], float(np.abs(run(p) - reference).max()))
                print(f"  {kind} block, {name}: {row[kind] * 1000:.0f} ms", flush=True)
    return rows


def whole_trunk(config, threads: int) -> None:
    """The whole trunk through convert_model once, timed against torch (what --whole-trunk prints)."""
    import openvino as ov

    torch.manual_seed(0)
    trunk = build_vit(config).eval()
    image = torch.randn(1, 3, config.resolution, config.resolution)
    with torch.no_grad():
        torch_s = seconds(lambda: trunk(image), 1)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = ov.convert_model(use_real_rope(trunk), example_input=image)
        convert_s = time.perf_counter() - start
        compiled = ov.Core().compile_model(graph, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                          "INFERENCE_PRECISION_HINT": "f32"})
        ov_s = seconds(lambda: compiled(image.numpy()), 1)
        diff = float(np.abs(compiled(image.numpy())[0] - trunk(image)[-1].numpy()).max())
    print(f"whole trunk: torch fp32 {torch_s:.1f} s, openvino f32 {ov_s:.1f} s ({ov_s / torch_s:.2f}x), "
          f"convert_model {convert_s:.0f} s, max |diff| {diff:.1e}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="sam3", help="model config (default: sam3, the full size)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=4, help="token maps NNCF calibrates on")
    parser.add_argument("--whole-trunk", action="store_true", help="also convert and time the whole trunk")
    args = parser.parse_args(argv)
    try:
        import nncf  # noqa: F401
        import openvino
    except ImportError as e:
        print(f"bench_openvino: {e.name} is not installed (pip install -e .)", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        config = load_config(args.size)
    except ConfigError as e:
        parser.error(str(e))
    torch.set_num_threads(args.threads)
    vit = trunk_prefix(config)
    grid = config.resolution // config.patch_size
    generator = torch.Generator().manual_seed(2)
    tokens, probe = (torch.randn(1, grid, grid, config.vit_dim, generator=generator) for _ in range(2))
    flags = cpu_flags()
    print(f"torch {torch.__version__}, openvino {openvino.__version__}, {args.threads} threads; CPU flags: "
          + (" ".join(f for f in FLAGS if f in flags) or "none of " + ", ".join(FLAGS)), flush=True)
    rows = block_rows(vit, tokens, probe, args)
    num_global = len(config.vit_global_blocks)
    num_window = config.vit_depth - num_global
    base = rows["torch fp32"]
    base_trunk = num_window * base["window"] + num_global * base["global"]
    print(f"\n{config.name}: {config.vit_depth} blocks ({num_window} window, {num_global} global), "
          f"{grid}x{grid} tokens of {config.vit_dim}")
    print(f"{'mode':34s} {'window ms':>10s} {'global ms':>10s} {'trunk s':>8s} {'vs torch':>9s} {'max |diff|':>11s}")
    for name, row in rows.items():
        trunk = num_window * row["window"] + num_global * row["global"]
        print(f"{name:34s} {row['window'] * 1000:10.0f} {row['global'] * 1000:10.0f} {trunk:8.2f} "
              f"{trunk / base_trunk:8.2f}x {row['diff']:11.2e}")
    if args.whole_trunk:
        whole_trunk(config, args.threads)


if __name__ == "__main__":
    main()
