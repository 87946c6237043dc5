"""Fusion encoder, DETR decoder and dot-product scoring against the official tiny model.

``tests/data/transformer_golden.pt`` holds fixed random inputs (2 images of 8x8 tokens, d = 64, 8 prompt
tokens with padding) and what the official modules (``sam3`` 0.1.4, built as in the parity fixture's
``build()``, weights from ``parity/state_dict.pt``) return for them: eval mode, eval with an image
padding mask, training mode with DAC and dropout 0 (with a few gradients of a fixed weighted sum of the
outputs), and the geometry encoder's layer (sequence-first attention).
"""

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from sam3video.model.decoder import TransformerDecoder, TransformerDecoderLayer, gen_sineembed_for_position
from sam3video.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer, TransformerWrapper
from sam3video.model.model_misc import MLP, MultiheadAttention
from sam3video.model.scoring import DotProductScoring
from tests.conftest import official_image_rows

DATA = Path(__file__).resolve().parents[1] / "data"
PARITY = DATA / "parity"
FULL = dict(d_model=256, heads=8, ffn=2048, enc_layers=6, dec_layers=6, num_queries=200, scoring_hidden=2048,
            resolution=1008, patch_size=14)
ATOL = 1e-4


def build(c):
    """(transformer, scoring, geometry-encoder layer) exactly as the official builder constructs them."""
    d = c["d_model"]

    def mha(batch_first=False):
        return MultiheadAttention(embed_dim=d, num_heads=c["heads"], dropout=0.1, batch_first=batch_first)

    enc_layer = TransformerEncoderLayer(
        activation="relu", d_model=d, dim_feedforward=c["ffn"], dropout=0.1, pos_enc_at_attn=True,
        pos_enc_at_cross_attn_keys=False, pos_enc_at_cross_attn_queries=False, pre_norm=True,
        self_attention=mha(batch_first=True), cross_attention=mha(batch_first=True),
    )
    encoder = TransformerEncoderFusion(
        layer=enc_layer, num_layers=c["enc_layers"], d_model=d, num_feature_levels=1, frozen=False,
        use_act_checkpoint=True, add_pooled_text_to_img_feat=False, pool_text_with_mask=True,
    )
    dec_layer = TransformerDecoderLayer(
        activation="relu", d_model=d, dim_feedforward=c["ffn"], dropout=0.1, cross_attention=mha(),
        n_heads=c["heads"], use_text_cross_attention=True,
    )
    decoder = TransformerDecoder(
        layer=dec_layer, num_layers=c["dec_layers"], num_queries=c["num_queries"], return_intermediate=True,
        box_refine=True, num_o2m_queries=0, dac=True, boxRPB="log", d_model=d, frozen=False,
        interaction_layer=None, dac_use_selfatt_ln=True, resolution=c["resolution"], stride=c["patch_size"],
        use_act_checkpoint=True, presence_token=True,
    )
    transformer = TransformerWrapper(encoder=encoder, decoder=decoder, d_model=d)
    scoring = DotProductScoring(
        d_model=d, d_proj=d,
        prompt_mlp=MLP(input_dim=d, hidden_dim=c["scoring_hidden"], output_dim=d, num_layers=2, dropout=0.1,
                       residual=True, out_norm=nn.LayerNorm(d)),
    )
    geo_layer = TransformerEncoderLayer(
        activation="relu", d_model=d, dim_feedforward=c["ffn"], dropout=0.1, pos_enc_at_attn=False,
        pre_norm=True, self_attention=mha(), pos_enc_at_cross_attn_queries=False,
        pos_enc_at_cross_attn_keys=True, cross_attention=mha(),
    )
    return transformer, scoring, geo_layer


def rows_of(module, prefix):
    return [(prefix + k, "x".join(map(str, v.shape)) or "scalar", str(v.dtype).replace("torch.", ""))
            for k, v in module.state_dict().items()]


def reference_rows(path, prefix):
    return [tuple(line.split("\t")) for line in path.read_text().splitlines() if line.startswith(prefix)]


def sub_dict(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def weights():
    sd = torch.load(PARITY / "state_dict.pt", weights_only=True)
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in sd.items()}


@pytest.fixture(scope="module")
def tiny_config():
    return json.loads((PARITY / "config.json").read_text())


@pytest.fixture()
def tiny(tiny_config, weights):
    transformer, scoring, geo_layer = build(tiny_config)
    transformer.load_state_dict(sub_dict(weights, "transformer."), strict=True)
    scoring.load_state_dict(sub_dict(weights, "dot_prod_scoring."), strict=True)
    geo_layer.load_state_dict(sub_dict(weights, "geometry_encoder.encode.0."), strict=True)
    return transformer.eval(), scoring.eval(), geo_layer.eval()


@pytest.fixture(scope="module")
def golden():
    return torch.load(DATA / "transformer_golden.pt", weights_only=True)


def run(transformer, scoring, inp, apply_dac, use_img_mask=False):
    """Encoder -> decoder -> scoring, called the way the official Sam3Image calls them."""
    hw, bs, _ = inp["img"].shape
    side = int(hw**0.5)
    prompt, mask = inp["prompt"], inp["prompt_mask"]
    enc = transformer.encoder(
        src=[inp["img"]], src_key_padding_mask=[inp["img_mask"]] if use_img_mask else None,
        src_pos=[inp["img_pos"]], prompt=prompt, prompt_pos=torch.zeros_like(prompt),
        prompt_key_padding_mask=mask, feat_sizes=[(side, side)],
    )
    tgt = transformer.decoder.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
    hs, ref, pres, pfeat = transformer.decoder(
        tgt=tgt, memory=enc["memory"], memory_key_padding_mask=enc["padding_mask"], pos=enc["pos_embed"],
        reference_boxes=None, level_start_index=enc["level_start_index"],
        spatial_shapes=enc["spatial_shapes"], valid_ratios=enc["valid_ratios"], tgt_mask=None,
        memory_text=prompt, text_attention_mask=mask, apply_dac=apply_dac,
    )
    scores = scoring(hs.transpose(1, 2), prompt, mask)
    out = {"enc_" + k: v for k, v in enc.items() if torch.is_tensor(v)}
    out.update(hs=hs, ref=ref, pres=pres, pfeat=pfeat, scores=scores)
    return out


