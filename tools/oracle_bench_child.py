"""The official side of tools/bench_official.py. Run with the oracle venv's python, never the project's:

    VENV/bin/python tools/oracle_bench_child.py --config CONFIG.json --frames-dir DIR --builder official \\
        --oracle-tools ../shared/tools/oracle --weights WEIGHTS.pt --out RESULT.json

Builds the official SAM 3 image model: ``--builder official`` is ``sam3.model_builder.
build_sam3_image_model`` (the full size only), ``parity`` the parity generator's ``build(config)`` (any
size); gives it the generator's seeded random weights (``randomise``: exact in fp16), times the official
``Sam3Processor`` on every frame per precision (fp32; bf16 = ``torch.autocast("cpu", bfloat16)``), records
the first frame's scores and boxes at threshold 0 (the weights check) and the peak RSS, and then saves
the weights in the official layout (parameters as fp16, exact; buffers as they are) for our side.
Imports ``sam3`` (the official package) and the stdlib-only helpers of ``bench_official``; never
``sam3video``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_official import (  # the helpers both sides share (stdlib and torch only)
    OFFICIAL_PRECISIONS,
    PeakRss,
    first_frame_outputs,
    load_frames,
    log,
    profile_ops,
    summarise,
    time_image_api,
    torch_info,
    write_json,
)


def quiet_import_warnings() -> None:
    """The official package warns on import about CUDA-only autocast decorators and torch.jit.script."""
    warnings.filterwarnings("ignore", message="CUDA is not available", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)


def build_official(builder: str, config: dict, seed: int):
    """The official image model in eval mode on the CPU, with seeded random weights."""
    # make_parity_fixture: shared/tools/oracle (--oracle-tools)
    import torch
    from make_parity_fixture import SIZES, build, randomise

    torch.manual_seed(seed)
    if builder == "official":
        if config != SIZES["full"]:
            sys.exit("--builder official builds the full size only; use --builder parity for other sizes")
        from sam3.model_builder import build_sam3_image_model

        model = build_sam3_image_model(device="cpu", checkpoint_path=None, load_from_HF=False,
                                       enable_inst_interactivity=False)
    else:
        model = build(config)
    model = model.eval()
    randomise(model, seed)
    return model


def save_weights(model, path: str) -> None:
    """The state dict in the official layout: parameters as fp16 (``randomise`` made them exact), buffers
    unchanged."""
    import torch

    parameters = {name for name, _ in model.named_parameters()}
    state = {k: v.half() if k in parameters and v.dtype == torch.float32 else v
             for k, v in model.state_dict().items()}
    torch.save(state, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the SIZES dict as JSON")
    parser.add_argument("--frames-dir", required=True, help="folder of PNG frames")
    parser.add_argument("--builder", choices=("official", "parity"), default="parity")
    parser.add_argument("--oracle-tools", required=True, help="folder of make_parity_fixture.py")
    parser.add_argument("--weights", required=True, help="where to save the weights")
    parser.add_argument("--out", required=True, help="result JSON")
    parser.add_argument("--prompt", default="a red circle")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="profile one fp32 frame (aten ops)")
    parser.add_argument("--precisions", nargs="+", choices=OFFICIAL_PRECISIONS, default=list(OFFICIAL_PRECISIONS))
    args = parser.parse_args()
    sys.path.insert(0, args.oracle_tools)

    import torch

    quiet_import_warnings()
    from sam3.model.sam3_image_processor import Sam3Processor

    if args.threads:
        torch.set_num_threads(args.threads)
    config = json.loads(Path(args.config).read_text())
    peak = PeakRss()
    start = time.perf_counter()
    model = build_official(args.builder, config, args.seed)
    result = {"side": "official", "builder": args.builder, "torch": torch_info(),
              "build_s": time.perf_counter() - start, "parameters": sum(p.numel() for p in model.parameters()),
              "rows": {}}
    log(f"official: built ({args.builder}) in {result['build_s']:.1f} s")
    images = load_frames(args.frames_dir)
    processor = Sam3Processor(model, resolution=config["resolution"], device="cpu",
                              confidence_threshold=args.threshold)
    for precision in args.precisions:
        peak.start_section()
        frames = time_image_api(processor, model, images, args.prompt, precision)
        result["rows"][precision] = {**summarise(frames, args.warmup), "run_rss_gib": peak.end_section()}
        log(f"official: image API {precision} {[round(f['total'], 2) for f in frames]} s per frame")
    result["check"] = first_frame_outputs(processor, images[0], args.prompt)
    if args.profile:
        result["profile"] = profile_ops(processor, images[-1], args.prompt)
    result["peak_rss_gib"] = peak.total_gib()  # before saving: the fp16 copy is not the model's memory
    save_weights(model, args.weights)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
