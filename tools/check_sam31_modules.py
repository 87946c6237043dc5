"""Check our SAM 3.1 modules against a fixture of the official code (tools/make_sam31_module_fixture.py).

    python tools/check_sam31_modules.py tests/data/sam31_parity/modules_s0.pt.xz [more fixtures] [-v]

Builds our tiny SAM 3.1 video model (tests/data/sam31_parity/config.toml) with the fixture's seeded weights
(tools/sam31_weights.py), regenerates its inputs and runs the same calls: tri-neck features, memory encoder,
memory attention, multiplex mask decoder, interactive heads, and the two ``track_step`` sequences (masks as
4 x 4 means, object scores, pointers, memory features, conditioning objects, bucket assignments, ids).
Tolerance: |ours - official| <= 1e-5 + 1e-4 |official| everywhere; exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import lzma
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_sam31_module_fixture as maker  # noqa: E402  (its inputs() and pooled(); torch only)
from sam31_weights import seeded_tensor  # noqa: E402

CONFIG = ROOT / "tests" / "data" / "sam31_parity" / "config.toml"
ATOL, RTOL = 1e-5, 1e-4


@dataclass
class Report:
    """One fixture's comparisons: (what, max |difference|, within tolerance)."""

    name: str
    rows: list = field(default_factory=list)

    def tensor(self, what: str, ours: torch.Tensor, official: torch.Tensor) -> None:
        if ours is None or official is None:
            self.rows.append((what, float("nan"), ours is None and official is None))
            return
        if ours.shape != official.shape:
            self.rows.append((what + f" shape {tuple(ours.shape)} vs {tuple(official.shape)}", float("inf"), False))
            return
        diff = (ours.float() - official.float()).abs()
        ok = bool((diff <= ATOL + RTOL * official.float().abs()).all())
        self.rows.append((what, diff.max().item() if diff.numel() else 0.0, ok))

    def equal(self, what: str, ours, official) -> None:
        self.rows.append((what, 0.0 if ours == official else float("inf"), ours == official))

    @property
    def ok(self) -> bool:
        return all(ok for *_, ok in self.rows)


def load_fixture(path: Path) -> dict:
    with lzma.open(path, "rb") as f:
        fixture = torch.load(f, map_location="cpu", weights_only=True)
    if fixture.get("format") != maker.FORMAT:
        raise ValueError(f"{path}: not a {maker.FORMAT} fixture")
    return fixture


