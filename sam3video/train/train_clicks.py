"""Train the demo tracker's SAM heads on single synthetic frames: SAM's interactive recipe at small scale.

    python -m sam3video.train.train_clicks --out runs/train_clicks --steps 4000     # starts or resumes
    python -m sam3video.train.train_clicks --out runs/train_clicks --evaluate        # held-out click IoU

A step takes ``--images`` frames (the classic world, and the randomised one ``--styled-share`` of the time)
and up to ``MAX_OBJECTS`` objects of each that cover at least ``MIN_AREA_FRACTION`` of the frame. An object's
first prompt is one positive click (its centre, the pixel farthest from its boundary, half of the time, else
any pixel of it) or, one time in four, its box with a few pixels of noise; each of ``CORRECTIONS`` more rounds
adds one click at a point deep in the largest error of the previous prediction (positive on a miss, negative
on a leak) and passes the previous logits as the mask prompt, as ``Sam3Session._click`` does. Loss per round,
on the logits upsampled 2x (bilinear, as a session resizes them; SAM's loss at image resolution), against the
truth squashed as the frame is: 20 x focal + dice of the best of the three candidates of a single click (SAM's minimum over candidates), of the
one mask otherwise; MSE of each candidate's predicted IoU against its real one; cross-entropy of the object
score (the object is there). Frames are preprocessed and the features built as the session builds them (the
frozen detector trunk, the second neck ``sam2_convs``, the tracker's ``conv_s0``/``conv_s1``); the tracker and
the second neck are trained. Checkpoints (``OUT/last.pt``, the ``train_tracker`` format, so its propagation
stage starts from it with ``--init``) are atomic and resumable; the batch of step s depends on (seed, s) only.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..data.styles import StyleConfig
from ..data.synthetic import WorldConfig
from ..data.clips import generate_clip
from ..model.sam3_tracker_utils import PointInputs, encode_prompts
from ..preprocess import preprocess_image
from .losses import dice_loss, sigmoid_focal_loss
from .train import lr_at
from .train_tracker import Run, demo_video_model, frame_features

MAX_OBJECTS = 4
MIN_AREA_FRACTION = 0.002  # of the frame: 154 pixels at 320x240
CORRECTIONS = 2
BOX_PROB = 0.25
CENTRE_PROB = 0.5
HELD_OUT_SEED = 2 * 10**9
WORLDS = {"classic": WorldConfig(duration_s=0.2), "train": WorldConfig(duration_s=0.2, style=StyleConfig("train")),
          "heldout": WorldConfig(duration_s=0.2, style=StyleConfig("heldout"))}
BOX_LABELS = (2, 3)  # SAM's labels of a box's top-left and bottom-right corners
LOSS_SCALE = 2  # the loss compares the low-res logits upsampled 2x (bilinear, as a session resizes) with the truth


@dataclass
class Frame:
    """One frame: ``image`` (3, R, R) normalised, ``masks`` (K, H, W) bool of the objects to click, ``size`` (H, W)."""

    image: torch.Tensor
    masks: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        return self.masks.shape[1:]


def sample_frame(seed: int, world: str, resolution: int) -> Frame | None:
    """Frame 0 of the clip of ``seed`` in ``world`` and its objects big enough to click; None if it has none."""
    image, truth = generate_clip(seed, WORLDS[world]).frame(0)
    height, width = image.shape[:2]
    objects = [o.mask for o in truth.objects if o.area >= MIN_AREA_FRACTION * height * width]
    if not objects:
        return None
    order = np.random.default_rng(seed).permutation(len(objects))[:MAX_OBJECTS]
    tensor = preprocess_image(torch.from_numpy(image).permute(2, 0, 1), resolution)
    return Frame(tensor, np.stack([objects[i] for i in order]))


def depth(region: np.ndarray) -> np.ndarray:
    """(H, W) float32: each pixel of ``region`` (H, W) bool's Euclidean distance to the nearest pixel outside it
    (the frame edge counts as outside); 0 outside."""
    distance = np.zeros(region.shape, np.float32)
    ys, xs = np.nonzero(region)
    if len(ys):
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = np.pad(region[y0:y1, x0:x1], 1).astype(np.uint8)
        distance[y0:y1, x0:x1] = cv2.distanceTransform(crop, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return distance


def centre_of(region: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of ``region`` (H, W) bool farthest from its boundary (the frame edge counts)."""
    y, x = np.unravel_index(int(depth(region).argmax()), region.shape)
    return int(x), int(y)


