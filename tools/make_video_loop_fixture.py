"""Make the video-loop parity fixture (tests/data/video_loop_parity) from the OFFICIAL SAM 3 video loop.

Run with the oracle venv only (never with the project's), from the repository root (~15 s on 2 cores):

    OMP_NUM_THREADS=1 ~/.cache/sam3-oracle/bin/python tools/make_video_loop_fixture.py --out tests/data/video_loop_parity \
        --name three_fp32_n0_c0.pt.xz

Model: the official ``Sam3VideoInferenceWithInstanceInteractivity`` (detector ``Sam3ImageOnVideoMultiGPU`` with the
second, tracker-side ViTDet neck; tracker ``Sam3TrackerPredictor``), wired as ``sam3.model_builder.
build_sam3_video_model`` wires it, at the tiny sizes of ``sam3video/configs/tiny.toml`` (read as TOML; nothing of
``sam3video`` is imported), from the components of ``../shared/tools/oracle/make_parity_fixture.py`` (detector) and
``tools/make_tracker_fixture.py`` (tracker, SAM heads at the ``[tracker]`` sizes). Weights, loaded with
``strict=True``: ``tests/data/parity/state_dict.pt`` (``detector.*``), ``tests/data/tracker_parity/tracker_parity.pt``
(``tracker.*``) and, the only new tensors, ``detector.backbone.vision_backbone.sam2_convs.*``: seeded PyTorch
default init with the weights times sqrt(3) (so the tracker features have about unit scale), bias noise, fp16-exact;
saved in the fixture.

Run: CPU, fp32. The official code's explicit bf16 casts are removed at runtime by source-patched copies of three
methods (the installed package is not edited); other runtime patches: no-op ``Tensor.cuda``/``pin_memory``, the
CPU connected-components fallback (empty batch; scipy instead of the missing scikit-image), the tracker state's
hard-coded CUDA storage device. Input: a synthetic 10-frame 120x160 clip, preprocessed to fp16-exact 224x224 frames
written straight into the official inference state. Flow: the official user flow, ``add_prompt(frame 0, "red
circle")`` then ``propagate_in_video(start 0)`` (frame 0 is processed twice), with lowered thresholds (random
weights pass none of the defaults).

Recorded (by wrapping official methods, never editing them), per processed step: the detections (and the raw
detector outputs / NMS per frame), the tracker propagation, the update plan, reconditioning calls, what reaches the
memory encoder, the bucket structure, the hot-start bookkeeping; and every frame yielded by ``propagate_in_video``.
A rerun with 1e-6 relative weight noise checks that no decision sits on a threshold. Knife edges, which that rerun
cannot see (it moves every object alike): every area-shrinkage decision before memory encoding is probed by rerunning
the official rule on the same logits moved by up to 1e-4 (+ 1e-4 |x|), per object and per pixel, bitwise ties kept
(``mem.shrink_knife_edge``; ``mem.shrink_tie_decided``: outcomes that rest on an exact tie), and the output pixels
whose video-resolution logit is within 1e-3 of 0 are recorded (``out_knife_edge_px``);
``tools/check_sam3_loop_parity.py`` gives those decisions the official outcome and lets those pixels differ, and
nothing else. Every key saved is described in the fixture folder's README.md.

Cases: ``--neck-seed`` / ``--clip-seed`` (the second neck's init, the clip's jitter), ``--scene dense`` (eight shapes,
easier births: 2-4 objects born on most frames, buckets of up to 4), ``--memory-dtype bf16`` (the official bf16
storage of encoded memories kept). ``--name x.pt.xz`` writes an lzma-compressed file (the stored test cases);
``tools/loop_parity_sweep.py`` makes and checks 24 cases in one command.

``--size full`` (never writes under tests/; ~14 min and 6.4 GB peak on 2 busy cores, ~170 s per frame):

    OMP_NUM_THREADS=2 ~/.cache/sam3-oracle/bin/python tools/make_video_loop_fixture.py --size full --out /tmp/loop_full

the same flow and recording at the real sam3.pt architecture: the model is ``sam3.model_builder.
build_sam3_video_model(checkpoint_path=None, load_from_HF=False, device="cpu")`` itself after
``torch.manual_seed(0)``, then ``randomise_full`` (seeded, see its docstring: uninitialised tensors filled, constant
ones noised, own ``sam2_convs`` init times sqrt(3), the detector decoder's attention outputs times 0.25 so that its
200 queries do not collapse, the tracker's object-score bias set to 2 so that propagated objects are present, every
float tensor fp16-exact). Written: ``OUT/state_dict.pt`` (the official video model's ``state_dict()``, 1465 tensors,
``detector.*`` + ``tracker.*``, floats as fp16, 1.7 GB) and ``OUT/fixture.pt`` (the tiny fixture's keys, plus
``size``, ``weights``, ``weights_digest``, ``weights_randomisation``, the gains, ``margins`` and
``official_seconds``; no ``sam2_convs``: every weight is in the state dict). Clip: 4 frames of the same scene at
360x480 (shapes and motion scaled by 3), preprocessed to 1008x1008. Thresholds: ``CHANGED_FULL`` (see there). The
noisy rerun is off by default (it doubles the run); ``margins`` reports how far each decision sits from its
threshold instead. ``tools/check_sam3_loop_parity.py`` compares our loop with either fixture.
"""

from __future__ import annotations

import argparse
import inspect
import io
import lzma
import re
import sys
import textwrap
import time
import zlib
from copy import deepcopy
from pathlib import Path

import numpy as np
import tomllib
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True  # the helpers imported below live in folders this tool must not write to
sys.path.insert(0, str(ROOT.parent / "shared" / "tools" / "oracle"))
sys.path.insert(0, str(ROOT / "tools"))

torch.Tensor.cuda = lambda self, *a, **k: self  # patch 1: the official code calls .cuda() / .pin_memory()
torch.Tensor.pin_memory = lambda self, *a, **k: self

# after the patch above: make_parity_fixture builds the official image model's parts at the tiny size,
# make_tracker_fixture the official tracker's (both are read-only helpers here)
import make_parity_fixture as mpf
import make_tracker_fixture as mtf
import sam3.model.sam3_image as sam3_image_mod
import sam3.model.sam3_video_base as sam3_video_base_mod
import sam3.model.sam3_tracking_predictor as predictor_mod
import sam3.perflib.connected_components as cc
from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU
from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
from sam3.model.sam3_video_inference import Sam3VideoInferenceWithInstanceInteractivity

NUM_FRAMES, VIDEO_H, VIDEO_W = 10, 120, 160
PROMPT = "red circle"
SAM2_CONVS = "detector.backbone.vision_backbone.sam2_convs."

# build_sam3_video_model's settings (apply_temporal_disambiguation=True), then what this fixture changes
BUILDER = {
    "score_threshold_detection": 0.5, "assoc_iou_thresh": 0.1, "det_nms_thresh": 0.1, "new_det_thresh": 0.7,
    "hotstart_delay": 15, "hotstart_unmatch_thresh": 8, "hotstart_dup_thresh": 8,
    "suppress_unmatched_only_within_hotstart": True, "min_trk_keep_alive": -1, "max_trk_keep_alive": 30,
    "init_trk_keep_alive": 30, "suppress_overlapping_based_on_recent_occlusion_threshold": 0.7,
    "suppress_det_close_to_boundary": False, "fill_hole_area": 16, "recondition_every_nth_frame": 16,
    "masklet_confirmation_enable": False, "decrease_trk_keep_alive_for_empty_masklets": False,
}
# Sam3VideoBase.__init__ defaults the builder does not pass (recorded too)
CLASS_DEFAULTS = ["trk_assoc_iou_thresh", "o2o_matching_masklets_enable", "max_num_objects",
                  "masklet_confirmation_consecutive_det_thresh", "reconstruction_bbox_iou_thresh",
                  "reconstruction_bbox_det_score"]
# Random weights: detection probabilities are 0.30-0.38, detector masks are ~20-60 scattered pixels of 64x64,
# tracker masks ~400-600 pixels, so the IoU thresholds are tiny. Chosen (by a small search) so that objects are
# born on frames 0, 1, 4, 5, tracks are matched and unmatched, hot-start removes by both rules, outputs hold 1-2
# objects, and no decision sits near a threshold (unchanged under 1e-6 relative weight noise).
CHANGED = {
    "score_threshold_detection": 0.31, "new_det_thresh": 0.362, "assoc_iou_thresh": 0.015,
    "trk_assoc_iou_thresh": 0.015, "hotstart_delay": 4, "hotstart_unmatch_thresh": 2, "hotstart_dup_thresh": 2,
    "recondition_every_nth_frame": 3, "fill_hole_area": 6,
}
# The dense scene (--scene dense): births made easier (a detection overlapping a track by less than 0.04 IoU, rather
# than 0.015, starts an object; probabilities from 0.33) so that 2-4 objects are born on most frames, buckets hold
# up to 4 objects and ~20 objects are tracked at once by the end.
CHANGED_DENSE = {**CHANGED, "new_det_thresh": 0.33, "assoc_iou_thresh": 0.04}


