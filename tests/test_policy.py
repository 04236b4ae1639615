"""Threshold, patience and refractory grouping."""

from __future__ import annotations

import numpy as np

from edge.wake.policy import DetectionPolicy, ModelPolicy, detections_over


def scores(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(-1, 1)


def test_threshold_is_inclusive_and_detection_carries_time_and_peak():
    dets = detections_over(scores(0.1, 0.49, 0.5, 0.7, 0.2), [ModelPolicy("m", 0.5)])
    assert len(dets) == 1
    d = dets[0]
    assert (d.model, d.frame_index, d.score, d.frames_over) == ("m", 2, 0.5, 1)
    assert d.t == 0.24  # end of frame 2


def test_patience_needs_consecutive_frames_and_reports_the_peak():
    p = [ModelPolicy("m", 0.5, patience=3)]
    assert detections_over(scores(0.9, 0.9, 0.1, 0.9, 0.9, 0.1), p) == []
    dets = detections_over(scores(0.6, 0.95, 0.7, 0.8), p)
    assert [(d.frame_index, d.score, d.frames_over) for d in dets] == [(2, 0.95, 3)]


def test_refractory_period_gives_one_detection_per_utterance():
    p = [ModelPolicy("m", 0.5, refractory_s=2.0)]  # 25 frames
    s = np.zeros((80, 1), dtype=np.float32)
    s[10:14] = 0.9   # one utterance, several frames over
    s[30] = 0.9      # 20 frames later: still refractory
    s[36] = 0.9      # 26 frames after the first: a new detection
    dets = detections_over(s, p)
    assert [d.frame_index for d in dets] == [10, 36]


def test_models_are_independent():
    p = [ModelPolicy("a", 0.5), ModelPolicy("b", 0.8)]
    s = np.array([[0.6, 0.7], [0.1, 0.85]], dtype=np.float32)
    assert [(d.model, d.frame_index) for d in detections_over(s, p)] == [("a", 0), ("b", 1)]


def test_set_threshold_and_reset():
    policy = DetectionPolicy([ModelPolicy("m", 0.5)])
    policy.set_threshold("m", 0.9)
    assert policy.step(np.array([0.8]), 0) == []
    assert len(policy.step(np.array([0.95]), 1)) == 1
    assert policy.step(np.array([0.95]), 2) == []  # refractory
    policy.reset()
    assert len(policy.step(np.array([0.95]), 3)) == 1
