"""Compare our SAM 3 loop (``Sam3Loop`` / ``Sam3Tracking``) with a recorded run of the OFFICIAL loop.

Run with the project venv (it imports ``sam3video``, never ``sam3``), from the repository root:

    .venv/bin/python tools/check_sam3_loop_parity.py --fixture tests/data/video_loop_parity/video_loop_parity.pt \
        --config tiny
    .venv/bin/python tools/check_sam3_loop_parity.py --fixture /tmp/loop_full/fixture.pt \
        --weights /tmp/loop_full/state_dict.pt --config sam3

The fixture is one of ``tools/make_video_loop_fixture.py`` (tiny: tests/data/video_loop_parity, its README
describes every key; ``--size full``: the same layout at the sam3.pt sizes, with the weights in a separate
state dict). Weights: ``--weights`` (the official video model's keys, ``detector.*`` + ``tracker.*``; fp16 is cast
to fp32), or for ``--config tiny`` without ``--weights`` the repository's tiny parity weights
(tests/data/parity/state_dict.pt, tests/data/tracker_parity/tracker_parity.pt and the fixture's ``sam2_convs``),
all loaded with ``strict=True``.

What runs is what tests/video/test_sam3_loop_parity.py runs: our detector on the fixture's ``images``
(``run_frames`` / ``frame_detections`` / ``tracker_features``), then ``Sam3Loop`` step by step (frame 0 twice, as
``add_prompt`` then ``propagate_in_video`` run it) and ``Sam3Tracking`` for the yielded stream, fp32 memories.
It prints one row per official step and per yielded frame, then PASS (same ids and decisions everywhere, every
mask IoU >= 0.99) or FAIL and the first divergence; the exit status is 1 on FAIL.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sam3video.model.build_video import build_video_model
from sam3video.model.geometry_encoders import prompt_from_boxes
from sam3video.thresholds import Sam3LoopConfig
from sam3video.video.detect import encode_prompts, run_frames, split_frames
from sam3video.video.sam3_loop import Sam3Loop
from sam3video.video.sam3_planning import select_detections
from sam3video.video.sam3_tracking import (
    Sam3Tracking,
    frame_detections,
    tracker_features,
)
from sam3video.video.session import Sam3Options

MIN_IOU = 0.99
DATA = ROOT / "tests" / "data"


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def load_model(config: str, weights: Path | None, fixture: dict):
    model = build_video_model(config)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state["model"] if isinstance(state.get("model"), dict) else state
    elif config == "tiny":
        det = torch.load(DATA / "parity" / "state_dict.pt", map_location="cpu", weights_only=True)
        state = {f"detector.{k}": v for k, v in det.items()}
        state.update(torch.load(DATA / "tracker_parity" / "tracker_parity.pt", weights_only=True)["state_dict"])
        state.update(fixture["sam2_convs"])
    else:
        raise SystemExit("--weights is required unless --config tiny")
    for k in list(state):  # fp16 -> fp32 one tensor at a time (the full model's weights are 3.4 GB in fp32)
        if state[k].dtype in (torch.float16, torch.bfloat16):
            state[k] = state[k].float()
    model.load_state_dict(state, strict=True)
    del state
    return model.eval()


def run_detector(model, fixture: dict) -> tuple[list, float]:
    """Per frame: (the prompt's ``FrameDetections``, the tracker features); seconds per frame."""
    images = fixture["images"].float()
    det = model.detector
    out = []
    t0 = time.time()
    with torch.inference_mode():
        text = encode_prompts(det, [fixture["prompt"]])
        for f in range(len(images)):
            outputs = run_frames(det, [f], {"img_batch_all_stages": images}, text, prompt_from_boxes([[]], det.device))
            backbone = outputs["prev_encoder_out"]["backbone_out"]
            features = tracker_features(model.tracker, backbone["sam2_backbone_out"], int(backbone["id_mapping"][f]))
            out.append((frame_detections(split_frames(outputs, 1)[0])[0], features))
            del outputs, backbone
            print(f"  detector frame {f}: {time.time() - t0:.1f} s", flush=True)
    return out, (time.time() - t0) / len(images)


def fmt_ids(ids) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def check_steps(model, fixture: dict, cfg: Sam3LoopConfig, frames: list) -> tuple[list[dict], float]:
    video_size = (fixture["orig_height"], fixture["orig_width"])
    loop = Sam3Loop(model.tracker, cfg, fixture["num_frames"], video_size, memory_dtype=torch.float32)
    rows = []
    t0 = time.time()
    for k, step in enumerate(fixture["steps"]):
        f = step["frame_idx"]
        dets, features = frames[f]
        row = {"step": k, "frame": f, "problems": []}
        prev_ids = list(loop.obj_ids)
        row["ids_ok"] = prev_ids == step["trk"]["obj_ids"]
        if not row["ids_ok"]:
            row["problems"].append(f"tracked ids ours {prev_ids} official {step['trk']['obj_ids']}")
        keep = select_detections(dets.probs, dets.masks, cfg)
        n_off = len(step["det"]["scores"])
        row["dets"] = (len(keep), n_off)
        row["score_diff"] = row["det_iou"] = None
        if len(keep) == n_off:
            if n_off:
                row["score_diff"] = (dets.probs[keep].float() - step["det"]["scores"].float()).abs().max().item()
                row["det_iou"] = min(iou(a > 0, b > 0) for a, b in zip(dets.masks[keep].float(),
                                                                         step["det"]["masks"].float()))
        else:
            row["problems"].append(f"detections kept ours {len(keep)} official {n_off}")
        out = loop.step(f, dets, features)
        ids, ours, scores = loop.last_propagation
        expected = step["trk"]["masks"].float()
        row["trk_iou"] = row["logit_diff"] = row["obj_score_diff"] = None
        if ids == step["trk"]["obj_ids"] and ours.shape == expected.shape and len(expected):
            row["trk_iou"] = min(iou(a > 0, b > 0) for a, b in zip(ours.float(), expected))
            close = expected.abs() > 1e-2  # stored fp16, may sit near 0
            diff = (ours.float()[close] - expected[close]).abs()
            row["logit_diff"] = diff.max().item() if close.any() else 0.0
            row["logit_rel"] = (diff / expected[close].abs()).max().item() if close.any() else 0.0
            row["obj_score_diff"] = (scores.float() - step["trk"]["obj_score_logits"].float()).abs().max().item()
            row["trk_px"] = ([int((m > 0).sum()) for m in ours], [int((m > 0).sum()) for m in expected])
            if row["trk_iou"] < MIN_IOU:
                row["problems"].append(f"tracker mask IoU {row['trk_iou']:.4f}")
        elif len(expected) or len(ours):
            row["problems"].append(f"tracker masks: ours {ids} {tuple(ours.shape)}, official "
                                   f"{step['trk']['obj_ids']} {tuple(expected.shape)}")
        # decisions: births, removals, buckets, scores at birth, occlusion bookkeeping, reconditioning
        plan = step["plan"]
        born = [i for i in out.masks if i not in prev_ids]
        row["born"] = (born, plan["new_det_obj_ids"])
        row["removed"] = (sorted(out.removed), step["removed_obj_ids_so_far"])
        decisions = {
            "births": list(out.masks) == [*prev_ids, *plan["new_det_obj_ids"]],
            "removals": sorted(out.removed) == step["removed_obj_ids_so_far"],
            "buckets": [b.obj_ids for b in loop.buckets] == step["buckets_after"],
            "max_obj_id": loop.state.max_obj_id == step["max_obj_id_after"],
            "birth_scores": set(loop.state.obj_id_to_score) == {int(i) for i in step["obj_id_to_score"]} and all(
                abs(loop.state.obj_id_to_score[int(i)] - float(s)) <= 1e-5 for i, s in step["obj_id_to_score"].items()),
            "last_occluded": dict(loop.state.obj_id_to_last_occluded) == {
                int(i): int(v) for i, v in step["obj_id_to_last_occluded"].items()},
            "reconditioned": sorted(out.reconditioned) == sorted(r["obj_id"] for r in step["reconditioned"]),
            "first_frame": dict(loop.state.obj_first_frame_idx) == {
                int(i): int(v) for i, v in step["hotstart"]["obj_first_frame_idx"].items()},
            "unmatched": {int(i): list(v) for i, v in loop.state.unmatched_frame_inds.items()} == {
                int(i): list(v) for i, v in step["hotstart"]["unmatched_frame_inds"].items()},
        }
        row["decisions_ok"] = all(decisions.values())
        for name, ok in decisions.items():
            if not ok:
                row["problems"].append(f"decision '{name}' differs")
        if not decisions["births"]:
            row["problems"].append(f"frame objects ours {list(out.masks)} official "
                                   f"{[*prev_ids, *plan['new_det_obj_ids']]}")
        if not decisions["removals"]:
            row["problems"].append(f"removed ours {sorted(out.removed)} official {step['removed_obj_ids_so_far']}")
        if not decisions["buckets"]:
            row["problems"].append(f"buckets ours {[b.obj_ids for b in loop.buckets]} official {step['buckets_after']}")
        rows.append(row)
        print(f"  step {k}: {time.time() - t0:.1f} s", flush=True)
    return rows, time.time() - t0


def check_outputs(model, fixture: dict, cfg: Sam3LoopConfig, frames: list) -> tuple[list[dict], list[str], float]:
    height, width = fixture["orig_height"], fixture["orig_width"]
    tracking = Sam3Tracking(model.tracker, cfg, 1, fixture["num_frames"], (height, width),
                            Sam3Options(memory_dtype="fp32"))
    problems = []
    t0 = time.time()
    ours = []
    for f, (dets, features) in enumerate(frames):
        ours += tracking.step(f, [dets], features)
        if len(ours) != max(0, f + 2 - cfg.hotstart_delay):  # the official schedule (yield_after_step)
            problems.append(f"after frame {f}: {len(ours)} frames yielded, "
                            f"officially {max(0, f + 2 - cfg.hotstart_delay)}")
    ours += tracking.flush()
    seconds = time.time() - t0
    if [f for f, _ in ours] != fixture["yield_frame_order"]:
        problems.append(f"yield order ours {[f for f, _ in ours]} official {fixture['yield_frame_order']}")
    rows = []
    official_to_ours: dict[int, int] = {}
    for (f, got), expected in zip(ours, fixture["outputs"]):
        ids = expected["out_obj_ids"].tolist()
        want = [official_to_ours.setdefault(i, len(official_to_ours) + 1) for i in ids]
        row = {"frame": f, "official_frame": expected["frame_idx"], "ids": (got.tracker_id.tolist(), want, ids),
               "problems": []}
        row["ids_ok"] = got.tracker_id.tolist() == want and f == expected["frame_idx"]
        if not row["ids_ok"]:
            row["problems"].append(f"frame {f}: ids ours {got.tracker_id.tolist()} official {want} "
                                   f"(official ids {ids})")
        row["iou"] = row["box_diff"] = row["prob_diff"] = None
        if row["ids_ok"] and ids:
            masks = np.unpackbits(expected["out_binary_masks_packed"].numpy(), axis=-1, count=width).astype(bool)
            row["iou"] = min(iou(torch.from_numpy(a), torch.from_numpy(b)) for a, b in zip(got.mask, masks))
            row["px"] = ([int(m.sum()) for m in got.mask], [int(m.sum()) for m in masks])
            # official boxes: normalised xywh with inclusive maxima; ours: pixels, x1 / y1 exclusive
            boxes = expected["out_boxes_xywh"].numpy() * [width, height, width, height]
            official_xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] + 1], axis=1)
            row["box_diff"] = float(np.abs(got.xyxy - official_xyxy).max())
            row["prob_diff"] = float(np.abs(got.confidence - expected["out_probs"].numpy()).max())
            if row["iou"] < MIN_IOU:
                row["problems"].append(f"frame {f}: output mask IoU {row['iou']:.4f}")
            if row["prob_diff"] > 1e-4:
                row["problems"].append(f"frame {f}: output probs differ by {row['prob_diff']:.2e}")
        rows.append(row)
    if len(ours) != len(fixture["outputs"]):
        problems.append(f"{len(ours)} frames yielded, official {len(fixture['outputs'])}")
    return rows, problems, seconds


