"""The official SAM 3 image model and ours side by side on this CPU: same seeded weights, same frames.

    python tools/bench_official.py --official ~/.cache/sam3-oracle              # full size (840 M params)
    python tools/bench_official.py --official ~/.cache/sam3-oracle --size tiny  # a quick check
    python tools/bench_official.py --size tiny --json out.json                  # ours only (no oracle venv)

The official side (``--official VENV``, built by ``shared/tools/oracle/setup.sh``) runs in its own venv
as a subprocess (``tools/oracle_bench_child.py``): it builds the official model (full size: the
official ``build_sam3_image_model``; other sizes: the parity generator's builder), gives it seeded
random weights, times its ``Sam3Processor`` in fp32 and under ``torch.autocast("cpu", bfloat16)``, then
saves the weights in the official layout. Ours runs in a second subprocess (so each side's peak RSS is
its own), loads those weights with ``sam3video.load_model`` and times our ``Sam3Processor`` (the same
stages) and the video path end to end (``VideoPredictor.track`` over the frames, fp32 and
``precision="bf16"``). Before the table, the first frame's scores and boxes (threshold 0, fp32) of the
two sides are compared: a benchmark of different weights would be worthless.

Stages, per frame (median over the timed frames, after ``--warmup`` frames):
  backbone = ``set_image`` (resize + ViT + neck); text = ``backbone.forward_text``; heads =
  ``forward_grounding`` (encoder + decoder + scoring + segmentation); post = the rest of
  ``set_text_prompt`` (thresholding, mask resize); total = ``set_image`` + ``set_text_prompt``, as the
  image API runs one frame (it re-encodes the text every frame).
Video rows: one untimed run of ``track`` over the warm-up frames, then a timed run over the others;
total = the timed run's stream time / its frames (frame batches and the overlap of the model with
post-processing amortised); text = its ``start_session`` (once per run, not in the total); stages =
the model calls' and post-processing's sums / frames (the model runs in a worker thread while frames
are post-processed and tracked, so they need not add up to the total).
dets: detections kept (image API: above the threshold; video: tracker candidates above the low
threshold). peak RSS: the side's whole process (model build or load included); run RSS: the peak
during that row alone. x off fp32 / x off same: total / the official total in fp32 / same precision.

Prints numbers; asserts nothing. The stdlib-only helpers here (``StageTimer``, ``PeakRss``,
``time_image_api`` ...) are imported by the official child too, so both sides are timed alike.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORACLE_CHILD = HERE / "oracle_bench_child.py"
ORACLE_TOOLS = HERE.parent.parent / "shared" / "tools" / "oracle"  # the parity generator's builder
SIZES = {"full": "sam3", "tiny": "tiny"}  # --size -> our config preset (configs/sam3.toml, tiny.toml)
OFFICIAL_BUILDER = {"full": "official", "tiny": "parity"}
# Keys of our Sam3Config that the official SIZES dict does not have (training and operating point).
OURS_ONLY_KEYS = ("dropout", "drop_path_rate", "score_threshold", "name")
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16",
             "amx_int8")
PRECISIONS = ("fp32", "bf16", "int8")  # ours: sam3video.model.precision; the official side: fp32 and bf16
# ours with the vision trunk in OpenVINO (--runtime openvino): "PRECISION+openvino"
MODES = (*PRECISIONS, "fp32+openvino", "bf16+openvino", "int8+openvino")
OFFICIAL_PRECISIONS = ("fp32", "bf16")  # bf16 = torch.autocast, as the official code runs on CUDA
TOP_QUERIES = 10  # the agreement check compares fp32's highest-scoring queries with each mode's
DEFAULT_FRAMES = 2
DEFAULT_WARMUP = 1
DEFAULT_THRESHOLD = 0.5  # the official Sam3Processor's confidence threshold
LOW_SCORE_THRESHOLD = 0.1  # the video path's default low band (tracker candidates)
FRAME_WIDTH, FRAME_HEIGHT, FRAME_FPS = 640, 480, 30.0
WARMUP_DIR, TIMED_DIR = "warmup", "timed"  # subfolders of the frames folder (a video each)
KIB_PER_GIB = 2**20  # ru_maxrss is in KiB on Linux
SAME_WEIGHTS_TOLERANCE = 1e-4  # max |score difference| above which the two sides are not the same model
CLEAR_PEAK_RSS = "5"  # written to /proc/self/clear_refs, resets the peak RSS (Linux >= 4.0)


# ---------------------------------------------------------------- helpers shared with the official child

class StageTimer:
    """Seconds spent in named methods of some objects (instance attributes wrapped until ``unwrap``)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._wrapped: list[tuple[object, str]] = []

    def wrap(self, owner, method: str, stage: str) -> None:
        inner = getattr(owner, method)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start

        object.__setattr__(owner, method, timed)  # an instance attribute, also on an nn.Module
        self._wrapped.append((owner, method))

    def unwrap(self) -> None:
        for owner, method in self._wrapped:
            object.__delattr__(owner, method)
        self._wrapped.clear()

    def since(self, before: dict[str, float]) -> dict[str, float]:
        """Seconds per stage since the snapshot ``before`` (``dict(timer.seconds)``)."""
        return defaultdict(float, {k: v - before.get(k, 0.0) for k, v in self.seconds.items()})


