"""Make SAM 3.1 module parity fixtures from Meta's official code (GitHub main @96914d2, CPU-patched).

Runs in the official SAM 3.1 venv (../shared/tools/oracle31/setup.sh), never in ours:

    ~/.cache/sam31-oracle/bin/python tools/make_sam31_module_fixture.py OUT.pt.xz [--seed 0]

It builds the official multiplex tracker exactly as ../shared/tools/oracle31/probe.py does (its tiny size:
d_model 64, 224 px, 16 slots per bucket; fp32, SDPA, real-valued RoPE), fills it with the seeded weights of
tools/sam31_weights.py (the same function gives our model the same values) and runs, on seeded inputs:

- the tri-neck and the tracker's feature preparation (``forward_image`` + ``_prepare_backbone_features``);
- the memory encoder (32 input channels), the decoupled memory attention (2 buckets, 2 memory frames,
  2 x 16 pointers), the multiplex mask decoder (a bucket half full), the interactive heads (clicks; mask
  prompt as output);
- two ``track_step`` sequences over 8 frames: (a) 3 objects from masks, 2 objects added to a tracked
  frame (``add_new_masks_to_existing_state``), a click on a tracked frame (propagation + interaction),
  a reconditioned object (on the stored output, without its high-res masks, memory not re-encoded, as the
  loop does); (b) 18 objects in 2 buckets.

Inputs are not stored (all come from ``seeded_tensor``); outputs are, the sequences' low-res masks as 4 x 4
means (the memory features, stored whole, depend on every pixel of them).
"""

from __future__ import annotations

import argparse
import lzma
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from sam31_weights import seeded_tensor  # noqa: E402

FORMAT = "sam31_module_parity v1"
NUM_FRAMES = 8
TRACKER_PREFIX = "tracker.model."
NECK_PREFIX = "detector.backbone.vision_backbone."


def checkpoint_name(official_name: str) -> str:
    """Official tracker state-dict name -> the checkpoint's (= our model's) name."""
    if official_name.startswith("backbone.vision_backbone."):
        return NECK_PREFIX + official_name[len("backbone.vision_backbone."):]
    return TRACKER_PREFIX + official_name


