"""Exemplar memory: prototypes, the appearance test of a detection, and the per-track decision."""

import numpy as np
import pytest

from sam3video.detections import Detections
from sam3video.errors import InputError
from sam3video.trackers.association.exemplars import Exemplar, ExemplarConfig, ExemplarMemory, Prototype


def _unit(v):
    v = np.asarray(v, np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _dets(embeddings, class_id=None, tracker_id=None, boxes=None):
    n = len(embeddings)
    return Detections(np.zeros((n, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32),
                      np.full(n, 0.9), np.zeros(n, np.int64) if class_id is None else class_id,
                      tracker_id=None if tracker_id is None else np.asarray(tracker_id),
                      data={"embedding": np.stack(embeddings)})


def _memory(positive=None, negative=None, config=None, class_names=("circle",)):
    memory = ExemplarMemory([], list(class_names), config or ExemplarConfig())
    if positive is not None:
        memory.prototypes.append(Prototype(Exemplar(0, (0, 0, 10, 10), True), 0, positive))
    if negative is not None:
        memory.prototypes.append(Prototype(Exemplar(0, (20, 20, 30, 30), False), 0, negative))
    return memory


def test_close_prototypes_are_told_apart_by_their_own_distance():
    """Features of similar objects can all sit within a few hundredths of cosine: with a positive and
    a negative, the nearer one decides, in units of their distance, not an absolute cosine."""
    base, towards = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    positive, negative = _unit(base + 0.1 * towards), _unit(base - 0.1 * towards)  # cosine 0.98
    like_positive, like_negative = _unit(base + 0.09 * towards), _unit(base - 0.09 * towards)
    memory = _memory(positive, negative)
    assert memory.passes(_dets([like_positive, like_negative, _unit(base)])).tolist() == [True, False, False]
    assert like_negative @ positive > 0.9  # an absolute cosine test alone would have passed it


def test_positives_only_need_similarity_and_negatives_only_need_dissimilarity():
    a, b = _unit([1, 0, 0]), _unit([0, 1, 0])
    near_a, between = _unit([1, 0.3, 0]), _unit([1, 1.2, 0])  # cosines to a: 0.96, 0.64 (0.77 to b)
    config = ExemplarConfig(positive_similarity=0.7, negative_similarity=0.7)
    assert _memory(positive=a, config=config).passes(_dets([near_a, between, b])).tolist() == [True, False, False]
    assert _memory(negative=a, config=config).passes(_dets([near_a, between, b])).tolist() == [False, True, True]


def test_prompts_without_prototypes_are_left_alone():
    a, b = _unit([1, 0, 0]), _unit([0, 1, 0])
    memory = _memory(positive=a, class_names=("circle", "square"))
    dets = _dets([b, b], class_id=np.array([0, 1]), tracker_id=[1, 2])
    assert memory.passes(dets).tolist() == [False, True]
    assert memory.select(dets).tracker_id.tolist() == [2]


def test_a_track_is_kept_while_most_of_its_detections_pass():
    """One odd frame neither hides a good track nor shows a bad one; a track that keeps failing goes."""
    a, b = _unit([1, 0, 0]), _unit([0, 1, 0])
    memory = _memory(positive=a)
    shown = []
    for track_1, track_2 in [(a, b), (a, b), (b, a), (a, a), (b, a), (b, a)]:
        out = memory.select(_dets([track_1, track_2], tracker_id=[1, 2]))
        shown.append(out.tracker_id.tolist())
    # track 1: 2 of 3 pass on frame 2 (kept through the odd frame), 3 of 6 on frame 5 (not a majority);
    # track 2: hidden while 0/1, 0/2, 1/3, 2/4 pass, shown from 3/5 on
    assert shown == [[1], [1], [1], [1], [1, 2], [2]]
    assert memory.votes == {1: (3, 6), 2: (4, 6)}
    assert memory.hidden == {1: 1, 2: 4}  # frames each track was hidden (summary.json: exemplar_effect)
    assert memory.summary()["hidden_tracks"] == {"1": 1, "2": 4}


def test_tracks_marked_by_an_exemplar_are_kept_or_hidden_whatever_they_look_like():
    a, b = _unit([1, 0, 0]), _unit([0, 1, 0])
    memory = _memory(positive=a, negative=b)
    memory.attach_tracks(0, _dets([b, a], tracker_id=[7, 8], boxes=[[0, 0, 10, 10], [20, 20, 30, 30]]))
    assert [p.track_id for p in memory.prototypes] == [7, 8]
    out = memory.select(_dets([b, a, a], tracker_id=[7, 8, 9]))
    assert out.tracker_id.tolist() == [7, 9]  # 7 marked positive (looks negative), 8 marked negative


def test_prototype_comes_from_the_best_overlapping_query_even_a_low_scoring_one():
    a, b, box_region = _unit([1, 0, 0]), _unit([0, 1, 0]), _unit([0, 0, 1])
    exemplars = [Exemplar(3, (10, 10, 20, 20), True), Exemplar(3, (50, 50, 60, 60), False)]
    memory = ExemplarMemory(exemplars, ["circle"])
    candidates = Detections(np.array([[11, 10, 20, 21], [0, 0, 15, 15]], np.float32), [0.02, 0.9], [0, 0],
                            data={"embedding": np.stack([a, b])})
    memory.learn(3, candidates, {e.box: box_region for e in exemplars})
    assert np.allclose(memory.prototypes[0].embedding, a)  # IoU 0.83 at score 0.02, not the 0.9 one
    assert np.allclose(memory.prototypes[1].embedding, box_region)  # no query there: the box region


def test_exemplar_config_rejects_impossible_values():
    with pytest.raises(InputError, match="majority"):
        ExemplarConfig(majority=1.0)
