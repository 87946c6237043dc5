"""Check that the model gives the CPU's results on an accelerator.

    python3 tools/check_device.py --device cuda     # on a GPU machine, from the repo root
    python3 tools/check_device.py --device cpu      # cpu against cpu: a smoke test of this script

1. Parity fixture (tests/data/parity): the tiny model with the official weights runs the backbone and
   the three grounding cases on the device, TF32 off; every output is compared with the reference the
   official code computed on the CPU (tests use 1e-4 / 1e-3 there; here 1e-3, masks 1e-2).
2. Demo model through the video predictor: a short synthetic clip (numpy frames, no video decoding) is
   tracked on the device and on the CPU; every frame must report the same track ids, boxes within
   BOX_TOL px and scores within SCORE_TOL.

Prints one line per check (max abs difference, tolerance); exits 0 if all pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # used from the repo root, not installed

from sam3video import build_model  # noqa: E402
from sam3video.data.synthetic import WorldConfig  # noqa: E402
from sam3video.data.clips import generate_clip  # noqa: E402
from sam3video.model.checkpoint import load_model  # noqa: E402
from sam3video.model.sam3_image import FindStage  # noqa: E402
from sam3video.video.predictor import VideoPredictor  # noqa: E402

PARITY = ROOT / "tests" / "data" / "parity"
ATOL, MASK_ATOL = 1e-3, 1e-2
MASK_KEYS = ("pred_masks", "semantic_seg")
GROUNDING_KEYS = ["pred_logits", "pred_boxes", "pred_boxes_xyxy", "pred_masks", "presence_logit_dec",
                  "queries", "semantic_seg"]
BOX_TOL, SCORE_TOL = 1.0, 1e-3  # video check: pixels, confidence

failures: list[str] = []


def report(name: str, diff: float, tol: float, note: str = "") -> None:
    ok = diff <= tol  # NaN fails
    if not ok:
        failures.append(name)
    print(f"{'PASS' if ok else 'FAIL'}  {name:<46} max abs diff {diff:9.2e}  tol {tol:g}  {note}".rstrip())


def max_diff(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, str]:
    """Largest |got - expected| over named tensor pairs (inf on a shape mismatch), and where it was."""
    worst, where = 0.0, ""
    for name, (got, expected) in pairs.items():
        got, expected = got.detach().float().cpu(), expected.detach().float().cpu()
        d = float("inf") if got.shape != expected.shape else (got - expected).abs().max().item()
        if not d <= worst:
            worst, where = d, name
    return worst, where


def check_parity(device: torch.device) -> None:
    cases = torch.load(PARITY / "cases.pt", weights_only=False)
    state = torch.load(PARITY / "state_dict.pt", weights_only=True)
    model = build_model(PARITY / "config.json")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    model = model.to(device).eval()

    image = cases["image"]
    with torch.inference_mode():
        backbone = model.backbone.forward_image(image["input"].to(device))
    pairs = {"vision_features": (backbone["vision_features"], image["vision_features"])}
    for key in ("backbone_fpn", "vision_pos_enc"):
        pairs.update({f"{key}[{i}]": p for i, p in enumerate(zip(backbone[key], image[key]))})
    diff, where = max_diff(pairs)
    report("parity backbone", diff, ATOL, where)

    for case_name in ("grounding_text", "grounding_text_boxes", "grounding_boxes_only"):
        case = cases[case_name]
        with torch.inference_mode():
            out = dict(backbone)
            out.update(model.backbone.forward_text([case["prompt"]], device=device))
            prompt = model._get_dummy_prompt()
            if case.get("boxes_cxcywh") is not None:
                prompt.append_boxes(case["boxes_cxcywh"][:, None].to(device), case["labels"][:, None].to(device))
            find = FindStage(img_ids=torch.tensor([0], device=device), text_ids=torch.tensor([0], device=device))
            got = model.forward_grounding(backbone_out=out, find_input=find, geometric_prompt=prompt)
        for masks, tol in ((False, ATOL), (True, MASK_ATOL)):
            keys = [k for k in GROUNDING_KEYS if (k in MASK_KEYS) == masks]
            diff, where = max_diff({k: (got[k], case[k]) for k in keys})
            report(f"parity {case_name} {'masks' if masks else 'boxes/logits'}", diff, tol, where)


def check_video(device: torch.device, seed: int) -> None:
    clip = generate_clip(seed, WorldConfig(width=320, height=240, fps=10.0, duration_s=2.0))
    target = next(o for o in clip.objects if not o.distractor)
    prompt = f"{target.colour} {target.shape}"
    frames = np.stack([clip.image(t) for t in range(clip.num_frames)])
    runs = {}
    for dev in (torch.device("cpu"), device):
        predictor = VideoPredictor(load_model("demo", device=dev))
        runs[dev.type] = [r.detections for r in predictor.track(frames, prompts=[prompt], source_fps=clip.fps)]
    reference, tested = runs["cpu"], runs[device.type]

    total = sum(len(d.xyxy) for d in reference)
    ids = [(np.sort(a.tracker_id), np.sort(b.tracker_id)) for a, b in zip(reference, tested)]
    mismatched = abs(len(reference) - len(tested)) + sum(not np.array_equal(a, b) for a, b in ids)
    report(f"video {prompt!r}: frames with other ids", float(mismatched), 0,
           f"{len(reference)} frames, {total} reference detections")
    if total == 0:
        report("video: reference found nothing", float("inf"), 0, "nothing to compare; try another --seed")
    if mismatched:
        return
    box, score = 0.0, 0.0
    for a, b in zip(reference, tested):
        ia, ib = np.argsort(a.tracker_id), np.argsort(b.tracker_id)
        if len(ia):
            box = max(box, float(np.abs(a.xyxy[ia] - b.xyxy[ib]).max()))
            score = max(score, float(np.abs(a.confidence[ia] - b.confidence[ib]).max()))
    report("video boxes (px)", box, BOX_TOL)
    report("video scores", score, SCORE_TOL)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="device to check against the CPU (default: cuda)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic clip (default: 0)")
    args = parser.parse_args(argv)
    failures.clear()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}, device {device} ({name})")
    check_parity(device)
    check_video(device, args.seed)
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
