"""The vision trunk in OpenVINO (sam3video.model.openvino_trunk, ``--runtime openvino``): same outputs as
torch in f32, close in bf16, converted once and read back from the cache, chosen by ``resolve_runtime``."""

import copy
import importlib.util

import numpy as np
import pytest
import torch

from sam3video.errors import InputError
from sam3video.model import precision as precision_module
from sam3video.model.openvino_trunk import (OpenVinoStage, compile_trunk, default_cache_dir, trunk_grid,
                                             trunk_stages)
from sam3video.model.precision import apply_precision, resolve_runtime
from sam3video.video.predictor import TrackingConfig, VideoPredictor

pytest.importorskip("openvino", reason="openvino is a dependency; this guards partial installs only")

FRAMES = np.random.default_rng(3).integers(0, 255, size=(2, 48, 64, 3), dtype=np.uint8)


def trunk_of(model):
    return model.backbone.vision_backbone.trunk


def trunk_tokens(model, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(5)
    return torch.randn(batch, 3, model.config.resolution, model.config.resolution)


def test_f32_trunk_equals_torch_with_a_dynamic_batch(tiny_model, tmp_path):
    reference = copy.deepcopy(tiny_model)
    model = copy.deepcopy(tiny_model)
    stages = trunk_stages(trunk_of(model))
    assert [list(s) for s in stages] == [[0, 1], [2, 3]]  # tiny: global blocks 1 and 3
    counts = compile_trunk(trunk_of(model), "fp32", tmp_path)
    assert counts == {"converted": 2, "cached": 0}
    assert [type(b).__name__ for b in trunk_of(model).blocks] == ["Identity", "OpenVinoStage"] * 2
    for batch in (1, 2):  # one graph for any batch
        images = trunk_tokens(model, batch)
        with torch.inference_mode():
            expected, got = trunk_of(reference)(images)[-1], trunk_of(model)(images)[-1]
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bf16_hint_stays_close_to_fp32(tiny_model, tmp_path):
    """bf16 on a CPU with bf16 units, f32 elsewhere (OpenVINO falls back): close to torch fp32 either way."""
    reference = copy.deepcopy(tiny_model)
    model = copy.deepcopy(tiny_model)
    compile_trunk(trunk_of(model), "bf16", tmp_path)
    images = trunk_tokens(model)
    with torch.inference_mode():
        expected, got = trunk_of(reference)(images)[-1], trunk_of(model)(images)[-1]
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


def test_int8_is_calibrated_once_and_stays_close_to_fp32(tiny_model, tmp_path):
    """Static int8 (NNCF, calibrated on the synthetic world's frames): close to fp32, its own cache
    entries beside the f32 IR it was made from, read back on the next load."""
    reference = copy.deepcopy(tiny_model)
    model = copy.deepcopy(tiny_model)
    stages = len(trunk_stages(trunk_of(model)))
    assert compile_trunk(trunk_of(model), "int8", tmp_path) == {"converted": stages, "cached": 0}
    names = [p.name for p in tmp_path.iterdir()]
    assert sum("-int8-" in name for name in names) == stages and len(names) == 2 * stages
    images = trunk_tokens(model)
    with torch.inference_mode():
        expected, got = trunk_of(reference)(images)[-1], trunk_of(model)(images)[-1]
    assert (got - expected).abs().max() < 0.1 * expected.abs().max()
    assert (got - expected).abs().max() > 0  # it is quantized, not the fp32 graph
    again = copy.deepcopy(tiny_model)
    assert compile_trunk(trunk_of(again), "int8", tmp_path) == {"converted": 0, "cached": stages}


def test_converted_blocks_are_read_back_from_the_cache_keyed_by_weights(tiny_model, tmp_path):
    first = copy.deepcopy(tiny_model)
    compile_trunk(trunk_of(first), "fp32", tmp_path)
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert len(entries) == len(trunk_stages(trunk_of(tiny_model)))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    again = copy.deepcopy(tiny_model)
    assert compile_trunk(trunk_of(again), "bf16", tmp_path) == {"converted": 0, "cached": len(entries)}
    changed = copy.deepcopy(tiny_model)
    with torch.no_grad():
        trunk_of(changed).blocks[3].mlp.fc1.weight.add_(1e-3)  # the second stage
    assert compile_trunk(trunk_of(changed), "fp32", tmp_path) == {"converted": 1, "cached": len(entries) - 1}


def test_a_stage_rebuilt_from_its_spec_is_the_same_stage(tiny_model, tmp_path):
    """What the conversion's own interpreter receives (JSON sizes + safetensors, no pickle) rebuilds each stage
    exactly: same weights and buffers, same outputs to the bit."""
    from sam3video.model.openvino_child import load_stage, save_stage

    trunk = trunk_of(tiny_model)
    grid = trunk_grid(trunk)
    for stage_blocks in trunk_stages(trunk):
        stage = torch.nn.Sequential(*[trunk.blocks[i] for i in stage_blocks])
        folder = tmp_path / f"stage{stage_blocks[0]}"
        folder.mkdir()
        save_stage(stage, grid, folder)
        assert not list(folder.glob("*.pkl")) and not list(folder.glob("*.pt"))
        rebuilt, rebuilt_grid = load_stage(folder)
        assert rebuilt_grid == tuple(grid)
        for (k, a), (k2, b) in zip(stage.state_dict().items(), rebuilt.state_dict().items(), strict=True):
            assert k == k2 and torch.equal(a, b), k
        x = torch.randn(2, *grid, trunk.blocks[0].norm1.normalized_shape[0])
        with torch.inference_mode():
            assert torch.equal(stage(x), rebuilt(x))


def test_stages_built_from_block_templates_equal_traced_stages(tiny_model, tmp_path):
    """Each stage's graph is copies of one traced block per kind with the other blocks' weights put in: the
    same outputs as the stage traced whole (two templates for the tiny trunk: a window and a global block),
    every weight found in the template's graph, nothing left of the stand-in values."""
    import openvino as ov

    from sam3video.model.openvino_trunk import BlockTemplate, convert_blocks, export_stages, template_key

    trunk = trunk_of(tiny_model)
    grid = trunk_grid(trunk)
    stages = [torch.nn.Sequential(*[copy.deepcopy(trunk.blocks[i]) for i in s]) for s in trunk_stages(trunk)]
    assert len({template_key(block) for stage in stages for block in stage}) == 2
    steps = []
    export_stages(stages, grid, [tmp_path / f"stage{i}" for i in range(len(stages))], steps.append)
    assert steps == ["template", "block", "template", "block", "save", "block", "block", "save"]
    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    x = torch.randn(2, *grid, trunk.blocks[0].norm1.normalized_shape[0])
    for i, stage in enumerate(stages):
        built = core.compile_model(core.read_model(tmp_path / f"stage{i}" / "stage.xml"), "CPU", f32)
        if i == 0:  # the same graph as tracing the stage (both stages are a window and a global block)
            traced = core.compile_model(convert_blocks(copy.deepcopy(stage), grid), "CPU", f32)
            np.testing.assert_allclose(built(x.numpy())[0], traced(x.numpy())[0], rtol=0, atol=1e-6)
        with torch.inference_mode():
            np.testing.assert_allclose(built(x.numpy())[0], stage(x).numpy(), rtol=1e-5, atol=1e-5)
            x = stage(x)
    template = BlockTemplate(stages[0][0], grid)
    assert sorted(template.weights.values()) == sorted(name for name, _ in stages[0][0].named_parameters())
    graph = template.instance(stages[0][0])
    stand_ins = {op.get_friendly_name(): op.get_data() for op in template.graph.get_ordered_ops()
                 if op.get_friendly_name() in template.weights}
    constants = [op.get_data() for op in graph.get_ordered_ops() if op.get_type_name() == "Constant"]
    assert not any(c.shape == v.shape and np.array_equal(c, v) for v in stand_ins.values() for c in constants)


def test_the_conversion_child_reports_its_steps(tiny_model, tmp_path, monkeypatch):
    """Converted in its own interpreter (the threshold set to 0), the stages report the same steps, relayed
    line by line from the child to the caller's progress callback."""
    from sam3video.model.openvino_trunk import CHILD_ENV, convert_stages

    monkeypatch.setenv(CHILD_ENV, "0")
    trunk = trunk_of(tiny_model)
    steps = []
    convert_stages([[trunk.blocks[i] for i in s] for s in trunk_stages(trunk)], trunk_grid(trunk),
                   [tmp_path / "a", tmp_path / "b"], steps.append)
    assert steps == ["template", "block", "template", "block", "save", "block", "block", "save"]
    assert (tmp_path / "b" / "stage.xml").exists()


def test_a_block_whose_weights_the_template_cannot_place_is_traced_whole(tiny_model, tmp_path, monkeypatch):
    """A weight folded by the converter (here: every constant's lookup made to miss) falls back to tracing
    the stage: the same outputs, the progress steps all reported."""
    from sam3video.model import openvino_trunk

    def unplaced(self, block, grid):
        raise openvino_trunk.UnplacedWeights("folded")

    monkeypatch.setattr(openvino_trunk.BlockTemplate, "__init__", unplaced)
    reference = copy.deepcopy(tiny_model)
    model = copy.deepcopy(tiny_model)
    compile_trunk(trunk_of(model), "fp32", tmp_path)
    images = trunk_tokens(model)
    with torch.inference_mode():
        torch.testing.assert_close(trunk_of(model)(images)[-1], trunk_of(reference)(images)[-1], rtol=1e-5, atol=1e-5)


def test_the_progress_bar_counts_down_what_each_kind_of_step_took_here():
    """Time left: the steps left at the mean time of their kind measured here; a kind not run yet at its
    STEP_SECONDS scaled by how the kinds run so far compare with theirs."""
    from sam3video.model.openvino_trunk import STEP_SECONDS, ConversionProgress

    progress = ConversionProgress({"template": 2, "block": 4, "quantize": 2, "compile": 1}, "test", show=False)
    before = 2 * STEP_SECONDS["template"] + 4 * STEP_SECONDS["block"] + 2 * STEP_SECONDS["quantize"] \
        + STEP_SECONDS["compile"]
    assert progress.remaining() == pytest.approx(before)
    progress.taken = {"template": [STEP_SECONDS["template"] / 2]}  # one template, twice as fast as the prior
    progress.left["template"] = 1
    expected = STEP_SECONDS["template"] / 2 + (before - 2 * STEP_SECONDS["template"]) / 2
    assert progress.remaining() == pytest.approx(expected)
    progress.taken["block"] = [3.0]  # a measured kind counts at its own mean
    progress.left["block"] = 3
    scale = (STEP_SECONDS["template"] / 2 + 3.0) / (STEP_SECONDS["template"] + STEP_SECONDS["block"])
    expected = STEP_SECONDS["template"] / 2 + 3 * 3.0 + (2 * STEP_SECONDS["quantize"] + STEP_SECONDS["compile"]) * scale
    assert progress.remaining() == pytest.approx(expected)
    progress("compile")
    assert progress.left["compile"] == 0
    progress.close()


UNGUARDED_SCRIPT = """
import numpy as np
import torch
from sam3video.model.build import build_model
from sam3video.video.predictor import TrackingConfig, VideoPredictor

torch.manual_seed(0)
model = build_model("tiny")
predictor = VideoPredictor(model, TrackingConfig(precision="int8", runtime="openvino"))
frames = np.random.default_rng(0).integers(0, 255, size=(2, 48, 64, 3), dtype=np.uint8)
results = list(predictor.track(frames, ["dog"]))
print("tracked", len(results), model.runtime)
"""


def test_an_unguarded_script_converts_in_the_child_interpreter(tmp_path):
    """A plain script (no ``if __name__ == "__main__"``) whose stages take the separate-interpreter path (the
    threshold set to 0 for the tiny model): it runs once, converts and quantizes, and tracks."""
    import os
    import subprocess
    import sys

    from sam3video.model.openvino_trunk import CACHE_ENV, CHILD_ENV

    script = tmp_path / "plain.py"
    script.write_text(UNGUARDED_SCRIPT)
    env = {**os.environ, CHILD_ENV: "0", CACHE_ENV: str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "tracked 2 openvino"
    assert done.stdout.count("tracked") == 1  # the script ran once: no child imported it again
    assert "sam3video-progress" not in done.stdout + done.stderr  # the child's progress lines went to the bar only
    entries = [p.name for p in (tmp_path / "cache" / "openvino").iterdir()]
    assert sum("-int8-" in name for name in entries) == 2 and len(entries) == 4  # f32 IR and int8, 2 stages


def test_the_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SAM3VIDEO_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "openvino"


@pytest.mark.parametrize(("precision", "device", "flags", "width", "expected"), [
    ("bf16", "cpu", {"avx512_bf16"}, 1024, "openvino"),
    ("bf16", "cpu", {"amx_bf16"}, 1024, "openvino"),
    ("bf16", "cpu", {"avx2"}, 1024, "torch"),  # no bf16 units: OpenVINO would run it as f32
    ("bf16", "cpu", {"avx512_bf16"}, 64, "torch"),  # the demo model
    ("fp32", "cpu", {"avx512_bf16"}, 1024, "torch"),  # fp32 stays exact
    ("int8", "cpu", {"avx512_bf16"}, 1024, "torch"),  # no int8 dot products
    ("int8", "cpu", {"avx512_bf16", "avx512_vnni"}, 1024, "openvino"),
    ("int8", "cpu", {"avx2", "avx512_vnni"}, 1024, "torch"),
    ("bf16", "cuda", {"avx512_bf16"}, 1024, "torch"),
])
def test_auto_runtime(monkeypatch, precision, device, flags, width, expected):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset(flags))
    assert resolve_runtime("auto", precision, torch.device(device), width) == expected


def test_auto_runtime_without_openvino_is_torch(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else object())
    assert resolve_runtime("auto", "bf16", torch.device("cpu"), 1024) == "torch"


@pytest.mark.parametrize(("runtime", "precision", "device", "message"), [
    ("openvino", "fp16", "cpu", "runs fp32, bf16, int8, not fp16"),
    ("openvino", "bf16", "cuda", "runs on the CPU only"),
    ("onnx", "fp32", "cpu", "runtime must be one of"),
])
def test_runtimes_that_cannot_run_are_refused(runtime, precision, device, message):
    with pytest.raises(InputError, match=message):
        resolve_runtime(runtime, precision, torch.device(device))


def test_a_model_runs_in_one_runtime_for_its_life(tiny_model, monkeypatch, tmp_path):
    monkeypatch.setenv("SAM3VIDEO_CACHE", str(tmp_path))
    model = copy.deepcopy(tiny_model)
    assert apply_precision(model, "fp32", "openvino") == "fp32"
    assert (model.precision, model.runtime) == ("fp32", "openvino")
    assert apply_precision(model, "fp32", "openvino") == "fp32"  # again: nothing to do
    with pytest.raises(InputError, match="converted to fp32 \\(openvino\\)"):
        apply_precision(model, "fp32", "torch")


def test_the_video_path_in_openvino_tracks_as_torch_does(tiny_model, monkeypatch, tmp_path):
    """End to end: the same candidates and scores (within f32 rounding) as the torch trunk."""
    monkeypatch.setenv("SAM3VIDEO_CACHE", str(tmp_path))
    config = TrackingConfig.at_score_threshold(0.0, 0.0)
    results = {}
    for runtime in ("torch", "openvino"):
        predictor = VideoPredictor(copy.deepcopy(tiny_model), TrackingConfig(
            detection=config.detection, tracker=config.tracker, runtime=runtime))
        assert predictor.config.runtime == runtime
        results[runtime] = [r.candidates for r in predictor.track(FRAMES, prompts=["dog"])]
    for torch_frame, openvino_frame in zip(*results.values(), strict=True):
        assert len(torch_frame) == len(openvino_frame) > 0
        np.testing.assert_allclose(openvino_frame.confidence, torch_frame.confidence, atol=1e-5)
        np.testing.assert_allclose(openvino_frame.xyxy, torch_frame.xyxy, atol=1e-2)


def test_the_encoder_self_attention_runs_in_openvino_and_agrees(tiny_model, monkeypatch, tmp_path):
    """--runtime openvino also gives the fusion encoder's self-attention OpenVINO's kernel: it is called,
    and the model's scores stay those of torch (fp32, within rounding)."""
    from sam3video import Sam3Processor
    from sam3video.model import openvino_trunk

    monkeypatch.setenv("SAM3VIDEO_CACHE", str(tmp_path))
    calls = []
    kernel_call = openvino_trunk.OpenVinoAttention.__call__
    monkeypatch.setattr(openvino_trunk.OpenVinoAttention, "__call__",
                        lambda self, *qkv: calls.append(qkv[0].shape) or kernel_call(self, *qkv))
    model = copy.deepcopy(tiny_model)
    apply_precision(model, "fp32", "openvino")
    image = FRAMES[0]
    states = []
    for each in (tiny_model, model):
        processor = Sam3Processor(each, confidence_threshold=0.0)
        states.append(processor.set_text_prompt("dog", processor.set_image(image)))
    layers = len(model.transformer.encoder.layers)
    assert len(calls) == layers and calls[0][-2] == (tiny_model.config.resolution // tiny_model.config.patch_size) ** 2
    torch.testing.assert_close(states[1]["scores"], states[0]["scores"], rtol=0, atol=1e-5)
