"""Compare our SAM 3.1 loop (``Sam31Loop``) with a recorded run of the OFFICIAL multiplex predictor
(tools/make_sam31_loop_fixture.py; Meta's GitHub main @96914d2 on the CPU).

    .venv/bin/python tools/check_sam31_loop_parity.py FIXTURE.pt.xz [more] [-v]

Our tiny SAM 3.1 model (tests/data/sam31_parity/config.toml; the full ``sam3.1`` size for a ``--size full``
fixture) gets the fixture's seeded weights
(tools/sam31_weights.py) and the official loader's model input frames; our detector runs per frame. Compared, in
the official order (``add_prompt`` on frame 0, then ``propagate_in_video`` over every frame, frame 0 again):
every step's detections after NMS (probabilities, which are kept, mask logits as 4 x 4 means), the tracker's
propagated mask logits (4 x 4 means) and object-score logits (per object, ids in order), the loop's raw per-frame outputs (ids, masks at video size,
birth scores, unconfirmed ids), the multiplex states (ids and bucket slots), and finally every response of the
propagation (ids, probabilities, masks after the confirmation hiding). Exit 1 on any difference.
"""

from __future__ import annotations

import argparse
import lzma
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from sam31_weights import seeded_tensor  # noqa: E402

CONFIG = ROOT / "tests" / "data" / "sam31_parity" / "config.toml"
FORMAT = "sam31_loop_parity v1"
PROB_ATOL = 1e-4  # detector probabilities
LOGIT_ATOL, LOGIT_RTOL = 1e-3, 1e-4  # mask and object-score logits
PIXEL_TOL = 1e-3
SCORE_TIE = 1e-5  # tracker probabilities this close decide the output non-overlap by rounding
# The CPU oracle stores memories in fp32: its patch casts them to bf16 only under autocast (the official GPU path
# always does). Our loop's default is bf16 like the GPU; the check uses fp32 like the oracle.
MEMORY_DTYPE = torch.float32  # a differing output pixel is explained if our logit there is within this of 0


def read_fixture(path: Path) -> dict:
    with lzma.open(path, "rb") as f:
        fx = torch.load(f, map_location="cpu", weights_only=True)
    if fx.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} fixture")
    raw = zlib.decompress(fx.pop("images_fp16_zlib").numpy().tobytes())
    fx["images"] = torch.from_numpy(np.frombuffer(raw, np.float16).copy()).reshape(fx["images_shape"]).float()
    return fx


def load_model(seed: int, adjust: "dict | None" = None, size: str = "tiny"):
    from sam3video.model.build_video import build_video_model

    model = build_video_model(CONFIG if size == "tiny" else "sam3.1")
    state = {k: v if v.is_complex() else seeded_tensor(k, v.shape, seed, adjust) for k, v in model.state_dict().items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def loop_config(fx: dict):
    from dataclasses import fields

    from sam3video.thresholds import Sam31LoopConfig

    kw = fx["loop_kwargs"]
    names = {f.name for f in fields(Sam31LoopConfig)}
    values = {k: v for k, v in kw.items() if k in names}
    values["max_num_objects"] = fx["sizes"]["max_num_objects"]
    return Sam31LoopConfig(**values)


def run_detector(model, fx: dict) -> list:
    """Per frame: (probs (Q,), masks (Q, h, w), boxes (Q, 4) normalised xyxy, ``Sam31Features``)."""
    from sam3video.model.geometry_encoders import prompt_from_boxes
    from sam3video.trackers.sam3.tracking import frame_detections
    from sam3video.trackers.sam31.loop import Sam31Features
    from sam3video.video.detect import encode_prompts, run_frames, split_frames

    det, tracker = model.detector, model.tracker.model
    images = fx["images"]
    out = []
    with torch.inference_mode():
        text = encode_prompts(det, [fx["prompt"]])
        for f in range(len(images)):
            outputs = run_frames(det, [f], {"img_batch_all_stages": images}, text, prompt_from_boxes([[]], det.device))
            backbone = outputs["prev_encoder_out"]["backbone_out"]
            row = int(backbone["id_mapping"][f])
            paths = []
            for key, interactive in (("interactive", True), ("sam2_backbone_out", False)):
                one = {k: [x[row:row + 1] for x in backbone[key][k]] for k in ("backbone_fpn", "vision_pos_enc")}
                paths.append(tracker.tracker_features(one, interactive))
            d = frame_detections(split_frames(outputs, 1)[0])[0]
            out.append((d.probs, d.masks.float(), d.boxes, Sam31Features(*paths)))
    return out


def pooled(logits: torch.Tensor) -> torch.Tensor:
    """(..., h, w) -> (..., h/4, w/4) block means (as the maker stores mask logits)."""
    shape = logits.shape
    out = torch.nn.functional.avg_pool2d(logits.float().reshape(-1, 1, *shape[-2:]), 4)
    return out.reshape(*shape[:-2], *out.shape[-2:])


def unpack(packed: torch.Tensor, width: int) -> np.ndarray:
    return np.unpackbits(packed.numpy(), axis=-1, count=width).astype(bool)


@dataclass
class Report:
    name: str
    problems: list = field(default_factory=list)
    compared: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    max_diff: dict = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.compared[what] = self.compared.get(what, 0) + n

    @property
    def ok(self) -> bool:
        return not self.problems


def close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float = 0.0) -> tuple[bool, float]:
    if a.shape != b.shape:
        return False, float("inf")
    diff = (a.float() - b.float()).abs()
    return bool((diff <= atol + rtol * b.float().abs()).all()), (diff.max().item() if diff.numel() else 0.0)