# ----------------------------------------------------------------------------------------------------------
# runtime patches of the official code (nothing installed is edited)

def _cc_allow_empty(x, _orig=cc.connected_components_cpu):
    """patch 2: the CPU connected-components fallback fails on an empty batch (torch.stack of [])."""
    if x.shape[0] == 0:
        return torch.zeros_like(x, dtype=torch.int32), torch.zeros_like(x, dtype=torch.int32)
    return _orig(x)


# patch 5 (fp32): (class, method, exact line fragment removed, replacement, expected count)
FP32_PATCHES = [
    (Sam3ImageOnVideoMultiGPU, "_build_multigpu_buffer_next_chunk",
     'backbone_fpn_bf16 = [x.to(torch.bfloat16) for x in feats["backbone_fpn"]]',
     'backbone_fpn_bf16 = [x for x in feats["backbone_fpn"]]', 1),
    (Sam3TrackerPredictor, "_run_single_frame_inference",
     "maskmem_features = maskmem_features.to(torch.bfloat16)", "maskmem_features = maskmem_features", 1),
    (Sam3TrackerPredictor, "_run_memory_encoder",
     "maskmem_features = maskmem_features.to(torch.bfloat16)", "maskmem_features = maskmem_features", 1),
]


def _cc_single_scipy(values: torch.Tensor):
    """patch 3: connected_components_cpu_single needs scikit-image (not in the oracle venv); the same
    8-connected labelling (skimage.measure.label's default full connectivity, background 0) with scipy.
    Only the per-pixel component sizes are used by the official callers; labels are in raster order too."""
    from scipy import ndimage

    assert values.dim() == 2
    labels, _ = ndimage.label(values.cpu().numpy() != 0, structure=np.ones((3, 3), bool))
    labels = labels.astype(np.int64)
    counts = np.bincount(labels.ravel())[labels]
    counts[labels == 0] = 0
    return torch.from_numpy(labels), torch.from_numpy(counts)


def _tracker_init_state_cpu(self, *a, _orig=Sam3TrackerPredictor.init_state, **k):
    """patch 4: Sam3TrackerPredictor.init_state hard-codes storage_device = cuda (unless offloading)."""
    state = _orig(self, *a, **k)
    state["storage_device"] = torch.device("cpu")
    return state


def apply_patches(memory_dtype: str = "fp32") -> list[str]:
    """The runtime patches; ``memory_dtype="bf16"`` keeps the official bf16 storage of the encoded memories (the
    two ``maskmem_features.to(torch.bfloat16)`` casts stay; the tracker-side neck features stay fp32 either way)."""
    cc.connected_components_cpu = _cc_allow_empty
    cc.connected_components_cpu_single = _cc_single_scipy
    Sam3TrackerPredictor.init_state = _tracker_init_state_cpu
    done = ["torch.Tensor.cuda and torch.Tensor.pin_memory -> return self (no-op)",
            "sam3.perflib.connected_components.connected_components_cpu: empty batch -> zeros (int32)",
            ("sam3.perflib.connected_components.connected_components_cpu_single: scipy.ndimage.label with a 3x3 "
             "structure (8-connected, as skimage.measure.label's default) instead of skimage (not installed)"),
            ("Sam3TrackerPredictor.init_state: wrapped, sets inference_state['storage_device'] = cpu "
             "(hard-coded cuda, as if offload_state_to_cpu=True)")]
    for cls, name, old, new, count in FP32_PATCHES:
        if memory_dtype == "bf16" and "maskmem_features" in old:
            continue
        fn = cls.__dict__[name]
        src = textwrap.dedent(inspect.getsource(fn))
        assert src.count(old) == count and "super()" not in src and "torch.bfloat16" not in src.replace(old, ""), name
        module = sys.modules[fn.__module__]
        assert module in (sam3_image_mod, predictor_mod)
        ns: dict = {}
        code = compile(src.replace(old, new), f"<fp32 copy of {fn.__qualname__}>", "exec")
        exec(code, module.__dict__, ns)  # noqa: S102  (the official source, one cast removed)
        setattr(cls, name, ns[name])
        done.append(f"{fn.__module__}.{fn.__qualname__}: `{old}` -> `{new}`")
    return done


# ----------------------------------------------------------------------------------------------------------
# model

def read_sizes() -> tuple[dict, dict]:
    values = tomllib.loads((ROOT / "sam3video" / "configs" / "tiny.toml").read_text())
    det = {k: v for k, v in values.items() if k in mpf.SIZES["tiny"]}
    assert det == mpf.SIZES["tiny"], "tiny.toml and make_parity_fixture's SIZES['tiny'] disagree"
    return det, mtf.read_sizes("tiny")


def build(det_sizes: dict, trk_sizes: dict) -> Sam3VideoInferenceWithInstanceInteractivity:
    """The wiring of sam3.model_builder.build_sam3_video_model, with tiny official components."""
    img = mpf.build(det_sizes)  # official Sam3Image at tiny size (random init; weights are loaded later)
    neck = img.backbone.vision_backbone
    neck.sam2_convs = deepcopy(neck.convs)  # exactly what Sam3DualViTDetNeck(add_sam2_neck=True) does
    detector = Sam3ImageOnVideoMultiGPU(
        num_feature_levels=1, backbone=img.backbone, transformer=img.transformer,
        segmentation_head=img.segmentation_head, semantic_segmentation_head=None,
        input_geometry_encoder=img.geometry_encoder, use_early_fusion=True, use_dot_prod_scoring=True,
        dot_prod_scoring=img.dot_prod_scoring, supervise_joint_box_scores=True)

    s = trk_sizes
    base = mtf.build_official(s)  # official Sam3TrackerBase at tiny size: reuse its parts and SAM-heads builder

    class TinyHeadsTrackerPredictor(Sam3TrackerPredictor):
        _build_sam_heads = type(base)._build_sam_heads

    # sam3.model_builder.build_tracker(apply_temporal_disambiguation=True), sizes from tiny.toml
    tracker = TinyHeadsTrackerPredictor(
        image_size=s["resolution"], num_maskmem=s["num_maskmem"], backbone=None, backbone_stride=s["patch_size"],
        transformer=base.transformer, maskmem_backbone=base.maskmem_backbone, multimask_output_in_sam=True,
        forward_backbone_per_frame_for_eval=True, trim_past_non_cond_mem_for_eval=False,
        multimask_output_for_tracking=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        always_start_from_first_ann_frame=False, non_overlap_masks_for_mem_enc=False,
        non_overlap_masks_for_output=False, max_cond_frames_in_attn=s["max_cond_frames_in_attn"],
        offload_output_to_cpu_for_eval=False,
        sam_mask_decoder_extra_args={"dynamic_multimask_via_stability": True, "dynamic_multimask_stability_delta": 0.05,
                                     "dynamic_multimask_stability_thresh": 0.98},
        clear_non_cond_mem_around_input=True, fill_hole_area=0, use_memory_selection=s["use_memory_selection"],
        max_obj_ptrs_in_encoder=s["max_obj_ptrs_in_encoder"], mf_threshold=s["mf_threshold"])
    model = Sam3VideoInferenceWithInstanceInteractivity(
        detector=detector, tracker=tracker, **BUILDER, image_size=det_sizes["resolution"],
        image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), compile_model=False)
    return model.eval()


def sam2_convs_weights(model, seed: int, gain: float) -> dict:
    """Default (PyTorch) init of the second neck, seeded, weights times `gain`; biases get a little extra
    noise; fp16-exact."""
    torch.manual_seed(seed)
    convs = model.detector.backbone.vision_backbone.sam2_convs
    with torch.no_grad():
        for m in convs.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.reset_parameters()
                m.weight.mul_(gain)
                m.bias.add_(0.02 * torch.randn_like(m.bias))
        for p in convs.parameters():
            p.copy_(p.half().float())
    return {SAM2_CONVS + k: v.detach().clone() for k, v in convs.state_dict().items()}