class PeakRss:
    """Peak resident memory of this process: overall, and per section (by resetting Linux's high-water
    mark; where that is not possible a section's peak is the process peak so far)."""

    def __init__(self):
        self.overall_gib = 0.0

    @staticmethod
    def _now_gib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_GIB

    def start_section(self) -> None:
        self.overall_gib = max(self.overall_gib, self._now_gib())
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text(CLEAR_PEAK_RSS)

    def end_section(self) -> float:
        peak = self._now_gib()
        self.overall_gib = max(self.overall_gib, peak)
        return peak

    def total_gib(self) -> float:
        return max(self.overall_gib, self._now_gib())


def profile_ops(processor, image, prompt: str) -> dict[str, list]:
    """One fp32 frame of the image API under ``torch.profiler``: per aten op, [self CPU seconds, calls]."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        processor.set_text_prompt(prompt, processor.set_image(image))
    return {e.key: [e.self_cpu_time_total / 1e6, e.count] for e in prof.key_averages() if e.key.startswith("aten::")}


def autocast(precision: str):
    """CPU autocast for "bf16", nothing for "fp32"."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def time_image_api(processor, model, images, prompt: str, precision: str) -> list[dict]:
    """Per image: the stages of ``set_image`` + ``set_text_prompt`` (official and ours share the API
    and the model calls inside it: ``backbone.forward_image``, ``backbone.forward_text``,
    ``forward_grounding``)."""
    timer = StageTimer()
    timer.wrap(model.backbone, "forward_image", "vision")
    timer.wrap(model.backbone, "forward_text", "text")
    timer.wrap(model, "forward_grounding", "heads")
    frames = []
    try:
        for image in images:
            before = dict(timer.seconds)
            with autocast(precision):
                start = time.perf_counter()
                state = processor.set_image(image)
                middle = time.perf_counter()
                state = processor.set_text_prompt(prompt, state)
                end = time.perf_counter()
            spent = timer.since(before)
            frames.append({"backbone": middle - start, "preprocess": middle - start - spent["vision"],
                           "text": spent["text"], "heads": spent["heads"],
                           "post": end - middle - spent["text"] - spent["heads"], "total": end - start,
                           "detections": len(state["scores"])})
    finally:
        timer.unwrap()
    return frames


def summarise(frames: list[dict], warmup: int) -> dict:
    """Medians of every stage over the frames after the warm-up, and the per-frame totals."""
    timed = frames[warmup:] or frames[-1:]
    summary = {key: statistics.median(frame[key] for frame in timed) for key in timed[0]}
    summary["per_frame_total"] = [frame["total"] for frame in timed]
    summary["warmup_total"] = [frame["total"] for frame in frames[:warmup]]
    return summary


