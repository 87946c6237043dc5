"""Train the demo model (a small SAM 3) on the synthetic world; seeded, resumable, logged.

    python -m sam3video.train.train --out runs/train_demo --steps 20000        # starts or resumes
    python -m sam3video.train.train --out runs/train_demo --export sam3video/assets/demo.pt

Every ``--eval-every`` steps: precision / recall / F1 of boxes (IoU >= 0.5, score >= 0.5) and presence
accuracy on held-out frames (seeds never used in training), appended to ``OUT/metrics.csv``.
Checkpoints (``OUT/last.pt``: model, optimiser, step) are written atomically. The batch of step s
depends on (seed, s) only, so a resumed run sees the batches an uninterrupted one would have seen
(bit-identical weights are not promised across devices or thread counts). ``--workers N`` builds
batches in N processes (use it on a GPU, where one process cannot render frames fast enough).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from ..data.styles import StyleConfig
from ..data.synthetic import WorldConfig
from ..errors import CheckpointError
from ..export.atomic import atomic_path
from ..model.box_ops import box_cxcywh_to_xyxy, box_iou
from ..model.build import build_model, load_config
from ..model.checkpoint import resolve_device
from ..model.sam3_image import FindStage, instance_scores
from .data import BatchStream, DataConfig, batch_to, sample_batch
from .losses import LossWeights, Sam3Criterion

HELD_OUT_SEED = 10**9  # training draws seeds from its own generator; evaluation from this one


def lr_at(step: int, base_lr: float, warmup: int, total: int, floor: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to ``floor * base_lr`` at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def forward(model, batch: dict) -> dict:
    text_out = model.backbone.forward_text(batch["prompts"], device=model.device)
    backbone_out = {**model.backbone.forward_image(batch["images"]), **text_out}
    find = FindStage(img_ids=batch["img_ids"], text_ids=torch.arange(len(batch["prompts"])))
    return model.forward_grounding(backbone_out, find, batch["geometric_prompt"])


def _match_at_iou(pred: torch.Tensor, scores: torch.Tensor, gt: torch.Tensor, threshold: float = 0.5) -> list[bool]:
    """Greedy matching in score order: for each prediction (by descending score) whether it is a TP."""
    used: set[int] = set()
    iou = box_iou(pred, gt)[0] if len(pred) and len(gt) else torch.zeros(len(pred), len(gt))
    hits = []
    for p in torch.argsort(scores, descending=True).tolist():
        best = iou[p].clone()
        if used:
            best[list(used)] = -1
        hit = bool(best.numel()) and float(best.max()) >= threshold
        if hit:
            used.add(int(best.argmax()))
        hits.append(hit)
    return hits


def average_precision(scores: list[float], hits: list[bool], num_gt: int) -> float:
    """Area under the precision-recall curve (all-point interpolation, as in VOC/COCO)."""
    if num_gt == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.cumsum(np.asarray(hits, float)[order])
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / num_gt
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


@torch.no_grad()
def evaluate(model, batches: list[dict], score_threshold: float = 0.5) -> dict:
    """On fixed held-out batches: box AP at IoU 0.5 (threshold-free), precision / recall / F1 at
    ``score_threshold`` and IoU 0.5, and presence accuracy."""
    was_training = model.training
    model.eval()
    all_scores, all_hits, num_gt = [], [], 0
    tp = fp = 0
    presence_right = presence_total = 0
    for batch in batches:
        batch = batch_to(batch, model.device)
        out = forward(model, batch)
        scores = instance_scores(out)
        for q, target in enumerate(batch["targets"]):
            gt = box_cxcywh_to_xyxy(target["boxes"])
            pred = box_cxcywh_to_xyxy(out["pred_boxes"][q])
            hits = _match_at_iou(pred, scores[q], gt)
            ranked = torch.argsort(scores[q], descending=True)
            all_scores += scores[q, ranked].tolist()
            all_hits += hits
            confident = scores[q, ranked] >= score_threshold
            tp += sum(h for h, c in zip(hits, confident.tolist()) if c)
            fp += sum(not h for h, c in zip(hits, confident.tolist()) if c)
            num_gt += len(gt)
            presence_right += int((out["presence_logit_dec"][q, 0] > 0).item() == (len(gt) > 0))
            presence_total += 1
    model.train(was_training)
    precision = tp / max(tp + fp, 1)
    recall = tp / max(num_gt, 1)
    return {"ap50": average_precision(all_scores, all_hits, num_gt), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-9),
            "presence_acc": presence_right / max(presence_total, 1)}


def held_out_batches(data_config: DataConfig, num_batches: int) -> list[dict]:
    """Fixed evaluation batches of 8 images from seeds training never draws."""
    rng = np.random.default_rng(HELD_OUT_SEED)
    return [sample_batch(rng, 8, data_config) for _ in range(num_batches)]


def save_checkpoint(path: Path, model, optimizer, step: int, config: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "torch_rng": torch.get_rng_state(), "config": config}, tmp)


def export_weights(checkpoint: Path, out: Path, score_threshold: float | None = None) -> None:
    """The shipped demo weights: fp16 model state dict + config, loadable with ``weights_only=True``;
    ``score_threshold`` (from tools/calibrate_thresholds.py) goes into the config."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    config = dict(state["config"]["model"])
    if score_threshold is not None:
        config["score_threshold"] = score_threshold
    with atomic_path(out) as tmp:
        torch.save({"model": half, "config": config, "step": state["step"]}, tmp)