def load_weights(model, sam2: dict) -> dict:
    det = torch.load(ROOT / "tests/data/parity/state_dict.pt", map_location="cpu", weights_only=True)
    det = {f"detector.{k}": v.float() if v.dtype == torch.float16 else v for k, v in det.items()}
    trk = torch.load(ROOT / "tests/data/tracker_parity/tracker_parity.pt", map_location="cpu",
                     weights_only=True)["state_dict"]
    want = set(model.state_dict())
    sources = {"detector (tests/data/parity/state_dict.pt)": det, "tracker (tracker_parity.pt)": trk,
               "seeded here (sam2_convs)": sam2}
    have = set().union(*sources.values())
    missing, extra = sorted(want - have), sorted(have - want)
    assert not missing and not extra, (missing, extra)
    model.load_state_dict({**det, **trk, **sam2}, strict=True)
    return {name: len(v) for name, v in sources.items()}


# ----------------------------------------------------------------------------------------------------------
# clip

def make_clip(seed: int, num_frames: int = NUM_FRAMES, height: int = VIDEO_H, width: int = VIDEO_W,
              scene: str = "three") -> np.ndarray:
    """(T, H, W, 3) uint8 on a plain background. ``three``: three flat shapes moving, the third enters at frame 3.
    ``dense``: the same three plus five more (two from frame 0, then one each on frames 1, 2 and 5, entering from
    the edges), so that several objects are born on one frame and buckets hold more objects.
    Sizes and motion are those of the 120x160 clip scaled by height / 120 (exactly the tiny clip at 120x160)."""
    rng = np.random.default_rng(seed)
    T, H, W = num_frames, height, width
    s = H / VIDEO_H  # 1.0 for the tiny clip: every product below is then exact
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    clip = np.empty((T, H, W, 3), np.uint8)
    jitter = rng.uniform(-3, 3, size=(T, 3, 2)) * s
    extra = rng.uniform(-3, 3, size=(T, 5, 2)) * s if scene == "dense" else None
    for t in range(T):
        img = np.empty((H, W, 3), np.uint8)
        img[:] = (96, 112, 104)
        cy, cx = s * (40 + 2.0 * t) + jitter[t, 0, 0], s * (30 + 9.0 * t) + jitter[t, 0, 1]  # red circle, to the right
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < (15 * s) ** 2] = (220, 30, 30)
        y0, x0 = int(s * (70 - 3 * t) + jitter[t, 1, 0]), int(s * (100 - 4 * t) + jitter[t, 1, 1])  # blue box
        img[max(y0, 0):y0 + round(26 * s), max(x0, 0):x0 + round(34 * s)] = (30, 40, 210)
        if t >= 3:  # yellow triangle entering from the right edge
            ax, ay = W + s * (10 - 12.0 * (t - 3)) + jitter[t, 2, 1], s * 85 + jitter[t, 2, 0]
            tri = (yy <= ay + 18 * s) & (yy - (ay - 18 * s) >= 2 * np.abs(xx - ax))
            img[tri] = (230, 215, 40)
        if extra is not None:
            _dense_shapes(img, t, s, extra[t], yy, xx)
        clip[t] = img
    return clip


# the dense scene's extra shapes: (first frame, colour, kind, start (y, x), velocity (dy, dx) per frame, size)
DENSE_SHAPES = [
    (0, (40, 200, 60), "disc", (95, 25), (-1.0, 5.0), 11),  # green disc, bottom left, to the right
    (0, (200, 60, 200), "box", (10, 120), (4.0, -6.0), 18),  # magenta box, top right, down-left
    (1, (240, 140, 30), "disc", (-12, 70), (9.0, 1.0), 12),  # orange disc entering from the top
    (2, (30, 200, 210), "box", (60, -20), (-2.0, 10.0), 16),  # cyan box entering from the left
    (5, (250, 250, 250), "disc", (132, 120), (-10.0, -3.0), 10),  # white disc entering from the bottom
]


def _dense_shapes(img: np.ndarray, t: int, s: float, jitter: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> None:
    for k, (first, colour, kind, (y, x), (dy, dx), size) in enumerate(DENSE_SHAPES):
        if t < first:
            continue
        cy = s * (y + dy * (t - first)) + jitter[k, 0]
        cx = s * (x + dx * (t - first)) + jitter[k, 1]
        if kind == "disc":
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < (size * s) ** 2] = colour
        else:
            img[(np.abs(yy - cy) < size * s / 2) & (np.abs(xx - cx) < size * s * 0.65)] = colour