def first_frame_outputs(processor, image, prompt: str) -> dict:
    """Scores and boxes (pixels) of every query on ``image`` at threshold 0, fp32: the weights check."""
    return check_values(query_outputs(processor, image, prompt))


def check_values(outputs: dict) -> dict:
    """The weights check's part of ``query_outputs``, as lists (JSON)."""
    return {"scores": outputs["scores"].tolist(), "boxes": outputs["boxes"].tolist()}


def query_outputs(processor, image, prompt: str) -> dict:
    """Every query's score (Q,), box (Q, 4 pixels) and mask (Q, H, W bool) on ``image``, threshold 0."""
    threshold = processor.confidence_threshold
    processor.set_confidence_threshold(0.0)
    try:
        state = processor.set_text_prompt(prompt, processor.set_image(image))
    finally:
        processor.set_confidence_threshold(threshold)
    return {"scores": state["scores"].float(), "boxes": state["boxes"].float(), "masks": state["masks"][:, 0]}


def agreement(reference: dict, outputs: dict, threshold: float, top: int = TOP_QUERIES) -> dict:
    """How a precision mode's ``outputs`` (``query_outputs``) agree with fp32's ``reference`` on fp32's
    ``top`` queries: |score difference|, box IoU, mask IoU (min and mean); and whether the same queries
    score above ``threshold``."""
    import torch
    from torchvision.ops import box_iou

    order = reference["scores"].argsort(descending=True)[:top]
    score_diff = (outputs["scores"][order] - reference["scores"][order]).abs()
    box = box_iou(reference["boxes"][order], outputs["boxes"][order]).diagonal()
    a, b = reference["masks"][order].flatten(1), outputs["masks"][order].flatten(1)
    union = (a | b).sum(1)
    mask = torch.where(union > 0, (a & b).sum(1) / union.clamp(min=1), torch.ones_like(union, dtype=torch.float))
    above = (reference["scores"] > threshold), (outputs["scores"] > threshold)
    return {"queries": len(order), "score_max_abs_diff": score_diff.max().item(),
            "box_iou_min": box.min().item(), "box_iou_mean": box.mean().item(),
            "mask_iou_min": mask.min().item(), "mask_iou_mean": mask.mean().item(),
            "above_threshold": [int(above[0].sum()), int(above[1].sum())],
            "same_above_threshold": bool(torch.equal(*above))}


def load_frames(folder: str | Path) -> list:
    """The frames under ``folder`` (PNG; warm-up first, then timed) as RGB PIL images."""
    import PIL.Image

    paths = sorted(Path(folder).glob(f"{WARMUP_DIR}/*.png")) + sorted(Path(folder).glob(f"{TIMED_DIR}/*.png"))
    return [PIL.Image.open(path).convert("RGB") for path in paths]


def torch_info() -> dict:
    """The torch version of this venv and what it makes of the CPU."""
    import torch

    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    with contextlib.suppress(Exception):  # a private op: absent in some builds
        info["mkldnn_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return info


def write_json(path: str | Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=1))


