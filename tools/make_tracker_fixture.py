"""Make the tracker parity fixture (tests/data/tracker_parity) from the OFFICIAL SAM 3 tracker.

Run with the oracle venv (never with the project's), from the repository root:

    ~/.cache/sam3-oracle/bin/python tools/make_tracker_fixture.py --out tests/data/tracker_parity

It builds the official ``sam3.model.sam3_tracker_base.Sam3TrackerBase`` from the official classes, as
``sam3.model_builder.build_tracker`` does, at the sizes of ``sam3video/configs/tiny.toml`` (read as
TOML; nothing of ``sam3video`` is imported): the official builder hard-codes the SAM heads' widths
(8 heads, MLP 2048, IoU head 256), so a subclass builds them at the ``[tracker]`` table's sizes.
Weights are seeded random (default inits, plus noise on every constant tensor so that layer norms,
biases, layer scales and the temporal encodings are all exercised); the object-score head's last
bias is then chosen so that, with two objects, object 1 vanishes (negative object score) on a later
frame while object 0 stays, and no score lies near 0. Every key saved is described in README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import torch

torch.Tensor.cuda = lambda self, *a, **k: self  # the official code calls .cuda() in a few places
torch.Tensor.pin_memory = lambda self, *a, **k: self

from sam3.model.decoder import TransformerDecoderLayerv2, TransformerEncoderCrossAttention  # noqa: E402
from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder  # noqa: E402
from sam3.model.model_misc import TransformerWrapper  # noqa: E402
from sam3.model.position_encoding import PositionEmbeddingSine  # noqa: E402
from sam3.model.sam3_tracker_base import Sam3TrackerBase  # noqa: E402
from sam3.sam.mask_decoder import MLP, MaskDecoder  # noqa: E402
from sam3.sam.prompt_encoder import PromptEncoder  # noqa: E402
from sam3.sam.transformer import RoPEAttention, TwoWayTransformer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NUM_FRAMES = 6
NUM_OBJECTS = 2
HIGH_RES_STRIDE = 4  # high-res masks of frames 1-5 are saved at [..., ::4, ::4] to keep the fixture small
TRACKER_DEFAULTS = {"num_maskmem": 7, "fuser_layers": 2, "fuser_kernel": 7, "mask_in_chans": 16, "decoder_depth": 2,
                    "memory_attention_heads": 1, "rope_theta": 10000.0, "max_cond_frames_in_attn": 4,
                    "max_obj_ptrs_in_encoder": 16, "use_memory_selection": True, "mf_threshold": 0.01}


def read_sizes(preset: str) -> dict:
    values = tomllib.loads((ROOT / "sam3video" / "configs" / f"{preset}.toml").read_text())
    t = {**TRACKER_DEFAULTS, **values["tracker"]}
    return {"preset": preset, "d_model": values["d_model"], "resolution": values["resolution"],
            "patch_size": values["patch_size"], **t}


def build_official(s: dict) -> Sam3TrackerBase:
    d, m = s["d_model"], s["mem_dim"]
    side = s["resolution"] // s["patch_size"]

    class TinyHeadsTracker(Sam3TrackerBase):
        """The official tracker with the SAM heads at the config's sizes (the official code fixes them)."""

        def _build_sam_heads(self):
            self.sam_prompt_embed_dim = self.hidden_dim
            self.sam_image_embedding_size = self.image_size // self.backbone_stride
            self.sam_prompt_encoder = PromptEncoder(
                embed_dim=self.sam_prompt_embed_dim,
                image_embedding_size=(self.sam_image_embedding_size, self.sam_image_embedding_size),
                input_image_size=(self.image_size, self.image_size), mask_in_chans=s["mask_in_chans"])
            self.sam_mask_decoder = MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=s["decoder_depth"], embedding_dim=self.sam_prompt_embed_dim,
                                              mlp_dim=s["decoder_mlp"], num_heads=s["decoder_heads"]),
                transformer_dim=self.sam_prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=s["iou_head_hidden"],
                use_high_res_features=True, iou_prediction_use_sigmoid=True, pred_obj_scores=True,
                pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True,
                **(self.sam_mask_decoder_extra_args or {}))
            self.obj_ptr_proj = MLP(self.hidden_dim, self.hidden_dim, self.hidden_dim, 3)
            self.obj_ptr_tpos_proj = torch.nn.Linear(self.hidden_dim, self.mem_dim)

    k = s["fuser_kernel"]
    maskmem = SimpleMaskEncoder(
        out_dim=m, in_dim=d,
        position_encoding=PositionEmbeddingSine(num_pos_feats=m, normalize=True, scale=None, temperature=10000,
                                                precompute_resolution=s["resolution"]),
        mask_downsampler=SimpleMaskDownSampler(embed_dim=d, kernel_size=3, stride=2, padding=1,
                                               interpol_size=[side * 16, side * 16]),
        fuser=SimpleFuser(layer=CXBlock(dim=d, kernel_size=k, padding=k // 2, layer_scale_init_value=1e-6,
                                        use_dwconv=True), num_layers=s["fuser_layers"]))
    common = dict(embedding_dim=d, num_heads=s["memory_attention_heads"], downsample_rate=1, dropout=0.1,
                  rope_theta=s["rope_theta"], feat_sizes=[side, side], use_fa3=False, use_rope_real=False)
    layer = TransformerDecoderLayerv2(
        cross_attention_first=False, activation="relu", dim_feedforward=s["memory_attention_ffn"], dropout=0.1,
        pos_enc_at_attn=False, pre_norm=True, self_attention=RoPEAttention(**common), d_model=d,
        pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
        cross_attention=RoPEAttention(**common, kv_in_dim=m, rope_k_repeat=True))
    encoder = TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[], batch_first=True, d_model=d, frozen=False, pos_enc_at_input=True,
        layer=layer, num_layers=s["memory_attention_layers"], use_act_checkpoint=False)
    # the settings of sam3.model_builder.build_tracker (the Sam3TrackerPredictor-only ones left out)
    tracker = TinyHeadsTracker(
        backbone=None, transformer=TransformerWrapper(encoder=encoder, decoder=None, d_model=d),
        maskmem_backbone=maskmem, num_maskmem=s["num_maskmem"], image_size=s["resolution"],
        backbone_stride=s["patch_size"], max_cond_frames_in_attn=s["max_cond_frames_in_attn"],
        multimask_output_in_sam=True, multimask_output_for_tracking=True, multimask_min_pt_num=0,
        multimask_max_pt_num=1, forward_backbone_per_frame_for_eval=True, non_overlap_masks_for_mem_enc=False,
        max_obj_ptrs_in_encoder=s["max_obj_ptrs_in_encoder"],
        sam_mask_decoder_extra_args={"dynamic_multimask_via_stability": True, "dynamic_multimask_stability_delta": 0.05,
                                     "dynamic_multimask_stability_thresh": 0.98},
        use_memory_selection=s["use_memory_selection"], mf_threshold=s["mf_threshold"])
    return tracker.eval()


