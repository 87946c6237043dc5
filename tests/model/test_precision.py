"""Precision modes (sam3video.model.precision): bf16 cast once is autocast's math, int8 quantizes the
trunk only, auto resolves by device and CPU flags, a model is converted once."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from sam3video.errors import InputError
from sam3video.model import precision as precision_module
from sam3video.model.precision import apply_precision, autocast_context, resolve_precision
from sam3video.video import predictor as predictor_module
from sam3video.video.detect import DetectionConfig
from sam3video.video.predictor import TrackingConfig, VideoPredictor

FRAMES = np.random.default_rng(1).integers(0, 255, size=(3, 48, 64, 3), dtype=np.uint8)
MODEL_OUTPUTS = ("pred_logits", "pred_boxes", "pred_masks", "presence_logit_dec")


def model_outputs(model, precision, monkeypatch, context=None) -> list[dict]:
    """The model's raw outputs per call of the video path at ``precision`` (``context``: replaces the
    predictor's autocast context)."""
    calls = []
    run_frames = predictor_module.run_frames

    def recording(*args, **kwargs):
        outputs = run_frames(*args, **kwargs)
        calls.append({k: outputs[k].detach().float().clone() for k in MODEL_OUTPUTS if k in outputs})
        return outputs

    monkeypatch.setattr(predictor_module, "run_frames", recording)
    if context is not None:
        monkeypatch.setattr(predictor_module, "autocast_context", lambda model: context())
    detection = DetectionConfig(score_threshold=0.0, low_score_threshold=0.0)
    predictor = VideoPredictor(model, TrackingConfig(precision=precision, detection=detection))
    list(predictor.track(FRAMES, prompts=["dog"]))
    monkeypatch.undo()
    return calls


def test_bf16_cast_once_computes_what_autocast_computes(tiny_model, monkeypatch):
    """Weights cast once + autocast == autocast over fp32 weights (the official CUDA recipe), bit for bit:
    autocast casts the same weights to the same bf16 values on every call."""
    autocast_only = model_outputs(copy.deepcopy(tiny_model), "fp32", monkeypatch,
                                  context=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    model = copy.deepcopy(tiny_model)
    cast_once = model_outputs(model, "bf16", monkeypatch)
    assert model.precision == "bf16"
    assert len(cast_once) == len(autocast_only) > 0
    for ours, reference in zip(cast_once, autocast_only):
        assert ours.keys() == reference.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], reference[key], rtol=0, atol=0, msg=key)


def test_bf16_casts_matmul_weights_and_keeps_norms_and_the_decoder_ffn_fp32(tiny_model):
    model = copy.deepcopy(tiny_model)
    apply_precision(model, "bf16")
    trunk = model.backbone.vision_backbone.trunk
    assert trunk.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert trunk.blocks[0].norm1.weight.dtype == torch.float32
    layer = model.transformer.decoder.layers[0]
    assert layer.self_attn.in_proj_weight.dtype == torch.bfloat16
    assert layer.linear1.weight.dtype == layer.linear2.weight.dtype == torch.float32  # runs outside autocast
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.Embedding, nn.GroupNorm)):
            assert all(p.dtype == torch.float32 for p in module.parameters())


def test_int8_quantizes_the_trunk_linears_only_and_stays_close_to_fp32(tiny_model, monkeypatch):
    fp32 = model_outputs(copy.deepcopy(tiny_model), "fp32", monkeypatch)
    model = copy.deepcopy(tiny_model)
    int8 = model_outputs(model, "int8", monkeypatch)
    trunk = model.backbone.vision_backbone.trunk
    quantized = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(trunk.blocks[0].mlp.fc1, quantized) and isinstance(trunk.blocks[-1].attn.qkv, quantized)
    assert not any(isinstance(m, quantized) for m in model.transformer.modules())
    assert len(int8) == len(fp32)
    for ours, reference in zip(int8, fp32):
        scores, reference_scores = ours["pred_logits"].sigmoid(), reference["pred_logits"].sigmoid()
        assert (scores - reference_scores).abs().max() < 0.05
        assert not torch.equal(ours["pred_logits"], reference["pred_logits"])  # really another computation