def assert_close(mine, expected):
    for k, v in expected.items():
        assert mine[k].shape == v.shape, k
        if v.dtype == torch.bool:
            assert torch.equal(mine[k], v), k
        else:
            torch.testing.assert_close(mine[k].detach(), v, atol=ATOL, rtol=0, msg=k)


def test_tiny_keys_match_official(tiny_config):
    transformer, scoring, _ = build(tiny_config)
    for prefix, module in (("transformer.", transformer), ("dot_prod_scoring.", scoring)):
        assert rows_of(module, prefix) == reference_rows(PARITY / "state_dict_keys.tsv", prefix)


def test_full_keys_match_official():
    with torch.device("meta"):
        transformer, scoring, _ = build(FULL)
    for prefix, module in (("transformer.", transformer), ("dot_prod_scoring.", scoring)):
        assert rows_of(module, prefix) == [(prefix + n, s, d) for n, s, d in official_image_rows(prefix)]


@pytest.mark.parametrize("case,use_img_mask", [("eval", False), ("eval_mask", True)])
def test_eval_parity(tiny, golden, case, use_img_mask):
    transformer, scoring, _ = tiny
    with torch.no_grad():
        out = run(transformer, scoring, golden["inputs"], apply_dac=False, use_img_mask=use_img_mask)
    assert_close(out, golden[case])


def test_geometry_layer_parity(tiny, golden):
    inp = golden["inputs"]
    with torch.no_grad():
        out = tiny[2](
            tgt=inp["geo_tgt"], memory=inp["img"], tgt_key_padding_mask=inp["geo_mask"], pos=inp["img_pos"]
        )
    assert_close({"out": out}, golden["geo"])


def as_float64(tree):
    """Floating tensors of a (nested) dict to float64; others unchanged."""
    if isinstance(tree, dict):
        return {k: as_float64(v) for k, v in tree.items()}
    return tree.double() if torch.is_tensor(tree) and tree.is_floating_point() else tree


def test_train_dac_parity_and_gradients(tiny, golden):
    """In float64: the gradient of a LayerNorm weight sums many terms that cancel, and float32 kernels on
    some CPUs (Intel AMX machines) lose it (0.084 off, 0.9 % of its largest entry); float64 holds it to
    ~4e-6 of the official float32 values on any CPU, so the tolerances are unchanged."""
    transformer, scoring, _ = tiny
    for module in (transformer, scoring):
        module.double().train()
        for m in module.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
            if isinstance(m, nn.MultiheadAttention):
                m.dropout = 0.0
    out = run(transformer, scoring, as_float64(golden["inputs"]), apply_dac=True)
    assert all(out[k].dtype == torch.float64 for k in ("enc_memory", "hs", "ref", "pres", "scores"))
    assert_close(out, as_float64(golden["train_dac"]))
    sum((out[k] * w).sum() for k, w in as_float64(golden["loss_weights"]).items()).backward()
    params = dict(transformer.named_parameters(prefix="transformer"))
    params.update(scoring.named_parameters(prefix="dot_prod_scoring"))
    for name, grad in golden["grads"].items():
        torch.testing.assert_close(params[name].grad, grad.double(), atol=1e-4, rtol=1e-5, msg=name)


def test_dac_shapes_and_o2o_half_unchanged(tiny, golden):
    """With DAC the queries are doubled; the o2o half equals the plain run (o2m only adds queries)."""
    transformer, scoring, _ = tiny
    layers, q, d = transformer.decoder.num_layers, transformer.decoder.num_queries, transformer.d_model
    bs = golden["inputs"]["img"].shape[1]
    with torch.no_grad():
        plain = run(transformer, scoring, golden["inputs"], apply_dac=False)
        dac = run(transformer, scoring, golden["inputs"], apply_dac=True)
    assert plain["hs"].shape == (layers, q, bs, d) and dac["hs"].shape == (layers, 2 * q, bs, d)
    assert dac["ref"].shape == (layers, 2 * q, bs, 4) and dac["scores"].shape == (layers, bs, 2 * q, 1)
    assert dac["pres"].shape == (layers, 1, bs) and dac["pfeat"].shape == (1, bs, d)
    torch.testing.assert_close(dac["hs"][:, :q], plain["hs"], atol=1e-5, rtol=0)
    torch.testing.assert_close(dac["ref"][:, :q], plain["ref"], atol=1e-5, rtol=0)
    torch.testing.assert_close(dac["pres"], plain["pres"], atol=1e-5, rtol=0)


def test_sine_embedding_layout():
    """Points embed as (y, x), boxes as (y, x, w, h), each half sin / half cos interleaved."""
    boxes = torch.rand(3, 2, 4)
    emb = gen_sineembed_for_position(boxes, 64)
    assert emb.shape == (3, 2, 128)
    torch.testing.assert_close(gen_sineembed_for_position(boxes[..., :2], 64), emb[..., :64])
    # the first channel of each block is sin(2 pi c) with the lowest frequency (dim_t = 1)
    torch.testing.assert_close(emb[..., 0], torch.sin(2 * torch.pi * boxes[..., 1]))
    torch.testing.assert_close(emb[..., 32], torch.sin(2 * torch.pi * boxes[..., 0]))
