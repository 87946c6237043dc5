"""The int8 trunk's calibration recipes (OpenVINO + NNCF): their first-run time and their error against fp32.

    python tools/check_calibration.py                          # the demo model's trunk (seconds a recipe)
    python tools/check_calibration.py --size full --resolution 336 --recipes 8,fbc,fp32 4,-,int8
    python tools/check_calibration.py --json runs/first_run/calibration_demo.json

A recipe is FRAMES,BIAS,CARRY: how many calibration frames (``CALIBRATION_FRAMES``), NNCF's fast bias
correction on ("fbc") or off ("-") (``BIAS_CORRECTION``), and the precision the calibration frames are
carried in from stage to stage ("fp32" or "int8", the stages just quantized: ``CALIBRATION_CARRY``). Each
recipe quantizes the trunk into a fresh cache (its fp32 IR converted once and shared) and is timed; then
the trunk's last output on held-out frames (frame 2 of classic and randomised-world clips of seeds 100+, not
the calibration seeds) is compared with torch fp32's: the relative error ||int8 - fp32|| / ||fp32|| per
frame (mean and max) and the largest absolute difference over the largest fp32 value. Prints numbers;
asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sam3video.model import openvino_trunk  # noqa: E402
from sam3video.model.build import at_resolution, build_vit, load_config  # noqa: E402

DEFAULT_RECIPES = ["8,fbc,fp32", "8,-,fp32", "8,-,int8", "4,-,int8", "4,fbc,int8"]


def demo_trunk():
    from sam3video.model.checkpoint import load_model

    return load_model("demo").backbone.vision_backbone.trunk


def main(argv: "list[str] | None" = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("demo", "full"), default="demo",
                        help="demo: the shipped demo model's trunk; full: sam3.toml with seeded random weights")
    parser.add_argument("--resolution", type=int, help="full size only: the input size (default 1008)")
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES, help="FRAMES,fbc|-,fp32|int8 each")
    parser.add_argument("--held-out", type=int, default=8, help="held-out frames compared")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    if args.size == "demo":
        trunk = demo_trunk().eval()
    else:
        torch.manual_seed(0)
        trunk = build_vit(at_resolution(load_config("configs/sam3.toml"), args.resolution)).eval()
    resolution = openvino_trunk.trunk_grid(trunk)[0] * trunk.patch_embed.proj.stride[0]
    images = openvino_trunk.calibration_images(resolution, args.held_out, first_seed=100)  # not calibration's seeds
    with torch.inference_mode():
        expected = torch.cat([trunk(images[i:i + 1])[-1] for i in range(len(images))])

    rows = []
    recipe_of_module = (openvino_trunk.CALIBRATION_FRAMES, openvino_trunk.BIAS_CORRECTION,
                        openvino_trunk.CALIBRATION_CARRY)
    with tempfile.TemporaryDirectory(prefix="sam3video_calibration_check_") as cache:
        openvino_trunk.compile_trunk(copy.deepcopy(trunk), "fp32", cache)  # the fp32 IR every recipe starts from
        for recipe in args.recipes:
            frames, bias, carry = recipe.split(",")
            openvino_trunk.CALIBRATION_FRAMES = int(frames)
            openvino_trunk.BIAS_CORRECTION = bias == "fbc"
            openvino_trunk.CALIBRATION_CARRY = carry
            quantized = copy.deepcopy(trunk)
            start = time.perf_counter()
            openvino_trunk.compile_trunk(quantized, "int8", cache)
            seconds = time.perf_counter() - start
            with torch.inference_mode():
                got = torch.cat([quantized(images[i:i + 1])[-1] for i in range(len(images))])
            error = ((got - expected).flatten(1).norm(dim=1) / expected.flatten(1).norm(dim=1)).numpy()
            worst = float((got - expected).abs().max() / expected.abs().max())
            rows.append({"recipe": recipe, "seconds": round(seconds, 1), "rel_error_mean": float(error.mean()),
                         "rel_error_max": float(error.max()), "max_abs_over_max": worst})
            print(f"{recipe:14s} {seconds:7.1f} s  relative error mean {error.mean():.4f} max {error.max():.4f}"
                  f"  max |diff| / max {worst:.4f}", flush=True)
    (openvino_trunk.CALIBRATION_FRAMES, openvino_trunk.BIAS_CORRECTION,
     openvino_trunk.CALIBRATION_CARRY) = recipe_of_module
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"size": args.size, "resolution": resolution, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
