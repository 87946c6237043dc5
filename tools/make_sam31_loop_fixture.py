"""Make a SAM 3.1 loop parity fixture: Meta's official multiplex predictor (GitHub main @96914d2, CPU-patched) run
through its own request API on a synthetic clip, with the seeded weights of tools/sam31_weights.py.

Runs in the official SAM 3.1 venv (../shared/tools/oracle31/setup.sh), never in ours:

    ~/.cache/sam31-oracle/bin/python tools/make_sam31_loop_fixture.py OUT.pt.xz [--seed 0] [--frames 10]
        [--det-thresh 0.3] [--new-det-thresh 0.3] [--nms 0.1] [--no-confirm] [--hotstart 15] [--max-objects 16]

The predictor is assembled by ../shared/tools/oracle31/probe.py (the official builder's classes and arguments at
the tiny size; fp32, SDPA, real-valued RoPE); thresholds are lowered where random weights need it (each is
stored). Requests: ``start_session`` on the frames, ``add_prompt`` text on frame 0 (``--prompt-frame``),
``propagate_in_video`` forward from there (``--direction both``: then backward, the loop in reverse). Recorded per frame (before the output heuristics hide anything, and after): the detector's outputs
after NMS (scores, xyxy boxes, mask logits as 4 x 4 means), the tracker's propagated low-res mask logits (4 x 4
means) and object-score logits per object, the loop's per-frame object ids / masks / scores / suppressed / unconfirmed / removed ids,
the bucket assignment of every multiplex state, and the predictor's responses (ids, probs, boxes, packed masks).
"""

from __future__ import annotations

import argparse
import lzma
import os
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from sam31_weights import seeded_tensor  # noqa: E402

FORMAT = "sam31_loop_parity v1"