WORLDS = {"classic": DataConfig.world, "train": replace(DataConfig.world, style=StyleConfig(split="train")),
          "heldout": replace(DataConfig.world, style=StyleConfig(split="heldout"))}


def _world(args) -> WorldConfig:
    """The training world of ``--world``, with ``--gray-prob`` (if given) as its share of gray clips."""
    world = WORLDS[args.world]
    if args.gray_prob is None:
        return world
    return replace(world, style=replace(world.style, gray_prob=args.gray_prob))


def _autocast(precision: str, device: torch.device):
    """A bf16 autocast context on ``device`` for ``precision`` "bf16", else a no-op."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _float32(outputs):
    """The model's outputs with every floating tensor in fp32 (the loss runs in fp32)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: _float32(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_float32(v) for v in outputs)
    return outputs


def train(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model_config = load_config(args.config)
    device = resolve_device(args.device)
    model = build_model(model_config).train().to(device)
    data_config = DataConfig(resolution=model_config.resolution, mask_size=4 * model_config.resolution
                             // model_config.patch_size, exemplar_prob=args.exemplar_prob,
                             world=_world(args), classic_share=args.classic_share, gray_share=args.gray_share,
                             reframe_prob=args.reframe_prob)
    autocast = _autocast(args.precision, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step = resumed_from = 0
    last = out / "last.pt"
    config = {"model": model_config.to_dict(), "args": vars(args), "data": asdict(data_config)}
    if last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed from {last} at step {step}")
    elif args.init:  # e.g. the committed demo weights: a new session goes on where the last one stopped
        state = torch.load(args.init, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()})
        step = resumed_from = int(state.get("step", 0))
        print(f"initialised from {args.init} (step {step}); the optimiser restarts with a short warm-up")
    criterion = Sam3Criterion(LossWeights())
    # moved once; the --world as it is, without --classic-share, --gray-share or --reframe-prob
    plain = replace(data_config, classic_share=0.0, gray_share=0.0, reframe_prob=0.0)
    held_out = [batch_to(b, device) for b in held_out_batches(replace(plain, world=WORLDS[args.world]), args.eval_batches)]
    held_out_styles = [batch_to(b, device) for b in  # the randomised world's held-out style split
                       held_out_batches(replace(plain, world=WORLDS["heldout"]), args.eval_batches)]
    if args.eval_only:
        print(" ".join(f"{k}={v:.3f}" for k, v in evaluate(model, held_out).items()), f"(step {step})")
        print("held-out styles: " + " ".join(f"{k}={v:.3f}" for k, v in evaluate(model, held_out_styles).items()))
        return
    metrics_path = out / "metrics.csv"
    new_file = not metrics_path.exists()
    with open(metrics_path, "a", newline="") as f, \
            BatchStream(args.seed, step, args.images_per_batch, args.easy_steps, data_config, args.workers) as stream:
        writer = csv.writer(f)
        if new_file:
            writer.writerow(["step", "loss", "lr", "ap50", "precision", "recall", "f1", "presence_acc", "elapsed_s",
                             "heldout_styles_ap50", "heldout_styles_f1", "heldout_styles_presence_acc"])
        start, running = time.time(), {}
        while step < args.steps:
            lr = lr_at(step, args.lr, args.warmup, args.steps)
            if resumed_from:  # fresh Adam moments: ramp up again
                lr *= min(1.0, (step - resumed_from + 1) / args.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = batch_to(next(stream), device)
            with autocast:
                outputs = forward(model, batch)
            loss, logs = criterion(_float32(outputs), batch["targets"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            step += 1
            for k, v in logs.items():
                running[k] = 0.98 * running.get(k, v) + 0.02 * v
            minutes = (time.time() - start) / 60
            out_of_time = args.time_limit is not None and minutes >= args.time_limit
            stop_here = out_of_time or step == args.stop_at
            if step % args.log_every == 0:
                shown = " ".join(f"{k}={running[k]:.3f}" for k in ("loss", "loss_ce", "presence_loss",
                                                                     "loss_bbox", "loss_giou", "loss_dice",
                                                                     "loss_semantic", "presence_acc") if k in running)
                print(f"step {step} lr={lr:.2e} {shown} ({minutes:.1f} min)", flush=True)
            if step % args.eval_every == 0 or step == args.steps or stop_here:
                metrics, styles = evaluate(model, held_out), evaluate(model, held_out_styles)
                writer.writerow([step, f"{running['loss']:.4f}", f"{lr:.3e}"] +
                                [f"{metrics[k]:.4f}" for k in ("ap50", "precision", "recall", "f1", "presence_acc")] +
                                [f"{time.time() - start:.0f}"] +
                                [f"{styles[k]:.4f}" for k in ("ap50", "f1", "presence_acc")])
                f.flush()
                print(f"eval step {step}: " + " ".join(f"{k}={v:.3f}" for k, v in metrics.items()) +
                      f"; held-out styles ap50={styles['ap50']:.3f} f1={styles['f1']:.3f}", flush=True)
                save_checkpoint(last, model, optimizer, step, config)
            if stop_here:
                reason = f"--time-limit {args.time_limit} min reached" if out_of_time else "--stop-at"
                print(f"stopped at step {step}: {reason}", flush=True)
                break


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/train_demo")
    parser.add_argument("--config", default="demo", help="model config (default: the demo preset)")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--images-per-batch", type=int, default=4, help="each with 2 prompts")
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--easy-steps", type=int, default=2000, help="curriculum: few large objects first")
    parser.add_argument("--clip", type=float, default=1.0, help="gradient norm clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of the training process")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    parser.add_argument("--workers", type=int, default=0, help="processes building batches (0: the trainer)")
    parser.add_argument("--time-limit", type=float, metavar="MIN",
                        help="stop (evaluate and save) after this many minutes of training")
    parser.add_argument("--stop-at", type=int, metavar="STEP",
                        help="stop (evaluate and save) after this step; the schedule still runs to --steps")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-batches", type=int, default=8, help="held-out batches of 8 images")
    parser.add_argument("--init", help="start from these weights (e.g. the shipped demo.pt)")
    parser.add_argument("--export", metavar="PATH", help="write the fp16 demo weights from OUT/last.pt and exit")
    parser.add_argument("--score-threshold", type=float,
                        help="with --export: the calibrated operating point to store in the config")
    parser.add_argument("--eval-only", action="store_true", help="evaluate OUT/last.pt (or --init) and exit")
    parser.add_argument("--world", default="classic", choices=["classic", "train"],
                        help="classic: the world the shipped weights were trained on; train: domain randomisation "
                             "(sam3video.data.styles, its train split; the held-out split is only evaluated)")
    parser.add_argument("--exemplar-prob", type=float, default=DataConfig.exemplar_prob,
                        help="chance an image's last prompt is an exemplar-box query")
    parser.add_argument("--classic-share", type=float, default=0.0,
                        help="with --world train: this share of images comes from the classic world (so the "
                             "classic benchmark is kept while the randomised styles are learnt)")
    parser.add_argument("--gray-prob", type=float, metavar="P",
                        help="with --world train: the share of gray clips (default: the style's, "
                             f"{StyleConfig.gray_prob:g}); the held-out evaluation keeps the default")
    parser.add_argument("--gray-share", type=float, default=0.0, metavar="P",
                        help="turn this share of images gray, in any world (classic included); only shape "
                             "prompts are asked of them")
    parser.add_argument("--reframe-prob", type=float, default=0.0, metavar="P",
                        help="draw this share of classic images at a random frame size and aspect (portrait "
                             "included), objects scaled with the short side")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="autocast of the forward pass (the loss and the optimiser stay fp32)")
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    if not 0 <= args.exemplar_prob <= 1:
        parser.error(f"--exemplar-prob must be in [0, 1], got {args.exemplar_prob:g}")
    if args.gray_prob is not None and (args.world != "train" or not 0 <= args.gray_prob <= 1):
        parser.error(f"--gray-prob needs --world train and a value in [0, 1], got {args.gray_prob:g}")
    for name in ("gray_share", "reframe_prob"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name):g}")
    if not 0 <= args.classic_share <= 1:
        parser.error(f"--classic-share must be in [0, 1], got {args.classic_share:g}")
    if args.time_limit is not None and args.time_limit <= 0:
        parser.error(f"--time-limit must be > 0 minutes, got {args.time_limit}")
    try:
        resolve_device(args.device)
    except CheckpointError as e:
        parser.error(str(e))
    if args.export:
        export_weights(Path(args.out) / "last.pt", Path(args.export), args.score_threshold)
        print(f"wrote {args.export}")
        return
    train(args)


if __name__ == "__main__":
    main()
