"""Where the first ``--runtime openvino --precision int8`` run with new weights spends its time.

    python tools/profile_first_run.py                   # full size (sam3.toml), seeded weights, a fresh cache
    python tools/profile_first_run.py --size tiny       # the same steps on the tiny model (seconds)
    python tools/profile_first_run.py --json out.json

Builds the trunk (seeded random weights), then runs ``openvino_trunk.compile_trunk`` at int8 into an
empty cache directory and reports the seconds of each kind of step its progress bar counts
(``ConversionProgress``: block templates traced, blocks' graphs built, stages saved, stages quantized by
NNCF, calibration frames carried from stage to stage, stages compiled; a step's time runs from the end of
the one before, so a child interpreter's start counts in its first step). A
second ``compile_trunk`` on the same cache is timed too (what later runs pay). Prints the CPU, the thread
count and one row per step; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_official as bench  # noqa: E402  (this folder's: the CPU helper)
from sam3video.model import openvino_trunk  # noqa: E402
from sam3video.model.build import build_vit, load_config  # noqa: E402

CONFIGS = {"full": "configs/sam3.toml", "tiny": "configs/tiny.toml"}


def first_run(size: str, precision: str) -> tuple[list[dict], dict]:
    """Rows (step, calls, seconds) of a first ``compile_trunk`` into an empty cache and of a second one, and
    its stage counts. The steps are ``ConversionProgress``'s, read as its bar closes."""
    recorded = []
    close = openvino_trunk.ConversionProgress.close
    openvino_trunk.ConversionProgress.close = lambda self: recorded.append(dict(self.taken)) or close(self)
    try:
        with tempfile.TemporaryDirectory(prefix="sam3video_first_run_") as cache:
            torch.manual_seed(0)
            trunk = build_vit(load_config(CONFIGS[size])).eval()
            start = time.perf_counter()
            counts = openvino_trunk.compile_trunk(trunk, precision, cache)
            first = time.perf_counter() - start
            torch.manual_seed(0)
            again = build_vit(load_config(CONFIGS[size])).eval()
            start = time.perf_counter()
            openvino_trunk.compile_trunk(again, precision, cache)
            cached = time.perf_counter() - start
    finally:
        openvino_trunk.ConversionProgress.close = close
    rows = [{"step": f"{kind} ({openvino_trunk.STEP_LABELS[kind]})", "calls": len(seconds),
             "seconds": round(sum(seconds), 2)} for kind, seconds in recorded[0].items()]
    rows += [{"step": "first run (all)", "calls": 1, "seconds": round(first, 2)},
             {"step": "later run (cached)", "calls": 1, "seconds": round(cached, 2)}]
    return rows, counts


def main(argv: "list[str] | None" = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(CONFIGS), default="full")
    parser.add_argument("--precision", choices=("int8", "fp32", "bf16"), default="int8")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    rows, counts = first_run(args.size, args.precision)
    cpu = bench.cpu_info()
    print(f"cpu: {cpu['model']}, {torch.get_num_threads()} threads, flags: "
          + " ".join(flag for flag, present in cpu["flags"].items() if present)
          + f"; size {args.size}, {args.precision}, {counts}")
    print(f"{'step':28s} {'calls':>5s} {'seconds':>9s}")
    for row in rows:
        print(f"{row['step']:28s} {row['calls']:5d} {row['seconds']:9.2f}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "size": args.size, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