def preprocess(clip: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> fp16-exact (T, 3, size, size): bilinear antialiased resize, /255, (x-0.5)/0.5."""
    x = torch.from_numpy(clip).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return ((x / 255.0 - 0.5) / 0.5).half()


def save_fixture(fx: dict, path: Path) -> None:
    """``torch.save``; a name ending in ``.xz`` is lzma-compressed (the stored test fixtures)."""
    buffer = io.BytesIO()
    torch.save(fx, buffer)
    data = lzma.compress(buffer.getvalue()) if path.suffix == ".xz" else buffer.getvalue()
    path.write_bytes(data)


def load_fixture(path: Path) -> dict:
    data = path.read_bytes()
    return torch.load(io.BytesIO(lzma.decompress(data) if path.suffix == ".xz" else data), weights_only=True)


def pack_images(images: torch.Tensor) -> dict:
    """The fp16 frames as zlib-compressed bytes (flat synthetic frames shrink ~90x): ``images_fp16_zlib`` (uint8)
    and ``images_shape``; ``tools/check_sam3_loop_parity.read_fixture`` unpacks them."""
    raw = images.half().contiguous().numpy().tobytes()
    return {"images_fp16_zlib": torch.frombuffer(bytearray(zlib.compress(raw, 9)), dtype=torch.uint8),
            "images_shape": list(images.shape)}


# ----------------------------------------------------------------------------------------------------------
# recording (wrappers around official methods; the methods themselves are not changed)

def cpu(x, dtype=None):
    t = torch.as_tensor(x).detach().cpu().clone()
    return t.to(dtype) if dtype is not None else t


def ids(x) -> list[int]:
    return sorted(int(i) for i in x)


# Knife edges: a decision whose outcome a re-implementation cannot be expected to reproduce, because it turns on
# differences below the float error between two implementations (ours and the official logits differ by up to
# ~6e-5 on the tiny model; the official code differs from itself by as much between 1 and 2 threads).
PIXEL_TOL = 1e-3  # a mask pixel whose logit is within this of 0 may fall either side
PROBE_ABS, PROBE_REL, PROBE_TRIALS = 1e-4, 1e-4, 32  # the area-shrinkage probe: logits moved by up to this


def _probe_noise(x: torch.Tensor, g: torch.Generator, per_object: bool, keep_ties: bool = True) -> torch.Tensor:
    """Uniform noise in [-1, 1] of x's shape (N, ...). ``per_object``: one value per object for all its pixels
    (the float error between two implementations is largely systematic per object, not independent per pixel);
    otherwise independent per object and pixel, except that objects whose logits are bitwise equal at a pixel get
    the same noise there. With ``keep_ties``, objects whose logits are bitwise equal everywhere move together: an
    exact tie stays a tie, decided by the official first-index rule, which a faithful implementation reproduces."""
    prime = 2 ** 31 - 1
    if per_object:
        rows = x.flatten(1)
        group = [next(j for j in range(i + 1) if keep_ties and torch.equal(rows[j], rows[i]) or j == i)
                 for i in range(len(rows))]
        shift = torch.rand(len(rows), generator=g, dtype=torch.float64).mul(2).sub(1)[group]
        return shift.to(x.dtype).reshape(-1, *[1] * (x.dim() - 1)).expand_as(x)
    bits = x.float().contiguous().view(torch.int32).to(torch.int64) % prime
    salt = torch.randint(0, prime, x.shape[1:], generator=g, dtype=torch.int64)
    h = (bits * 48271 + salt) % prime
    h = (h * 16807 + 12345) % prime
    return h.double().div(prime / 2).sub(1).to(x.dtype)


def shrinkage_knife_edges(pred_masks: torch.Tensor, rule) -> tuple[list[bool], list[bool]]:
    """(N, 1, H, W) logits given to the official area-shrinkage rule (``rule``) -> per object, (knife edge: whether
    its outcome (suppressed or not, and its memory object score: any pixel > 0 after the rule) changes when the
    logits move by up to PROBE_ABS + PROBE_REL |x| (PROBE_TRIALS draws of ``_probe_noise``, half per object, half
    per pixel, exact ties kept); tie-decided: whether it changes only when objects with bitwise-equal logits are
    moved apart, i.e. it rests on the first-index rule for an exact tie)."""
    def outcome(m):
        out = rule(m)
        return torch.stack([(out != m).flatten(1).any(1), (out > 0).flatten(1).any(1)], 1)

    unstable = torch.zeros(len(pred_masks), dtype=torch.bool)
    tie = torch.zeros(len(pred_masks), dtype=torch.bool)
    if len(pred_masks) < 2:  # one object: the argmax is trivial and the rule keeps it
        return unstable.tolist(), tie.tolist()
    base = outcome(pred_masks)
    g = torch.Generator().manual_seed(0)
    scale = PROBE_ABS + PROBE_REL * pred_masks.abs()
    for trial in range(PROBE_TRIALS):
        noise = _probe_noise(pred_masks, g, per_object=trial % 2 == 0)
        unstable |= (outcome(pred_masks + scale * noise) != base).any(1)
        if trial % 2 == 0:
            tie |= (outcome(pred_masks + scale * _probe_noise(pred_masks, g, True, keep_ties=False)) != base).any(1)
    return unstable.tolist(), (tie & ~unstable).tolist()


class Recorder:
    def __init__(self, model, memory_dtype: torch.dtype = torch.float32, probe: bool = True):
        self.memory_dtype, self.probe = memory_dtype, probe
        self.model, self.steps, self.detector_raw, self.step = model, [], {}, None
        self.phase, self.in_recondition, self.in_update_memories = None, False, False
        self.detector_calls = []  # (frame of the detector run, index of the step during which it ran)
        m, tr, det = model, model.tracker, model.detector
        self._wrap(m, "_run_single_frame_inference", self.on_frame)
        self._wrap(m, "run_backbone_and_detection", self.on_detection)
        self._wrap(m, "run_tracker_propagation", self.on_propagation)
        self._wrap(m, "run_tracker_update_planning_phase", self.on_planning)
        self._wrap(m, "_recondition_masklets", self.on_recondition)
        self._wrap(m, "_tracker_update_memories", self.on_update_memories)
        self._wrap(m, "_get_objects_to_suppress_based_on_most_recently_occluded", self.on_occlusion)
        self._wrap(tr, "add_new_mask", self.on_add_new_mask)
        self._wrap(tr, "_suppress_object_pw_area_shrinkage", self.on_shrinkage)
        self._wrap(tr, "_run_memory_encoder", self.on_memory_encoder)
        self._wrap(det, "forward_grounding", self.on_grounding)
        self._wrap(m, "build_outputs", self.on_build_outputs)

    def _wrap(self, obj, name, hook):
        orig = getattr(obj, name)
        object.__setattr__(obj, name, lambda *a, **k: hook(orig, *a, **k))
        self.wrapped = getattr(self, "wrapped", []) + [(obj, name)]

    def unwrap(self):
        for obj, name in self.wrapped:
            del obj.__dict__[name]

    def on_frame(self, orig, inference_state, frame_idx, reverse):
        self.step = {"frame_idx": int(frame_idx), "phase": self.phase, "reconditioned": [],
                     "mem_encoder_batches": []}
        out = orig(inference_state, frame_idx, reverse)
        st, md = self.step, inference_state["tracker_metadata"]
        st["buckets_after"] = [[int(i) for i in s["obj_ids"]] for s in inference_state["tracker_inference_states"]]
        st["obj_ids_after"] = [int(i) for i in md["obj_ids_all_gpu"]]
        st["max_obj_id_after"] = int(md["max_obj_id"])
        st["obj_id_to_score"] = {int(k): float(v) for k, v in out["obj_id_to_score"].items()}
        st["obj_id_to_tracker_score"] = {int(k): float(v) for k, v in out["obj_id_to_tracker_score"].items()}
        st["removed_obj_ids_so_far"] = ids(out["removed_obj_ids"])
        st["suppressed_obj_ids"] = ids(out["suppressed_obj_ids"])
        st["frame_mask_obj_ids"] = [int(i) for i in out["obj_id_to_mask"]]
        r0 = md["rank0_metadata"]
        st["hotstart"] = {
            "obj_first_frame_idx": {int(k): int(v) for k, v in r0["obj_first_frame_idx"].items()},
            "unmatched_frame_inds": {int(k): [int(f) for f in v] for k, v in r0["unmatched_frame_inds"].items()},
            "overlap_pair_to_frame_inds": {f"{int(a)},{int(b)}": [int(f) for f in v]
                                           for (a, b), v in r0["overlap_pair_to_frame_inds"].items()},
            "trk_keep_alive": {int(k): int(v) for k, v in r0["trk_keep_alive"].items()},
        }
        st["obj_id_to_last_occluded"] = {int(k): int(v.item()) for k, v in md["obj_id_to_last_occluded"].items()}
        self.steps.append(st)
        self.step = None
        return out

    def on_grounding(self, orig, backbone_out, find_input, find_target, geometric_prompt):
        out = orig(backbone_out=backbone_out, find_input=find_input, find_target=find_target,
                   geometric_prompt=geometric_prompt)
        frame = int(find_input.img_ids.reshape(-1)[0])
        self.detector_calls.append([frame, len(self.steps)])
        thr = self.model.score_threshold_detection
        probs = out["pred_logits"][0, :, 0].sigmoid()
        cand = torch.nonzero(probs > thr).flatten()
        self.detector_raw[frame] = {
            # NMS later edits out["pred_logits"] in place: keep the tensor itself to read the result at the end
            "_logits_ref": out["pred_logits"], "pred_logits": cpu(out["pred_logits"][0, :, 0]),
            "presence_logit_dec": cpu(out["presence_logit_dec"].reshape(-1)),
            "pred_boxes_xyxy": cpu(out["pred_boxes_xyxy"][0]), "nms_candidates": cpu(cand),
            "candidate_masks_packed": pack_masks(cpu(out["pred_masks"][0, cand] > 0).numpy()),
        }
        return out

    def on_detection(self, orig, **kw):
        det_out = orig(**kw)
        feats = kw["feature_cache"][kw["frame_idx"]][1]["tracker_backbone_out"]["backbone_fpn"]
        assert det_out["mask"].dtype == torch.float32 and all(f.dtype == torch.float32 for f in feats)  # fp32 run
        self.step["det"] = {"scores": cpu(det_out["scores"]), "bbox_xyxy": cpu(det_out["bbox"]),
                            "masks": cpu(det_out["mask"], torch.float16)}
        return det_out

    def on_propagation(self, orig, **kw):
        obj_ids = [int(i) for i in kw["tracker_metadata_prev"]["obj_ids_all_gpu"]]
        masks, scores = orig(**kw)
        assert masks.dtype == torch.float32
        same = [[obj_ids[i], obj_ids[j]] for i in range(len(obj_ids)) for j in range(i + 1, len(obj_ids))
                if torch.equal(masks[i], masks[j])]
        self.step["trk"] = {"obj_ids": obj_ids, "masks": cpu(masks, torch.float16), "obj_score_logits": cpu(scores),
                            "identical_mask_pairs": same}
        self._trk_masks = masks.clone()  # to check what reaches the memory encoder
        return masks, scores

    def on_planning(self, orig, **kw):
        plan, md_new = orig(**kw)
        self.step["plan"] = {
            "new_det_fa_inds": [int(i) for i in plan["new_det_fa_inds"]],
            "new_det_obj_ids": [int(i) for i in plan["new_det_obj_ids"]],
            "unmatched_trk_obj_ids": [int(i) for i in plan["unmatched_trk_obj_ids"]],
            "det_to_matched_trk_obj_ids": {int(d): [int(i) for i in v]
                                           for d, v in plan["det_to_matched_trk_obj_ids"].items()},
            "obj_ids_newly_removed": ids(plan["obj_ids_newly_removed"]),
            "trk_id_to_max_iou_high_conf_det": {int(k): int(v)
                                                for k, v in plan["trk_id_to_max_iou_high_conf_det"].items()},
            "num_obj_dropped_due_to_limit": int(plan["num_obj_dropped_due_to_limit"]),
        }
        return plan, md_new

    def on_recondition(self, orig, *a, **k):
        self.in_recondition = True
        try:
            return orig(*a, **k)
        finally:
            self.in_recondition = False

    def on_add_new_mask(self, orig, **kw):
        if self.in_recondition:
            self.step["reconditioned"].append({"obj_id": int(kw["obj_id"]), "mask": cpu(kw["mask"], torch.bool),
                                               "bucket_obj_ids": [int(i) for i in kw["inference_state"]["obj_ids"]]})
        return orig(**kw)

    def on_update_memories(self, orig, tracker_inference_states, frame_idx, tracker_metadata, low_res_masks):
        # the memory-encoder input = the propagated masks with occlusion-suppressed objects set to -10 (in place)
        expect = self._trk_masks.clone()
        expect[torch.tensor(self.step.get("occlusion_suppressed", [False] * len(expect)), dtype=torch.bool)] = -10.0
        assert torch.equal(expect, low_res_masks)
        self.step["mem"] = {"obj_ids": [int(i) for i in tracker_metadata["obj_ids_all_gpu"]]}
        self.in_update_memories = True
        try:
            return orig(tracker_inference_states, frame_idx, tracker_metadata=tracker_metadata,
                        low_res_masks=low_res_masks)
        finally:
            self.in_update_memories = False

    def on_occlusion(self, orig, *a, **k):
        to_suppress = orig(*a, **k)
        self.step["occlusion_suppressed"] = [bool(b) for b in to_suppress]
        return to_suppress

    def on_shrinkage(self, orig, pred_masks):
        out = orig(pred_masks)
        if self.in_update_memories:
            self.step["mem"]["shrink_suppressed"] = [bool(b) for b in (out != pred_masks).flatten(1).any(1)]
            if self.probe:
                edge, tie = shrinkage_knife_edges(pred_masks, orig)
                self.step["mem"]["shrink_knife_edge"], self.step["mem"]["shrink_tie_decided"] = edge, tie
        return out

    def on_build_outputs(self, orig, *a, **k):
        """Records the frame's output pixels that sit on a knife edge: where any object's video-resolution logit
        (tracked masks, and new detections after hole filling, as ``build_outputs`` makes them) is within
        PIXEL_TOL of 0."""
        assert not a, "build_outputs is called with keywords"
        height, width = k["orig_vid_height"], k["orig_vid_width"]
        logits = [F.interpolate(k["tracker_low_res_masks_global"].unsqueeze(1), size=(height, width),
                                mode="bilinear", align_corners=False)]
        new = torch.as_tensor(k["tracker_update_plan"]["new_det_fa_inds"], dtype=torch.long)
        if len(new):
            masks = sam3_video_base_mod.fill_holes_in_mask_scores(
                k["det_out"]["mask"][new].unsqueeze(1), max_area=self.model.fill_hole_area, fill_holes=True,
                remove_sprinkles=True)
            logits.append(F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False))
        near = torch.cat(logits).abs().lt(PIXEL_TOL).any(0)[0] if sum(len(x) for x in logits) else \
            torch.zeros(height, width, dtype=torch.bool)
        self.step["out_knife_edge_px"] = pack_masks(cpu(near).numpy())
        return orig(*a, **k)

    def on_memory_encoder(self, orig, inference_state, frame_idx, batch_size, high_res_masks, object_score_logits,
                          is_mask_from_pts):
        feats, pos = orig(inference_state, frame_idx, batch_size, high_res_masks, object_score_logits,
                          is_mask_from_pts)
        assert feats.dtype == self.memory_dtype  # fp32: the bf16 storage cast is gone
        if self.step is not None:
            self.step["mem_encoder_batches"].append({
                "caller": "update_memories" if self.in_update_memories else (
                    "recondition_preflight" if self.in_recondition else "new_objects_preflight"),
                "bucket_obj_ids": [int(i) for i in inference_state["obj_ids"]],
                "object_score_logits": cpu(object_score_logits.reshape(-1)),
                "is_mask_from_pts": bool(is_mask_from_pts)})
        return feats, pos

    def finish(self) -> dict:
        raw = {}
        for f, d in sorted(self.detector_raw.items()):
            d = dict(d)
            d["nms_suppressed"] = cpu(d.pop("_logits_ref")[0, :, 0] != d["pred_logits"])
            raw[f] = d
        return raw


def pack_masks(masks) -> torch.Tensor:
    m = np.asarray(masks, dtype=bool)
    return torch.from_numpy(np.packbits(m, axis=-1)) if m.size else torch.zeros((*m.shape[:-1], (m.shape[-1] + 7) // 8),
                                                                                  dtype=torch.uint8)


def output_record(frame_idx: int, out: dict) -> dict:
    return {"frame_idx": int(frame_idx), "out_obj_ids": cpu(out["out_obj_ids"], torch.int64),
            "out_probs": cpu(np.asarray(out["out_probs"], np.float32)),
            "out_boxes_xywh": cpu(np.asarray(out["out_boxes_xywh"], np.float32)).reshape(-1, 4),
            "out_binary_masks_packed": pack_masks(out["out_binary_masks"]),
            "num_obj_tracked": int(out["frame_stats"]["num_obj_tracked"]) if out.get("frame_stats") else -1}


def run_loop(model, images: torch.Tensor, video_hw: tuple[int, int] = (VIDEO_H, VIDEO_W),
             memory_dtype: torch.dtype = torch.float32, probe: bool = True, after=None):
    """The official user flow: init_state, add_prompt(frame 0, text), propagate_in_video(start 0); ``probe``:
    probe the knife edges (off for the reruns that only compare decisions). ``after(model, state)``, if given,
    runs once the flow is recorded (its result in ``rec.interactive``)."""
    rec = Recorder(model, memory_dtype, probe)
    outputs, yield_after_step = [], []
    num_frames = len(images)
    with torch.inference_mode():
        state = model.init_state(f"<load-dummy-video-{num_frames}>")  # a state of the right length...
        state["input_batch"].img_batch = images.clone()  # ...holding the exact preprocessed frames
        state["orig_height"], state["orig_width"] = video_hw
        rec.phase = "add_prompt"
        f0, out0 = model.add_prompt(state, frame_idx=0, text_str=PROMPT)
        add_prompt_output = output_record(f0, out0)
        rec.phase = "propagate"
        for frame_idx, out in model.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=num_frames - 1):
            outputs.append(output_record(frame_idx, out))
            yield_after_step.append(len(rec.steps) - 1)
    rec.unwrap()
    rec.interactive = None
    if after is not None:
        with torch.inference_mode():
            rec.interactive = after(model, state)
    return rec, add_prompt_output, outputs, yield_after_step


def interactive_steps(model, state, click_frame: int = 2) -> list[dict]:
    """The interactive requests after the text flow (the official model's own methods, as its predictor calls
    them): a positive click on the first object (frame ``click_frame``), propagate forward from 0 (partial); a new
    object by a positive and a negative click there, a negative click refining it, propagate; remove that object (a user action), propagate (a
    fetch); a new object by a click two frames later, propagated forward then backward from there; the text prompt
    again on the middle frame (a reset), the full loop forward then in reverse from there. Each request's
    outputs (``output_record``), the action history and the tracker states' object ids after it."""
    steps = []
    num_frames = state["num_frames"]
    k = min(click_frame, num_frames - 1)

    def record(request: dict, outputs: list) -> None:
        steps.append({
            "request": request, "outputs": outputs,
            "action_history": [{"type": h["type"], "frame_idx": h.get("frame_idx"),
                                "obj_ids": sorted(map(int, h.get("obj_ids") or []))}
                               for h in state.get("action_history", [])],
            "states": [list(map(int, s["obj_ids"])) for s in state["tracker_inference_states"]]})
        print(request["type"], request.get("points") or request.get("obj_id", ""), "->", "; ".join(
            f"f{o['frame_idx']}: {o['out_obj_ids'].tolist()}" for o in outputs))

    def click(frame: int, points, labels, obj_id: int) -> None:
        f, out = model.add_prompt(state, frame_idx=frame, points=points, point_labels=labels, obj_id=obj_id,
                                  rel_coordinates=True)
        record({"type": "add_prompt", "frame_index": frame, "points": points, "point_labels": labels,
                "obj_id": obj_id}, [output_record(f, out)])

    def propagate(start: int, reverse: bool) -> None:
        outs = [output_record(f, out) for f, out in model.propagate_in_video(
            state, start_frame_idx=start, max_frame_num_to_track=num_frames, reverse=reverse)]
        record({"type": "propagate_in_video", "start_frame_index": start, "reverse": reverse}, outs)

    ids = sorted(int(i) for i in state["tracker_metadata"]["obj_ids_all_gpu"])
    target = ids[0] if ids else 0
    click(k, [[0.25, 0.35]], [1], target)
    propagate(0, False)
    new_id = int(state["tracker_metadata"]["max_obj_id"]) + 1
    click(k, [[0.7, 0.2], [0.3, 0.8]], [1, 0], new_id)
    click(k, [[0.45, 0.4]], [0], new_id)  # a negative click refining it (its earlier mask the prompt)
    propagate(0, False)
    model.remove_object(state, new_id, is_user_action=True)
    record({"type": "remove_object", "obj_id": new_id}, [])
    propagate(0, False)
    later = min(k + 2, num_frames - 1)
    click(later, [[0.5, 0.5]], [1], new_id + 1)
    propagate(later, False)
    propagate(later, True)
    # the concept again on a middle frame (it starts over), the full loop forward then in reverse from there
    middle = num_frames // 2
    f, out = model.add_prompt(state, frame_idx=middle, text_str=PROMPT)
    record({"type": "add_prompt", "frame_index": middle, "text": PROMPT}, [output_record(f, out)])
    propagate(middle, False)
    propagate(middle, True)
    return steps


# ----------------------------------------------------------------------------------------------------------

def decisions(rec, outputs) -> list:
    """The discrete trace of a run (what a parity test would compare exactly)."""
    tr = []
    for s in rec.steps:
        p = s["plan"]
        tr.append([s["frame_idx"], p["new_det_fa_inds"], p["new_det_obj_ids"], p["unmatched_trk_obj_ids"],
                   p["det_to_matched_trk_obj_ids"], p["obj_ids_newly_removed"], p["trk_id_to_max_iou_high_conf_det"],
                   s["buckets_after"], s.get("occlusion_suppressed"), s.get("mem", {}).get("shrink_suppressed"),
                   [r["obj_id"] for r in s["reconditioned"]], len(s["det"]["scores"])])
    return tr + [[o["frame_idx"], o["out_obj_ids"].tolist()] for o in outputs]


def robustness(model, images, rec, outputs, rel: float, video_hw: tuple[int, int] = (VIDEO_H, VIDEO_W),
               memory_dtype: torch.dtype = torch.float32) -> dict:
    """Rerun with every weight times (1 + rel * N(0, 1)): same decisions? how many mask pixels flip?"""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + rel * torch.randn(p.shape, generator=g))
    rec2, _, outputs2, _ = run_loop(model, images, video_hw, memory_dtype, probe=False)
    model.load_state_dict(saved)
    same = decisions(rec, outputs) == decisions(rec2, outputs2)
    flips = [0]
    if same:
        for a, b in zip(rec.steps, rec2.steps):
            for key in ("det", "trk"):
                if len(a[key]["masks"]):
                    flips.append(int(((a[key]["masks"] > 0) != (b[key]["masks"] > 0)).flatten(1).sum(1).max()))
        for a, b in zip(outputs, outputs2):
            if len(a["out_obj_ids"]):
                flips.append(int((np.unpackbits(a["out_binary_masks_packed"].numpy(), axis=-1)
                                  != np.unpackbits(b["out_binary_masks_packed"].numpy(), axis=-1)).sum()))
    return {"rel_weight_noise": rel, "same_decisions": bool(same), "max_pixel_flips_per_mask": max(flips)}