def inputs(seed: int) -> dict:
    """Every input of the fixture, from ``seeded_tensor`` (tools/sam31_weights.py): our tests make the same."""
    C, side = 64, 16  # the tiny width and feature grid

    def t(name, *shape):
        return seeded_tensor("input." + name, shape, seed)

    def masks(name, n, size):  # smooth masks in [0, 1]: sigmoid of a blurred field
        field = torch.nn.functional.avg_pool2d(t(name, n, 1, size // 8, size // 8), 3, 1, 1)
        field = torch.nn.functional.interpolate(field, size=(size, size), mode="bilinear", align_corners=False)
        return torch.sigmoid(6 * field).half().float()

    return {
        "frames": t("frames", NUM_FRAMES, 3, 224, 224),
        "pix_feat": t("pix_feat", 1, C, side, side),
        "mem_masks": t("mem_masks", 2, 32, 224, 224),
        "attn_image": t("attn_image", side * side, 1, C),
        "attn_image_pos": t("attn_image_pos", side * side, 1, C),
        "attn_memory_image": t("attn_memory_image", 2 * side * side, 1, C),
        "attn_memory_image_pos": t("attn_memory_image_pos", 2 * side * side, 1, C),
        "attn_memory": t("attn_memory", 2 * side * side + 32, 2, C),
        "attn_memory_pos": t("attn_memory_pos", 2 * side * side + 32, 2, C),
        "dec_image": t("dec_image", 2, C, side, side),
        "dec_s0": t("dec_s0", 2, C // 8, 4 * side, 4 * side),
        "dec_s1": t("dec_s1", 2, C // 4, 2 * side, 2 * side),
        "click_coords": (t("click_coords", 3, 2, 2).abs() * 60 + 40).round(),
        "masks_a0": masks("masks_a0", 3, 256),
        "masks_a3": masks("masks_a3", 2, 256),
        "masks_a6": masks("masks_a6", 1, 256),
        "masks_b0": masks("masks_b0", 18, 256),
        "click_a5": (t("click_a5", 1, 1, 2).abs() * 60 + 40).round(),
    }


def pooled(masks: torch.Tensor) -> torch.Tensor:
    """(N, K, 64, 64) logits -> (N, K, 16, 16) means of 4 x 4 blocks (what the fixture stores of masks)."""
    return torch.nn.functional.avg_pool2d(masks.float(), 4)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--oracle-tools", type=Path, default=ROOT.parent / "shared" / "tools" / "oracle31")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(args.oracle_tools))
    import probe  # the official builder's assembly (oracle venv only)
    from sam3.model.multiplex_utils import MultiplexState

    torch.manual_seed(0)
    size = probe.SIZES["tiny"]
    tracker = probe.build_tracker(size, use_fa3=False, use_rope_real=True).eval()
    state = {}
    for name, value in tracker.state_dict().items():
        if value.is_complex():  # the ViT's RoPE table: derived from the config, not a weight
            continue
        state[name] = seeded_tensor(checkpoint_name(name), value.shape, args.seed)
    missing, unexpected = tracker.load_state_dict(state, strict=False)
    assert not unexpected and all("freqs_cis" in k for k in missing), (missing, unexpected)
    x = inputs(args.seed)
    out = {"format": FORMAT, "seed": args.seed, "sizes": size, "official": "facebookresearch/sam3@96914d2"}
    torch.set_grad_enabled(False)

    # -- features ------------------------------------------------------------------------------------------
    features = []
    for t in range(NUM_FRAMES):
        backbone_out = tracker.forward_image(x["frames"][t:t + 1], need_interactive_out=True, need_propagation_out=True)
        features.append(tracker._prepare_backbone_features(backbone_out))
    out["features0"] = {path: features[0][path]["vision_feats"] for path in ("interactive", "sam2_backbone_out")}

    # -- modules -------------------------------------------------------------------------------------------
    mem = tracker.maskmem_backbone(x["pix_feat"], x["mem_masks"], skip_mask_sigmoid=True)
    out["memory_encoder"] = {"features": mem["vision_features"], "pos": mem["vision_pos_enc"][0]}
    enc = tracker.transformer.encoder(
        image=x["attn_image"], src=x["attn_image"].expand(-1, 2, -1), memory_image=x["attn_memory_image"],
        memory=x["attn_memory"], image_pos=x["attn_image_pos"], src_pos=x["attn_image_pos"].expand(-1, 2, -1),
        memory_image_pos=x["attn_memory_image_pos"], memory_pos=x["attn_memory_pos"], num_obj_ptr_tokens=32)
    out["memory_attention"] = enc["memory"]
    half = MultiplexState([[0, 1, 2, -1, 4, -1116, 3] + [-1] * 9, [5] + [-1] * 15], torch.device("cpu"),
                          torch.float32, allowed_bucket_capacity=16)
    valid = half.get_valid_object_mask().unsqueeze(-1).float()
    slot_embed = valid * tracker.output_valid_embed.unsqueeze(0) + (1 - valid) * tracker.output_invalid_embed.unsqueeze(0)
    dec = tracker.sam_mask_decoder(image_embeddings=x["dec_image"], image_pe=tracker.get_propagation_dense_pe(),
                                   multimask_output=True, high_res_features=[x["dec_s0"], x["dec_s1"]],
                                   extra_per_object_embeddings=slot_embed)
    out["mask_decoder"] = {"masks_pooled": pooled(dec["masks"].flatten(1, 2)), "iou_pred": dec["iou_pred"],
                           "object_score_logits": dec["object_score_logits"], "sam_tokens_out": dec["sam_tokens_out"]}
    three = MultiplexState([[0, 1, 2] + [-1] * 13], torch.device("cpu"), torch.float32, allowed_bucket_capacity=16)
    f0 = features[0]
    inter_feat = tracker._get_interactive_pix_mem(f0["interactive"]["vision_feats"], f0["interactive"]["feat_sizes"])
    inter_hr = [v.permute(1, 2, 0).view(v.size(1), v.size(2), *s)
                for v, s in zip(f0["interactive"]["vision_feats"][:-1], f0["interactive"]["feat_sizes"][:-1])]
    heads = {}
    for name, npts, multimask in (("two_points", 2, False), ("one_point", 1, True)):
        points = {"point_coords": x["click_coords"][:, :npts], "point_labels": torch.tensor([[1, 0], [1, 1], [0, 1]],
                                                                                             dtype=torch.int32)[:, :npts]}
        sam = tracker._forward_sam_heads(backbone_features=inter_feat, point_inputs=points,
                                         interactive_high_res_features=inter_hr, multimask_output=multimask,
                                         objects_to_interact=[0, 1, 2], multiplex_state=three)
        heads[name] = {k: sam[k] for k in ("low_res_masks", "ious", "object_score_logits", "obj_ptr")}
    sam = tracker._use_mask_as_output(inter_feat, inter_hr, x["masks_a0"], multiplex_state=three)
    heads["mask_as_output"] = {k: sam[k] for k in ("low_res_masks", "object_score_logits", "obj_ptr")}
    out["interactive_heads"] = heads

    # -- track_step sequences ------------------------------------------------------------------------------
    def record(o, state):
        return {"pred_masks_pooled": pooled(o["pred_masks"]), "object_score_logits": o["object_score_logits"].clone(),
                "obj_ptr": o["obj_ptr"].clone(),
                "maskmem_features": None if o.get("maskmem_features") is None else o["maskmem_features"].clone(),
                "conditioning_objects": sorted(o["conditioning_objects"]),
                "assignments": [list(b) for b in state.assignments], "object_ids": list(state.object_ids or [])}

    def step(t, state, output_dict, init=False, **kw):
        return tracker.track_step(
            frame_idx=t, is_init_cond_frame=init, backbone_features_interactive=features[t]["interactive"],
            backbone_features_propagation=features[t]["sam2_backbone_out"], image=x["frames"][t:t + 1],
            gt_masks=None, frames_to_add_correction_pt=[], output_dict=output_dict, num_frames=NUM_FRAMES,
            multiplex_state=state, point_inputs=kw.pop("point_inputs", None), mask_inputs=kw.pop("mask_inputs", None),
            **kw)

    def extra(t, name):
        f = features[t][name]
        hr = [v.permute(1, 2, 0).view(v.size(1), v.size(2), *s) for v, s in zip(f["vision_feats"][:-1], f["feat_sizes"][:-1])]
        return f, hr

    seq_a = []
    state = tracker.multiplex_controller.get_state(3, device=torch.device("cpu"), dtype=torch.float32, random=False,
                                                   object_ids=[1, 2, 3])
    od = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    o = step(0, state, od, init=True, mask_inputs=x["masks_a0"])
    od["cond_frame_outputs"][0] = o
    seq_a.append(record(o, state))
    for t in range(1, NUM_FRAMES):
        if t == 5:
            points = {"point_coords": x["click_a5"], "point_labels": torch.ones(1, 1, dtype=torch.int32)}
            o = step(t, state, od, point_inputs=points, objects_to_interact=[1])
            od["cond_frame_outputs"][t] = o
            seq_a.append(record(o, state))
            continue
        o = step(t, state, od)
        if t == 3:
            f_int, hr = extra(t, "interactive")
            f_prop = features[t]["sam2_backbone_out"]
            tracker.add_new_masks_to_existing_state(
                interactive_pix_feat=tracker._get_interactive_pix_mem(f_int["vision_feats"], f_int["feat_sizes"]),
                interactive_high_res_features=hr, propagation_vision_feats=f_prop["vision_feats"],
                propagation_feat_sizes=f_prop["feat_sizes"], new_masks=x["masks_a3"], obj_idxs_in_mask=[3, 4],
                obj_ids_in_mask=[10, 11], prev_output=o, multiplex_state=state, add_mask_to_memory=True)
            od["cond_frame_outputs"][t] = o
        elif t == 6:  # as in the loop: on a stored output (no high-res masks), memory re-encoded later
            f_int, hr = extra(t, "interactive")
            f_prop = features[t]["sam2_backbone_out"]
            del o["pred_masks_high_res"]
            tracker.recondition_masks_in_existing_state(
                interactive_pix_feat=tracker._get_interactive_pix_mem(f_int["vision_feats"], f_int["feat_sizes"]),
                interactive_high_res_features=hr, propagation_vision_feats=f_prop["vision_feats"],
                propagation_feat_sizes=f_prop["feat_sizes"], new_masks=x["masks_a6"], obj_idxs_in_mask=[0],
                obj_ids_in_mask=[1], prev_output=o, multiplex_state=state, add_mask_to_memory=False)
            od["cond_frame_outputs"][t] = o
        else:
            od["non_cond_frame_outputs"][t] = o
        seq_a.append(record(o, state))
    out["sequence_a"] = seq_a

    seq_b = []
    state = tracker.multiplex_controller.get_state(18, device=torch.device("cpu"), dtype=torch.float32, random=False,
                                                   object_ids=list(range(100, 118)))
    od = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    o = step(0, state, od, init=True, mask_inputs=x["masks_b0"])
    od["cond_frame_outputs"][0] = o
    seq_b.append(record(o, state))
    for t in range(1, 4):
        o = step(t, state, od)
        od["non_cond_frame_outputs"][t] = o
        seq_b.append(record(o, state))
    out["sequence_b"] = seq_b

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    with lzma.open(tmp, "wb", preset=6) as f:
        torch.save(out, f)
    tmp.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
