"""Train the SAM 3 tracker of the demo model on synthetic clips: SAM 2's recipe at small scale.

    python -m sam3video.train.train_tracker --out runs/train_tracker --steps 3000      # starts or resumes
    python -m sam3video.train.train_tracker --out runs/train_tracker --init runs/train_clicks/last.pt   # after clicks
    python -m sam3video.train.train_tracker --out runs/train_tracker --export runs/demo_video.pt
    python -m sam3video.train.train_tracker --out runs/train_tracker --export-demo-tracker sam3video/assets/demo_tracker.pt

8-frame clips of the synthetic shapes world (10 fps); the ground-truth masks of up to 3 objects visible
on frame 0 are the prompt (``track_step`` with mask inputs), frames 1-7 are propagated through the
memory bank with gradients through every frame. The detector (the shipped demo model) is frozen; the
second neck ``sam2_convs`` starts as a copy of the detector's neck (as the official builder makes it)
and is trained with the tracker (tiny.toml's ``[tracker]`` widths, random init). Loss per propagated
frame and object: 20 x focal + dice on the chosen low-res mask, where the object is visible; MSE of its
predicted IoU against the real one; cross-entropy of the object score (visible or not). Checkpoints
(``OUT/last.pt``) are atomic and resumable; the clip of step s depends on (seed, s) only. ``--export``
writes the video model in the official layout (``detector.*`` + ``tracker.*``, with its config).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.synthetic import WorldConfig
from ..data.clips import generate_clip
from ..export.atomic import atomic_path
from ..model.build_video import build_video_model, load_video_config
from ..model.checkpoint import load_model
from ..model.sam3_tracker_utils import MemoryBank
from ..preprocess import preprocess_image
from .losses import dice_loss, sigmoid_focal_loss
from .train import lr_at

CLIP_FRAMES = 8
MAX_OBJECTS = 3
MIN_AREA = 150  # pixels an object needs on frame 0 to be prompted
HELD_OUT_SEED = 10**9


def sample_clip(seed: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(8, 3, R, R) normalised frames and (8, K, H, W) bool visible masks of up to 3 objects that are
    visible on frame 0; None if no object is."""
    clip = generate_clip(seed, WorldConfig(duration_s=CLIP_FRAMES / 10, fps=10.0))
    labels = np.stack([clip.label_map(t) for t in range(CLIP_FRAMES)])
    ids = [i for i in range(1, len(clip.objects) + 1) if (labels[0] == i).sum() >= MIN_AREA]
    if not ids:
        return None
    ids = list(np.random.default_rng(seed).permutation(ids)[:MAX_OBJECTS])
    frames = torch.stack([preprocess_image(torch.from_numpy(clip.image(t)).permute(2, 0, 1), resolution)
                          for t in range(CLIP_FRAMES)])
    masks = torch.from_numpy(np.stack([labels == i for i in ids], axis=1))
    return frames, masks


def demo_video_model():
    """The demo detector with a second neck copied from its neck, and a randomly initialised tracker."""
    detector = load_model("demo", device="cpu")
    config = {**detector.config.to_dict(), "tracker": load_video_config("tiny").tracker.to_dict()}
    model = build_video_model(config)
    missing, unexpected = model.detector.load_state_dict(detector.state_dict(), strict=False)
    assert not unexpected and all(".sam2_convs." in k for k in missing), (missing, unexpected)
    neck = model.detector.backbone.vision_backbone
    neck.sam2_convs.load_state_dict(neck.convs.state_dict())
    return model, config


def frame_features(model, images: torch.Tensor) -> tuple[list, list, list]:
    """(I, 3, R, R) -> the tracker's features of each frame as a session builds them (the frozen trunk, the second
    neck, ``conv_s0`` / ``conv_s1``): [(HW_l, I, C_l)] levels, their position encodings, their sizes."""
    neck, tracker = model.detector.backbone.vision_backbone, model.tracker
    with torch.no_grad():
        trunk = neck.trunk(images)[-1]
    levels = [conv(trunk) for conv in neck.sam2_convs][:3]  # scalp 1
    pos = [neck.position_encoding(f).to(f.dtype) for f in levels]
    _, feats, pos_embeds, sizes = tracker._prepare_backbone_features(
        tracker.tracker_backbone_out({"backbone_fpn": levels, "vision_pos_enc": pos}))
    return feats, pos_embeds, sizes


