"""SAM 3 text side: CLIP tokenizer ids and the text encoder against the official tiny model's outputs."""

from pathlib import Path

import pytest
import torch

from sam3video.model.text_encoder import VETextEncoder
from sam3video.model.tokenizer import SimpleTokenizer
from tests.conftest import official_image_rows

DATA = Path(__file__).resolve().parents[1] / "data" / "parity"
PREFIX = "backbone.language_backbone."
SOT, EOT = 49406, 49407


def read_tsv(path: Path, prefix: str) -> dict[str, tuple[list[int], str]]:
    rows = {}
    for line in path.read_text().splitlines():
        name, shape, dtype = line.split("\t")
        if name.startswith(prefix):
            rows[name[len(prefix):]] = ([int(s) for s in shape.split("x")] if shape else [], dtype)
    return rows


@pytest.fixture(scope="module")
def tokenizer():
    return SimpleTokenizer(context_length=32)


@pytest.fixture(scope="module")
def cases():
    return torch.load(DATA / "cases.pt", weights_only=False)


@pytest.fixture(scope="module")
def tiny_encoder(tokenizer):
    sd = torch.load(DATA / "state_dict.pt", weights_only=True)
    sub = {k[len(PREFIX):]: v.float() for k, v in sd.items() if k.startswith(PREFIX)}
    model = VETextEncoder(d_model=64, tokenizer=tokenizer, width=64, heads=4, layers=2, context_length=32)
    model.load_state_dict(sub, strict=True)
    return model.eval()


def test_tokenizer_matches_official_ids(tokenizer, cases):
    case = cases["tokenizer"]
    ids = tokenizer(case["strings"], context_length=32)
    assert ids.dtype == torch.long
    assert torch.equal(ids, case["ids"])


# Ids computed by the official tokenizer: curly quotes, HTML entities, full-width letters, ligatures,
# mojibake (fixed by ftfy), unusual whitespace, special tokens inside the text.
OFFICIAL_EXTRA = {
    "A  Red circle!!": [320, 736, 7117, 748],
    "café crème brûlée 猫 ½ ²": [15304, 1075, 12138, 614, 711, 127, 119, 75, 13489, 163, 234, 360, 33613, 41175],
    "don’t “quoted” &amp; html &lt;b&gt;": [847, 713, 257, 27706, 257, 261, 18231, 283, 321, 285],
    "<start_of_text> tags <end_of_text> x": [SOT, 11606, EOT, 343],
    "ＦＵＬＬ width ﬁ ligature": [1476, 23571, 3589, 19915, 4490],
    "cafÃ© mojibake": [15304, 617, 3252, 11878],
    "tab\there\nnew\x1cline\xa0nbsp": [14724, 763, 1218, 1148, 6459, 4393],
}


@pytest.mark.parametrize("text", list(OFFICIAL_EXTRA))
def test_tokenizer_awkward_inputs(tokenizer, text):
    expected = OFFICIAL_EXTRA[text]
    assert tokenizer.encode(text) == expected
    row = tokenizer(text)[0]
    n = len(expected) + 2
    assert row[:n].tolist() == [SOT, *expected, EOT]
    assert not row[n:].any()


def test_tokenizer_empty_and_shapes(tokenizer):
    assert tokenizer.encode("") == [] and tokenizer.count_tokens("   ") == 2
    ids = tokenizer(["", "dog"], context_length=8)
    assert ids.tolist() == [[SOT, EOT, 0, 0, 0, 0, 0, 0], [SOT, 1929, EOT, 0, 0, 0, 0, 0]]
    assert tokenizer("dog").shape == (1, 32)
    vocab = Path(__file__).resolve().parents[2] / "sam3video" / "assets" / "bpe_simple_vocab_16e6.txt.gz"
    assert SimpleTokenizer(bpe_path=str(vocab))("dog").shape == (1, 77)
    assert tokenizer.decode(tokenizer.encode("A Red  Circle")) == "a red circle "


def test_tokenizer_truncation(tokenizer):
    text = "a very long prompt " * 10
    assert tokenizer.count_tokens(text) == 42 > 32
    row = tokenizer(text)[0]
    full = [SOT, *tokenizer.encode(text), EOT]
    assert row.tolist() == full[:31] + [EOT]
    exact = "word " * 30  # 30 words + start + end = 32: fits without truncation
    assert tokenizer.count_tokens(exact) == 32
    assert tokenizer(exact)[0].tolist() == [SOT] + [2653] * 30 + [EOT]


def test_text_encoder_matches_official(tiny_encoder, cases):
    case = cases["text"]
    with torch.no_grad():
        mask, features, embeds = tiny_encoder(case["captions"], device="cpu")
    assert mask.dtype == torch.bool and torch.equal(mask, case["language_mask"])
    assert features.shape == (32, 3, 64)
    torch.testing.assert_close(features, case["language_features"], rtol=0, atol=1e-4)
    torch.testing.assert_close(embeds, case["language_embeds"], rtol=0, atol=1e-4)


def test_text_encoder_passes_pre_encoded_text(tiny_encoder):
    mask = torch.zeros(2, 32, dtype=torch.bool)
    memory = torch.randn(32, 2, 64)
    embeds = torch.randn(2, 32, 64)
    out = tiny_encoder((mask, memory, {"inputs_embeds": embeds}))
    assert out[0] is mask and out[1] is memory and torch.equal(out[2], embeds.transpose(0, 1))


def test_text_encoder_tiny_state_dict_keys(tiny_encoder):
    expected = read_tsv(DATA / "state_dict_keys.tsv", PREFIX)
    got = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in tiny_encoder.state_dict().items()}
    assert got == expected


def test_text_encoder_full_size_on_meta():
    with torch.device("meta"):
        model = VETextEncoder(d_model=256, tokenizer=None, width=1024, heads=16, layers=24, context_length=32)
    got = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    expected = {name: ([int(s) for s in shape.split("x")] if shape != "scalar" else [], dtype)
                for name, shape, dtype in official_image_rows(PREFIX)}
    assert expected and got == expected