def test_a_model_is_converted_once(tiny_model):
    model = copy.deepcopy(tiny_model)
    assert apply_precision(model, "bf16") == "bf16"
    assert apply_precision(model, "bf16") == "bf16"  # again: nothing to do
    with pytest.raises(InputError, match="converted to bf16"):
        apply_precision(model, "int8")
    assert isinstance(autocast_context(model), torch.autocast)


@pytest.mark.parametrize(("device", "flags", "width", "expected"), [
    ("cpu", {"avx2", "amx_bf16"}, 1024, "bf16"),
    ("cpu", {"avx2", "avx512f", "avx512_bf16"}, 64, "bf16"),
    ("cpu", {"avx2", "avx512f", "avx512_vnni"}, 1024, "int8"),
    ("cpu", {"avx512_bf16", "avx512_vnni"}, 1024, "int8"),  # OpenVINO's static int8 (openvino_pays)
    ("cpu", {"avx512_bf16", "avx512_vnni"}, 64, "bf16"),
    ("cpu", {"avx2"}, 1024, "int8"),
    ("cpu", {"avx2"}, 64, "fp32"),  # the demo model: int8 is slower than fp32 at its size
    ("mps", set(), 1024, "fp32"),
])
def test_auto_picks_a_mode_from_the_device_cpu_flags_and_model_size(monkeypatch, device, flags, width, expected):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset(flags))
    assert resolve_precision("auto", torch.device(device), width) == expected
    assert resolve_precision("fp32", torch.device(device)) == "fp32"
    if expected == "int8" and "avx512_bf16" in flags:  # with the torch runtime, bf16 is faster there
        assert resolve_precision("auto", torch.device(device), width, runtime="torch") == "bf16"


def test_unknown_precision_and_int8_off_the_cpu_are_refused():
    with pytest.raises(InputError, match="precision must be one of"):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(InputError, match="int8 runs on the CPU only"):
        resolve_precision("int8", torch.device("cuda"))


def test_the_predictor_reports_the_resolved_mode(tiny_model, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    predictor = VideoPredictor(copy.deepcopy(tiny_model), TrackingConfig(precision="auto"))
    assert predictor.config.precision == "bf16"


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_the_image_api_runs_a_converted_model_in_its_mode(tiny_model, mode):
    """Sam3Processor on a converted model: the calls run in the model's mode (a bf16-cast model called
    outside autocast would fail on fp32 inputs), with scores close to fp32's."""
    from sam3video import Sam3Processor

    image = np.random.default_rng(2).integers(0, 255, size=(40, 56, 3), dtype=np.uint8)
    fp32 = Sam3Processor(tiny_model, confidence_threshold=0.0)
    reference = fp32.set_text_prompt("dog", fp32.set_image(image))
    model = copy.deepcopy(tiny_model)
    apply_precision(model, mode)
    processor = Sam3Processor(model, confidence_threshold=0.0)
    state = processor.set_text_prompt("dog", processor.set_image(image))
    assert state["scores"].shape == reference["scores"].shape
    assert (state["scores"].float() - reference["scores"]).abs().max() < 0.05


@pytest.mark.parametrize(("mode", "runtime", "flags", "expected"), [
    ("fp32", "torch", {"avx512_bf16"}, None),
    ("bf16", "torch", set(), torch.bfloat16),
    ("bf16", "openvino", {"avx512_bf16"}, torch.bfloat16),
    ("int8", "torch", {"avx512_bf16"}, None),  # torch.ao int8: the rest fp32
    ("int8", "openvino", {"avx512_bf16"}, torch.bfloat16),  # the neck and heads in bf16 where it is fast
    ("int8", "openvino", {"avx2"}, None),
])
def test_what_torch_runs_in_each_mode(monkeypatch, mode, runtime, flags, expected):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset(flags))
    assert precision_module.compute_dtype(mode, runtime) == expected