def check_fixture(path: Path, model=None, verbose: bool = False) -> Report:
    from sam3video.trackers.sam31.loop import ConfirmationBuffer, Sam31Loop

    fx = read_fixture(path)
    model = model if model is not None else load_model(fx["seed"], fx.get("adjust"), fx.get("size", "tiny"))
    cfg = loop_config(fx)
    report = Report(Path(path).name)
    frames = run_detector(model, fx)
    T, (H, W) = fx["num_frames"], fx["video_size"]
    loop = Sam31Loop(model.tracker.model, cfg, T, (H, W), memory_dtype=MEMORY_DTYPE)
    det_records = [r for r in fx["raw"] if r["kind"] == "detection"]
    trk_records = [r for r in fx["raw"] if r["kind"] == "tracker"]
    # add_prompt on the prompt frame, then the propagation (forward; with "both", backward after it)
    order = [(int(rec["frame_index"]), bool(rec["reverse"])) for rec in fx["internal"]]
    outputs, raw_frames = [], {}
    buffer, direction = None, None
    for step, (f, reverse) in enumerate(order):
        probs, masks, boxes, features = frames[f]
        frame = loop.step(f, probs, masks, boxes, features, reverse=reverse)
        where = f"step {step} (frame {f})"
        # detections after NMS, every query (official rows in query order)
        rec = det_records[step]
        det = loop.last_detections
        ours_probs = torch.zeros_like(det.probs)
        ours_probs[det.query] = det.probs
        ok, d = close(ours_probs, rec["scores"][0], PROB_ATOL)
        report.max_diff["detection probabilities"] = max(report.max_diff.get("detection probabilities", 0), d)
        report.count("detection probabilities", ours_probs.numel())
        if not ok:
            report.problems.append(f"{where}: detector probabilities differ by {d:.2g}")
        kept = torch.zeros_like(det.keep)
        kept[det.query] = det.keep
        if not torch.equal(kept, rec["kept"][0]):
            report.problems.append(f"{where}: kept detections {torch.nonzero(kept)[:, 0].tolist()} vs official "
                                   f"{torch.nonzero(rec['kept'][0])[:, 0].tolist()}")
        ok, d = close(pooled(masks), rec["mask_logits_pooled"][0], LOGIT_ATOL, LOGIT_RTOL)
        pixel_tol = max(PIXEL_TOL, 2 * d)
        report.max_diff["detection mask logits"] = max(report.max_diff.get("detection mask logits", 0), d)
        report.count("detection mask logits", masks.numel())
        if not ok:
            report.problems.append(f"{where}: detector mask logits differ by {d:.2g}")
        # the tracker's propagation
        rec = trk_records[step]
        ids, trk_masks, trk_scores = loop.last_propagation
        if list(ids) != list(rec["obj_ids"]):
            report.problems.append(f"{where}: tracked ids {ids} vs official {rec['obj_ids']}")
        elif ids:
            ok, d = close(pooled(trk_masks), rec["mask_logits_pooled"], LOGIT_ATOL, LOGIT_RTOL)
            pixel_tol = max(pixel_tol, 2 * d)
            report.max_diff["tracker mask logits"] = max(report.max_diff.get("tracker mask logits", 0), d)
            report.count("tracker mask logits", trk_masks.numel())
            if not ok:
                report.problems.append(f"{where}: tracker mask logits differ by {d:.3g}")
            ok, d = close(trk_scores, rec["obj_score_logits"].reshape(-1), LOGIT_ATOL, LOGIT_RTOL)
            report.max_diff["tracker object-score logits"] = max(report.max_diff.get("tracker object-score logits", 0), d)
            report.count("tracker object-score logits", trk_scores.numel())
            if not ok:
                report.problems.append(f"{where}: tracker object-score logits differ by {d:.3g}")
        # the loop's raw outputs of the frame
        rec = fx["internal"][step]
        ours_ids = sorted(frame.masks)
        if ours_ids != list(rec["obj_ids"]):
            report.problems.append(f"{where}: output ids {ours_ids} vs official {rec['obj_ids']}")
        else:
            official = unpack(rec["masks_packed"], W)
            for k, obj_id in enumerate(ours_ids):
                differ = frame.masks[obj_id].cpu().numpy() != official[k]
                logits = loop.last_output_logits[obj_id].abs().cpu().numpy()
                bad = int((differ & (logits > pixel_tol)).sum())
                report.count("output pixels", H * W)
                if differ.any():
                    report.notes.append(f"{where}: object {obj_id}: {int(differ.sum())} pixels differ, our logits "
                                        f"there within {logits[differ].max():.2g} of 0")
                if bad:
                    report.problems.append(f"{where}: object {obj_id}'s mask differs on {bad} pixels not explained "
                                           f"by a logit within {pixel_tol:.2g} of 0")
            for obj_id in ours_ids:
                a, b = frame.scores.get(obj_id), rec["obj_id_to_score"].get(obj_id)
                if a is None or b is None or abs(a - b) > PROB_ATOL:
                    report.problems.append(f"{where}: object {obj_id}'s score {a} vs official {b}")
        if sorted(frame.suppressed) != list(rec["unconfirmed_obj_ids"]):
            report.problems.append(f"{where}: unconfirmed {sorted(frame.suppressed)} vs {rec['unconfirmed_obj_ids']}")
        states = [{"obj_ids": list(s.obj_ids), "assignments": [list(b) for b in s.mplex.assignments]}
                  for s in loop.states]
        if states != fx["buckets"][step]["states"]:
            report.problems.append(f"{where}: states {states} vs official {fx['buckets'][step]['states']}")
        report.count("steps")
        if step >= 1:  # the propagation's frames (the add_prompt step answers by itself)
            if direction != reverse:
                outputs += buffer.flush() if buffer is not None else []
                buffer, direction = ConfirmationBuffer(cfg.hotstart_delay, (H, W), T, reverse=reverse), reverse
            outputs += buffer.push(frame)
            raw_frames[f] = (frame, {i: x.cpu() for i, x in loop.last_output_logits.items()}, pixel_tol)
    outputs += buffer.flush()
    if len(outputs) != len(fx["responses"]):
        report.problems.append(f"{len(outputs)} responses vs official {len(fx['responses'])}")
    # the responses of the propagation
    for out, rec in zip(outputs, fx["responses"]):
        o = rec["outputs"]
        where = f"response frame {out.frame_idx}"
        official_ids = [int(i) for i in o["out_obj_ids"]]
        if out.obj_ids.tolist() != official_ids:
            report.problems.append(f"{where}: ids {out.obj_ids.tolist()} vs official {official_ids}")
            continue
        report.count("responses")
        if official_ids:
            ok, d = close(torch.from_numpy(out.probs), torch.as_tensor(o["out_probs"]), PROB_ATOL)
            if not ok:
                report.problems.append(f"{where}: probabilities differ by {d:.2g}")
            official = unpack(o["masks_packed"], W)
            differ = out.masks != official
            if differ.any():
                frame, logits, tol = raw_frames[out.frame_idx]
                unexplained = 0
                for k, y, x in zip(*np.nonzero(differ)):
                    obj_id = int(out.obj_ids[k])
                    if abs(float(logits[obj_id][y, x])) <= tol:
                        continue  # our raw mask is on a knife edge there
                    # the object-wise non-overlap gave the pixel to the highest tracker probability among the
                    # objects covering it: a tie within SCORE_TIE is decided by rounding
                    probs = sorted((frame.tracker_scores.get(int(i), 0.0) for i in out.obj_ids
                                    if bool(frame.masks[int(i)][y, x])), reverse=True)
                    if len(probs) > 1 and probs[0] - probs[1] <= SCORE_TIE:
                        continue
                    unexplained += 1
                report.notes.append(f"{where}: {int(differ.sum())} pixels differ, {unexplained} unexplained")
                if unexplained:
                    report.problems.append(f"{where}: masks differ on {unexplained} pixels not explained by a "
                                           "knife edge")
    if fx.get("steps"):
        check_steps(fx, model, report)
    return report


