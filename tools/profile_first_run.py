"""Where the first ``--runtime openvino --precision int8`` run with new weights spends its time.

    python tools/profile_first_run.py                   # full size (sam3.toml), seeded weights, a fresh cache
    python tools/profile_first_run.py --size tiny       # the same steps on the tiny model (seconds)
    python tools/profile_first_run.py --json out.json

Builds the trunk (seeded random weights), then runs ``openvino_trunk.compile_trunk`` at int8 into an
empty cache directory and reports the seconds of each kind of step its progress bar counts
(``ConversionProgress``: block templates traced, blocks' graphs built, stages saved, stages quantized by
NNCF, calibration frames carried from stage to stage, stages compiled; a step's time runs from the end of
the one before, so a child interpreter's start counts in its first step) and the calibration frames. A
second ``compile_trunk`` on the same cache is timed too (what later runs pay). Prints the CPU, the thread
count and one row per step; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sam3video.model import openvino_trunk  # noqa: E402
from sam3video.model.build import build_vit, load_config  # noqa: E402
from sam3video.model.precision import cpu_flags  # noqa: E402

CONFIGS = {"full": "configs/sam3.toml", "tiny": "configs/tiny.toml"}
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")


class Steps:
    """Seconds per named step, in the order first seen."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)

    @contextmanager
    def timed(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1

    def wrap(self, owner, attribute: str, name_of):
        """Replace ``owner.attribute`` by a timed call; ``name_of(*args)`` names each call's step."""
        original = getattr(owner, attribute)

        def timed_call(*args, **kwargs):
            with self.timed(name_of(*args)):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed_call)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(CONFIGS), default="full")
    parser.add_argument("--precision", choices=("int8", "fp32", "bf16"), default="int8")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    torch.manual_seed(0)
    trunk = build_vit(load_config(CONFIGS[args.size])).eval()
    steps = Steps()
    steps.wrap(openvino_trunk, "calibration_images", lambda *a: "calibration frames")
    recorded = []  # each first run's ConversionProgress: seconds per step, by kind
    close = openvino_trunk.ConversionProgress.close
    openvino_trunk.ConversionProgress.close = lambda self: recorded.append(dict(self.taken)) or close(self)

    with tempfile.TemporaryDirectory(prefix="sam3video_first_run_") as cache:
        start = time.perf_counter()
        counts = openvino_trunk.compile_trunk(trunk, args.precision, cache)
        first = time.perf_counter() - start
        torch.manual_seed(0)
        again = build_vit(load_config(CONFIGS[args.size])).eval()
        start = time.perf_counter()
        openvino_trunk.compile_trunk(again, args.precision, cache)
        cached = time.perf_counter() - start

    for kind, seconds in recorded[0].items():
        steps.seconds[f"{kind} ({openvino_trunk.STEP_LABELS[kind]})"] = sum(seconds)
        steps.calls[f"{kind} ({openvino_trunk.STEP_LABELS[kind]})"] = len(seconds)
    rows = [{"step": name, "calls": steps.calls[name], "seconds": round(s, 2)} for name, s in steps.seconds.items()]
    rows += [{"step": "first run (all)", "calls": 1, "seconds": round(first, 2)},
             {"step": "later run (cached)", "calls": 1, "seconds": round(cached, 2)}]
    flags = cpu_flags()
    print(f"cpu: {cpu_name()}, {torch.get_num_threads()} threads, flags: "
          + " ".join(f for f in FLAGS if f in flags) + f"; size {args.size}, {args.precision}, {counts}")
    print(f"{'step':28s} {'calls':>5s} {'seconds':>9s}")
    for row in rows:
        print(f"{row['step']:28s} {row['calls']:5d} {row['seconds']:9.2f}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "size": args.size, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
