"""The official SAM 3.1 multiplex tracker's cost per frame (Meta's main @96914d2, CPU-patched), for
tools/bench_multiplex.py. Runs in the official venv (../shared/tools/oracle31/setup.sh), never in ours:

    ~/.cache/sam31-oracle/bin/python tools/oracle31_bench_child.py --size full --objects 16 --frames 8

Same protocol as bench_multiplex.py: the tracker built as the official builder does (probe.py's assembly, fp32,
SDPA, real-valued RoPE), random features of its shapes, a mask prompt for every object on frame 0 (mask as output
+ memory), then each frame ``track_step`` (propagation) and the memory encoder on its masks. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="full")
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--oracle-tools", type=Path, default=ROOT.parent / "shared" / "tools" / "oracle31")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(args.oracle_tools))
    import probe

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    tracker = probe.build_tracker(probe.SIZES[args.size], use_fa3=False, use_rope_real=True).eval()
    del tracker.backbone
    tracker = tracker.to(device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    g = torch.Generator().manual_seed(args.seed)
    h = tracker.image_size // tracker.backbone_stride
    c = tracker.hidden_dim
    sizes = [(4 * h, 4 * h), (2 * h, 2 * h), (h, h)]

    def features():
        feats = [torch.randn(s[0] * s[1], 1, ch, generator=g).to(device) for s, ch in zip(sizes, (c // 8, c // 4, c))]
        pos = [torch.randn(s[0] * s[1], 1, c, generator=g).to(device) for s in sizes]
        return {"vision_feats": feats, "vision_masks": [None] * 3, "vision_pos_embeds": pos, "feat_sizes": sizes}

    n = args.objects
    state = tracker.multiplex_controller.get_state(n, device=device, dtype=torch.float32, random=False)
    size = tracker.input_mask_size
    masks = torch.zeros(n, 1, size, size, device=device)
    for i in range(n):
        y, x = (i * 97) % (size // 2), (i * 53) % (size // 2)
        masks[i, 0, y:y + size // 4, x:x + size // 4] = 1.0
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    num_frames = args.frames + 1
    with torch.inference_mode(), amp:
        start = time.perf_counter()
        f = features()
        out = tracker.track_step(frame_idx=0, is_init_cond_frame=True, backbone_features_interactive=f,
                                 backbone_features_propagation=f, image=None, point_inputs=None, mask_inputs=masks,
                                 gt_masks=None, frames_to_add_correction_pt=[], output_dict=output_dict,
                                 num_frames=num_frames, multiplex_state=state, run_mem_encoder=True)
        output_dict["cond_frame_outputs"][0] = out
        sync()
        prompt_s = time.perf_counter() - start
        seconds = []
        for t in range(1, num_frames):
            f = features()
            start = time.perf_counter()
            out = tracker.track_step(frame_idx=t, is_init_cond_frame=False, backbone_features_interactive=None,
                                     backbone_features_propagation=f, image=None, point_inputs=None, mask_inputs=None,
                                     gt_masks=None, frames_to_add_correction_pt=[], output_dict=output_dict,
                                     num_frames=num_frames, multiplex_state=state, run_mem_encoder=False)
            high = torch.nn.functional.interpolate(out["pred_masks"], size=tracker.maskmem_backbone.mask_downsampler.
                                                   interpol_size, mode="bilinear", align_corners=False)
            scores = torch.where((high > 0).any(dim=(-1, -2)), 10.0, -10.0)
            feats, pos = tracker._encode_new_memory(
                image=None, current_vision_feats=f["vision_feats"], feat_sizes=sizes,
                pred_masks_high_res=tracker._apply_non_overlapping_constraints(high), object_score_logits=scores,
                is_mask_from_pts=False, conditioning_objects=[], multiplex_state=state)
            out["maskmem_features"], out["maskmem_pos_enc"] = feats.to(torch.bfloat16), pos
            output_dict["non_cond_frame_outputs"][t] = out
            sync()
            seconds.append(time.perf_counter() - start)
    full = seconds[tracker.num_maskmem - 1:] or seconds[-1:]
    per_frame = sum(full) / len(full)
    memory = 0
    for o in [*output_dict["cond_frame_outputs"].values(), *output_dict["non_cond_frame_outputs"].values()]:
        for v in o.values():
            if torch.is_tensor(v):
                memory += v.numel() * v.element_size()
    print(json.dumps({"objects": n, "buckets": state.num_buckets, "prompt_s": prompt_s, "per_frame_s": per_frame,
                      "per_object_s": per_frame / n, "memory_mib": memory / 2**20}))


if __name__ == "__main__":
    main()