def load_model(seed: int):
    """Our tiny SAM 3.1 video model with the seeded weights (every tensor of the checkpoint layout)."""
    from sam3video.model.build_video import build_video_model

    model = build_video_model(CONFIG)
    state = {k: v if v.is_complex() else seeded_tensor(k, v.shape, seed) for k, v in model.state_dict().items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def check_fixture(path: Path, model=None) -> Report:
    from sam3video.model.multiplex_utils import MultiplexState, new_multiplex_state
    from sam3video.model.sam31_tracker import MultiplexMemoryBank
    from sam3video.model.sam3_tracker_utils import PointInputs

    fx = load_fixture(path)
    seed = fx["seed"]
    model = model if model is not None else load_model(seed)
    tracker = model.tracker.model
    x = maker.inputs(seed)
    report = Report(Path(path).name)
    cpu = torch.device("cpu")
    with torch.no_grad():
        feats = [model.forward_image(x["frames"][t:t + 1], need_sam3_out=False) for t in range(maker.NUM_FRAMES)]
        for path_name, key in (("interactive", "interactive_features"), ("sam2_backbone_out", "propagation_features")):
            for level, (ours, official) in enumerate(zip(feats[0][key].vision_feats, fx["features0"][path_name])):
                report.tensor(f"features {path_name} level {level}", ours, official)

        mem = tracker.maskmem_backbone(x["pix_feat"], x["mem_masks"], skip_mask_sigmoid=True)
        report.tensor("memory encoder features", mem["vision_features"], fx["memory_encoder"]["features"])
        report.tensor("memory encoder pos", mem["vision_pos_enc"][0], fx["memory_encoder"]["pos"])
        enc = tracker.transformer.encoder(
            image=x["attn_image"], src=x["attn_image"].expand(-1, 2, -1), memory_image=x["attn_memory_image"],
            memory=x["attn_memory"], image_pos=x["attn_image_pos"], src_pos=x["attn_image_pos"].expand(-1, 2, -1),
            memory_image_pos=x["attn_memory_image_pos"], memory_pos=x["attn_memory_pos"], num_obj_ptr_tokens=32)
        report.tensor("memory attention", enc["memory"], fx["memory_attention"])

        half = MultiplexState([[0, 1, 2, -1, 4, -1116, 3] + [-1] * 9, [5] + [-1] * 15], cpu, torch.float32,
                              allowed_bucket_capacity=16)
        valid = half.get_valid_object_mask().unsqueeze(-1).float()
        slot_embed = valid * tracker.output_valid_embed.unsqueeze(0) + (1 - valid) * tracker.output_invalid_embed.unsqueeze(0)
        dec = tracker.sam_mask_decoder(image_embeddings=x["dec_image"], image_pe=tracker.get_propagation_dense_pe(),
                                       multimask_output=True, high_res_features=[x["dec_s0"], x["dec_s1"]],
                                       extra_per_object_embeddings=slot_embed)
        report.tensor("mask decoder masks", maker.pooled(dec["masks"].flatten(1, 2)), fx["mask_decoder"]["masks_pooled"])
        for k in ("iou_pred", "object_score_logits", "sam_tokens_out"):
            report.tensor(f"mask decoder {k}", dec[k], fx["mask_decoder"][k])

        three = new_multiplex_state(3, 16, cpu)
        f0 = feats[0]["interactive_features"]
        pix, high_res = tracker._get_interactive_pix_mem(f0), f0.high_res_features()
        labels = torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.int32)
        for name, npts, multimask in (("two_points", 2, False), ("one_point", 1, True)):
            sam = tracker._forward_sam_heads(pix, multiplex_state=three,
                                             point_inputs=PointInputs(x["click_coords"][:, :npts], labels[:, :npts]),
                                             interactive_high_res_features=high_res, multimask_output=multimask)
            for k in ("low_res_masks", "ious", "object_score_logits", "obj_ptr"):
                report.tensor(f"interactive {name} {k}", getattr(sam, k), fx["interactive_heads"][name][k])
        sam = tracker._use_mask_as_output(pix, high_res, x["masks_a0"], three)
        for k in ("low_res_masks", "object_score_logits", "obj_ptr"):
            report.tensor(f"mask as output {k}", getattr(sam, k), fx["interactive_heads"]["mask_as_output"][k])

        def record(label, out, state, official):
            report.tensor(f"{label} masks", maker.pooled(out.pred_masks), official["pred_masks_pooled"])
            report.tensor(f"{label} object scores", out.object_score_logits, official["object_score_logits"])
            report.tensor(f"{label} pointers", out.obj_ptr, official["obj_ptr"])
            report.tensor(f"{label} memory", out.maskmem_features, official["maskmem_features"])
            report.equal(f"{label} conditioning objects", sorted(out.conditioning_objects), official["conditioning_objects"])
            report.equal(f"{label} buckets", [list(b) for b in state.assignments], official["assignments"])
            report.equal(f"{label} ids", list(state.object_ids or []), official["object_ids"])

        def features(t):
            return feats[t]["interactive_features"], feats[t]["propagation_features"]

        n = maker.NUM_FRAMES
        state = new_multiplex_state(3, 16, cpu, object_ids=[1, 2, 3])
        bank = MultiplexMemoryBank()
        out = tracker.track_step(0, True, *features(0), None, x["masks_a0"], bank, n, state)
        bank.add(0, out, True)
        record("sequence a frame 0", out, state, fx["sequence_a"][0])
        for t in range(1, n):
            if t == 5:  # a click on a tracked frame: propagation, then the interactive heads for object 1
                click = PointInputs(x["click_a5"], torch.ones(1, 1, dtype=torch.int32))
                out = tracker.track_step(t, False, *features(t), click, None, bank, n, state, objects_to_interact=[1])
                bank.add(t, out, True)
            else:
                out = tracker.track_step(t, False, *features(t), None, None, bank, n, state)
                if t == 3:
                    tracker.add_new_masks_to_existing_state(out, *features(t), x["masks_a3"], [10, 11], state)
                    bank.add(t, out, True)
                elif t == 6:
                    out.pred_masks_high_res = None  # a stored output
                    tracker.recondition_masks_in_existing_state(out, *features(t), x["masks_a6"], [0], state,
                                                                add_mask_to_memory=False)
                    bank.add(t, out, True)
                else:
                    bank.add(t, out, False)
            record(f"sequence a frame {t}", out, state, fx["sequence_a"][t])
        state = new_multiplex_state(18, 16, cpu, object_ids=list(range(100, 118)))
        bank = MultiplexMemoryBank()
        out = tracker.track_step(0, True, *features(0), None, x["masks_b0"], bank, n, state)
        bank.add(0, out, True)
        record("sequence b frame 0", out, state, fx["sequence_b"][0])
        for t in range(1, 4):
            out = tracker.track_step(t, False, *features(t), None, None, bank, n, state)
            bank.add(t, out, False)
            record(f"sequence b frame {t}", out, state, fx["sequence_b"][t])
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("fixtures", nargs="+", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.fixtures:
        report = check_fixture(path)
        worst = max((d for _, d, _ in report.rows if d == d), default=0.0)
        print(f"{report.name}: {'PASS' if report.ok else 'FAIL'}, {len(report.rows)} comparisons, max |diff| {worst:.3g}")
        for what, diff, ok in report.rows:
            if args.verbose or not ok:
                print(f"  {'ok ' if ok else 'BAD'} {what}: {diff:.3g}")
        failed += not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