def propagate_clip(model, frames: torch.Tensor, masks: torch.Tensor):
    """Yield (t, ``TrackStepOutput``) for the clip's 8 frames: frame 0 prompted with the masks of frame 0
    (K objects), frames 1-7 propagated through the memory (with gradients unless under no_grad)."""
    tracker = model.tracker
    feats, pos_embeds, sizes = frame_features(model, frames)
    K, size = masks.shape[1], tracker.input_mask_size
    prompt = F.interpolate(masks[0][:, None].float(), size=(size, size), mode="bilinear", align_corners=False) > 0.5
    bank = MemoryBank()
    for t in range(CLIP_FRAMES):
        out = tracker.track_step(
            frame_idx=t, is_init_cond_frame=t == 0,
            current_vision_feats=[x[:, t : t + 1].expand(-1, K, -1) for x in feats],
            current_vision_pos_embeds=[x[:, t : t + 1].expand(-1, K, -1) for x in pos_embeds],
            feat_sizes=sizes, point_inputs=None, mask_inputs=prompt.float() if t == 0 else None,
            output_dict=bank, num_frames=CLIP_FRAMES)
        bank.add(t, out, is_cond=t == 0)
        yield t, out


def clip_loss(model, frames: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The tracker's loss on one clip (see the module docstring) and its parts."""
    low = model.tracker.low_res_mask_size
    targets = F.interpolate(masks.float(), size=(low, low), mode="area")  # (8, K, h, w) coverage
    terms = {"mask": 0.0, "iou": 0.0, "score": 0.0}
    count = 0
    for t, out in propagate_clip(model, frames, masks):
        if t == 0:
            continue
        logits = out.pred_masks[:, 0].flatten(1)  # (K, h*w)
        target = (targets[t] > 0.5).float().flatten(1)
        visible = target.sum(1) > 0
        if visible.any():
            focal = sigmoid_focal_loss(logits[visible], target[visible]).mean(1)
            terms["mask"] = terms["mask"] + (20 * focal + dice_loss(logits[visible], target[visible])).sum()
            pred = logits[visible] > 0
            real_iou = (pred & (target[visible] > 0)).sum(1) / (pred | (target[visible] > 0)).sum(1).clamp(min=1)
            terms["iou"] = terms["iou"] + F.mse_loss(out.ious[visible].max(-1).values, real_iou.float(),
                                                     reduction="sum")
        terms["score"] = terms["score"] + F.binary_cross_entropy_with_logits(
            out.object_score_logits[:, 0], visible.float(), reduction="sum")
        count += len(visible)
    loss = sum(terms.values()) / count
    return loss, {k: float(v.detach() if torch.is_tensor(v) else v) / count for k, v in terms.items()}


@torch.no_grad()
def evaluate(model, clips: list) -> float:
    """Mean IoU of the propagated masks (frames 1-7, visible objects) on held-out clips."""
    model.tracker.eval()
    ious = []
    for frames, masks in clips:
        for t, out in propagate_clip(model, frames, masks):
            if t == 0:
                continue
            pred = F.interpolate(out.pred_masks, size=masks.shape[-2:], mode="bilinear")[:, 0] > 0
            ious += [float((pred[k] & masks[t, k]).sum() / (pred[k] | masks[t, k]).sum())
                     for k in range(masks.shape[1]) if masks[t, k].any()]
    model.tracker.train()
    return float(np.mean(ious)) if ious else 0.0


class Run:
    """What the tracker's training runs share (here and ``train_clicks``): the demo video model (``init``: another
    run's weights), AdamW on the tracker and the second neck, and ``OUT/last.pt`` resumed and saved atomically."""

    def __init__(self, out: "str | Path", lr: float, init: "str | Path | None" = None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.model, self.config = demo_video_model()
        if init:  # e.g. the SAM heads trained on clicks: its weights, not its optimizer or step
            self.model.load_state_dict(torch.load(init, weights_only=True)["model"])
        neck = self.model.detector.backbone.vision_backbone
        self.trainable = [*self.model.tracker.parameters(), *neck.sam2_convs.parameters()]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=lr, weight_decay=0.01)
        self.step = 0
        if (self.out / "last.pt").is_file():
            saved = torch.load(self.out / "last.pt", weights_only=True)
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.step = saved["step"]
            print(f"resumed from {self.out / 'last.pt'} at step {self.step}", flush=True)
        self.model.detector.eval()
        self.model.tracker.train()

    def save(self) -> None:
        with atomic_path(self.out / "last.pt") as tmp:
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                        "config": self.config}, tmp)