def log(message: str) -> None:
    """Progress, on stderr (long runs), so stdout is the table alone."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- our side (a child process of this venv)

def track_once(predictor, folder: Path, prompt: str) -> dict:
    """One ``VideoPredictor.track`` run over ``folder``, timed: session (text), stream, model calls."""
    model = predictor.model
    timer = StageTimer()
    timer.wrap(model.backbone, "forward_image", "backbone")
    timer.wrap(model, "forward_grounding", "grounding")  # includes forward_image in the video path
    try:
        start = time.perf_counter()
        session = predictor.start_session([prompt], fps=FRAME_FPS)  # the text, once (fp32, as in track)
        stamps, counts = [time.perf_counter()], []
        for result in predictor.track(folder, session=session, source_fps=FRAME_FPS):
            stamps.append(time.perf_counter())
            counts.append(len(result.candidates))
    finally:
        timer.unwrap()
    return {"text": stamps[0] - start, "stamps": stamps, "counts": counts, "model_s": dict(timer.seconds),
            "loop_s": dict(session.timings)}


def time_video(model, frames_dir: str, prompt: str, precision: str, threshold: float, runtime: str = "torch"
               ) -> dict:
    """Our video path end to end at ``precision``: a warm-up run over the warm-up frames, then a timed
    run over the timed ones; seconds per frame = the timed run's stream time / its frames (batches and
    the overlap of model and post-processing amortised; text once per run, apart)."""
    from sam3video.video.predictor import TrackingConfig, VideoPredictor

    config = TrackingConfig.at_score_threshold(threshold, min(threshold, LOW_SCORE_THRESHOLD),
                                               precision=precision, runtime=runtime)
    predictor = VideoPredictor(model, config)  # converts the model to ``precision`` (in place)
    warmup_dir, timed_dir = Path(frames_dir) / WARMUP_DIR, Path(frames_dir) / TIMED_DIR
    warmup = track_once(predictor, warmup_dir, prompt) if any(warmup_dir.glob("*.png")) else None
    run = track_once(predictor, timed_dir, prompt)
    stamps, n = run["stamps"], len(run["counts"])
    model_s, loop_s = run["model_s"], run["loop_s"]
    return {"backbone": model_s.get("backbone", 0.0) / n,
            "heads": (model_s.get("grounding", 0.0) - model_s.get("backbone", 0.0)) / n,
            "post": (loop_s["postprocess"] + loop_s["track"]) / n, "text": run["text"],
            "total": (stamps[-1] - stamps[0]) / n, "detections": statistics.median(run["counts"]),
            "per_frame_total": [b - a for a, b in itertools.pairwise(stamps)], "frame_batch": predictor.frame_batch,
            "warmup_total": [] if warmup is None else [warmup["stamps"][-1] - warmup["stamps"][0]],
            "loop_timings": loop_s}


def our_model(args):
    """Our model with the official side's weights (``--weights``), or seeded random weights."""
    import torch

    from sam3video import build_model, load_model

    config = json.loads(Path(args.config).read_text())
    if args.weights:
        return load_model(args.weights, config, "cpu")
    torch.manual_seed(args.seed)
    return build_model(config).eval()


def run_ours(args) -> None:
    """Our side: image-API stages (fp32), the weights check, the video path per precision (a fresh
    model for each mode but the first fp32: modes convert in place), each mode's agreement with fp32."""
    import torch

    from sam3video import Sam3Processor
    from sam3video.model.precision import apply_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    peak = PeakRss()
    start = time.perf_counter()
    model = our_model(args)
    result = {"side": "ours", "torch": torch_info(), "build_s": time.perf_counter() - start,
              "parameters": sum(p.numel() for p in model.parameters()), "rows": {}}
    log(f"ours: model ready in {result['build_s']:.1f} s")
    images = load_frames(args.frames_dir)
    processor = Sam3Processor(model, confidence_threshold=args.threshold)
    peak.start_section()
    frames = time_image_api(processor, model, images, args.prompt, "fp32")
    result["rows"]["fp32 stages"] = {**summarise(frames, args.warmup), "run_rss_gib": peak.end_section()}
    log(f"ours: image API fp32 {[round(f['total'], 2) for f in frames]} s per frame")
    reference = query_outputs(processor, images[0], args.prompt)
    result["check"] = check_values(reference)
    if args.profile:
        result["profile"] = profile_ops(processor, images[-1], args.prompt)
    result["agreement"] = {}
    for mode in args.precisions:
        precision, _, runtime = mode.partition("+")
        runtime = runtime or "torch"
        if getattr(model, "precision", "fp32") != "fp32" or mode != "fp32":
            del model, processor
            model = our_model(args)
            start = time.perf_counter()
            apply_precision(model, precision, runtime)
            result.setdefault("convert_s", {})[mode] = time.perf_counter() - start
        peak.start_section()
        row = time_video(model, args.frames_dir, args.prompt, precision, args.threshold, runtime)
        result["rows"][f"{mode} video"] = {**row, "run_rss_gib": peak.end_section()}
        log(f"ours: video {mode} {[round(t, 2) for t in row['warmup_total'] + row['per_frame_total']]} "
            "s per frame")
        processor = Sam3Processor(model, confidence_threshold=args.threshold)  # runs in the model's mode
        result["agreement"][mode] = agreement(reference, query_outputs(processor, images[0], args.prompt),
                                              args.threshold)
    result["peak_rss_gib"] = peak.total_gib()
    write_json(args.out, result)