def correction_click(pred: np.ndarray, truth: np.ndarray, rng: np.random.Generator | None = None
                     ) -> tuple[tuple[int, int], int] | None:
    """The next click on a (H, W) prediction against its truth: in the error region (misses or leaks) whose
    deepest pixel lies deepest, its centre (``rng`` None) or a pixel at least half as deep; label 1 on a miss,
    0 on a leak. None when there is no error."""
    best = None
    for label, region in ((1, truth & ~pred), (0, pred & ~truth)):
        if not region.any():
            continue
        distance = depth(region)
        if best is None or distance.max() > best[0].max():
            best = distance, label
    if best is None:
        return None
    distance, label = best
    if rng is None:
        y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    else:
        ys, xs = np.nonzero(distance >= 0.5 * distance.max())
        pick = int(rng.integers(len(ys)))
        y, x = ys[pick], xs[pick]
    return (int(x), int(y)), label


def sam_heads(tracker, feats: list, sizes: list, owner: torch.Tensor, points: PointInputs,
              mask_prompt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The SAM heads of a click on a frame without memory (``track_step`` on an initial conditioning frame),
    for N objects of frames ``owner`` (N,): (N, M, h, w) candidate logits before the object-score gating,
    (N, M) predicted IoUs, (N, 1) object scores; M = 3 for one click, else 1."""
    top = feats[-1][:, owner] + tracker.no_mem_embed  # (hw, N, C): directly_add_no_mem_embed
    N = len(owner)
    pix = top.permute(1, 2, 0).view(N, tracker.hidden_dim, *sizes[-1])
    high_res = [x[:, owner].permute(1, 2, 0).view(N, x.size(2), *s) for x, s in zip(feats[:-1], sizes[:-1])]
    sparse, dense = encode_prompts(tracker.sam_prompt_encoder, N, pix.device, points, mask_prompt)
    masks, ious, _, object_scores = tracker.sam_mask_decoder(
        image_embeddings=pix, image_pe=tracker.sam_prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense, multimask_output=tracker._use_multimask(True, points), repeat_image=False,
        high_res_features=high_res)
    return masks, ious, object_scores


def to_frame(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(h, w) low-res logits -> (H, W) bool mask at the frame's size (the session's bilinear resize)."""
    return F.interpolate(logits[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0] > 0


def first_prompts(frames: list[Frame], resolution: int, rng: np.random.Generator | None
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per object, the first prompt's (n, 2) coordinates in the model's input space and (n,) labels: the centre
    click (``rng`` None: always), else a random click or a noisy box (for all objects of a batch or none, so
    that every single click gets the three candidates it gets in the session)."""
    coords, labels = [], []
    use_boxes = rng is not None and rng.random() < BOX_PROB
    for frame in frames:
        height, width = frame.size
        scale = np.array([resolution / width, resolution / height])
        for mask in frame.masks:
            if use_boxes:
                ys, xs = np.nonzero(mask)
                box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
                noise = 0.1 * np.array([box[2] - box[0], box[3] - box[1]] * 2)
                box = np.clip(box + rng.normal(0, 1, 4) * np.minimum(noise, 5.0), 0, [width, height] * 2)
                coords.append(box.reshape(2, 2) * scale)
                labels.append(np.array(BOX_LABELS))
                continue
            if rng is None or rng.random() < CENTRE_PROB:
                x, y = centre_of(mask)
            else:
                ys, xs = np.nonzero(mask)
                pick = int(rng.integers(len(ys)))
                x, y = xs[pick], ys[pick]
            coords.append((np.array([[x + 0.5, y + 0.5]])) * scale)
            labels.append(np.array([1]))
    return coords, labels


def stack_points(coords: list[np.ndarray], labels: list[np.ndarray], device) -> PointInputs:
    """Ragged per-object prompts -> ``PointInputs`` (N, n, 2) / (N, n), padded with label -1 points."""
    n = max(len(c) for c in coords)
    points = np.zeros((len(coords), n, 2), np.float32)
    point_labels = -np.ones((len(coords), n), np.int32)
    for i, (c, lab) in enumerate(zip(coords, labels)):
        points[i, : len(c)], point_labels[i, : len(lab)] = c, lab
    return PointInputs(point_coords=torch.from_numpy(points).to(device),
                       point_labels=torch.from_numpy(point_labels).to(device))


def click_rounds(model, frames: list[Frame], rounds: int, rng: np.random.Generator | None):
    """Yield (round, candidate logits (N, M, h, w), predicted IoUs (N, M), object scores (N, 1), chosen (N,))
    for the objects of ``frames``: the first prompts, then ``rounds - 1`` correction clicks (``rng`` None: the
    evaluation protocol, centre clicks only). Gradients flow within a round; prompts are detached."""
    tracker = model.tracker
    resolution = tracker.image_size
    feats, _, sizes = frame_features(model, torch.stack([f.image for f in frames]))
    owner = torch.tensor([i for i, f in enumerate(frames) for _ in f.masks])
    truths = [m for f in frames for m in f.masks]
    frame_sizes = [f.size for f in frames for _ in f.masks]
    coords, labels = first_prompts(frames, resolution, rng)
    mask_prompt = None
    for r in range(rounds):
        masks, ious, scores = sam_heads(tracker, feats, sizes, owner, stack_points(coords, labels, owner.device),
                                        mask_prompt)
        chosen = ious.argmax(1)
        yield r, masks, ious, scores, chosen
        if r == rounds - 1:
            break
        best = masks[torch.arange(len(owner)), chosen].detach()
        for i, truth in enumerate(truths):
            pred = to_frame(best[i], frame_sizes[i]).cpu().numpy()
            click = correction_click(pred, truth, rng)
            if click is None:
                continue
            (x, y), label = click
            height, width = frame_sizes[i]
            point = np.array([[(x + 0.5) * resolution / width, (y + 0.5) * resolution / height]])
            coords[i], labels[i] = np.concatenate([coords[i], point]), np.concatenate([labels[i], [label]])
        mask_prompt = best[:, None].clamp(-32.0, 32.0)


def round_loss(masks: torch.Tensor, ious: torch.Tensor, scores: torch.Tensor, targets: torch.Tensor
               ) -> tuple[torch.Tensor, dict]:
    """One round's loss over N objects; ``targets`` (N, S*S) float in {0, 1} at S = ``LOSS_SCALE`` x the logits'
    side, which are upsampled bilinearly to it first (SAM's loss at the image's resolution, not the logits')."""
    N, M = masks.shape[:2]
    side = masks.shape[-1] * LOSS_SCALE
    logits = F.interpolate(masks, size=(side, side), mode="bilinear", align_corners=False).flatten(2)  # (N, M, S*S)
    expanded = targets[:, None].expand(-1, M, -1).reshape(N * M, -1)
    flat = logits.reshape(N * M, -1)
    per_candidate = (20 * sigmoid_focal_loss(flat, expanded).mean(1) + dice_loss(flat, expanded)).view(N, M)
    mask = per_candidate.min(1).values.sum()
    with torch.no_grad():
        pred = flat > 0
        real = (pred & (expanded > 0)).sum(1) / (pred | (expanded > 0)).sum(1).clamp(min=1)
    iou = F.mse_loss(ious.reshape(-1), real.float(), reduction="sum") / M
    score = F.binary_cross_entropy_with_logits(scores[:, 0], torch.ones_like(scores[:, 0]), reduction="sum")
    return mask + iou + score, {"mask": float(mask.detach()), "iou": float(iou.detach()), "score": float(score.detach())}


def low_res_targets(frames: list[Frame], size: int) -> torch.Tensor:
    """(N, size*size) float coverage > 0.5 of each object's mask, resized as the frame is (squashed square);
    frames smaller than ``size`` are upsampled (nearest)."""
    masks = torch.cat([F.interpolate(torch.from_numpy(f.masks).float()[:, None], size=(size, size), mode="area")
                       for f in frames])
    return (masks[:, 0] > 0.5).float().flatten(1)


def click_backward(model, frames: list[Frame], rng: np.random.Generator, weight: float = 1.0
                   ) -> tuple[float, dict]:
    """The click loss of ``frames`` (the first prompts and ``CORRECTIONS`` more rounds, averaged over objects and
    rounds, times ``weight``) back-propagated round by round; returns it and its parts (per object and round)."""
    targets = low_res_targets(frames, LOSS_SCALE * model.tracker.low_res_mask_size)
    denominator = len(targets) * (1 + CORRECTIONS)
    total, parts = 0.0, {"mask": 0.0, "iou": 0.0, "score": 0.0}
    for _, masks, ious, scores, _ in click_rounds(model, frames, 1 + CORRECTIONS, rng):
        loss, terms = round_loss(masks, ious, scores, targets)
        (weight * loss / denominator).backward(retain_graph=True)
        total += float(loss.detach())
        parts = {k: parts[k] + terms[k] for k in parts}
    return total / denominator, {k: v / denominator for k, v in parts.items()}


def batch_for_step(seed: int, step: int, images: int, styled_share: float, resolution: int) -> list[Frame]:
    """The frames of ``step``, drawn from (seed, step) alone."""
    rng = np.random.default_rng([seed, step])
    frames = []
    while len(frames) < images:
        world = "train" if rng.random() < styled_share else "classic"
        frame = sample_frame(int(rng.integers(2**62)), world, resolution)
        if frame is not None:
            frames.append(frame)
    return frames


def held_out_frames(world: str, count: int, resolution: int) -> list[Frame]:
    frames, seed = [], HELD_OUT_SEED
    while len(frames) < count:
        frame = sample_frame(seed, world, resolution)
        seed += 1
        if frame is not None:
            frames.append(frame)
    return frames


@torch.no_grad()
def evaluate(model, frames: list[Frame], rounds: int = 3, chunk: int = 8) -> list[float]:
    """Mean IoU at the frame's size after 1, 2, ... ``rounds`` clicks (a centre click, then a click at the centre
    of the largest error each round) over the objects of ``frames``; the chosen candidate as the session picks."""
    was_training = model.tracker.training
    model.tracker.eval()
    per_round = [[] for _ in range(rounds)]
    for start in range(0, len(frames), chunk):
        part = frames[start : start + chunk]
        truths = [m for f in part for m in f.masks]
        for r, masks, _, scores, chosen in click_rounds(model, part, rounds, rng=None):
            best = masks[torch.arange(len(truths)), chosen]
            for i, truth in enumerate(truths):
                pred = to_frame(best[i], truth.shape).cpu().numpy() & (float(scores[i, 0]) > 0)
                per_round[r].append(float((pred & truth).sum() / max((pred | truth).sum(), 1)))
    model.tracker.train(was_training)
    return [float(np.mean(v)) for v in per_round]


def train(args) -> None:
    torch.set_num_threads(args.threads)
    run = Run(args.out, args.lr, args.init)
    out, model, optimizer, trainable, step = run.out, run.model, run.optimizer, run.trainable, run.step
    resolution = model.tracker.image_size
    held_out = {w: held_out_frames(w, args.heldout_frames, resolution) for w in ("classic", "heldout")}
    metrics = out / "metrics.csv"
    if not metrics.exists():
        metrics.write_text("step,loss,mask,iou,score,classic_1,classic_2,classic_3,heldout_1,heldout_2,heldout_3,"
                           "minutes\n")
    start = time.time()
    running: list[float] = []
    while step < args.steps:
        frames = batch_for_step(args.seed, step, args.images, args.styled_share, resolution)
        step += 1
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.lr, args.warmup, args.steps)
        optimizer.zero_grad(set_to_none=True)
        loss, parts = click_backward(model, frames, np.random.default_rng([args.seed, step, 1]))
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        running.append(loss)
        if step % args.eval_every == 0 or step == args.steps:
            scores = {w: evaluate(model, frames_) for w, frames_ in held_out.items()}
            with open(metrics, "a", newline="") as f:
                csv.writer(f).writerow([step, round(np.mean(running), 4), *(round(parts[k], 4)
                                        for k in ("mask", "iou", "score")),
                                        *(round(v, 4) for w in ("classic", "heldout") for v in scores[w]),
                                        round((time.time() - start) / 60, 1)])
            print(f"step {step} loss {np.mean(running):.4f} click IoU classic {scores['classic']} held-out styles "
                  f"{scores['heldout']} ({(time.time() - start) / 60:.1f} min)", flush=True)
            running = []
            run.step = step
            run.save()
        if args.time_limit and time.time() - start > 60 * args.time_limit:
            print(f"time limit: stopped at step {step}", flush=True)
            run.step = step
            run.save()
            return


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--images", type=int, default=8, help="frames per step (up to 4 objects each)")
    parser.add_argument("--styled-share", type=float, default=0.5, help="share of frames from the randomised world")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout-frames", type=int, default=48, help="held-out frames per world")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=0.0, help="stop cleanly after this many minutes")
    parser.add_argument("--init", help="start from this checkpoint's weights (an earlier run's last.pt)")
    parser.add_argument("--evaluate", action="store_true", help="print OUT/last.pt's held-out click IoUs and stop")
    args = parser.parse_args(argv)
    if args.evaluate:
        model, _ = demo_video_model()
        model.load_state_dict(torch.load(Path(args.out) / "last.pt", weights_only=True)["model"])
        for world in ("classic", "heldout"):
            ious = evaluate(model, held_out_frames(world, args.heldout_frames, model.tracker.image_size))
            print(f"{world}: mean IoU after 1, 2, 3 clicks {', '.join(f'{v:.3f}' for v in ious)}")
        return
    train(args)


if __name__ == "__main__":
    main()
