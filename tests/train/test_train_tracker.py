"""The demo tracker's training (SAM 2's recipe at small scale): a step lowers nothing in particular
but runs, checkpoints, resumes and exports a video checkpoint that ``--tracker sam3`` loads and runs;
the frozen detector stays the demo model's."""

import numpy as np
import torch

from sam3video.model.checkpoint import load_model
from sam3video.model.video_checkpoint import load_video_model
from sam3video.train import train_tracker


def test_clip_sample_prompts_objects_visible_on_frame_0():
    frames, masks = train_tracker.sample_clip(3, 224)
    assert frames.shape == (train_tracker.CLIP_FRAMES, 3, 224, 224)
    assert masks.dtype == torch.bool and masks.shape[:2] == (train_tracker.CLIP_FRAMES, masks.shape[1])
    assert 1 <= masks.shape[1] <= train_tracker.MAX_OBJECTS
    assert (masks[0].flatten(1).sum(1) >= train_tracker.MIN_AREA).all()


def test_train_resume_and_export(tmp_path):
    out = tmp_path / "run"
    train_tracker.main(["--out", str(out), "--steps", "2", "--eval-every", "2", "--heldout-clips", "1"])
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) >= 2
    first = torch.load(out / "last.pt", weights_only=True)
    train_tracker.main(["--out", str(out), "--steps", "3", "--eval-every", "3", "--heldout-clips", "1"])  # resumes at step 2
    second = torch.load(out / "last.pt", weights_only=True)
    assert first["step"] == 2 and second["step"] == 3
    changed = [k for k in first["model"] if k.startswith("tracker.")
               and not torch.equal(first["model"][k], second["model"][k])]
    assert changed, "a training step changes the tracker"
    demo = load_model("demo", device="cpu").state_dict()
    frozen = [k for k in demo if not torch.equal(second["model"][f"detector.{k}"], demo[k])]
    assert frozen == [], "the detector is frozen"
    train_tracker.main(["--out", str(out), "--export", str(tmp_path / "demo_video.pt")])
    model = load_video_model(tmp_path / "demo_video.pt", device="cpu")
    from sam3video.video.predictor import VideoPredictor
    from sam3video.video.session import TrackingConfig

    video = (np.random.default_rng(0).random((3, 96, 128, 3)) * 255).astype(np.uint8)
    results = list(VideoPredictor(model, TrackingConfig(tracker_name="sam3")).track(video, ["red circle"],
                                                                                     source_fps=10))
    assert [r.frame_index for r in results] == [0, 1, 2]


def test_init_from_another_run_and_click_frames_in_each_step(tmp_path):
    """``--init`` starts from a checkpoint's weights (here marked, then kept by a zero learning rate); ``--click-images``
    adds the click loss of ``train_clicks`` to each step."""
    model, config = train_tracker.demo_video_model()
    state = model.state_dict()
    state["tracker.no_obj_ptr"] = torch.full_like(state["tracker.no_obj_ptr"], 0.125)
    torch.save({"model": state, "config": config}, tmp_path / "init.pt")
    out = tmp_path / "run"
    train_tracker.main(["--out", str(out), "--steps", "1", "--eval-every", "1", "--heldout-clips", "1", "--lr", "0",
                        "--init", str(tmp_path / "init.pt"), "--click-images", "1"])
    saved = torch.load(out / "last.pt", weights_only=True)["model"]
    assert torch.equal(saved["tracker.no_obj_ptr"], state["tracker.no_obj_ptr"])
