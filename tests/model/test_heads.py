"""Geometry encoder, Prompt and segmentation head: state-dict layout, parity, behaviour.

``data/heads_parity.pt`` holds inputs and outputs of the official modules (tiny parity weights), made
with the official code; the image features of the grounding cases come from ``cases.pt``.
"""

from pathlib import Path

import pytest
import torch

from sam3video.model.encoder import TransformerEncoderLayer
from sam3video.model.model_misc import MultiheadAttention
from sam3video.model.position_encoding import PositionEmbeddingSine
from sam3video.model.geometry_encoders import Prompt, SequenceGeometryEncoder, concat_padded_sequences
from sam3video.model.segmentation import PixelDecoder, UniversalSegmentationHead
from tests.conftest import official_image_rows

DATA = Path(__file__).resolve().parents[1] / "data"
PARITY = DATA / "parity"
HEADS = Path(__file__).resolve().parent / "data" / "heads_parity.pt"
TINY = dict(d=64, heads=4, ffn=128, geo_layers=1)
FULL = dict(d=256, heads=8, ffn=2048, geo_layers=3)


def build_geometry_encoder(d, heads, ffn, geo_layers, encode_boxes_as_points=False):
    def mha(dropout):
        return MultiheadAttention(d, heads, dropout=dropout)

    layer = TransformerEncoderLayer(
        activation="relu", d_model=d, dim_feedforward=ffn, dropout=0.1, pos_enc_at_attn=False, pre_norm=True,
        self_attention=mha(0.1), pos_enc_at_cross_attn_queries=False, pos_enc_at_cross_attn_keys=True,
        cross_attention=mha(0.1),
    )
    return SequenceGeometryEncoder(
        pos_enc=PositionEmbeddingSine(num_pos_feats=d, normalize=True, scale=None, temperature=10000),
        encode_boxes_as_points=encode_boxes_as_points, points_direct_project=True, points_pool=True,
        points_pos_enc=True, boxes_direct_project=True, boxes_pool=True, boxes_pos_enc=True, d_model=d,
        num_layers=geo_layers, layer=layer, use_act_ckpt=True, add_cls=True, add_post_encode_proj=True,
    )


def build_segmentation_head(d, heads, **_):
    return UniversalSegmentationHead(
        hidden_dim=d, upsampling_stages=3, aux_masks=False, presence_head=False, dot_product_scorer=None,
        act_ckpt=True, cross_attend_prompt=MultiheadAttention(d, heads, dropout=0.0),
        pixel_decoder=PixelDecoder(num_upsampling_stages=3, interpolation_mode="nearest", hidden_dim=d,
                                   compile_mode=None),
    )


def tsv_rows(lines, prefix):
    rows = {}
    for line in lines:
        name, shape = line.split("\t")[:2]
        if name.startswith(prefix):
            rows[name[len(prefix):]] = [] if shape == "scalar" else [int(s) for s in shape.split("x")]
    return rows


def parity_lines():
    return (PARITY / "state_dict_keys.tsv").read_text().splitlines()


def official_lines():
    return ["\t".join(row) for row in official_image_rows()]