# ----------------------------------------------------------------------------------------------------------
# full size (--size full): the real sam3.pt architecture, seeded random weights, a short clip

FULL_NUM_FRAMES, FULL_VIDEO_H, FULL_VIDEO_W = 4, 360, 480
FULL_OUT = Path("/tmp/loop_full")
# Full size, random weights (found by a search over runs of this clip; the margins are printed and saved): the
# detector ranks its queries almost identically on every frame (the clip barely moves them), the top probabilities
# are 0.357 (query 40), 0.356 (89), 0.345 (69), 0.336 (108), 0.333 (93, 21), 0.332 (103), 0.330 (160); detector
# masks are large blobs (13k-83k of 288x288 pixels), propagated tracker masks cover ~80% of the frame (logits
# about +-0.7) and are nearly the same for every object. score_threshold_detection sits between 103 and 160 on
# every frame, NMS at 0.65 keeps 40, 89, 21, 103 (suppresses 69, 108, 93: IoU 0.75-0.91 with a kept one; the kept
# ones overlap <= 0.61); assoc_iou_thresh 0.3 lies between the det-track IoUs of the small detections (<= 0.22) and
# the large ones (>= 0.41), so 21 and 103 are born again on every frame; trk_assoc_iou_thresh 0.55 leaves the small
# conditioning track of 103 unmatched on frame 0 (max IoU 0.49) while the large tracks match 89 (>= 0.69).
CHANGED_FULL = {
    "score_threshold_detection": 0.3308, "new_det_thresh": 0.3308, "det_nms_thresh": 0.65, "assoc_iou_thresh": 0.3,
    "trk_assoc_iou_thresh": 0.55, "hotstart_delay": 2, "hotstart_unmatch_thresh": 1, "hotstart_dup_thresh": 1,
    "recondition_every_nth_frame": 2, "fill_hole_area": 6,
}
OBJ_SCORE_HEAD = "tracker.sam_mask_decoder.pred_obj_score_head.layers.2."
DECODER_ATTN_OUT = r"detector\.transformer\.decoder\.layers\.\d+\.(self_attn|ca_text|cross_attn)\.out_proj\."


