"""sam3video against HF transformers' SAM 3 on the same weights: where the two implementations differ.

    .venv/bin/python tools/compare_transformers.py          # about 30 s on 2 cores; needs the dev extra

1. The detector on the official tiny parity weights (tests/data/parity, random values in the official layout),
   mapped into transformers' ``Sam3Model`` (``hf_layout.to_hf_state_dict``, loaded strictly), on the parity
   image and prompts: max |difference| of logits, presence, boxes and masks, with a text prompt as transformers
   runs it (no geometry encoder) and with the padding box (label -10) that makes it run the geometry encoder
   and its CLS token, as the official model always does.
2. The tracker's modules (memory encoder, memory attention, SAM prompt encoder, mask decoder) on a small
   model with seeded random weights (transformers fixes the memory width at 64, which the tiny config is not).
3. Video post-processing on this machine: transformers' mask NMS, hole filling and sprinkle removal need the
   ``kernels-community/cv-utils`` kernel (the optional ``kernels`` package, downloaded from the hub at run time);
   whether it loads here, i.e. whether transformers' CPU video output has them.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def detector_rows() -> list[tuple[str, str, float]]:
    import transformers

    from sam3video.model.build_video import load_video_config
    from sam3video.model.checkpoint import load_model
    from sam3video.model.hf_layout import HF_DETECTOR, hf_config, to_hf_state_dict
    from sam3video.model.sam3_image import FindStage

    parity = ROOT / "tests" / "data" / "parity"
    config = json.loads((parity / "config.json").read_text())
    ours = load_model(parity / "state_dict.pt", config, "cpu")
    video = load_video_config({**config, "tracker": {"mem_dim": 64}})
    hf = transformers.Sam3Model(hf_config(video).detector_config).eval()
    state = {"detector." + k: v for k, v in ours.state_dict().items()}
    hf.load_state_dict({k.removeprefix(HF_DETECTOR): v for k, v in to_hf_state_dict(state).items()
                        if k.startswith(HF_DETECTOR)}, strict=True)
    cases = torch.load(parity / "cases.pt", weights_only=False)
    image = cases["image"]["input"]
    rows = []
    for name in ("grounding_text",):
        prompt = cases[name]["prompt"]
        ids = ours.backbone.language_backbone.tokenizer([prompt], context_length=config["context_length"])
        with torch.inference_mode():
            out = ours.backbone.forward_image(image)
            out.update(ours.backbone.forward_text([prompt], device="cpu"))
            mine = ours.forward_grounding(backbone_out=out, find_input=FindStage(img_ids=torch.tensor([0]),
                                          text_ids=torch.tensor([0])), geometric_prompt=ours._get_dummy_prompt())
            runs = {"text only, as transformers runs it": hf(pixel_values=image, input_ids=ids,
                                                               attention_mask=(ids != 0).long()),
                    "text + padding box (label -10)": hf(pixel_values=image, input_ids=ids,
                                                         attention_mask=(ids != 0).long(),
                                                         input_boxes=torch.zeros(1, 1, 4),
                                                         input_boxes_labels=torch.full((1, 1), -10))}
        for label, theirs in runs.items():
            for field, a, b in (("logits", mine["pred_logits"], theirs.pred_logits),
                                ("presence", mine["presence_logit_dec"], theirs.presence_logits),
                                ("boxes", mine["pred_boxes_xyxy"], theirs.pred_boxes),
                                ("masks", mine["pred_masks"], theirs.pred_masks)):
                rows.append((f"detector, {label}", field, (a.reshape(b.shape) - b).abs().max().item()))
    return rows


def tracker_rows() -> list[tuple[str, str, float]]:
    import tempfile

    import transformers

    from sam3video.model.build_video import build_video_model, load_video_config
    from sam3video.model.hf_layout import hf_config, to_hf_state_dict
    from sam3video.model.video_checkpoint import load_video_model

    config = tomllib.loads((resources.files("sam3video") / "configs" / "tiny.toml").read_text())
    config["d_model"], config["tracker"]["mem_dim"] = 128, 64
    video = load_video_config(config)
    torch.manual_seed(0)
    state = {k: torch.randn_like(v) * 0.3 if v.is_floating_point() else v
             for k, v in build_video_model(video).state_dict().items()}
    hf = transformers.Sam3VideoModel(hf_config(video)).eval()
    hf.load_state_dict(to_hf_state_dict(state), strict=True)
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = load_video_model(Path(folder) / "model.safetensors", config, "cpu").tracker
    theirs = hf.tracker_model
    torch.manual_seed(4)
    rows = []
    with torch.inference_mode():
        pix, masks = torch.randn(2, 128, 16, 16), torch.randn(2, 1, 256, 256) * 10
        a = ours.maskmem_backbone(pix, masks, skip_mask_sigmoid=True)["vision_features"]
        rows.append(("tracker", "memory encoder", (a - theirs.memory_encoder(pix, masks)[0]).abs().max().item()))
        src, pos = torch.randn(256, 2, 128), torch.randn(256, 2, 128)
        mem, mem_pos = torch.randn(516, 2, 64), torch.randn(516, 2, 64)
        a = ours.transformer.encoder(src=src, prompt=mem, src_pos=pos, prompt_pos=mem_pos, num_obj_ptr_tokens=4)["memory"]
        b = theirs.memory_attention(src, mem, pos, mem_pos, num_object_pointer_tokens=4)[0].transpose(0, 1)
        rows.append(("tracker", "memory attention", (a - b).abs().max().item()))
        coords, labels = torch.tensor([[[60.0, 100.0], [150.0, 40.0]]]), torch.tensor([[1, 0]])
        sparse, dense = ours.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        hs, hd = theirs.prompt_encoder(input_points=coords[:, None], input_labels=labels[:, None], input_boxes=None,
                                       input_masks=None)
        rows.append(("tracker", "SAM prompt encoder", (sparse - hs.reshape(sparse.shape)).abs().max().item()))
        emb, pe = torch.randn(1, 128, 16, 16), ours.sam_prompt_encoder.get_dense_pe()
        levels = [torch.randn(1, 128, 64, 64), torch.randn(1, 128, 32, 32)]
        dec = ours.sam_mask_decoder
        m1 = dec(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                 multimask_output=True, repeat_image=False, high_res_features=[dec.conv_s0(levels[0]),
                                                                               dec.conv_s1(levels[1])])[0]
        m2 = theirs.mask_decoder(image_embeddings=emb, image_positional_embeddings=pe, sparse_prompt_embeddings=hs,
                                 dense_prompt_embeddings=hd, multimask_output=True,
                                 high_resolution_features=[theirs.mask_decoder.conv_s0(levels[0]),
                                                           theirs.mask_decoder.conv_s1(levels[1])])[0]
        rows.append(("tracker", "SAM mask decoder (3 masks)", (m1 - m2.reshape(m1.shape)).abs().max().item()))
    return rows


def post_processing_row() -> str:
    import warnings

    from transformers.models.sam3_video import modeling_sam3_video as video

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel = video._load_cv_utils_kernel_once() if hasattr(video, "_load_cv_utils_kernel_once") else None
    loaded = kernel not in (None, False)
    return ("video post-processing (mask NMS, hole filling, sprinkle removal): "
            + ("runs (cv-utils kernel loaded)" if loaded else
               "SKIPPED by transformers here (the cv-utils kernel cannot be loaded: `kernels` not installed, offline, "
               "or no CUDA); sam3video runs them on every device"))


def main() -> None:
    import platform

    import transformers
    from tabulate import tabulate

    rows = detector_rows() + tracker_rows()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(tabulate([(what, field, f"{diff:.1e}") for what, field, diff in rows],
                   headers=["", "output", "max |sam3video - transformers|"]))
    print(post_processing_row())


if __name__ == "__main__":
    main()