MIN_IOU = 0.99  # interactive responses: each object's mask against the official one (no logits recorded there)


def check_steps(fx: dict, model, report: "Report") -> None:
    """The interactive requests of a ``--interactive`` fixture replayed through ``VideoSession`` (after the text
    prompt and its forward propagation): every response (frame order, ids, probabilities, each mask at IoU >=
    ``MIN_IOU``), the action history and the multiplex states (ids, bucket slots) after each request."""
    from sam3video.session import VideoSession

    T, (H, W) = fx["num_frames"], fx["video_size"]
    session = VideoSession(model, np.zeros((T, H, W, 3), np.uint8), config=loop_config(fx),
                           memory_dtype=MEMORY_DTYPE, source_fps=10)
    session.frames = fx["images"]  # the official loader's model input
    start = fx.get("prompt_frame", 0)
    session.add_prompt(start, text=fx["prompt"])
    list(session.propagate(fx.get("direction", "forward"), start_frame=start))
    for n, step in enumerate(fx["steps"]):
        r = step["request"]
        where = f"request {n} ({r['type']})"
        if r["type"] == "add_prompt":
            ours = [session.add_prompt(r["frame_index"], points=r["points"], point_labels=r["point_labels"],
                                       obj_id=r["obj_id"], rel_coordinates=True,
                                       clear_old_points=r.get("clear_old_points", True))]
        elif r["type"] == "remove_object":
            ours = [session.remove_object(r["obj_id"], r["frame_index"])]
        else:
            ours = list(session.propagate(r["propagation_direction"], r.get("start_frame_index")))
        theirs = [x for x in step["responses"] if "outputs" in x]
        if [o.frame_index for o in ours] != [int(x["frame_index"]) for x in theirs]:
            report.problems.append(f"{where}: frames {[o.frame_index for o in ours]} vs official "
                                   f"{[int(x['frame_index']) for x in theirs]}")
            continue
        for out, rec in zip(ours, theirs):
            o, d = rec["outputs"], out.detections
            official_ids = [int(i) for i in o["out_obj_ids"]]
            at = f"{where}, frame {out.frame_index}"
            report.count("interactive responses")
            if d.tracker_id.tolist() != official_ids:
                report.problems.append(f"{at}: ids {d.tracker_id.tolist()} vs official {official_ids}")
                continue
            if official_ids:
                ok, diff = close(torch.from_numpy(d.confidence), torch.as_tensor(o["out_probs"]), PROB_ATOL)
                if not ok:
                    report.problems.append(f"{at}: probabilities differ by {diff:.2g}")
                official = unpack(o["masks_packed"], W)
                for k, obj_id in enumerate(official_ids):
                    a, b = d.mask[k], official[k]
                    union = int((a | b).sum())
                    iou = (a & b).sum() / union if union else 1.0
                    report.max_diff["interactive mask 1 - IoU"] = max(report.max_diff.get(
                        "interactive mask 1 - IoU", 0), 1 - iou)
                    report.count("interactive masks")
                    if iou < MIN_IOU:
                        report.problems.append(f"{at}: object {obj_id}'s mask IoU {iou:.4f} with the official one")
        history = [{"type": a.kind.value, "frame_idx": (T - 1 if a.frame_index == -1 else a.frame_index),
                    "obj_ids": sorted(a.obj_ids)} for a in session.history]
        official_history = [dict(h, frame_idx=h["frame_idx"]) for h in step["action_history"]]
        if history != official_history[len(official_history) - len(history):] or len(history) > len(official_history):
            report.problems.append(f"{where}: action history {history} vs official {official_history}")
        states = [{"obj_ids": list(s.obj_ids), "assignments": [list(b) for b in s.mplex.assignments]}
                  for s in (*session.loop.states, *session.click_states)]
        if states != step["states"]:
            report.problems.append(f"{where}: states {states} vs official {step['states']}")
        report.count("interactive requests")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("fixtures", nargs="+", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.fixtures:
        report = check_fixture(path, verbose=args.verbose)
        worst = ", ".join(f"{k} {v:.2g}" for k, v in report.max_diff.items())
        print(f"{report.name}: {'PASS' if report.ok else 'FAIL'}; largest differences: {worst}")
        print(f"  compared {report.compared}")
        for note in report.notes if args.verbose else []:
            print("  note: " + note)
        for problem in report.problems[: None if args.verbose else 20]:
            print("  " + problem)
        failed += not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