def randomize(tracker: torch.nn.Module, seed: int) -> None:
    """Default inits are random already; constant tensors (norms, zero biases, layer scales) get noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(tracker.state_dict(keep_vars=True).items()):
            if p.is_floating_point() and (p.numel() == 1 or p.std() == 0):
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def make_inputs(s: dict, seed: int) -> dict:
    """Random backbone features (fp16-exact values), a two-object mask prompt for frame 0."""
    g = torch.Generator().manual_seed(seed)
    d, side = s["d_model"], s["resolution"] // s["patch_size"]

    def rnd(*shape):
        return torch.randn(*shape, generator=g).half()

    inputs = {
        "vision_feats_0": rnd(NUM_FRAMES, (4 * side) ** 2, d // 8),  # per frame (HW, C); expanded to B objects
        "vision_feats_1": rnd(NUM_FRAMES, (2 * side) ** 2, d // 4),
        "vision_feats_2": rnd(NUM_FRAMES, side ** 2, d),
        "vision_pos_2": rnd(side ** 2, d),  # the same for every frame (as the sine encoding is)
    }
    mask = torch.zeros(NUM_OBJECTS, 1, side * 16, side * 16, dtype=torch.bool)
    mask[0, :, 64:160, 80:200] = True
    mask[1, :, 10:50, 10:90] = True
    inputs["mask_prompt"] = mask
    # module inputs
    inputs["mem_enc_pix_feat"] = rnd(1, d, side, side)
    inputs["mem_attn_src"] = rnd(side ** 2, 1, d)
    inputs["mem_attn_src_pos"] = rnd(side ** 2, 1, d)
    n_ptr = 4
    inputs["mem_attn_prompt"] = rnd(2 * side ** 2 + n_ptr, 1, s["mem_dim"])
    inputs["mem_attn_prompt_pos"] = rnd(2 * side ** 2 + n_ptr, 1, s["mem_dim"])
    inputs["mem_attn_num_obj_ptr_tokens"] = torch.tensor(n_ptr)
    inputs["pe_point_coords"] = torch.tensor([[[100.0, 120.0], [30.5, 40.25], [0.0, 0.0]]])
    inputs["pe_point_labels"] = torch.tensor([[1, 0, -1]], dtype=torch.int32)
    inputs["pe_mask"] = rnd(1, 1, 4 * side, 4 * side) * 4
    return inputs


def frame_kwargs(inputs: dict, f: int, sizes: list) -> dict:
    B = NUM_OBJECTS
    feats = [inputs[f"vision_feats_{i}"][f].float()[:, None].expand(-1, B, -1) for i in range(3)]
    pos2 = inputs["vision_pos_2"].float()[:, None].expand(-1, B, -1)
    pos = [torch.zeros_like(feats[0][..., :1]).expand(-1, B, pos2.shape[-1]),  # finer levels: unused
           torch.zeros_like(feats[1][..., :1]).expand(-1, B, pos2.shape[-1]), pos2]
    return dict(current_vision_feats=feats, current_vision_pos_embeds=pos, feat_sizes=sizes)


def run_video(tracker, inputs: dict, side: int) -> list:
    """Mask prompt on frame 0, propagation to frames 1..5; the official dict memory bank."""
    sizes = [(4 * side, 4 * side), (2 * side, 2 * side), (side, side)]
    record = {}
    fsh, umo = tracker._forward_sam_heads, tracker._use_mask_as_output

    def forward_sam_heads(*a, **k):
        out = fsh(*a, **k)
        record.setdefault("outer", out)
        return out

    def use_mask_as_output(*a, **k):
        out = umo(*a, **k)
        record["outer"] = out
        return out

    tracker._forward_sam_heads, tracker._use_mask_as_output = forward_sam_heads, use_mask_as_output
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    outs = []
    try:
        with torch.inference_mode():
            for f in range(NUM_FRAMES):
                record.clear()
                out = tracker.track_step(frame_idx=f, is_init_cond_frame=f == 0, image=None, point_inputs=None,
                                         mask_inputs=inputs["mask_prompt"] if f == 0 else None,
                                         output_dict=output_dict, num_frames=NUM_FRAMES, **frame_kwargs(inputs, f, sizes))
                output_dict["cond_frame_outputs" if f == 0 else "non_cond_frame_outputs"][f] = out
                outs.append({**out, "ious": record["outer"][2]})
    finally:
        del tracker._forward_sam_heads, tracker._use_mask_as_output
    return outs


def scores_ok_raw(s: torch.Tensor) -> bool:
    """s (5, 2): scores of frames 1-5. One object present throughout, the other present on frame 1 and
    absent on some frame >= 3; every |score| >= 0.1 (relative to the spread when used on raw scores)."""
    for u, v in ((0, 1), (1, 0)):
        if (s[:, u] > 0).all() and s[0, v] > 0 and (s[2:, v] < 0).any():
            return True
    return False


def scores_ok(outs: list) -> bool:
    s = torch.stack([o["object_score_logits"][:, 0] for o in outs[1:]])
    return bool((s.abs() >= 0.1).all()) and scores_ok_raw(s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.time()
    s = read_sizes(args.preset)
    side = s["resolution"] // s["patch_size"]
    torch.manual_seed(args.seed)
    tracker = build_official(s)
    tracker.compile_all_components = False
    randomize(tracker, args.seed + 1)
    inputs = make_inputs(s, args.seed + 2)

    # choose the object-score bias so that object 1 vanishes later on (the no-object path)
    bias = tracker.sam_mask_decoder.pred_obj_score_head.layers[-1].bias
    base = bias.detach().clone()
    outs = run_video(tracker, inputs, side)
    raw = torch.stack([o["object_score_logits"][:, 0] for o in outs[1:]])  # (5, B) at delta 0
    print(f"raw object scores of frames 1-5: {raw.tolist()} ({time.time() - t0:.1f} s)")
    # Random weights make the score nearly constant (spread ~1e-3): scale the last layer's weights by K
    # and move the bias so that the zero falls where one object stays and the other vanishes later.
    weight = tracker.sam_mask_decoder.pred_obj_score_head.layers[-1].weight
    w0, found = weight.detach().clone(), None
    values = sorted(set(raw.flatten().tolist()))
    cands = []
    for a, b in zip(values, values[1:]):
        t = (a + b) / 2
        if scores_ok_raw(raw - t):
            cands.append(((b - a) / 2, t))
    if cands:
        margin, t = max(cands)
        k = 0.5 / margin
        with torch.no_grad():
            weight.copy_(w0 * k)
            bias.copy_(-k * (t - base))
        for _ in range(6):  # the gating feeds back into the memory: re-centre on the new scores
            outs = run_video(tracker, inputs, side)
            cur = torch.stack([o["object_score_logits"][:, 0] for o in outs[1:]])
            print("scores", [[round(x, 3) for x in r] for r in cur.tolist()])
            if scores_ok(outs):
                found = (k, bias.item())
                break
            values = sorted(set(cur.flatten().tolist()))
            mids = [((b - a) / 2, (a + b) / 2) for a, b in zip(values, values[1:]) if scores_ok_raw(cur - (a + b) / 2)]
            if not mids:
                break
            with torch.no_grad():
                bias.sub_(max(mids)[1])
    if found is None:
        print("no object-score bias gives the wanted vanishing pattern", file=sys.stderr)
        return 1

    fx = {"config": json.dumps(s), "score_head_scale": torch.tensor(found[0])}
    fx["state_dict"] = {f"tracker.{k}": v.detach().clone().float().contiguous() for k, v in tracker.state_dict().items()}
    fx["inputs"] = inputs
    with torch.inference_mode():
        # memory encoder on one mask (logits; the module applies the sigmoid here)
        mem_mask = inputs["mask_prompt"][:1].float() * 20 - 10
        mo = tracker.maskmem_backbone(inputs["mem_enc_pix_feat"].float(), mem_mask, skip_mask_sigmoid=False)
        mods = {"mem_enc_features": mo["vision_features"], "mem_enc_pos": mo["vision_pos_enc"][0]}
        # memory attention on one bank: 2 frames of side^2 memory tokens + 4 pointer tokens
        ea = tracker.transformer.encoder(
            src=[inputs["mem_attn_src"].float()], src_key_padding_mask=[None], src_pos=[inputs["mem_attn_src_pos"].float()],
            prompt=inputs["mem_attn_prompt"].float(), prompt_pos=inputs["mem_attn_prompt_pos"].float(),
            prompt_key_padding_mask=None, feat_sizes=[(side, side)], num_obj_ptr_tokens=int(inputs["mem_attn_num_obj_ptr_tokens"]))
        mods["mem_attn_out"] = ea["memory"]
        # prompt encoder: 1 positive, 1 negative, 1 padding point, plus a mask prompt
        sparse, dense = tracker.sam_prompt_encoder(points=(inputs["pe_point_coords"], inputs["pe_point_labels"]),
                                                   boxes=None, masks=inputs["pe_mask"].float())
        mods.update(pe_sparse=sparse, pe_dense=dense, pe_dense_pe=tracker.sam_prompt_encoder.get_dense_pe())
        # mask decoder on frame 1's features (no memory) with those prompt embeddings
        img = inputs["vision_feats_2"][1].float().T.reshape(1, s["d_model"], side, side)
        hr = [inputs["vision_feats_0"][1].float().T.reshape(1, -1, 4 * side, 4 * side),
              inputs["vision_feats_1"][1].float().T.reshape(1, -1, 2 * side, 2 * side)]
        for name, multi in (("md_multi", True), ("md_single", False)):
            masks, iou, tokens, obj = tracker.sam_mask_decoder(
                image_embeddings=img, image_pe=mods["pe_dense_pe"], sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense, multimask_output=multi, repeat_image=False, high_res_features=hr)
            mods.update({f"{name}_masks": masks, f"{name}_ious": iou, f"{name}_tokens": tokens, f"{name}_obj_score": obj})
        # the single-mask path: did the dynamic (stability) choice replace token 0's mask?
        single, multi = mods["md_single_masks"], mods["md_multi_masks"]
        mods["md_single_unstable"] = torch.tensor([torch.equal(single[b, 0], multi[b, k]) for b in range(len(single))
                                                  for k in range(multi.shape[1])]).reshape(len(single), -1).any(-1)
    fx["modules"] = {k: v.clone() for k, v in mods.items()}

    track = {}
    for f, o in enumerate(outs):
        hr = o["pred_masks_high_res"]
        track[f] = {
            "pred_masks": o["pred_masks"],
            "pred_masks_high_res_sub": hr[..., ::HIGH_RES_STRIDE, ::HIGH_RES_STRIDE],
            "ious": o["ious"], "iou_score": o["iou_score"], "eff_iou_score": o["eff_iou_score"],
            "object_score_logits": o["object_score_logits"], "obj_ptr": o["obj_ptr"],
            "maskmem_features": o["maskmem_features"],
        }
        if f == 0:
            track[f]["pred_masks_high_res_sub"] = hr[..., ::HIGH_RES_STRIDE, ::HIGH_RES_STRIDE].half()  # +-10: exact
            track[f]["maskmem_pos_enc"] = o["maskmem_pos_enc"][0]
        else:
            track[f]["best_iou_inds"] = o["ious"].argmax(-1)
        assert len(o["maskmem_pos_enc"]) == 1 and torch.equal(o["maskmem_pos_enc"][0], outs[0]["maskmem_pos_enc"][0])
    fx["track"] = {f: {k: v.clone().contiguous() for k, v in d.items()} for f, d in track.items()}
    fx["high_res_stride"] = HIGH_RES_STRIDE

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "tracker_parity.pt"
    torch.save(fx, path)
    scores = torch.stack([o["object_score_logits"][:, 0] for o in outs])
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.1f} s; score head scaled by {found[0]:.1f}")
    print("object scores per frame:", [[round(x, 3) for x in r] for r in scores.tolist()])
    print("best multimask per frame:", [track[f]["best_iou_inds"].tolist() for f in range(1, NUM_FRAMES)])
    print("mask decoder single-mask replaced by stability choice:", mods["md_single_unstable"].tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