def num(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_tables(step_rows: list[dict], out_rows: list[dict]) -> None:
    print("\nper step (frame 0 twice: step 0 = add_prompt, step k >= 1 = frame k - 1)")
    head = (f"{'step':>4} {'frame':>5} {'dets ours/off':>13} {'max|dscore|':>11} {'det IoU':>8} {'ids':>4} "
            f"{'trk IoU':>8} {'max|dlogit|':>11} {'(rel)':>8} {'max|dobj|':>9} {'births/removals':>15} "
            f"{'decisions':>9}  "
            "born / removed so far / tracked px (ours | official)")
    print(head)
    print("-" * len(head))
    for r in step_rows:
        same_br = r["born"][0] == r["born"][1] and r["removed"][0] == r["removed"][1]
        px = r.get("trk_px")
        dets = f"{r['dets'][0]}/{r['dets'][1]}"
        print(f"{r['step']:>4} {r['frame']:>5} {dets:>13} {num(r['score_diff'], '.2e'):>11} "
              f"{num(r['det_iou'], '.4f'):>8} {'yes' if r['ids_ok'] else 'NO':>4} {num(r['trk_iou'], '.4f'):>8} "
              f"{num(r['logit_diff'], '.2e'):>11} {num(r.get('logit_rel'), '.1e'):>8} "
              f"{num(r['obj_score_diff'], '.2e'):>9} "
              f"{'yes' if same_br else 'NO':>15} {'yes' if r['decisions_ok'] else 'NO':>9}  "
              f"born {fmt_ids(r['born'][1])} removed {fmt_ids(r['removed'][1])}"
              + (f" px {px[0]} | {px[1]}" if px else ""))
    print("\nper yielded frame (ids: ours, run-wide, renumbered from the official ids in order of appearance)")
    head = (f"{'frame':>5} {'ids ours':>12} {'official':>12} {'equal':>5} {'min IoU':>8} {'max|dbox| px':>12} "
            f"{'max|dprob|':>10}  mask px (ours | official)")
    print(head)
    print("-" * len(head))
    for r in out_rows:
        px = r.get("px")
        print(f"{r['frame']:>5} {fmt_ids(r['ids'][0]):>12} {fmt_ids(r['ids'][1]):>12} "
              f"{'yes' if r['ids_ok'] else 'NO':>5} "
              f"{num(r['iou'], '.4f'):>8} {num(r['box_diff'], '.3f'):>12} {num(r['prob_diff'], '.2e'):>10}  "
              + (f"{px[0]} | {px[1]}" if px else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixture", type=Path, required=True)
    ap.add_argument("--weights", type=Path, default=None, help="official-layout state dict (detector.* + tracker.*)")
    ap.add_argument("--config", default="sam3", help="our config preset: sam3 (full) or tiny")
    args = ap.parse_args(argv)
    t0 = time.time()
    torch.set_grad_enabled(False)
    fixture = torch.load(args.fixture, map_location="cpu", weights_only=True)
    model = load_model(args.config, args.weights, fixture)
    t = model.tracker
    for key, value in fixture["config"].items():  # the tracker settings the official run used
        if key.startswith("tracker.") and hasattr(t, key.removeprefix("tracker.")):
            ours = getattr(t, key.removeprefix("tracker."))
            assert ours == value, f"{key}: ours {ours}, official {value}"
    names = {f.name for f in dataclasses.fields(Sam3LoopConfig)}
    cfg = Sam3LoopConfig(**{k: v for k, v in fixture["config"].items() if k in names})
    print(f"{args.fixture}: {fixture['num_frames']} frames {fixture['orig_height']}x{fixture['orig_width']}, "
          f"images {tuple(fixture['images'].shape)}, {len(fixture['steps'])} steps; model {args.config} loaded in "
          f"{time.time() - t0:.1f} s", flush=True)
    print("loop config changed from the builder:", {k: fixture["config"][k] for k in fixture["config_changed"]})

    frames, det_s = run_detector(model, fixture)
    step_rows, steps_s = check_steps(model, fixture, cfg, frames)
    out_rows, out_problems, stream_s = check_outputs(model, fixture, cfg, frames)
    print_tables(step_rows, out_rows)

    n = fixture["num_frames"]
    print(f"\ntimes (ours, fp32, this CPU): detector {det_s:.1f} s per frame; Sam3Loop {steps_s:.1f} s for "
          f"{len(step_rows)} steps ({steps_s / len(step_rows):.1f} s per step); Sam3Tracking {stream_s:.1f} s "
          f"({stream_s / n:.1f} s per frame); ours per frame (detector + tracking) {det_s + stream_s / n:.1f} s")
    if "official_seconds" in fixture:
        print(f"official (recorded): {fixture['official_seconds']['per_frame']:.1f} s per frame")
    problems = [f"step {r['step']} (frame {r['frame']}): {p}" for r in step_rows for p in r["problems"]]
    problems += out_problems + [p for r in out_rows for p in r["problems"]]
    ok = not problems
    print(f"\n{'PASS' if ok else 'FAIL'}: {len(step_rows)} steps, {len(out_rows)} yielded frames; "
          f"min tracker IoU {min([r['trk_iou'] for r in step_rows if r['trk_iou'] is not None], default=1.0):.4f}, "
          f"min output IoU {min([r['iou'] for r in out_rows if r['iou'] is not None], default=1.0):.4f}"
          + ("" if ok else f"; first divergence: {problems[0]}"))
    for p in problems[1:10]:
        print("  also:", p)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
