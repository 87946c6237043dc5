"""Training the demo tracker's SAM heads on clicks (``train.train_clicks``): the training path is the session's click
path (``track_step`` on a frame without memory), the correction clicks follow the error, the data depend on
(seed, step) only, and a run checkpoints and resumes."""

import numpy as np
import torch

from sam3video.model.sam3_tracker_utils import MemoryBank
from sam3video.train import train_clicks


def test_the_trained_heads_are_the_sessions_click_path():
    """``sam_heads`` on a batch of objects of two frames = ``track_step`` (initial conditioning frame, no memory) per
    object, on the candidate of highest predicted IoU, where the object score lets the mask through."""
    torch.manual_seed(0)
    model, _ = train_clicks.demo_video_model()
    model.eval()
    frames = train_clicks.held_out_frames("classic", 2, 224)
    feats, pos, sizes = train_clicks.frame_features(model, torch.stack([f.image for f in frames]))
    coords, labels = train_clicks.first_prompts(frames, 224, rng=None)
    points = train_clicks.stack_points(coords, labels, "cpu")
    owner = torch.tensor([i for i, f in enumerate(frames) for _ in f.masks])
    with torch.no_grad():
        masks, ious, scores = train_clicks.sam_heads(model.tracker, feats, sizes, owner, points, None)
        for k in range(len(owner)):
            one = [x[:, owner[k : k + 1]] for x in feats]
            out = model.tracker.track_step(
                frame_idx=0, is_init_cond_frame=True, current_vision_feats=one,
                current_vision_pos_embeds=[x[:, owner[k : k + 1]] for x in pos], feat_sizes=sizes,
                point_inputs=type(points)(points.point_coords[k : k + 1], points.point_labels[k : k + 1]),
                mask_inputs=None, output_dict=MemoryBank(), num_frames=1, run_mem_encoder=False,
                use_prev_mem_frame=False)
            assert masks.shape[1] == 3  # one click: three candidates
            torch.testing.assert_close(out.object_score_logits, scores[k : k + 1])
            if float(scores[k]) > 0:
                torch.testing.assert_close(out.pred_masks[0, 0], masks[k, int(ious[k].argmax())])


def test_a_correction_click_goes_to_the_deepest_error():
    truth = np.zeros((40, 60), bool)
    truth[5:35, 5:35] = True
    pred = truth.copy()
    pred[10:30, 10:30] = False  # a 20 px hole: a miss deeper than the leak below
    pred[0:3, 40:43] = True
    (x, y), label = train_clicks.correction_click(pred, truth)
    assert label == 1 and 17 <= x <= 22 and 17 <= y <= 22
    pred = truth.copy()
    pred[10:30, 40:58] = True  # now only a leak
    (x, y), label = train_clicks.correction_click(pred, truth)
    assert label == 0 and 40 <= x < 58 and 10 <= y < 30
    assert train_clicks.correction_click(truth, truth) is None
    assert train_clicks.centre_of(truth) in {(19, 19), (20, 20), (19, 20), (20, 19)}


def test_a_step_s_frames_depend_on_seed_and_step_only():
    a = train_clicks.batch_for_step(0, 5, 2, 0.5, 224)
    b = train_clicks.batch_for_step(0, 5, 2, 0.5, 224)
    c = train_clicks.batch_for_step(0, 6, 2, 0.5, 224)
    assert all(torch.equal(x.image, y.image) and np.array_equal(x.masks, y.masks) for x, y in zip(a, b))
    assert not torch.equal(a[0].image, c[0].image)
    for frame in a:
        height, width = frame.size
        assert 1 <= len(frame.masks) <= train_clicks.MAX_OBJECTS
        assert (frame.masks.reshape(len(frame.masks), -1).sum(1) >= train_clicks.MIN_AREA_FRACTION * height * width).all()


def test_train_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["--out", str(out), "--images", "1", "--heldout-frames", "1"]
    train_clicks.main([*args, "--steps", "2", "--eval-every", "2"])
    first = torch.load(out / "last.pt", weights_only=True)
    train_clicks.main([*args, "--steps", "3", "--eval-every", "3"])  # resumes at step 2
    second = torch.load(out / "last.pt", weights_only=True)
    assert first["step"] == 2 and second["step"] == 3
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,loss") and [r.split(",")[0] for r in rows[1:]] == ["2", "3"]
    changed = [k for k in first["model"] if k.startswith("tracker.sam_mask_decoder")
               and not torch.equal(first["model"][k], second["model"][k])]
    assert changed, "a step changes the SAM heads"
    assert all(torch.equal(first["model"][k], second["model"][k]) for k in first["model"] if k.startswith("detector.")
               and ".sam2_convs." not in k), "the detector is frozen"