# ---------------------------------------------------------------- the parent: frames, children, table

def cpu_info() -> dict:
    """CPU model, the flags that matter for fp32/bf16 speed, core counts, OpenVINO."""
    model, flags = None, set()
    with contextlib.suppress(OSError):  # Linux; elsewhere the flags are unknown (reported as "no")
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and model is None:
                model = value
            elif key == "flags" and not flags:
                flags = set(value.split())
    model = model or platform.processor() or platform.machine()
    try:
        openvino = metadata.version("openvino")
    except metadata.PackageNotFoundError:
        openvino = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "flags": {flag: flag in flags for flag in CPU_FLAGS}, "openvino": openvino}


def make_frames(folder: Path, warmup: int, timed: int, seed: int) -> None:
    """Synthetic 640x480 frames of moving shapes (our synthetic world) as PNG files: the first ``warmup``
    in ``folder/WARMUP_DIR``, the next ``timed`` in ``folder/TIMED_DIR``."""
    import PIL.Image

    from sam3video.data.synthetic import WorldConfig
    from sam3video.data.clips import generate_clip

    count = warmup + timed
    world = WorldConfig(width=FRAME_WIDTH, height=FRAME_HEIGHT, fps=FRAME_FPS, duration_s=(count + 1) / FRAME_FPS)
    clip = generate_clip(seed, world)
    for t in range(count):
        sub = folder / (WARMUP_DIR if t < warmup else TIMED_DIR)
        sub.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(clip.image(t)).save(sub / f"frame_{t:05d}.png")


def official_config(size: str) -> dict:
    """Our preset for ``size`` as the official SIZES dict (the keys both builders share)."""
    from sam3video import load_config

    config = load_config(SIZES[size]).to_dict()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if k not in OURS_ONLY_KEYS}


def run_child(command: list[str], what: str) -> dict:
    """Run a side's child (its progress on stderr goes through); its JSON result."""
    log(f"{what}: {' '.join(command[:2])} ...")
    start = time.perf_counter()
    subprocess.run(command, check=True)
    out = Path(command[command.index("--out") + 1])
    result = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - start
    return result


def child_args(args, tmp: Path, config: Path, out: str, precisions: list[str]) -> list[str]:
    """The options both children take."""
    command = ["--config", str(config), "--frames-dir", str(tmp / "frames"), "--prompt", args.prompt,
               "--threshold", str(args.threshold), "--seed", str(args.seed), "--warmup", str(args.warmup),
               "--precisions", *precisions, "--out", str(tmp / out)]
    return (command + (["--threads", str(args.threads)] if args.threads else [])
            + (["--profile"] if args.profile else []))


def run_sides(args, tmp: Path) -> tuple[dict | None, dict]:
    """Frames, then the official child (if ``--official``), then ours on its weights."""
    config = tmp / "config.json"
    write_json(config, official_config(args.size))
    make_frames(tmp / "frames", args.warmup, args.frames, args.seed)
    official, weights = None, tmp / "weights.pt"
    if args.official and args.official_precisions:
        python = Path(args.official).expanduser() / "bin" / "python"
        official = run_child([str(python), str(ORACLE_CHILD), *child_args(args, tmp, config, "official.json",
                                                                        args.official_precisions),
                              "--builder", OFFICIAL_BUILDER[args.size], "--oracle-tools", str(args.oracle_tools),
                              "--weights", str(weights)], "official")
    ours_command = [sys.executable, str(Path(__file__).resolve()), "--child",
                    *child_args(args, tmp, config, "ours.json", args.precisions)]
    if official is not None:
        ours_command += ["--weights", str(weights)]
    ours = run_child(ours_command, "ours")
    return official, ours


