"""Compare our SAM 3 loop (``Sam3Loop`` / ``Sam3Tracking``) with recorded runs of the OFFICIAL loop.

Run with the project venv (it imports ``sam3video``, never ``sam3``), from the repository root:

    .venv/bin/python tools/check_sam3_loop_parity.py --fixture tests/data/video_loop_parity --config tiny
    .venv/bin/python tools/check_sam3_loop_parity.py --fixture /tmp/loop_full/fixture.pt \\
        --weights /tmp/loop_full/state_dict.pt --config sam3 -v

``--fixture`` takes files or folders (every ``*.pt`` / ``*.pt.xz`` inside), made by ``tools/make_video_loop_fixture.py`` (tiny:
``tests/data/video_loop_parity``, whose README describes every key; ``--size full``: the same layout at the sam3.pt
sizes, the weights in a separate state dict). ``tools/loop_parity_sweep.py`` makes and checks many in one command.
Weights: ``--weights`` (the official video model's keys, ``detector.*`` + ``tracker.*``; fp16 is cast to fp32), or
for ``--config tiny`` without it the repository's tiny parity weights (tests/data/parity/state_dict.pt,
tests/data/tracker_parity/tracker_parity.pt and the fixture's ``sam2_convs``), all loaded with ``strict=True``.

What runs (``check_fixture``, also what tests/trackers/sam3/test_loop_parity.py runs): our detector on the fixture's
frames, then ``Sam3Loop`` step by step (frame 0 twice, as ``add_prompt`` then ``propagate_in_video`` run it) and
``Sam3Tracking`` for the yielded stream, memories stored as the fixture's official run stored them (fp32 or bf16).
Compared on every step: the detections kept (scores, masks), the tracked ids, the propagated tracker masks and
their object-score logits, the area-shrinkage decision of every object before its memory is encoded, every planning
decision (births, removals, buckets, ids, scores, occlusion, hot-start bookkeeping, reconditioning), the tracker
scores; then every yielded frame (ids, probabilities, masks, boxes).

Knife edges. On random weights the objects of one bucket often get masks equal to the last few float bits, so
which object keeps a pixel under the area-shrinkage rule's pixel argmax turns on rounding: the official code
itself decides differently with 1 and 2 threads. The maker probes every such decision (the official rule rerun on
logits moved by 1e-4) and marks the unstable ones; for those alone the official outcome is used (``Referee``) and
counted, every other decision must be equal. Likewise a mask pixel may differ only where the official logit is
within ``PIXEL_TOL`` of 0. Exact ties are not knife edges (the probe keeps them tied): they must follow the official
first-index rule. ``--no-referee`` runs without the official outcomes, to see where our own decisions go.

Prints one line per fixture (``-v``: a row per step and per yielded frame), then PASS or FAIL with the first
divergence; exit status 1 if any fixture fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import lzma
import sys
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sam3video.trackers.sam3.loop as sam3_loop_mod
from sam3video.model.build_video import build_video_model
from sam3video.model.geometry_encoders import prompt_from_boxes
from sam3video.thresholds import Sam3LoopConfig
from sam3video.trackers.sam3.loop import Sam3Loop
from sam3video.trackers.sam3.planning import select_detections
from sam3video.trackers.sam3.tracking import Sam3Tracking, frame_detections, tracker_features
from sam3video.video.detect import encode_prompts, run_frames, split_frames
from sam3video.video.session import Sam3Options

DATA = ROOT / "tests" / "data"
PIXEL_TOL = 1e-3  # a pixel whose official logit is within this of 0 may differ (v1 fixtures: the same default)
LOGIT_ATOL = LOGIT_RTOL = 2e-3  # tracker mask logits, where the official one is > 1e-2 from 0 (stored as fp16)
OBJ_SCORE_ATOL, OBJ_SCORE_RTOL = 1e-3, 1e-5  # object-score logits (measured: <= 5.5e-4 over the 24 sweep cases)
SCORE_ATOL = 1e-5  # detection probabilities (and tracker probabilities of objects born on the step: the same)
TRACKER_SCORE_ATOL = 0.25 * OBJ_SCORE_ATOL  # sigmoid of an object-score logit: its slope is at most 1/4
BOX_ATOL = 1e-3  # output boxes, pixels
MEMORY_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ------------------------------------------------------------------------------------------------------------
# fixtures and model

def read_fixture(path: Path) -> dict:
    """A fixture of ``make_video_loop_fixture.py`` with its frames unpacked into ``images`` (fp16)."""
    data = Path(path).read_bytes()
    if Path(path).suffix == ".xz":
        data = lzma.decompress(data)
    fx = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if "images_fp16_zlib" in fx:
        raw = zlib.decompress(fx.pop("images_fp16_zlib").numpy().tobytes())
        fx["images"] = torch.from_numpy(np.frombuffer(raw, np.float16).copy()).reshape(fx["images_shape"])
    fx.setdefault("memory_dtype", "fp32")
    fx.setdefault("knife_edge", {"pixel_tol": PIXEL_TOL})
    return fx


def fixture_paths(items: list[Path]) -> list[Path]:
    out = []
    for item in items:
        out += sorted([*item.glob("*.pt"), *item.glob("*.pt.xz")]) if item.is_dir() else [item]
    return out


def tiny_state_dict(fixture: dict) -> dict:
    """The repository's tiny parity weights in the official video layout (fp32), plus the fixture's ``sam2_convs``."""
    det = torch.load(DATA / "parity" / "state_dict.pt", map_location="cpu", weights_only=True)
    state = {f"detector.{k}": v for k, v in det.items()}
    state.update(torch.load(DATA / "tracker_parity" / "tracker_parity.pt", weights_only=True)["state_dict"])
    state.update(fixture["sam2_convs"])
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_model(config: str, weights: Path | None, fixture: dict):
    model = build_video_model(config)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state["model"] if isinstance(state.get("model"), dict) else state
        for k in list(state):  # fp16 -> fp32 one tensor at a time (the full model's weights are 3.4 GB in fp32)
            if state[k].dtype in (torch.float16, torch.bfloat16):
                state[k] = state[k].float()
    elif config == "tiny":
        state = tiny_state_dict(fixture)
    else:
        raise SystemExit("--weights is required unless --config tiny")
    model.load_state_dict(state, strict=True)
    del state
    return model.eval()


def tracker_settings_problems(model, fixture: dict) -> list[str]:
    t = model.tracker
    return [f"tracker setting {key}: ours {getattr(t, key.removeprefix('tracker.'))}, official {value}"
            for key, value in fixture["config"].items()
            if key.startswith("tracker.") and hasattr(t, key.removeprefix("tracker."))
            and getattr(t, key.removeprefix("tracker.")) != value]


def loop_config(fixture: dict) -> Sam3LoopConfig:
    names = {f.name for f in dataclasses.fields(Sam3LoopConfig)}
    return Sam3LoopConfig(**{k: v for k, v in fixture["config"].items() if k in names})


def run_detector(model, fixture: dict, log=None) -> list:
    """Per frame: (the prompt's ``FrameDetections``, the tracker features)."""
    images = fixture["images"].float()
    det = model.detector
    out = []
    with torch.inference_mode():
        text = encode_prompts(det, [fixture["prompt"]])
        for f in range(len(images)):
            outputs = run_frames(det, [f], {"img_batch_all_stages": images}, text, prompt_from_boxes([[]], det.device))
            backbone = outputs["prev_encoder_out"]["backbone_out"]
            features = tracker_features(model.tracker, backbone["sam2_backbone_out"], int(backbone["id_mapping"][f]))
            out.append((frame_detections(split_frames(outputs, 1)[0])[0], features))
            del outputs, backbone
            if log:
                log(f"  detector frame {f}")
    return out


# ------------------------------------------------------------------------------------------------------------
# knife edges

class Referee:
    """Inside ``active()``: every ``Sam3Loop.step`` is matched to the next official step, and our area-shrinkage
    rule (``suppress_object_pw_area_shrinkage``) takes the official outcome for the objects the fixture marks as
    knife edges (``mem.shrink_knife_edge``); ``ours`` records our own outcome (suppressed or not) per step."""

    def __init__(self, steps: list[dict], enabled: bool = True):
        self.steps, self.enabled = steps, enabled
        self.step_index = -1
        self.ours: dict[int, list[bool]] = {}
        self.forced: dict[int, list[int]] = {}  # step -> rows given the official outcome

    @contextmanager
    def active(self):
        rule, step = sam3_loop_mod.suppress_object_pw_area_shrinkage, Sam3Loop.step
        self.step_index = -1

        def counted_step(loop, *a, **k):
            self.step_index += 1
            return step(loop, *a, **k)

        def refereed(masks):
            out = rule(masks)
            k = self.step_index
            self.ours[k] = (out != masks).flatten(1).any(1).tolist()
            mem = self.steps[k].get("mem", {}) if k < len(self.steps) else {}
            edges, official = mem.get("shrink_knife_edge"), mem.get("shrink_suppressed")
            if self.enabled and edges and official and len(official) == len(masks):
                rows = [i for i, edge in enumerate(edges) if edge]
                for i in rows:
                    out[i] = masks[i].clamp(max=-10.0) if official[i] else masks[i]
                if rows:
                    self.forced[k] = rows
            return out

        sam3_loop_mod.suppress_object_pw_area_shrinkage, Sam3Loop.step = refereed, counted_step
        try:
            yield self
        finally:
            sam3_loop_mod.suppress_object_pw_area_shrinkage, Sam3Loop.step = rule, step


def unexplained_pixels(ours: torch.Tensor, expected_logits: torch.Tensor, tol: float) -> int:
    """Pixels where our binary mask and the official one (from its logits) differ although the official logit is
    at least ``tol`` from 0."""
    differ = (ours > 0) != (expected_logits > 0)
    return int((differ & (expected_logits.abs() >= tol)).sum())


def box_explained(ours: np.ndarray, official: np.ndarray, edge: np.ndarray) -> bool:
    """Pixel boxes (x0, y0, x1, y1; x1, y1 exclusive) of one object: equal within BOX_ATOL, or each differing side
    reaches a row or column holding a knife-edge pixel (the pixel that sets the wider side differs between the two
    raw masks, so it must sit on the knife edge)."""
    for side, (a, b) in enumerate(zip(ours, official)):
        if abs(a - b) <= BOX_ATOL:
            continue
        line = int(round(min(a, b))) if side < 2 else int(round(max(a, b))) - 1
        band = edge[:, line] if side % 2 == 0 else edge[line, :]
        if not (0 <= line < edge.shape[1 - side % 2]) or not band.any():
            return False
    return True


def unpack(packed: torch.Tensor, width: int) -> np.ndarray:
    return np.unpackbits(packed.numpy(), axis=-1, count=width).astype(bool)


# ------------------------------------------------------------------------------------------------------------
# the comparison

@dataclasses.dataclass
class Report:
    """What ``check_fixture`` compared and found; ``problems`` empty means parity."""

    name: str
    steps: list[dict]
    frames: list[dict]
    problems: list[str]
    forced: dict[int, list[int]]  # step -> objects (rows) whose area-shrinkage outcome was the official one
    compared: dict[str, int]  # how many of each thing were compared
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems


def check_steps(model, fixture: dict, cfg: Sam3LoopConfig, frames: list, referee: Referee,
                problems: list[str], compared: dict[str, int]) -> list[dict]:
    tol = fixture["knife_edge"]["pixel_tol"]
    memory_dtype = MEMORY_DTYPES[fixture["memory_dtype"]]
    loop = Sam3Loop(model.tracker, cfg, fixture["num_frames"], (fixture["orig_height"], fixture["orig_width"]),
                    memory_dtype=memory_dtype)
    rows = []
    with referee.active():
        for k, step in enumerate(fixture["steps"]):
            f = step["frame_idx"]
            dets, features = frames[f]
            row = {"step": k, "frame": f, "problems": []}
            say = row["problems"].append
            prev_ids = list(loop.obj_ids)
            row["ids_ok"] = prev_ids == step["trk"]["obj_ids"]
            if not row["ids_ok"]:
                say(f"tracked ids ours {prev_ids} official {step['trk']['obj_ids']}")

            keep = select_detections(dets.probs, dets.masks, cfg)
            n_off = len(step["det"]["scores"])
            row["dets"] = (len(keep), n_off)
            row["score_diff"] = row["det_px"] = None
            if len(keep) == n_off:
                if n_off:
                    row["score_diff"] = (dets.probs[keep].float() - step["det"]["scores"].float()).abs().max().item()
                    row["det_px"] = unexplained_pixels(dets.masks[keep].float(), step["det"]["masks"].float(), tol)
                    compared["detections"] += n_off
                    if row["score_diff"] > SCORE_ATOL:
                        say(f"detection scores differ by {row['score_diff']:.2e}")
                    if row["det_px"]:
                        say(f"detector masks: {row['det_px']} pixels differ away from the knife edge")
            else:
                say(f"detections kept ours {len(keep)} official {n_off}")

            out = loop.step(f, dets, features)
            ids, ours, scores = loop.last_propagation
            expected = step["trk"]["masks"].float()
            row["trk_px"] = row["logit_diff"] = row["obj_score_diff"] = None
            if ids == step["trk"]["obj_ids"] and ours.shape == expected.shape and len(expected):
                row["trk_px"] = unexplained_pixels(ours.float(), expected, tol)
                close = expected.abs() > 1e-2  # stored fp16, may sit near 0
                diff = (ours.float()[close] - expected[close]).abs()
                row["logit_diff"] = diff.max().item() if close.any() else 0.0
                bad_logits = int((diff > LOGIT_ATOL + LOGIT_RTOL * expected[close].abs()).sum())
                official_scores = step["trk"]["obj_score_logits"].float()
                row["obj_score_diff"] = (scores.float() - official_scores).abs().max().item()
                bad_scores = (scores.float() - official_scores).abs() > OBJ_SCORE_ATOL + OBJ_SCORE_RTOL * official_scores.abs()
                row["px"] = ([int((m > 0).sum()) for m in ours], [int((m > 0).sum()) for m in expected])
                compared["tracker_masks"] += len(expected)
                if row["trk_px"]:
                    say(f"tracker masks: {row['trk_px']} pixels differ away from the knife edge "
                        f"(px ours {row['px'][0]} official {row['px'][1]})")
                if bad_logits:
                    say(f"tracker mask logits: {bad_logits} differ by more than {LOGIT_ATOL} + {LOGIT_RTOL} |x| "
                        f"(max {row['logit_diff']:.3g})")
                if bad_scores.any():
                    say(f"object-score logits of {[ids[i] for i in torch.nonzero(bad_scores)[:, 0].tolist()]} differ "
                        f"(max {row['obj_score_diff']:.3g}; ours {[round(x, 3) for x in scores.tolist()]} official "
                        f"{[round(x, 3) for x in official_scores.tolist()]})")
            elif len(expected) or len(ours):
                say(f"tracker masks: ours {ids} {tuple(ours.shape)}, official {step['trk']['obj_ids']} "
                    f"{tuple(expected.shape)}")

            # the memory-encoding decision of every tracked object (area shrinkage under the pixel argmax)
            official_shrink = step.get("mem", {}).get("shrink_suppressed")
            ours_shrink = referee.ours.get(k)
            row["forced"] = [ids[i] for i in referee.forced.get(k, [])] if ids == step["trk"]["obj_ids"] else []
            if official_shrink is not None or ours_shrink is not None:
                edges = step.get("mem", {}).get("shrink_knife_edge") or [False] * len(official_shrink or [])
                judged = [i for i in range(len(official_shrink or [])) if not (edges[i] and referee.enabled)]
                if ours_shrink is None or official_shrink is None or len(ours_shrink) != len(official_shrink) or any(
                        ours_shrink[i] != official_shrink[i] for i in judged):
                    say(f"area-shrinkage decisions ours {ours_shrink} official {official_shrink}"
                        + (f" (knife edges {edges}: given the official outcome)" if any(edges) else ""))
                compared["shrink_decisions"] += len(judged)

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
                    abs(loop.state.obj_id_to_score[int(i)] - float(s)) <= SCORE_ATOL
                    for i, s in step["obj_id_to_score"].items()),
                "tracker_scores": all(
                    abs(out.tracker_scores.get(int(i), -1.0) - float(s)) <= (
                        TRACKER_SCORE_ATOL if int(i) in prev_ids else SCORE_ATOL)
                    for i, s in step["obj_id_to_tracker_score"].items() if float(s) > -1.0),
                "last_occluded": dict(loop.state.obj_id_to_last_occluded) == {
                    int(i): int(v) for i, v in step["obj_id_to_last_occluded"].items()},
                "occlusion_suppressed": sorted(out.suppressed) == sorted(step.get("suppressed_obj_ids", [])),
                "reconditioned": sorted(out.reconditioned) == sorted(r["obj_id"] for r in step["reconditioned"]),
                "first_frame": dict(loop.state.obj_first_frame_idx) == {
                    int(i): int(v) for i, v in step["hotstart"]["obj_first_frame_idx"].items()},
                "unmatched": {int(i): list(v) for i, v in loop.state.unmatched_frame_inds.items()} == {
                    int(i): list(v) for i, v in step["hotstart"]["unmatched_frame_inds"].items()},
            }
            compared["decisions"] += len(decisions)
            row["decisions_ok"] = all(decisions.values())
            for name, ok in decisions.items():
                if not ok:
                    say(f"decision '{name}' differs")
            if not decisions["births"]:
                say(f"frame objects ours {list(out.masks)} official {[*prev_ids, *plan['new_det_obj_ids']]}")
            if not decisions["removals"]:
                say(f"removed ours {sorted(out.removed)} official {step['removed_obj_ids_so_far']}")
            if not decisions["buckets"]:
                say(f"buckets ours {[b.obj_ids for b in loop.buckets]} official {step['buckets_after']}")
            if not decisions["tracker_scores"]:
                say(f"tracker scores ours {out.tracker_scores} official {step['obj_id_to_tracker_score']}")
            rows.append(row)
            problems += [f"step {k} (frame {f}): {p}" for p in row["problems"]]
    compared["steps"] += len(rows)
    return rows