def train(args) -> None:
    torch.set_num_threads(args.threads)
    run = Run(args.out, args.lr, args.init)
    out, model, optimizer, trainable, step = run.out, run.model, run.optimizer, run.trainable, run.step
    held_out = [c for c in (sample_clip(HELD_OUT_SEED + i, model.detector.config.resolution) for i in range(args.heldout_clips)) if c]
    metrics = out / "metrics.csv"
    if not metrics.exists():
        metrics.write_text("step,loss,mask,iou,score,heldout_miou,minutes\n")
    start = time.time()
    running: list[float] = []
    while step < args.steps:
        sample = sample_clip(args.seed * 10**6 + step, model.detector.config.resolution)
        step += 1
        if sample is None:
            continue
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.lr, args.warmup, args.steps)
        loss, parts = clip_loss(model, *sample)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.click_images:  # keep the SAM heads' clicks (train_clicks) while propagation is learnt
            from . import train_clicks

            frames = train_clicks.batch_for_step(args.seed + 1, step, args.click_images, 0.5,
                                                 model.detector.config.resolution)
            train_clicks.click_backward(model, frames, np.random.default_rng([args.seed, step, 2]),
                                        weight=args.click_weight)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        running.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            miou = evaluate(model, held_out)
            with open(metrics, "a", newline="") as f:
                csv.writer(f).writerow([step, round(np.mean(running), 4), round(parts["mask"], 4),
                                        round(parts["iou"], 4), round(parts["score"], 4), round(miou, 4),
                                        round((time.time() - start) / 60, 1)])
            print(f"step {step} loss {np.mean(running):.4f} held-out mIoU {miou:.4f} "
                  f"({(time.time() - start) / 60:.1f} min)", flush=True)
            running = []
            run.step = step
            run.save()


def export(checkpoint: Path, path: Path) -> None:
    """The trained video model in the official layout (``{"model": detector.* + tracker.*, "config"}``)."""
    saved = torch.load(checkpoint, weights_only=True)
    with atomic_path(path) as tmp:
        torch.save({"model": saved["model"], "config": saved["config"]}, tmp)


def export_demo_tracker(checkpoint: Path, path: Path) -> None:
    """What the trained run adds to the demo detector, in fp16 as ``demo.pt``: ``tracker.*`` and the second neck
    (``detector.backbone.vision_backbone.sam2_convs.*``), with the tracker's config; ``checkpoint.DEMO_VIDEO``
    joins them to ``demo.pt``."""
    saved = torch.load(checkpoint, weights_only=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in saved["model"].items()
             if k.startswith("tracker.") or ".sam2_convs." in k}
    with atomic_path(path) as tmp:
        torch.save({"model": state, "config": {"tracker": saved["config"]["tracker"]}, "step": saved["step"]}, tmp)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout-clips", type=int, default=24, help="held-out clips of the mIoU in metrics.csv")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--click-images", type=int, default=0,
                        help="frames of click training (train_clicks' loss) added to each step (0: none)")
    parser.add_argument("--click-weight", type=float, default=0.5, help="weight of that click loss")
    parser.add_argument("--init", help="start from this checkpoint's weights (a train_clicks or train_tracker last.pt)")
    parser.add_argument("--export", help="write OUT/last.pt as a video checkpoint here and stop")
    parser.add_argument("--export-demo-tracker", metavar="PATH",
                        help="write OUT/last.pt's tracker (fp16) as the package's demo_tracker.pt here and stop")
    args = parser.parse_args(argv)
    if args.export:
        export(Path(args.out) / "last.pt", Path(args.export))
        return
    if args.export_demo_tracker:
        export_demo_tracker(Path(args.out) / "last.pt", Path(args.export_demo_tracker))
        return
    train(args)


if __name__ == "__main__":
    main()
