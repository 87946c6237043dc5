"""Exemplar memory: how prototypes decide which detections to suppress or keep."""

import numpy as np
import pytest


def _unit(v):
    v = np.asarray(v, np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_exemplar_filter_decides_between_close_prototypes_by_their_own_distance():
    """Features of similar objects can all sit within a few hundredths of cosine (the demo model: 0.98 to
    0.99 between a red and a blue circle): the nearer prototype decides, not an absolute cosine."""
    from sam3video.detections import Detections
    from sam3video.video.exemplars import Exemplar, ExemplarMemory, Prototype

    base, towards = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    positive, negative = _unit(base + 0.1 * towards), _unit(base - 0.1 * towards)  # cosine 0.98
    like_positive, like_negative = _unit(base + 0.09 * towards), _unit(base - 0.09 * towards)
    midway = _unit(base)
    memory = ExemplarMemory([], ["circle"])
    memory.prototypes = [Prototype(Exemplar(0, (0, 0, 1, 1), True), 0, positive),
                         Prototype(Exemplar(0, (2, 2, 3, 3), False), 0, negative)]
    embeddings = np.stack([like_positive, like_negative, midway])
    dets = Detections(np.zeros((3, 4), np.float32), [0.2, 0.9, 0.3], [0, 0, 0], data={"embedding": embeddings})
    kept = memory.filter(dets, score_threshold=0.5)
    assert kept.confidence.tolist() == pytest.approx([0.5, 0.3])  # lifted; suppressed; left alone
    assert (embeddings[1] @ positive > 0.9) and (embeddings[1] @ negative > embeddings[1] @ positive)