def check_outputs(model, fixture: dict, cfg: Sam3LoopConfig, frames: list, referee: Referee,
                  problems: list[str], compared: dict[str, int]) -> list[dict]:
    height, width = fixture["orig_height"], fixture["orig_width"]
    tracking = Sam3Tracking(model.tracker, cfg, 1, fixture["num_frames"], (height, width),
                            Sam3Options(memory_dtype=fixture["memory_dtype"]))
    # the knife-edge pixels of a frame's outputs: those recorded on the last step that processed it
    edge_px = {st["frame_idx"]: unpack(st["out_knife_edge_px"], width) for st in fixture["steps"]
               if "out_knife_edge_px" in st}
    ours = []
    with referee.active():
        for f, (dets, features) in enumerate(frames):
            ours += tracking.step(f, [dets], features)
            if len(ours) != max(0, f + 2 - cfg.hotstart_delay):  # the official schedule (yield_after_step)
                problems.append(f"after frame {f}: {len(ours)} frames yielded, "
                                f"officially {max(0, f + 2 - cfg.hotstart_delay)}")
        ours += tracking.flush()
    if [f for f, _ in ours] != fixture["yield_frame_order"]:
        problems.append(f"yield order ours {[f for f, _ in ours]} official {fixture['yield_frame_order']}")
    if len(ours) != len(fixture["outputs"]):
        problems.append(f"{len(ours)} frames yielded, official {len(fixture['outputs'])}")
    rows = []
    official_to_ours: dict[int, int] = {}
    for (f, got), expected in zip(ours, fixture["outputs"]):
        ids = expected["out_obj_ids"].tolist()
        want = [official_to_ours.setdefault(i, len(official_to_ours) + 1) for i in ids]
        row = {"frame": f, "ids": (got.tracker_id.tolist(), want, ids), "problems": []}
        say = row["problems"].append
        row["ids_ok"] = got.tracker_id.tolist() == want and f == expected["frame_idx"]
        if not row["ids_ok"]:
            say(f"ids ours {got.tracker_id.tolist()} official {want} (official ids {ids})")
        row["px_diff"] = row["box_diff"] = row["prob_diff"] = None
        if row["ids_ok"] and ids:
            masks = unpack(expected["out_binary_masks_packed"], width)
            edge = edge_px.get(f, np.zeros((height, width), bool))
            differ = got.mask != masks
            row["px_diff"] = (int(differ.sum()), int((differ & ~edge).sum()))
            row["px"] = ([int(m.sum()) for m in got.mask], [int(m.sum()) for m in masks])
            # official boxes: normalised xywh with inclusive maxima; ours: pixels, x1 / y1 exclusive
            boxes = expected["out_boxes_xywh"].numpy() * [width, height, width, height]
            official_xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] + 1], axis=1)
            row["box_diff"] = float(np.abs(got.xyxy - official_xyxy).max())
            unexplained = [ids[i] for i in range(len(ids)) if not box_explained(got.xyxy[i], official_xyxy[i], edge)]
            row["box_explained"] = not unexplained
            row["prob_diff"] = float(np.abs(got.confidence - expected["out_probs"].numpy()).max())
            compared["output_masks"] += len(ids)
            compared["output_boxes"] += len(ids)
            if row["px_diff"][1]:
                say(f"masks: {row['px_diff'][1]} pixels differ away from the knife edge (px ours {row['px'][0]} "
                    f"official {row['px'][1]})")
            if unexplained:
                say(f"boxes of {unexplained} differ (max {row['box_diff']:.3f} px) where no knife-edge pixel explains it")
            if row["prob_diff"] > SCORE_ATOL:
                say(f"output probs differ by {row['prob_diff']:.2e}")
        rows.append(row)
        problems += [f"frame {f}: {p}" for p in row["problems"]]
    compared["frames"] += len(rows)
    return rows