def build_full(seed: int) -> Sam3VideoInferenceWithInstanceInteractivity:
    """``sam3.model_builder.build_sam3_video_model(checkpoint_path=None, load_from_HF=False, device="cpu")``
    itself (full sizes, the official default init), after ``torch.manual_seed(seed)``."""
    from sam3.model_builder import build_sam3_video_model

    torch.manual_seed(seed)
    return build_sam3_video_model(checkpoint_path=None, load_from_HF=False, device="cpu").eval()


def randomise_full(model, seed: int, neck_seed: int, neck_gain: float, decoder_attn_gain: float,
                   obj_score_gain: float, obj_score_bias: float | None) -> dict:
    """Seeded random weights on top of the official default init, every float tensor fp16-exact:
    - parameters created with ``torch.empty`` and never initialised (the text encoder's ``positional_embedding``
      and ``text_projection``; anything non-finite or > 1e3) get N(0, 0.02^2);
    - constant parameters (norm weights and biases, zero biases, layer scales, the zero-initialised box-refinement
      heads) get + 0.02 N(0, 1) noise, so that no path is hidden;
    - the second (tracker) neck ``sam2_convs``, a deepcopy of the detector's ``convs`` in the builder, gets its own
      seeded default init times ``neck_gain`` (as the tiny mode), so the two necks differ;
    - the detector decoder's attention outputs (``out_proj`` of ``self_attn``, ``ca_text``, ``cross_attn`` in its 6
      post-norm layers) times ``decoder_attn_gain``: at the default init the (nearly uniform, so query-independent)
      attention outputs dominate each residual and the 200 queries collapse (spread 8.7 -> 0.18 over the layers,
      detection probabilities all 0.1575 +- 1e-4, which puts every threshold on a tie); 0.25 keeps them apart
      (spread 9.4 at the last layer, probabilities 0.32-0.36);
    - the tracker's object-score head's last layer: weights times ``obj_score_gain``, bias set to ``obj_score_bias``
      (None: kept), so that propagated objects are present (the default init gives a logit of -0.004 on every
      propagated frame: every tracker mask empty);
    - then every float tensor of the state dict (parameters and the float buffer) is rounded through fp16.
    """
    g = torch.Generator().manual_seed(seed)
    done = {"empty_reinit": [], "constant_noised": []}
    with torch.no_grad():
        for name, p in model.named_parameters():
            bad = (not torch.isfinite(p).all()) or p.abs().max() > 1e3
            if name.endswith(("positional_embedding", "text_projection")) or bad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
                done["empty_reinit"].append(name)
            elif p.numel() == 1 or p.std() == 0:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
                done["constant_noised"].append(name)
        done["sam2_convs"] = len(sam2_convs_weights(model, neck_seed, neck_gain))
        done["decoder_attn_scaled"] = []
        for name, p in model.named_parameters():
            if re.fullmatch(DECODER_ATTN_OUT + r"(weight|bias)", name):
                p.mul_(decoder_attn_gain)
                done["decoder_attn_scaled"].append(name)
        assert len(done["decoder_attn_scaled"]) == 36, done["decoder_attn_scaled"]
        head = dict(model.named_parameters())
        head[OBJ_SCORE_HEAD + "weight"].mul_(obj_score_gain)
        if obj_score_bias is not None:
            head[OBJ_SCORE_HEAD + "bias"].fill_(obj_score_bias)
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.half().to(v.dtype))
    return done