def make_clip(seed: int, num_frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8: a smooth seeded background (it compresses) and eight coloured shapes drifting at
    seeded speeds."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    tint = rng.uniform(10, 60, 3)
    shapes = [(rng.uniform(0.15, 0.85, 2), rng.uniform(-0.02, 0.02, 2), rng.uniform(0.06, 0.14),
               rng.integers(40, 255, 3), rng.integers(0, 2)) for _ in range(8)]
    frames = []
    for t in range(num_frames):
        wave = (np.sin(xx / width * 3 + t * 0.3) + np.cos(yy / height * 2)) * 0.25 + 0.5
        img = (wave[..., None] * tint).astype(np.uint8)
        for (cy, cx), (vy, vx), r, colour, square in shapes:
            y, x = (cy + vy * t) * height, (cx + vx * t) * width
            rad = r * min(height, width)
            inside = (np.maximum(abs(yy - y), abs(xx - x)) < rad) if square else ((yy - y) ** 2 + (xx - x) ** 2 < rad ** 2)
            img[inside] = colour
        frames.append(img)
    return np.stack(frames)


def pooled(logits: torch.Tensor) -> torch.Tensor:
    """(..., h, w) logits -> (..., h/4, w/4) means of 4 x 4 blocks: what the fixture keeps of mask logits (the
    masks themselves are kept as bits at video size)."""
    shape = logits.shape
    out = torch.nn.functional.avg_pool2d(logits.reshape(-1, 1, *shape[-2:]), 4)
    return out.reshape(*shape[:-2], *out.shape[-2:]).clone()


def plain(x):
    """numpy arrays and scalars -> tensors and python numbers (the fixture loads with ``weights_only=True``)."""
    if isinstance(x, dict):
        return {plain(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(plain(v) for v in x)
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, np.generic):
        return x.item()
    return x


def interactive_steps(predictor, sid: str, probe, args) -> list[dict]:
    """After the text prompt and its forward propagation: a positive click on the first object (frame
    ``--click-frame``; SAM 3.1 moves it into a state of its own), propagate forward; a new object by a positive and
    a negative click there, a negative click refining it (the earlier clicks kept), propagate; remove that object, propagate (a fetch); another new object by a click two
    frames later, propagated "both" from there (partial forward, then partial backward). Each request's responses (packed as ``probe.pack``), the action history and the multiplex states
    after it."""
    steps = []
    k = min(args.click_frame, args.frames - 1)

    def req(request: dict, stream: bool = False) -> None:
        request = {"session_id": sid, **request}
        if stream:
            responses = [dict(r, outputs=probe.pack(r["outputs"])) for r in predictor.handle_stream_request(request)]
        else:
            r = predictor.handle_request(request)
            responses = [dict(r, outputs=probe.pack(r["outputs"]))] if r.get("outputs") is not None else [r]
        state = predictor._all_inference_states[sid]["state"]
        steps.append({
            "request": {key: v for key, v in request.items() if key != "session_id"}, "responses": responses,
            "action_history": [{"type": h["type"], "frame_idx": h.get("frame_idx"),
                                "obj_ids": sorted(map(int, h.get("obj_ids") or []))}
                               for h in state.get("action_history", [])],
            "states": [{"obj_ids": list(map(int, s["obj_ids"])),
                        "assignments": [list(map(int, b)) for b in s["multiplex_state"].assignments]}
                       for s in state["sam2_inference_states"] if s.get("multiplex_state") is not None],
            "metadata": probe.snapshot(predictor.model, state)})
        what = request.get("text") or request.get("points") or request.get("obj_id") or ""
        print(f"{request['type']} {what} -> " + "; ".join(
            f"f{x['frame_index']}: " + " ".join(f"{int(i)}({int(n)}px)" for i, n in zip(
                x["outputs"].get("out_obj_ids", []), x["outputs"].get("mask_areas", [])))
            for x in responses if "outputs" in x))

    fwd = {"type": "propagate_in_video", "propagation_direction": "forward", "start_frame_index": 0}
    ids = probe.snapshot(predictor.model, predictor._all_inference_states[sid]["state"]).get("obj_ids", [])
    target = ids[0] if ids else 0
    req({"type": "add_prompt", "frame_index": k, "points": [[0.25, 0.35]], "point_labels": [1], "obj_id": target})
    req(fwd, stream=True)
    new_id = steps[-1]["metadata"].get("max_obj_id", -1) + 1
    req({"type": "add_prompt", "frame_index": k, "points": [[0.7, 0.2], [0.3, 0.8]], "point_labels": [1, 0],
         "obj_id": new_id})
    req({"type": "add_prompt", "frame_index": k, "points": [[0.45, 0.4]], "point_labels": [0], "obj_id": new_id,
         "clear_old_points": False})  # a negative click refining it, the earlier clicks kept
    req(fwd, stream=True)
    req({"type": "remove_object", "frame_index": k, "obj_id": new_id})
    req(fwd, stream=True)
    later = min(k + 2, args.frames - 1)
    req({"type": "add_prompt", "frame_index": later, "points": [[0.5, 0.5]], "point_labels": [1],
         "obj_id": new_id + 1})
    req({"type": "propagate_in_video", "propagation_direction": "both", "start_frame_index": later}, stream=True)
    return steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny",
                        help="full: Meta's sizes (874 M parameters, 1008 px; minutes per frame on a CPU)")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--prompt", default="shape")
    parser.add_argument("--det-thresh", type=float, default=0.3)
    parser.add_argument("--new-det-thresh", type=float, default=0.3)
    parser.add_argument("--nms", type=float, default=None, help="det_nms_thresh (official IoM 0.1)")
    parser.add_argument("--no-confirm", action="store_true", help="masklet_confirmation_enable=False")
    parser.add_argument("--hotstart", type=int, default=None, help="hotstart_delay (official 15)")
    parser.add_argument("--max-objects", type=int, default=16, help="max_num_objects (official 16)")
    parser.add_argument("--object-score-bias", type=float, default=None,
                        help="the multiplex decoder's object-score bias shift (default +0.4: tracked objects present)")
    parser.add_argument("--score-gain", type=float, default=None,
                        help="scale of the detector's prompt projection (larger: scores spread towards 0 and 1)")
    parser.add_argument("--presence-shift", type=float, default=None, help="shift of the presence logit bias")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--interactive", action="store_true",
                        help="then the interactive requests (clicks, a new object by clicks, removal; interactive_steps)")
    parser.add_argument("--click-frame", type=int, default=2)
    parser.add_argument("--prompt-frame", type=int, default=0, help="the frame of the text prompt")
    parser.add_argument("--direction", choices=["forward", "both"], default="forward",
                        help="of the propagation from the prompt frame (both: then backward, the loop in reverse)")
    parser.add_argument("--oracle-tools", type=Path, default=ROOT.parent / "shared" / "tools" / "oracle31")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(args.oracle_tools))
    import probe  # the official builder's assembly and the recording helpers (oracle venv only)
    import sam3
    from sam3.model.sam3_multiplex_video_predictor import Sam3MultiplexVideoPredictor
    from PIL import Image

    bpe = os.path.join(os.path.dirname(sam3.__file__), "assets", "bpe_simple_vocab_16e6.txt.gz")
    size = dict(probe.SIZES[args.size], max_num_objects=args.max_objects)
    demo_kw = dict(probe.DEMO_KW, score_threshold_detection=args.det_thresh, new_det_thresh=args.new_det_thresh)
    if args.nms is not None:
        demo_kw["det_nms_thresh"] = args.nms
    if args.no_confirm:
        demo_kw["masklet_confirmation_enable"] = False
    if args.hotstart is not None:
        h = args.hotstart
        demo_kw.update(hotstart_delay=h, hotstart_unmatch_thresh=min(h, 8), hotstart_dup_thresh=min(h, 8))
    torch.manual_seed(0)
    model = probe.build(size, bpe, demo_kw).eval()
    adjust = {}
    if args.object_score_bias is not None:
        adjust["tracker.model.sam_mask_decoder.pred_obj_score_head.layers.2.bias"] = [1.0, args.object_score_bias]
    if args.score_gain is not None:
        adjust["detector.dot_prod_scoring.prompt_proj.weight"] = [args.score_gain, 0.0]
    if args.presence_shift is not None:
        adjust["detector.transformer.decoder.presence_token_head.layers.2.bias"] = [1.0, args.presence_shift]
    state = {k: seeded_tensor(k, v.shape, args.seed, adjust) for k, v in model.state_dict().items()
             if "freqs_cis" not in k}
    assert all(k in state for k in adjust), sorted(set(adjust) - set(state))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("freqs_cis" in k for k in missing), (missing, unexpected)

    frames = make_clip(args.seed, args.frames, args.height, args.width)
    folder = args.out.with_name(args.out.name + ".frames")
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i}.png")

    internal, raw, buckets = [], [], []
    run_one = model._run_single_frame_inference

    def recording(inference_state, frame_idx, reverse, **kw):
        out = run_one(inference_state, frame_idx, reverse, **kw)
        ids = sorted(int(i) for i in out["obj_id_to_mask"])
        m = (torch.cat([out["obj_id_to_mask"][i] for i in ids]).cpu().numpy() if ids
             else np.zeros((0, args.height, args.width), bool))
        internal.append({
            "frame_index": frame_idx, "reverse": reverse, "obj_ids": ids, "masks_packed": np.packbits(m, axis=-1),
            "mask_shape": m.shape,
            "obj_id_to_score": {int(k): float(v) for k, v in out["obj_id_to_score"].items()},
            "obj_id_to_sam2_score": {int(k): float(v) for k, v in out["obj_id_to_sam2_score"].items()},
            "suppressed_obj_ids": sorted(map(int, out.get("suppressed_obj_ids", []))),
            "unconfirmed_obj_ids": sorted(map(int, out.get("unconfirmed_obj_ids", []))),
            "removed_obj_ids": sorted(map(int, out.get("removed_obj_ids", []))),
        })
        states = inference_state["sam2_inference_states"]
        buckets.append({"frame_index": frame_idx,
                        "states": [{"obj_ids": list(map(int, s["obj_ids"])),
                                    "assignments": [list(b) for b in s["multiplex_state"].assignments]}
                                   for s in states if s.get("multiplex_state") is not None]})
        return out

    model._run_single_frame_inference = recording
    run_det, run_trk = model.run_backbone_and_detection, model.run_tracker_propagation

    def det_recording(**kw):
        det_out, pos = run_det(**kw)
        raw.append({"kind": "detection", "frame_index": kw["frame_idx"],
                    "scores": det_out["scores"].float().cpu().clone(), "boxes_xyxy": det_out["bbox"].float().cpu().clone(),
                    "mask_logits_pooled": pooled(det_out["mask"].float().cpu()), "kept": pos.cpu().clone()})
        return det_out, pos

    def trk_recording(**kw):
        masks, scores = run_trk(**kw)
        raw.append({"kind": "tracker", "frame_index": kw["frame_idx"],
                    "obj_ids": np.asarray(kw["tracker_metadata_prev"].get("obj_ids_all_gpu", [])).tolist(),
                    "mask_logits_pooled": pooled(masks.float().cpu()), "obj_score_logits": scores.float().cpu().clone()})
        return masks, scores

    model.run_backbone_and_detection, model.run_tracker_propagation = det_recording, trk_recording
    predictor = Sam3MultiplexVideoPredictor(model=model, session_expiration_sec=1200, default_output_prob_thresh=0.5,
                                            async_loading_frames=False, warm_up=False)
    with torch.autocast("cpu", enabled=False):
        sid = predictor.handle_request({"type": "start_session", "resource_path": str(folder),
                                        "offload_video_to_cpu": True})["session_id"]
        images = predictor._all_inference_states[sid]["state"]["input_batch"].img_batch.tensors
        images = images.float().cpu().clone()  # the official loader's model input, (T, 3, S, S) normalised
        predictor.handle_request({"type": "add_prompt", "session_id": sid, "frame_index": args.prompt_frame,
                                  "text": args.prompt})
        responses = [dict(r, outputs=probe.pack(r["outputs"])) for r in predictor.handle_stream_request(
            {"type": "propagate_in_video", "session_id": sid, "propagation_direction": args.direction,
             "start_frame_index": args.prompt_frame})]
        metadata = probe.snapshot(model, predictor._all_inference_states[sid]["state"])
        lengths = len(internal), len(raw), len(buckets)
        steps = interactive_steps(predictor, sid, probe, args) if args.interactive else []
        del internal[lengths[0]:], raw[lengths[1]:], buckets[lengths[2]:]  # the loop part only
        predictor.handle_request({"type": "close_session", "session_id": sid})
    fixture = {"format": FORMAT, "seed": args.seed, "adjust": adjust, "size": args.size, "official": "facebookresearch/sam3@96914d2",
               "sizes": size, "loop_kwargs": demo_kw, "prompt": args.prompt, "prompt_frame": args.prompt_frame, "direction": args.direction, "video_size": [args.height, args.width], "num_frames": args.frames,
               "images_fp16_zlib": torch.frombuffer(bytearray(zlib.compress(images.half().numpy().tobytes(), 9)),
                                                    dtype=torch.uint8), "images_shape": list(images.shape),
               "images_exact_fp16": bool(torch.equal(images.half().float(), images)),
               "internal": internal, "raw": raw, "buckets": buckets, "responses": responses, "metadata": metadata,
               "steps": steps}
    fixture = plain(fixture)
    tmp = args.out.with_name(args.out.name + ".tmp")
    with lzma.open(tmp, "wb", preset=6) as f:
        torch.save(fixture, f)
    tmp.replace(args.out)
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    born = sorted({i for x in internal for i in x["obj_ids"]})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {len(born)} objects {born}, "
          f"buckets per state at the end {[len(s['assignments']) for s in buckets[-1]['states']]}")
    for x in responses:
        o = x["outputs"]
        print(f"  f{x['frame_index']}: " + " ".join(f"{int(i)}({float(p):.2f},{int(n)}px)" for i, p, n in zip(
            o.get("out_obj_ids", []), o.get("out_probs", []), o.get("mask_areas", []))))


if __name__ == "__main__":
    main()