MIN_IOU = 0.99  # interactive responses: each object's mask against the official one
SCORE_TIE = 1e-5  # relative: tracker score logits this close decide the output non-overlap by float noise


def check_interactive(model, fixture: dict, cfg: Sam3LoopConfig, problems: list[str], compared: dict[str, int]
                      ) -> None:
    """The interactive requests of a ``--interactive`` fixture replayed through ``VideoSession`` after the text
    prompt and its forward propagation (refereed like ``check_outputs``): every response (frame order, ids,
    probabilities, each mask at IoU >= ``MIN_IOU``), the action history and each tracker state's ids."""
    from sam3video.session import VideoSession

    T, H, W = fixture["num_frames"], fixture["orig_height"], fixture["orig_width"]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[fixture["memory_dtype"]]
    session = VideoSession(model, np.zeros((T, H, W, 3), np.uint8), config=cfg, memory_dtype=dtype, source_fps=10)
    session.frames = fixture["images"].float()
    with Referee(fixture["steps"]).active():
        session.add_prompt(0, text=fixture["prompt"])
        list(session.propagate("forward", start_frame=0))
    for n, step in enumerate(fixture["interactive"]):
        r = step["request"]
        where = f"interactive request {n} ({r['type']})"
        if r["type"] == "add_prompt" and "text" in r:
            ours = [session.add_prompt(r["frame_index"], text=r["text"])]
        elif r["type"] == "add_prompt":
            ours = [session.add_prompt(r["frame_index"], points=r["points"], point_labels=r["point_labels"],
                                       obj_id=r["obj_id"], rel_coordinates=True)]
        elif r["type"] == "remove_object":
            session.remove_object(r["obj_id"])
            ours = []
        else:
            ours = list(session.propagate("backward" if r["reverse"] else "forward", r["start_frame_index"]))
        if [o.frame_index for o in ours] != [int(o["frame_idx"]) for o in step["outputs"]]:
            problems.append(f"{where}: frames {[o.frame_index for o in ours]} vs official "
                            f"{[int(o['frame_idx']) for o in step['outputs']]}")
            continue
        for out, expected in zip(ours, step["outputs"]):
            at, d = f"{where}, frame {out.frame_index}", out.detections
            ids = expected["out_obj_ids"].tolist()
            compared["interactive_frames"] = compared.get("interactive_frames", 0) + 1
            if d.tracker_id.tolist() != ids:
                problems.append(f"{at}: ids {d.tracker_id.tolist()} vs official {ids}")
                continue
            if not ids:
                continue
            if float(np.abs(d.confidence - expected["out_probs"].numpy()).max()) > SCORE_ATOL:
                problems.append(f"{at}: probabilities {d.confidence.tolist()} vs {expected['out_probs'].tolist()}")
            masks = unpack(expected["out_binary_masks_packed"], W)
            scores = session.cache[out.frame_index].tracker_scores
            for k, obj_id in enumerate(ids):
                union = int((d.mask[k] | masks[k]).sum())
                iou = (d.mask[k] & masks[k]).sum() / union if union else 1.0
                compared["interactive_masks"] = compared.get("interactive_masks", 0) + 1
                if iou >= MIN_IOU:
                    continue
                # the output non-overlap gives a pixel to the highest tracker score: objects whose scores tie
                # within float noise (random weights make twins) may swap pixels, and nothing else may differ
                s = scores.get(obj_id, 0.0)
                twins = [j for j, other in enumerate(ids) if j != k and abs(scores.get(other, 0.0) - s)
                         <= SCORE_TIE * max(1.0, abs(s))]
                covered = np.zeros_like(d.mask[k])
                for j in twins:
                    covered |= d.mask[j] | masks[j]
                if twins and not ((d.mask[k] ^ masks[k]) & ~covered).any():
                    compared["interactive_twin_swaps"] = compared.get("interactive_twin_swaps", 0) + 1
                    continue
                problems.append(f"{at}: object {obj_id}'s mask IoU {iou:.4f} with the official one")
        history = [{"type": a.kind.value, "frame_idx": T - 1 if a.frame_index == -1 else a.frame_index,
                    "obj_ids": sorted(a.obj_ids)} for a in session.history]
        if history != step["action_history"][len(step["action_history"]) - len(history):]:
            problems.append(f"{where}: action history {history} vs official {step['action_history']}")
        states = [list(b.obj_ids) for b in session._states()]
        if states != step["states"]:
            problems.append(f"{where}: states {states} vs official {step['states']}")
        compared["interactive_requests"] = compared.get("interactive_requests", 0) + 1