def state_dict_digest(sd: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sd.items():
        h.update(k.encode())
        h.update(v.detach().contiguous().view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


def full_sizes() -> tuple[dict, dict]:
    values = tomllib.loads((ROOT / "sam3video" / "configs" / "sam3.toml").read_text())
    det = {k: v for k, v in values.items() if k in mpf.SIZES["full"]}
    assert det == mpf.SIZES["full"], "sam3.toml and make_parity_fixture's SIZES['full'] disagree"
    return det, mtf.read_sizes("sam3")


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = a @ b.T
    return inter / (a.sum(1)[:, None] + b.sum(1)[None] - inter).clamp(min=1)


def margins(rec, detector_raw: dict, model) -> dict:
    """How far the recorded run's decisions sit from their thresholds (full mode; the tiny mode checks this by a
    noisy rerun instead): detection probabilities vs score_threshold_detection and new_det_thresh (every query of
    every frame), the greedy-NMS IoUs (each candidate's max IoU with the kept candidates ranked above it) vs
    det_nms_thresh, every non-empty det-track IoU vs assoc_iou_thresh, every non-empty track's best IoU vs
    trk_assoc_iou_thresh, and the share of stored tracker-mask logits within 1e-3 of 0."""
    m = model
    out = {"score": 1.0, "new_det": 1.0, "nms": 1.0, "assoc": 1.0, "trk_assoc": 1.0}
    for d in detector_raw.values():
        p = d["pred_logits"].sigmoid()
        out["score"] = min(out["score"], float((p - m.score_threshold_detection).abs().min()))
        out["new_det"] = min(out["new_det"], float((p - m.new_det_thresh).abs().min()))
        cand = d["nms_candidates"]
        if len(cand) > 1:
            masks = torch.from_numpy(np.unpackbits(d["candidate_masks_packed"].numpy(), axis=-1)).bool()
            iou = _mask_iou(masks, masks)
            order = torch.argsort(p[cand], descending=True, stable=True).tolist()
            kept = []
            for j in order:
                if kept:
                    worst = float(iou[j, kept].max())
                    out["nms"] = min(out["nms"], abs(worst - m.det_nms_thresh))
                    if worst > m.det_nms_thresh:
                        continue
                kept.append(j)
    near_zero, total = 0, 0
    for st in rec.steps:
        det, trk = st["det"]["masks"].float() > 0, st["trk"]["masks"].float()
        near_zero += int((trk.abs() < 1e-3).sum())
        total += trk.numel()
        trk = trk > 0
        nonempty = trk.flatten(1).any(1)
        if len(det) and nonempty.any():
            iou = _mask_iou(det, trk[nonempty])
            out["assoc"] = min(out["assoc"], float((iou - m.assoc_iou_thresh).abs().min()))
            out["trk_assoc"] = min(out["trk_assoc"], float((iou.max(0).values - m.trk_assoc_iou_thresh).abs().min()))
    out["trk_logits_within_1e-3_of_0"] = near_zero / max(total, 1)
    return out


# ----------------------------------------------------------------------------------------------------------

def set_thresholds(model, base: dict, overrides: list[str]) -> dict:
    changed = dict(base)
    for kv in overrides:
        k, v = kv.split("=")
        changed[k] = (v == "True") if isinstance(getattr(model, k), bool) else type(getattr(model, k))(float(v))
    for k, v in changed.items():
        assert hasattr(model, k), k
        setattr(model, k, v)
    assert model.hotstart_unmatch_thresh <= model.hotstart_delay and model.hotstart_dup_thresh <= model.hotstart_delay
    return changed


def loop_config(model) -> dict:
    config = {k: getattr(model, k) for k in [*BUILDER, *CLASS_DEFAULTS]}
    config.update(image_size=model.image_size, image_mean=list(model.image_mean), image_std=list(model.image_std),
                  **{f"tracker.{k}": getattr(model.tracker, k) for k in (
                      "fill_hole_area", "non_overlap_masks_for_output", "clear_non_cond_mem_around_input",
                      "clear_non_cond_mem_for_multi_obj", "use_memory_selection", "mf_threshold", "num_maskmem",
                      "max_cond_frames_in_attn", "max_obj_ptrs_in_encoder", "memory_temporal_stride_for_eval",
                      "multimask_output_in_sam", "multimask_output_for_tracking", "multimask_min_pt_num",
                      "multimask_max_pt_num", "sigmoid_scale_for_mem_enc", "sigmoid_bias_for_mem_enc",
                      "non_overlap_masks_for_mem_enc", "image_size", "low_res_mask_size", "input_mask_size")})
    return config


def print_summary(rec, add_prompt_output, outputs, yield_after_step, robust, t_run: float, masks: bool) -> None:
    print(f"official loop: {len(rec.steps)} steps (frame 0 twice) in {t_run:.1f} s")
    for i, s in enumerate(rec.steps):
        p, tracked = s["plan"], s["trk"]["obj_ids"]
        shrunk = [o for o, b in zip(tracked, s.get("mem", {}).get("shrink_suppressed", [])) if b]
        occluded = [o for o, b in zip(tracked, s.get("occlusion_suppressed", [])) if b]
        print(f"step {i:2d} frame {s['frame_idx']} {s['phase']:10s} dets {len(s['det']['scores'])} "
              f"(p {' '.join(f'{float(x):.3f}' for x in s['det']['scores'])}) | tracked {tracked} "
              f"| born {p['new_det_obj_ids']} unmatched {p['unmatched_trk_obj_ids']} "
              f"removed {p['obj_ids_newly_removed']} reconditioned {[r['obj_id'] for r in s['reconditioned']]} "
              f"shrink-suppressed {shrunk} occlusion-suppressed {occluded} | buckets {s['buckets_after']}")
        if masks:  # full mode: what the masks look like (pixels > 0, logit ranges, object scores)
            d, t = s["det"]["masks"].float(), s["trk"]["masks"].float()
            print(f"         det mask px {[(m > 0).sum().item() for m in d]} | trk mask px "
                  f"{[(m > 0).sum().item() for m in t]} logits "
                  f"{[(round(m.min().item(), 2), round(m.max().item(), 2)) for m in t]} obj scores "
                  f"{[round(x, 3) for x in s['trk']['obj_score_logits'].tolist()]} matches "
                  f"{p['det_to_matched_trk_obj_ids']}")
    births = {}
    for s in rec.steps:
        if s["plan"]["new_det_obj_ids"]:
            births.setdefault(s["frame_idx"], []).extend(s["plan"]["new_det_obj_ids"])
    print("objects born per frame:", births)
    print("removed (hot start):", {s["frame_idx"]: s["plan"]["obj_ids_newly_removed"] for s in rec.steps
                                   if s["plan"]["obj_ids_newly_removed"]})
    print("reconditioned:", [(s["frame_idx"], r["obj_id"]) for s in rec.steps for r in s["reconditioned"]] or "never")
    print("add_prompt output (frame 0) ids:", add_prompt_output["out_obj_ids"].tolist())
    print("propagate_in_video yields (frame: ids, after step):",
          ", ".join(f"{o['frame_idx']}: {o['out_obj_ids'].tolist()} @{a}" for o, a in zip(outputs, yield_after_step)))
    if masks:
        print("output mask pixels:", [[int(np.unpackbits(m).sum()) for m in o["out_binary_masks_packed"].numpy()]
                                      for o in outputs])
    print("robustness:", robust)
    edges = {i: [o for o, e in zip(st["trk"]["obj_ids"], st["mem"]["shrink_knife_edge"]) if e]
             for i, st in enumerate(rec.steps) if any(st.get("mem", {}).get("shrink_knife_edge", []))}
    print("knife edges (step: objects whose area-shrinkage outcome moves within the probe):", edges or "none")
    ties = {i: [o for o, e in zip(st["trk"]["obj_ids"], st["mem"]["shrink_tie_decided"]) if e]
            for i, st in enumerate(rec.steps) if any(st.get("mem", {}).get("shrink_tie_decided", []))}
    print("exact ties (step: objects whose outcome rests on the first-index rule):", ties or "none")
    print("knife-edge output pixels per step:", [int(np.unpackbits(st["out_knife_edge_px"].numpy()).sum())
                                                 for st in rec.steps])


def recorded_run(patches, rec, detector_raw, add_prompt_output, outputs, yield_after_step, robust) -> dict:
    """The fixture keys both sizes share, in their saved order (what the official run recorded)."""
    return {
        "extra_keys": [],
        "patches": patches,
        "steps": rec.steps,
        "detector_raw": detector_raw,
        "detector_calls": rec.detector_calls,
        "add_prompt_output": add_prompt_output,
        "outputs": outputs,
        "yield_frame_order": [o["frame_idx"] for o in outputs],
        "yield_after_step": yield_after_step,
        "robustness": robust,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny",
                    help="tiny (default: tests/data/video_loop_parity) or full (sam3.pt sizes, random weights)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (tiny: required; full: default /tmp/loop_full, never under tests/data)")
    ap.add_argument("--neck-seed", type=int, default=0, help="seed of the sam2_convs init")
    ap.add_argument("--neck-gain", type=float, default=3 ** 0.5, help="factor on the sam2_convs default init weights")
    ap.add_argument("--clip-seed", type=int, default=0, help="seed of the clip's position jitter")
    ap.add_argument("--scene", choices=("three", "dense"), default="three",
                    help="three shapes (default) or eight, several entering together (more births per frame)")
    ap.add_argument("--memory-dtype", choices=("fp32", "bf16"), default="fp32",
                    help="how the official code stores encoded memories: fp32 (its bf16 casts patched out) or bf16 "
                         "(as the official code does on every device)")
    ap.add_argument("--name", default="video_loop_parity.pt",
                    help="file name of the tiny fixture inside --out (ending in .xz: lzma-compressed)")
    ap.add_argument("--set", nargs="*", default=[], metavar="ATTR=VALUE", help="override a threshold (exploring)")
    ap.add_argument("--robustness", type=float, default=None,
                    help="relative weight noise of the check rerun (0: skip; default 1e-6 tiny, 0 full)")
    ap.add_argument("--dry", action="store_true", help="do not write the fixture")
    ap.add_argument("--interactive", action="store_true",
                    help="then the interactive requests of interactive_steps (clicks, removal, partial propagation)")
    full = ap.add_argument_group("full size only")
    full.add_argument("--frames", type=int, default=FULL_NUM_FRAMES, help="clip length (full)")
    full.add_argument("--video-size", type=int, nargs=2, default=(FULL_VIDEO_H, FULL_VIDEO_W), metavar=("H", "W"))
    full.add_argument("--weights-seed", type=int, default=0, help="seed of the build and of the weight noise (full)")
    full.add_argument("--decoder-attn-gain", type=float, default=0.25,
                      help="factor on the detector decoder's attention output projections (full)")
    full.add_argument("--obj-score-gain", type=float, default=1.0,
                      help="factor on the object-score head's last weights (full)")
    full.add_argument("--obj-score-bias", type=float, default=2.0, help="the object-score head's last bias (full)")
    args = ap.parse_args(argv)
    if args.size == "full":
        return main_full(args)
    if args.out is None:
        ap.error("--out is required for --size tiny")
    if args.robustness is None:
        args.robustness = 1e-6
    t0 = time.time()
    patches = apply_patches(args.memory_dtype)
    memory_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.memory_dtype]
    det_sizes, trk_sizes = read_sizes()
    torch.manual_seed(0)
    model = build(det_sizes, trk_sizes)
    sam2 = sam2_convs_weights(model, args.neck_seed, args.neck_gain)
    n_keys = load_weights(model, sam2)
    changed = set_thresholds(model, CHANGED_DENSE if args.scene == "dense" else CHANGED, args.set)
    config = loop_config(model)
    print(f"built + loaded {n_keys} tensors in {time.time() - t0:.1f} s")

    images = preprocess(make_clip(args.clip_seed, scene=args.scene), det_sizes["resolution"])
    t1 = time.time()
    rec, add_prompt_output, outputs, yield_after_step = run_loop(
        model, images, memory_dtype=memory_dtype, after=interactive_steps if args.interactive else None)
    t_run = time.time() - t1
    detector_raw = rec.finish()
    robust = (robustness(model, images, rec, outputs, args.robustness, memory_dtype=memory_dtype)
              if args.robustness > 0 else None)
    print_summary(rec, add_prompt_output, outputs, yield_after_step, robust, t_run, masks=False)
    if args.dry:
        return 0

    fx = {
        "format": "video_loop_parity v2",
        "prompt": PROMPT,
        "num_frames": NUM_FRAMES, "orig_height": VIDEO_H, "orig_width": VIDEO_W,
        "scene": args.scene, "memory_dtype": args.memory_dtype, "official_threads": torch.get_num_threads(),
        "knife_edge": {"pixel_tol": PIXEL_TOL, "probe_abs": PROBE_ABS, "probe_rel": PROBE_REL,
                       "probe_trials": PROBE_TRIALS},
        **pack_images(images),
        "detector_sizes": det_sizes, "tracker_sizes": trk_sizes,
        "config": config, "config_changed": sorted(changed), "config_builder": dict(BUILDER),
        "seeds": {"neck": args.neck_seed, "clip": args.clip_seed, "build": 0}, "neck_gain": args.neck_gain,
        "sam2_convs": {k: v.half() for k, v in sam2.items()},
        **recorded_run(patches, rec, detector_raw, add_prompt_output, outputs, yield_after_step, robust),
        "interactive": rec.interactive or [],
    }
    assert all(torch.equal(v.half().float(), v) for v in sam2.values())
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / args.name
    save_fixture(fx, path)
    back = load_fixture(path)
    assert decisions(type("R", (), {"steps": back["steps"]}), back["outputs"]) == decisions(rec, outputs)
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.1f} s total")
    return 0