def weights_check(official: dict | None, ours: dict) -> dict | None:
    """Max |difference| of the first frame's scores and boxes, official vs ours (fp32, threshold 0)."""
    if official is None:
        return None
    a, b = official["check"], ours["check"]
    if len(a["scores"]) != len(b["scores"]):
        return {"queries": [len(a["scores"]), len(b["scores"])], "same": False}
    scores = max((abs(x - y) for x, y in zip(a["scores"], b["scores"])), default=0.0)
    boxes = max((abs(x - y) for p, q in zip(a["boxes"], b["boxes"]) for x, y in zip(p, q)), default=0.0)
    return {"queries": len(a["scores"]), "scores_max_abs_diff": scores, "boxes_max_abs_diff_px": boxes,
            "same": scores <= SAME_WEIGHTS_TOLERANCE}


def table_rows(official: dict | None, ours: dict) -> list[dict]:
    """One row per (side, precision, path), with the side's peak RSS and the ratios."""
    rows = []
    if official is not None:
        for precision, row in official["rows"].items():
            name = "official fp32" if precision == "fp32" else f"official {precision} autocast"
            rows.append({"name": name, "precision": precision, **row, "peak_rss_gib": official["peak_rss_gib"]})
    labels = {"fp32 stages": "ours fp32 (image API)"} | {f"{m} video": f"ours {m} (video e2e)" for m in MODES}
    for key, row in ours["rows"].items():
        rows.append({"name": labels.get(key, f"ours {key}"), "precision": key.split()[0].split("+")[0], **row,
                     "peak_rss_gib": ours["peak_rss_gib"]})
    totals = {row["precision"]: row["total"] for row in rows if row["name"].startswith("official")}
    for row in rows:
        base, same = totals.get("fp32"), totals.get(row["precision"])
        row["vs_official_fp32"] = row["total"] / base if base else None
        row["vs_official_same_precision"] = row["total"] / same if same else None
    return rows


def median_rows(rounds: list[list[dict]]) -> list[dict]:
    """Rows of several rounds (same names, same order) -> one row each: the median of every number."""
    if len(rounds) == 1:
        return rounds[0]
    merged = []
    for same in zip(*rounds, strict=True):
        row = dict(same[-1])
        for key, value in row.items():
            values = [r.get(key) for r in same]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and None not in values:
                row[key] = statistics.median(values)
        row["rounds_total"] = [r["total"] for r in same]
        merged.append(row)
    return merged


PROFILE_OPS = 12  # rows of the op table: the official side's costliest ops


def format_profile(official: dict | None, ours: dict) -> str:
    """Self CPU seconds and calls per aten op on one fp32 frame, official beside ours."""
    theirs = (official or {}).get("profile", {})
    mine = ours.get("profile", {})
    ranked = sorted(theirs or mine, key=lambda op: -(theirs or mine)[op][0])[:PROFILE_OPS]

    def cell(value, fmt: str) -> str:
        return fmt.format(value) if value is not None else "-"

    lines = [f"{'op (one fp32 frame)':52s} {'official s':>10s} {'calls':>6s} {'ours s':>8s} {'calls':>6s}"]
    for op in ranked:
        a, b = theirs.get(op, [None, None]), mine.get(op, [None, None])
        lines.append(f"{op[:52]:52s} {cell(a[0], '{:10.3f}'):>10s} {cell(a[1], '{:6d}'):>6s} "
                     f"{cell(b[0], '{:8.3f}'):>8s} {cell(b[1], '{:6d}'):>6s}")
    total = [sum(v[0] for v in side.values()) if side else None for side in (theirs, mine)]
    lines.append(f"{'all aten ops':52s} {cell(total[0], '{:10.3f}'):>10s} {'':6s} {cell(total[1], '{:8.3f}'):>8s}")
    return "\n".join(lines)