def check_fixture(model, fixture: dict, frames: list, name: str = "", use_referee: bool = True) -> Report:
    """Our loop against one recorded official run (``frames`` from ``run_detector``) -> ``Report``."""
    t0 = time.time()
    cfg = loop_config(fixture)
    problems = tracker_settings_problems(model, fixture)
    compared = dict.fromkeys(("steps", "detections", "tracker_masks", "shrink_decisions", "decisions", "frames",
                              "output_masks", "output_boxes"), 0)
    referee = Referee(fixture["steps"], use_referee)
    steps = check_steps(model, fixture, cfg, frames, referee, problems, compared)
    forced = dict(referee.forced)
    out_frames = check_outputs(model, fixture, cfg, frames, Referee(fixture["steps"], use_referee), problems, compared)
    if fixture.get("interactive"):
        check_interactive(model, fixture, cfg, problems, compared)
    return Report(name, steps, out_frames, problems, forced, compared, time.time() - t0)


# ------------------------------------------------------------------------------------------------------------
# printing

def num(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def fmt_ids(ids) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def print_tables(report: Report) -> None:
    print("\nper step (frame 0 twice: step 0 = add_prompt, step k >= 1 = frame k - 1); px: pixels differing away "
          "from the knife edge")
    head = (f"{'step':>4} {'frame':>5} {'dets':>5} {'max|dscore|':>11} {'det px':>6} {'ids':>4} {'trk px':>6} "
            f"{'max|dlogit|':>11} {'max|dobj|':>9} {'decisions':>9} {'refereed':>9}  born / removed so far / tracked px "
            "(ours | official)")
    print(head)
    print("-" * len(head))
    for r in report.steps:
        px = r.get("px")
        print(f"{r['step']:>4} {r['frame']:>5} {r['dets'][0]:>2}/{r['dets'][1]:<2} {num(r['score_diff'], '.2e'):>11} "
              f"{num(r['det_px'], 'd'):>6} {'yes' if r['ids_ok'] else 'NO':>4} {num(r['trk_px'], 'd'):>6} "
              f"{num(r['logit_diff'], '.2e'):>11} {num(r['obj_score_diff'], '.2e'):>9} "
              f"{'yes' if r['decisions_ok'] else 'NO':>9} {fmt_ids(r['forced']):>9}  born {fmt_ids(r['born'][1])} "
              f"removed {fmt_ids(r['removed'][1])}" + (f" px {px[0]} | {px[1]}" if px else ""))
    print("\nper yielded frame (ids: ours, run-wide, renumbered from the official ids in order of appearance)")
    head = (f"{'frame':>5} {'ids ours':>14} {'official':>14} {'equal':>5} {'px differ (away from edge)':>26} "
            f"{'max|dbox|':>9} {'max|dprob|':>10}  mask px (ours | official)")
    print(head)
    print("-" * len(head))
    for r in report.frames:
        px, d = r.get("px"), r["px_diff"]
        print(f"{r['frame']:>5} {fmt_ids(r['ids'][0]):>14} {fmt_ids(r['ids'][1]):>14} "
              f"{'yes' if r['ids_ok'] else 'NO':>5} {(f'{d[0]} ({d[1]})' if d else '-'):>26} "
              f"{num(r['box_diff'], '.3f'):>9} {num(r['prob_diff'], '.2e'):>10}  " + (f"{px[0]} | {px[1]}" if px else ""))


def summary_line(report: Report, fixture: dict) -> str:
    seeds = fixture.get("seeds", {})
    forced = sum(len(v) for v in report.forced.values())
    objects = max((len(s["trk"]["obj_ids"]) for s in fixture["steps"]), default=0)
    births = max((len(s["plan"]["new_det_obj_ids"]) for s in fixture["steps"]), default=0)
    verdict = "PASS" if report.ok else f"FAIL  {report.problems[0]}"
    return (f"{report.name:<28} neck {seeds.get('neck', '-'):>3} clip {seeds.get('clip', '-'):>3} "
            f"{fixture.get('scene', 'three'):<5} {fixture['memory_dtype']:<4} max tracked {objects:>2} births/frame "
            f"{births:>2}  decisions {report.compared['decisions']:>3} shrink {report.compared['shrink_decisions']:>3} "
            f"(refereed {forced:>2})  {verdict}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixture", type=Path, nargs="+", required=True, help="fixture files or folders of them")
    ap.add_argument("--weights", type=Path, default=None, help="official-layout state dict (detector.* + tracker.*)")
    ap.add_argument("--config", default="tiny", help="our config preset: tiny (default) or sam3 (full)")
    ap.add_argument("--no-referee", action="store_true",
                    help="do not give knife-edge decisions the official outcome (see where ours go)")
    ap.add_argument("-v", "--verbose", action="store_true", help="a row per step and per yielded frame")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    paths = fixture_paths(args.fixture)
    if not paths:
        raise SystemExit(f"no fixture found in {[str(p) for p in args.fixture]}")
    failed = 0
    model, model_key = None, None
    for path in paths:
        fixture = read_fixture(path)
        key = (args.config, args.weights, tuple(sorted((k, v.sum().item()) for k, v in fixture["sam2_convs"].items()))
               if args.weights is None and "sam2_convs" in fixture else None)
        if key != model_key:
            model, model_key = load_model(args.config, args.weights, fixture), key
        frames = run_detector(model, fixture, print if args.verbose else None)
        report = check_fixture(model, fixture, frames, path.name.split(".")[0], use_referee=not args.no_referee)
        if args.verbose:
            print_tables(report)
            for p in report.problems[:10]:
                print("  problem:", p)
            print(f"  compared: {report.compared}; refereed (step: rows) {report.forced}; {report.seconds:.1f} s")
        print(summary_line(report, fixture), flush=True)
        failed += not report.ok
    print(f"\n{'PASS' if not failed else 'FAIL'}: {len(paths) - failed} of {len(paths)} fixtures match the official loop")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