def main_full(args) -> int:
    """--size full: the official video model at full size (the builder itself), seeded random fp16-exact weights
    saved to OUT/state_dict.pt (fp16, the official keys), the recorded flow to OUT/fixture.pt."""
    out = (args.out or FULL_OUT).resolve()
    if out == (ROOT / "tests").resolve() or (ROOT / "tests").resolve() in out.parents:
        raise SystemExit(f"--size full must not write under tests/ (got {out})")
    robust_rel = args.robustness or 0.0
    t0 = time.time()
    patches = apply_patches()
    det_sizes, trk_sizes = full_sizes()
    model = build_full(args.weights_seed)
    done = randomise_full(model, args.weights_seed, args.neck_seed, args.neck_gain, args.decoder_attn_gain,
                          args.obj_score_gain, args.obj_score_bias)
    sd = model.state_dict()
    digest = state_dict_digest(sd)
    changed = set_thresholds(model, CHANGED_FULL, args.set)
    config = loop_config(model)
    assert config["image_size"] == 1008 and config["tracker.low_res_mask_size"] == 288
    print(f"built the full official video model ({len(sd)} tensors, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, digest {digest}) in "
          f"{time.time() - t0:.1f} s; re-initialised {done['empty_reinit']}, noised {len(done['constant_noised'])} "
          f"constant tensors")
    if not args.dry:
        out.mkdir(parents=True, exist_ok=True)
        half = {k: v.half() if v.dtype == torch.float32 else v for k, v in sd.items()}
        assert all(torch.equal(half[k].to(v.dtype), v) for k, v in sd.items())
        torch.save(half, out / "state_dict.pt")
        print(f"saved {out / 'state_dict.pt'} ({(out / 'state_dict.pt').stat().st_size / 1e9:.2f} GB)")
        del half

    video_hw = tuple(args.video_size)
    images = preprocess(make_clip(args.clip_seed, args.frames, *video_hw), det_sizes["resolution"])
    t1 = time.time()
    rec, add_prompt_output, outputs, yield_after_step = run_loop(model, images, video_hw)
    t_run = time.time() - t1
    detector_raw = rec.finish()
    robust = robustness(model, images, rec, outputs, robust_rel, video_hw) if robust_rel > 0 else None
    print_summary(rec, add_prompt_output, outputs, yield_after_step, robust, t_run, masks=True)
    margin = margins(rec, detector_raw, model)
    print("margins to the thresholds:", {k: round(v, 5) for k, v in margin.items()})
    print(f"official run: {t_run:.1f} s for {args.frames} frames ({t_run / args.frames:.1f} s per frame)")
    if args.dry:
        return 0
    fx = {
        "format": "video_loop_parity v1",
        "size": "full",
        "prompt": PROMPT,
        "num_frames": args.frames, "orig_height": video_hw[0], "orig_width": video_hw[1],
        "images": images,
        "detector_sizes": det_sizes, "tracker_sizes": trk_sizes,
        "config": config, "config_changed": sorted(changed), "config_builder": dict(BUILDER),
        "seeds": {"neck": args.neck_seed, "clip": args.clip_seed, "build": args.weights_seed,
                  "weights": args.weights_seed},
        "neck_gain": args.neck_gain, "decoder_attn_gain": args.decoder_attn_gain,
        "obj_score_gain": args.obj_score_gain, "obj_score_bias": args.obj_score_bias,
        "weights": "state_dict.pt", "weights_digest": digest, "weights_randomisation": done,
        "margins": margin,
        **recorded_run(patches, rec, detector_raw, add_prompt_output, outputs, yield_after_step, robust),
        "official_seconds": {"run": t_run, "per_frame": t_run / args.frames},
    }
    path = out / "fixture.pt"
    torch.save(fx, path)
    back = torch.load(path, weights_only=True)
    assert decisions(type("R", (), {"steps": back["steps"]}), back["outputs"]) == decisions(rec, outputs)
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.1f} s total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
