"""Training pieces: matching, losses, and a short run that lowers the loss (a smoke test)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from sam3video import build_model
from sam3video.train.data import DataConfig, sample_batch
from sam3video.train.losses import Sam3Criterion
from sam3video.train.matcher import hungarian_match, one_to_many_match
from sam3video.train.train import forward, lr_at


def test_hungarian_pairs_each_target_with_its_box():
    targets = [torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.6, 0.2, 0.2]]), torch.zeros(0, 4)]
    boxes = torch.tensor([[[0.7, 0.6, 0.2, 0.2], [0.5, 0.5, 0.5, 0.5], [0.2, 0.21, 0.1, 0.1]]] * 2)
    logits = torch.zeros(2, 3, 1)
    (rows, cols), (empty_rows, _) = hungarian_match(logits, boxes, targets)
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 2, 1: 0}
    assert len(empty_rows) == 0


def test_one_to_many_gives_each_target_several_good_queries():
    target = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.1, 0.1, 0.05, 0.05],
                           [0.49, 0.5, 0.2, 0.2]]])
    (rows, cols), = one_to_many_match(torch.zeros(1, 4, 1), boxes, [target], topk=3)
    assert sorted(rows.tolist()) == [0, 1, 3] and cols.tolist() == [0, 0, 0]


def test_batches_hold_prompts_targets_and_exemplars():
    config = DataConfig(exemplar_prob=1.0)
    batch = sample_batch(np.random.default_rng(0), 3, config)
    assert batch["images"].shape == (3, 3, 224, 224)
    assert len(batch["prompts"]) == len(batch["targets"]) == 6 and batch["img_ids"].tolist() == [0, 0, 1, 1, 2, 2]
    for target in batch["targets"]:
        assert target["masks"].shape[1:] == (64, 64) and len(target["masks"]) == len(target["boxes"])
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 1)).all()
    prompt = batch["geometric_prompt"]
    assert prompt.box_embeddings.shape[1] == 6 and (~prompt.box_mask).sum() >= 1


def test_schedule_warms_up_then_decays():
    assert lr_at(0, 1.0, 10, 100) == 0.1 and lr_at(9, 1.0, 10, 100) == 1.0
    assert lr_at(100, 1.0, 10, 100) == 0.05 and lr_at(50, 1.0, 10, 100) < 1.0


def test_a_short_run_lowers_the_loss():
    torch.manual_seed(0)
    model = build_model("tiny").train()
    config = DataConfig()
    batch = sample_batch(np.random.default_rng(1), 2, config)
    criterion = Sam3Criterion()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        loss, logs = criterion(forward(model, batch), batch["targets"])
        assert "loss_ce_o2m" in logs and "presence_loss" in logs  # DAC and presence terms are on
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.7 * losses[0]


def test_average_precision_by_hand():
    from sam3video.train.train import average_precision

    # ranked: TP, FP, TP with 2 ground truths: precision 1 at recall .5, 2/3 at recall 1
    assert average_precision([0.9, 0.8, 0.7], [True, False, True], 2) == 0.5 * 1 + 0.5 * (2 / 3)
    assert average_precision([0.9], [False], 3) == 0.0
    assert average_precision([], [], 0) == 0.0


def test_curriculum_starts_easy():
    from sam3video.train.data import curriculum

    base = DataConfig()
    early, late = curriculum(0, 1000, base), curriculum(10_000, 1000, base)
    assert early.world.num_targets[1] < base.world.num_targets[1] and late.world == base.world
    assert early.hard_negative_prob < late.hard_negative_prob == base.hard_negative_prob


def test_later_batches_put_two_present_concepts_and_two_absent_ones_on_an_image():
    from sam3video.train.data import curriculum

    config = curriculum(10_000, 1000, DataConfig(exemplar_prob=0.0, unknown_word_prob=0.0))
    assert config.prompts_per_image == 4 and config.second_positive
    batch = sample_batch(np.random.default_rng(2), 6, config)
    present = np.array([len(t["boxes"]) > 0 for t in batch["targets"]]).reshape(6, 4)
    assert (present.sum(1) == 2).any() and (~present[:, 2:]).all()  # the last two are absent concepts


def test_exported_weights_carry_the_calibrated_score_threshold(tmp_path):
    from sam3video import load_model
    from sam3video.processor import Sam3Processor
    from sam3video.train.train import export_weights
    from sam3video.video.predictor import VideoPredictor

    model = build_model("tiny")
    torch.save({"model": model.state_dict(), "config": {"model": model.config.to_dict()}, "step": 7},
               tmp_path / "last.pt")
    assert load_model(tmp_path / "last.pt", device="cpu").config == model.config  # a run's checkpoint loads too
    export_weights(tmp_path / "last.pt", tmp_path / "demo.pt", score_threshold=0.3)
    loaded = load_model(tmp_path / "demo.pt", device="cpu")
    assert loaded.config.score_threshold == 0.3
    config = VideoPredictor(loaded).config
    assert config.detection.score_threshold == config.tracker.box_only_low_score == 0.3
    assert config.tracker.high_score_threshold == config.tracker.new_track_threshold == pytest.approx(0.4)
    assert config.tracker.new_track_threshold == 0.4
    assert Sam3Processor(loaded).confidence_threshold == 0.3
    assert Sam3Processor(loaded, confidence_threshold=0.7).confidence_threshold == 0.7  # explicit wins
    assert VideoPredictor(model).config.detection.score_threshold == 0.5  # the official default


def test_matching_a_batch_equals_matching_each_image_alone():
    generator = torch.Generator().manual_seed(0)
    sizes = [3, 0, 1, 5, 2]
    targets = [torch.rand(g, 2, generator=generator).mul(0.6).add(0.2).repeat(1, 2).mul(torch.tensor([1, 1, 0.3, 0.3]))
               for g in sizes]
    boxes = torch.rand(len(sizes), 12, 4, generator=generator).mul(torch.tensor([1, 1, 0.3, 0.3])).clamp(min=0.02)
    for b, g in enumerate(sizes):  # some queries near the targets, so that one-to-many has matches
        boxes[b, 4:4 + g] = targets[b] + 0.01 * torch.rand(g, 4, generator=generator)
    logits = torch.randn(len(sizes), 12, 1, generator=generator)
    for match in (hungarian_match, one_to_many_match):
        together = match(logits, boxes, targets)
        for b, (rows, cols) in enumerate(together):
            (alone_rows, alone_cols), = match(logits[b:b + 1], boxes[b:b + 1], targets[b:b + 1])
            assert rows.tolist() == alone_rows.tolist() and cols.tolist() == alone_cols.tolist()
            assert len(rows) <= (sizes[b] if match is hungarian_match else 12) and (cols < max(sizes[b], 1)).all()
        assert sum(len(rows) for rows, _ in together) > 0


def test_batches_depend_on_seed_and_step_only_whatever_the_workers():
    from sam3video.train.data import BatchStream, batch_for_step

    config = DataConfig()
    with BatchStream(7, 100, 2, 50, config, workers=2) as parallel, BatchStream(7, 101, 2, 50, config) as resumed:
        from_workers = [next(parallel) for _ in range(3)]
        in_process = [next(resumed) for _ in range(2)]
    expected = [batch_for_step(7, step, 2, 50, config) for step in (100, 101, 102)]
    assert expected[0]["prompts"] != expected[1]["prompts"] or not torch.equal(expected[0]["images"],
                                                                                expected[1]["images"])
    for got, want in zip(from_workers + in_process, expected + expected[1:]):
        assert got["prompts"] == want["prompts"] and torch.equal(got["images"], want["images"])
        assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(got["targets"], want["targets"]))


def test_training_command_runs_evaluates_saves_and_resumes(tmp_path, capsys):
    from sam3video.train.train import main

    args = ["--out", str(tmp_path), "--config", "tiny", "--images-per-batch", "1", "--eval-batches", "1",
            "--eval-every", "2", "--log-every", "1", "--warmup", "1", "--threads", "1", "--device", "cpu"]
    main(args + ["--steps", "10", "--stop-at", "2"])
    assert (tmp_path / "last.pt").exists()
    main(args + ["--steps", "3"])
    printed = capsys.readouterr().out
    assert "stopped at step 2: --stop-at" in printed
    assert "resumed from" in printed and "at step 2" in printed and "step 3 " in printed
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and [r.split(",")[0] for r in rows[1:]] == ["2", "3"]


def test_training_on_the_randomised_world_in_bf16(tmp_path, capsys):
    """--world train --precision bf16 --exemplar-prob 1: two steps run, and the metrics row holds the
    held-out styles' scores beside the training world's."""
    import math

    from sam3video.train.train import main

    main(["--out", str(tmp_path), "--config", "tiny", "--images-per-batch", "1", "--eval-batches", "1",
          "--eval-every", "2", "--log-every", "1", "--warmup", "1", "--threads", "1", "--device", "cpu",
          "--steps", "2", "--world", "train", "--precision", "bf16", "--exemplar-prob", "1"])
    assert "held-out styles ap50=" in capsys.readouterr().out
    header, row = (tmp_path / "metrics.csv").read_text().splitlines()
    values = dict(zip(header.split(","), row.split(",")))
    assert values["step"] == "2" and math.isfinite(float(values["loss"]))
    assert 0 <= float(values["heldout_styles_f1"]) <= 1 and 0 <= float(values["heldout_styles_presence_acc"]) <= 1


def _recorded_examples(monkeypatch):
    """A list that fills with (world, example) for each ``sample_training_example`` call of a batch."""
    import sam3video.train.data as data

    seen, original = [], data.sample_training_example

    def recording(rng, world, **kw):
        seen.append((world, original(rng, world, **kw)))
        return seen[-1][1]

    monkeypatch.setattr(data, "sample_training_example", recording)
    return seen


def test_classic_share_draws_that_share_of_images_unstyled(monkeypatch):
    """--classic-share: about that share of a styled world's images come from the classic world; at 0
    the random stream is the one of a run without the option (no extra draw)."""
    import sam3video.train.data as data
    from sam3video.train.train import WORLDS

    original = data.sample_training_example
    seen = _recorded_examples(monkeypatch)
    config = DataConfig(world=WORLDS["train"], exemplar_prob=0.0)
    sample_batch(np.random.default_rng(3), 40, replace(config, classic_share=0.5))
    styles = [world.style for world, _ in seen]
    unstyled = sum(style is None for style in styles)
    assert 10 <= unstyled <= 30 and all(s is None or s.split == "train" for s in styles)
    seen.clear()
    sample_batch(np.random.default_rng(4), 1, config)  # classic_share 0: the example is the rng's first draw
    first = original(np.random.default_rng(4), config.world, positive_prob=config.positive_prob,
                     shape_prompt_prob=config.shape_prompt_prob, hard_negative_prob=config.hard_negative_prob)
    assert np.array_equal(seen[0][1].image, first.image) and seen[0][1].prompt == first.prompt


def test_gray_prob_sets_the_training_worlds_share_of_gray_clips():
    from argparse import Namespace

    from sam3video.data.styles import StyleConfig
    from sam3video.train.train import _world

    assert _world(Namespace(world="train", gray_prob=0.4)).style.gray_prob == 0.4
    assert _world(Namespace(world="train", gray_prob=None)).style.gray_prob == StyleConfig.gray_prob


def test_gray_share_turns_that_share_of_images_gray_in_every_world(monkeypatch):
    """--gray-share: about that share of images (classic ones too) come gray (R = G = B), marked gray in
    their truth, and only shape prompts are asked of them, with no exemplar query."""
    from sam3video.train.train import WORLDS

    seen = _recorded_examples(monkeypatch)
    config = DataConfig(world=WORLDS["train"], classic_share=0.5, gray_share=0.5, exemplar_prob=1.0)
    batch = sample_batch(np.random.default_rng(5), 40, config)
    gray = [(world, ex) for world, ex in seen if ex.truth.gray]
    assert 10 <= len(gray) <= 30
    assert any(world.style is None for world, _ in gray), "classic images are turned gray too"
    for _, ex in gray:
        assert (ex.image[..., 0] == ex.image[..., 1]).all() and (ex.image[..., 1] == ex.image[..., 2]).all()
    for i, (_, ex) in enumerate(seen):
        prompts = batch["prompts"][i * config.prompts_per_image:(i + 1) * config.prompts_per_image]
        if ex.truth.gray:  # shape words, or a word the world never shows
            assert all(" " not in p and p != "visual" for p in prompts)
    assert any(p == "visual" for p in batch["prompts"]), "colour images still get exemplar queries"


def test_reframe_prob_draws_classic_images_at_other_frame_sizes_and_aspects(monkeypatch):
    """--reframe-prob: classic images come at frame sizes from StyleConfig's ranges (portrait among them),
    with radii scaled by the short side; styled images keep their own sizes; the rest stay 320x240."""
    from sam3video.data.styles import StyleConfig
    from sam3video.train.train import WORLDS

    seen = _recorded_examples(monkeypatch)
    config = DataConfig(world=WORLDS["classic"], reframe_prob=0.5, exemplar_prob=0.0)
    batch = sample_batch(np.random.default_rng(6), 40, config)
    sizes = [ex.image.shape[:2] for _, ex in seen]
    reframed = [(w, (h, wd)) for (w, _), (h, wd) in zip(seen, sizes) if (h, wd) != (240, 320)]
    assert 10 <= len(reframed) <= 30 and batch["images"].shape == (40, 3, 224, 224)
    assert any(h > wd for _, (h, wd) in reframed), "portrait frames are drawn"
    low, high = StyleConfig.long_side_px
    for world, (h, wd) in reframed:
        assert low - 2 <= max(h, wd) <= high and (world.width, world.height) == (wd, h)
        assert world.radius_px[1] <= min(h, wd) / 4
    for world, _ in seen:
        scale = min(world.width, world.height) / 240
        assert world.radius_px[0] >= 0.5 * 12.0 * scale - 1e-6 or world.radius_px[0] == min(world.width, world.height) / 4
    seen.clear()
    sample_batch(np.random.default_rng(7), 10, replace(config, world=WORLDS["train"], reframe_prob=1.0))
    assert all(world.style is not None for world, _ in seen), "styled images are left to their style"


def test_training_command_wires_gray_share_and_reframe_prob(tmp_path):
    """The options reach the run's DataConfig (saved in the checkpoint's config)."""
    from sam3video.train.train import main

    main(["--out", str(tmp_path), "--config", "tiny", "--images-per-batch", "1", "--eval-batches", "1",
          "--eval-every", "5", "--log-every", "1", "--warmup", "1", "--threads", "1", "--device", "cpu",
          "--steps", "1", "--gray-share", "0.3", "--reframe-prob", "0.7"])
    data = torch.load(tmp_path / "last.pt", weights_only=True)["config"]["data"]
    assert data["gray_share"] == 0.3 and data["reframe_prob"] == 0.7


@pytest.mark.parametrize("bad", [["--workers", "-1"], ["--time-limit", "0"], ["--device", "nonsense"],
                                 ["--exemplar-prob", "1.5"], ["--classic-share", "-0.1"],
                                 ["--gray-prob", "0.5"], ["--gray-share", "2"], ["--reframe-prob", "-1"]])
def test_training_command_rejects_bad_options_in_one_line(tmp_path, bad, capsys):
    from sam3video.train.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), *bad])
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error:" in last_line and (bad[0] in last_line or bad[1] in last_line)
    assert not (tmp_path / "metrics.csv").exists()