@pytest.fixture(scope="module")
def weights():
    sd = torch.load(PARITY / "state_dict.pt", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def sub(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def geo(weights):
    model = build_geometry_encoder(**TINY).eval()
    model.load_state_dict(sub(weights, "geometry_encoder."), strict=True)
    return model


@pytest.fixture(scope="module")
def seg(weights):
    model = build_segmentation_head(**TINY).eval()
    model.load_state_dict(sub(weights, "segmentation_head."), strict=True)
    return model


@pytest.fixture(scope="module")
def image():
    cases = torch.load(PARITY / "cases.pt", weights_only=False)
    return cases["image"]


def seq_first(t):
    return t.flatten(2).permute(2, 0, 1)


@pytest.mark.parametrize("prefix, build", [("geometry_encoder.", build_geometry_encoder),
                                           ("segmentation_head.", build_segmentation_head)])
@pytest.mark.parametrize("size, lines", [(TINY, parity_lines), (FULL, official_lines)])
def test_state_dict_layout(prefix, build, size, lines):
    with torch.device("meta"):
        model = build(**size)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = tsv_rows(lines(), prefix)
    assert expected
    assert list(ours) == list(expected)
    assert ours == expected


def test_geometry_encoder_parity(geo, image):
    fx = torch.load(HEADS, weights_only=True)["geo"]
    feats, pos = seq_first(image["backbone_fpn"][-1]), seq_first(image["vision_pos_enc"][-1])
    for name, case in fx.items():
        prompt = Prompt(**case["prompt"])
        f, p = case.get("feats", feats), case.get("pos", pos)
        with torch.no_grad():
            embeds, mask = geo(geo_prompt=prompt, img_feats=[f], img_sizes=[(16, 16)], img_pos_embeds=[p])
        assert torch.equal(mask, case["mask"]), name
        torch.testing.assert_close(embeds, case["embeds"], atol=1e-5, rtol=0, msg=name)


def test_segmentation_head_parity(seg, image):
    case = torch.load(HEADS, weights_only=True)["seg"]["b1"]
    with torch.no_grad():
        out = seg(backbone_feats=image["backbone_fpn"], obj_queries=case["q"], image_ids=case["ids"],
                  encoder_hidden_states=case["enc"], prompt=case["prompt"], prompt_mask=case["prompt_mask"])
    assert set(out) == {"pred_masks", "semantic_seg", "presence_logit"}
    assert out["presence_logit"] is None
    assert out["pred_masks"].shape == (1, 16, 64, 64)
    torch.testing.assert_close(out["pred_masks"][:, :2], case["pred_masks"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out["semantic_seg"], case["semantic_seg"], atol=1e-4, rtol=0)


def test_segmentation_head_batches(seg, image):
    """Two prompts on one image (broadcast) equal each prompt alone; aux masks give all layers."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, 16, 64, generator=g)
    enc, prompt = torch.randn(256, 2, 64, generator=g), torch.randn(5, 2, 64, generator=g)
    mask = torch.tensor([[False, False, False, True, True], [False] * 5])
    with torch.no_grad():
        both = seg(image["backbone_fpn"], q, torch.tensor([0, 0]), enc, prompt=prompt, prompt_mask=mask)
        second = seg(image["backbone_fpn"], q[:, 1:], torch.tensor([0]), enc[:, 1:], prompt=prompt[:, 1:],
                     prompt_mask=mask[1:])
        first = seg(image["backbone_fpn"], q[:, :1], torch.tensor([0]), enc[:, :1], prompt=prompt[:3, :1],
                    prompt_mask=mask[:1, :3])
    assert both["pred_masks"].shape == (2, 16, 64, 64) and both["semantic_seg"].shape == (2, 1, 64, 64)
    torch.testing.assert_close(both["pred_masks"][1:], second["pred_masks"], atol=1e-4, rtol=0)
    torch.testing.assert_close(both["pred_masks"][:1], first["pred_masks"], atol=1e-4, rtol=0)
    seg.aux_masks = True
    try:
        with torch.no_grad():
            aux = seg(image["backbone_fpn"], q, torch.tensor([0, 0]), enc, prompt=prompt, prompt_mask=mask)
    finally:
        seg.aux_masks = False
    assert aux["pred_masks"].shape == (2, 2, 16, 64, 64)
    torch.testing.assert_close(aux["pred_masks"][-1], both["pred_masks"])


def test_empty_prompt_gives_cls_only(geo, image):
    feats = seq_first(image["backbone_fpn"][-1])
    prompt = Prompt(box_embeddings=torch.zeros(0, 1, 4), box_mask=torch.zeros(1, 0, dtype=torch.bool))
    assert prompt.point_embeddings.shape == (0, 1, 2) and prompt.box_labels.shape == (0, 1)
    with torch.no_grad():
        embeds, mask = geo(prompt, [feats], [(16, 16)])
    assert embeds.shape == (1, 1, 64) and mask.tolist() == [[False]]
    assert torch.isfinite(embeds).all()


def test_padded_boxes_match_unpadded(geo):
    """A padded batch row encodes its valid boxes (and CLS) exactly like the same row alone."""
    g = torch.Generator().manual_seed(1)
    feats, pos = torch.randn(256, 2, 64, generator=g), torch.randn(256, 2, 64, generator=g)
    boxes = torch.rand(3, 2, 4, generator=g) * 0.4 + 0.3
    labels = torch.tensor([[1, 0], [0, 1], [1, 1]])
    box_mask = torch.tensor([[False] * 3, [False, True, True]])
    prompt = Prompt(box_embeddings=boxes, box_mask=box_mask, box_labels=labels)
    alone = Prompt(box_embeddings=boxes[:1, 1:], box_labels=labels[:1, 1:])
    with torch.no_grad():
        embeds, mask = geo(prompt, [feats], [(16, 16)], [pos])
        ref, ref_mask = geo(alone, [feats[:, 1:]], [(16, 16)], [pos[:, 1:]])
    assert mask.tolist() == [[False] * 4, [False, False, True, True]]
    assert ref_mask.tolist() == [[False, False]]
    torch.testing.assert_close(embeds[:2, 1:], ref, atol=1e-5, rtol=0)


def test_boxes_as_points_shapes():
    model = build_geometry_encoder(**TINY, encode_boxes_as_points=True).eval()
    assert model.label_embed.num_embeddings == 6 and model.boxes_pool_project is None
    prompt = Prompt(box_embeddings=torch.rand(2, 1, 4) * 0.5 + 0.2, point_embeddings=torch.rand(1, 1, 2))
    with torch.no_grad():
        embeds, mask = model(prompt, [torch.randn(256, 1, 64)], [(16, 16)])
    assert embeds.shape == (1 + 2 * 2 + 1, 1, 64) and not mask.any()


def test_prompt_append_and_concat():
    prompt = Prompt(box_embeddings=torch.zeros(0, 1, 4), box_mask=torch.zeros(1, 0, dtype=torch.bool))
    prompt.append_boxes(torch.tensor([[[0.5, 0.5, 0.2, 0.2]]]), torch.tensor([[True]]))
    prompt.append_boxes(torch.tensor([[[0.3, 0.3, 0.1, 0.1]]]), torch.tensor([[False]]))
    assert prompt.box_embeddings.shape == (2, 1, 4) and prompt.box_mask.tolist() == [[False, False]]
    # As officially, labels take the dtype of the appended labels.
    assert prompt.box_labels.dtype == torch.bool and prompt.box_labels[:, 0].tolist() == [True, False]
    copy = prompt.clone()
    assert torch.equal(copy.box_embeddings, prompt.box_embeddings)
    assert copy.box_embeddings is not prompt.box_embeddings

    seq1, mask1 = torch.tensor([[[1.0], [2.0]], [[9.0], [3.0]]]), torch.tensor([[False, True], [False, False]])
    seq2, mask2 = torch.tensor([[[4.0], [5.0]]]), torch.tensor([[False], [True]])
    seq, mask, index = concat_padded_sequences(seq1, mask1, seq2, mask2, return_index=True)
    assert seq[:, :, 0].T.tolist() == [[1.0, 4.0, 0.0], [2.0, 3.0, 5.0]]
    assert mask.tolist() == [[False, False, True], [False, False, True]]
    assert index.tolist() == [[1, 2]]
    with pytest.raises(RuntimeError):
        concat_padded_sequences(seq1, torch.tensor([[True, False], [False, False]]), seq2, mask2)