COLUMNS = (("backbone", "backbone", "{:9.3f}"), ("text", "text", "{:7.3f}"), ("heads", "enc+dec+heads", "{:13.3f}"),
           ("post", "post", "{:7.3f}"), ("total", "total/frame", "{:11.3f}"), ("detections", "dets", "{:5.0f}"),
           ("peak_rss_gib", "peak RSS", "{:8.2f}"), ("run_rss_gib", "run RSS", "{:7.2f}"),
           ("vs_official_fp32", "x off fp32", "{:10.2f}"), ("vs_official_same_precision", "x off same", "{:10.2f}"))
NAME_WIDTH = 30


def format_table(rows: list[dict]) -> str:
    """The rows as text: seconds per frame, GiB, ratios ("-" where there is none)."""
    header = f"{'row':{NAME_WIDTH}s} " + " ".join(f"{title:>{len(fmt.format(0))}s}" for _, title, fmt in COLUMNS)
    lines = [header]
    for row in rows:
        cells = [fmt.format(row[key]) if row.get(key) is not None else f"{'-':>{len(fmt.format(0))}s}"
                 for key, _, fmt in COLUMNS]
        lines.append(f"{row['name']:{NAME_WIDTH}s} " + " ".join(cells))
    return "\n".join(lines)


def format_agreement(agreement: dict) -> str:
    """Each mode against fp32 on frame 0 (fp32's top queries): scores, boxes, masks, detections."""
    lines = [f"{'agreement with fp32':{NAME_WIDTH}s} {'queries':>7s} {'max |score diff|':>16s} "
             f"{'box IoU min/mean':>16s} {'mask IoU min/mean':>17s} {'above threshold':>15s}"]
    for precision, a in agreement.items():
        above = "same" if a["same_above_threshold"] else "differ"
        lines.append(f"{'ours ' + precision:{NAME_WIDTH}s} {a['queries']:7d} {a['score_max_abs_diff']:16.2e} "
                     f"{a['box_iou_min']:9.4f}/{a['box_iou_mean']:.4f} {a['mask_iou_min']:10.4f}/{a['mask_iou_mean']:.4f} "
                     f"{above:>6s} ({a['above_threshold'][1]:d} vs {a['above_threshold'][0]:d})")
    return "\n".join(lines)


def describe_torch(side: str, info: dict) -> str:
    return (f"{side} {info['torch']} ({info['cpu_capability']}, oneDNN bf16 {info.get('mkldnn_bf16', '?')}, "
            f"{info['threads']} threads)")


def describe_check(check: dict | None) -> str:
    """One line on the weights check."""
    if check is None:
        return "weights: ours only (seeded random weights; no --official)"
    if "scores_max_abs_diff" not in check:
        return f"weights check FAILED: {check['queries']} queries (official, ours)"
    verdict = "same weights" if check["same"] else "NOT THE SAME MODEL: the timings compare different weights"
    return (f"weights check (frame 0, fp32, threshold 0, {check['queries']} queries): scores max |diff| "
            f"{check['scores_max_abs_diff']:.2e}, boxes max |diff| {check['boxes_max_abs_diff_px']:.2e} px "
            f"-> {verdict}")


