"""The builder: configs as data, and the full-size model's exact official tensor layout."""

import json

import pytest
import torch

from sam3video import Sam3Config, build_model, load_config
from sam3video.errors import ConfigError
from tests.conftest import PARITY, official_image_rows


def read_tsv(path):
    rows = {}
    for line in path.read_text().splitlines():
        name, shape, dtype = line.split("\t")
        rows[name] = (shape, dtype)
    return rows


def layout(model):
    return {
        name: ("x".join(map(str, t.shape)) or "scalar", str(t.dtype).replace("torch.", ""))
        for name, t in model.state_dict().items()
    }


def test_full_model_matches_official_state_dict_layout():
    expected = {name: (shape, dtype) for name, shape, dtype in official_image_rows()}
    with torch.device("meta"):
        model = build_model("sam3")
    got = layout(model)
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    mismatched = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert mismatched == {}
    assert len(got) == 1134


def test_tiny_model_matches_parity_layout():
    expected = read_tsv(PARITY / "state_dict_keys.tsv")
    with torch.device("meta"):
        model = build_model(PARITY / "config.json")
    assert layout(model) == expected
    params = sum(p.numel() for p in model.parameters())
    assert params == json.loads((PARITY / "config.json").read_text())["parameters"]


def test_presets_and_files_give_the_same_config(tmp_path):
    tiny = load_config("tiny")
    from_json = load_config(PARITY / "config.json")
    assert tiny == from_json
    assert load_config(tiny.to_dict()) == tiny
    assert load_config("sam3") == Sam3Config()


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"vit_dim": 64, "vit_dimm": 3}))
    with pytest.raises(ConfigError, match="unknown config keys: vit_dimm"):
        load_config(path)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config not found: nope.toml"):
        load_config("nope.toml")