def format_header(args, cpu: dict, official: dict | None, ours: dict, check: dict | None) -> str:
    """CPU, flags, versions, model and frames, and the weights check."""
    flags = ", ".join(f"{flag} {'yes' if has else 'no'}" for flag, has in cpu["flags"].items())
    torches = [describe_torch("ours", ours["torch"])]
    if official is not None:
        torches.append(describe_torch("official", official["torch"]))
    model = (f"model: --size {args.size} ({SIZES[args.size]}), {ours['parameters'] / 1e6:.1f} M parameters; "
             f"{args.warmup} warm-up + {args.frames} timed frames of {FRAME_WIDTH}x{FRAME_HEIGHT}; "
             f"prompt {args.prompt!r}, threshold {args.threshold:g}")
    return "\n".join([f"CPU: {cpu['model']}, {cpu['logical_cpus']} logical CPUs ({cpu['usable_cpus']} usable)",
                      f"CPU flags: {flags}", f"torch: {'; '.join(torches)}",
                      f"OpenVINO: {cpu['openvino'] or 'not installed'}", model, describe_check(check)])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", help="the oracle venv (shared/tools/oracle/setup.sh); without it, ours only")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="full = configs/sam3.toml")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="timed frames, after the warm-up")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="warm-up frames (not timed)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in both children")
    parser.add_argument("--prompt", default="a red circle")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="score threshold, both sides")
    parser.add_argument("--seed", type=int, default=0, help="weights and frames")
    parser.add_argument("--precisions", nargs="+", choices=MODES, default=list(PRECISIONS),
                        help="our modes, fp32 first (bf16 is slow on CPUs without AVX-512 BF16 or AMX); "
                             "PRECISION+openvino: the vision trunk in OpenVINO (--runtime openvino)")
    parser.add_argument("--official-precisions", nargs="*", choices=OFFICIAL_PRECISIONS, default=None,
                        help="the official side's (default: those of --precisions it has; none: skip it)")
    parser.add_argument("--oracle-tools", default=str(ORACLE_TOOLS), help="where make_parity_fixture.py is")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run official, ours, official, ours ... this many times; medians over rounds "
                             "(a drifting machine biases one round)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one fp32 frame per side: self CPU time per aten op, side by side")
    parser.add_argument("--json", help="write header, rows and both sides' raw results here")
    parser.add_argument("--show", metavar="JSON", help="print the tables of a saved --json run (runs nothing)")
    parser.add_argument("--round", type=int, help="with --show: that round's tables alone (1-based)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--config", "--frames-dir", "--out", "--weights"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.frames < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("--frames and --rounds must be at least 1, --warmup at least 0")
    if args.precisions[0] != "fp32":
        parser.error("--precisions must start with fp32 (the reference of the agreement check)")
    if args.official_precisions is None:
        args.official_precisions = [p for p in args.precisions if p in OFFICIAL_PRECISIONS]
    return args


def show(path: str, round_number: int | None) -> None:
    """The tables of a saved run: the medians over its rounds, or one round's."""
    saved = json.loads(Path(path).read_text())
    rounds = saved.get("rounds") or [[saved["official"], saved["ours"]]]
    if round_number is not None and not 1 <= round_number <= len(rounds):
        sys.exit(f"--round must be in 1..{len(rounds)} for {path}")
    official, ours = rounds[-1] if round_number is None else rounds[round_number - 1]
    rows = saved["rows"] if round_number is None else table_rows(official, ours)
    print(f"{path}: {'medians over ' + str(len(rounds)) + ' rounds' if round_number is None else f'round {round_number} of {len(rounds)}'}")
    print(format_table(rows))
    print(format_agreement(ours["agreement"]))
    if "profile" in ours:
        print(format_profile(official, ours))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        run_ours(args)
        return
    if args.show:
        show(args.show, args.round)
        return
    start = time.perf_counter()
    rounds = []
    for round_index in range(args.rounds):
        if args.rounds > 1:
            log(f"round {round_index + 1} of {args.rounds}")
        with tempfile.TemporaryDirectory(prefix="bench_official_") as tmp:
            rounds.append(run_sides(args, Path(tmp)))
    official, ours = rounds[-1]
    cpu, check = cpu_info(), weights_check(official, ours)
    rows = median_rows([table_rows(*sides) for sides in rounds])
    print(format_header(args, cpu, official, ours, check))
    print(format_table(rows))
    print("seconds per frame; image API: medians, total = set_image + set_text_prompt (text every frame); "
          "video: means over the timed run, text once per run (not in the total)")
    print(format_agreement(ours["agreement"]))
    if args.profile:
        print(format_profile(official, ours))
    wall_s = time.perf_counter() - start
    print(f"wall time {wall_s:.0f} s")
    if args.json:
        write_json(args.json, {"args": vars(args), "cpu": cpu, "weights_check": check, "rows": rows,
                               "official": official, "ours": ours, "rounds": rounds, "wall_s": wall_s})


if __name__ == "__main__":
    main()
