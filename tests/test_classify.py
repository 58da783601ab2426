"""kNN vote with abstention, on hand-made neighbour lists."""
from __future__ import annotations

import numpy as np

from audioid.index.classify import ClassifyConfig, classify
from audioid.index.vectors import vector_ids


def _ids(*tracks: int) -> np.ndarray:
    return np.array([vector_ids(t, 1)[0] for t in tracks] + [-1])


def test_majority_of_close_labelled_neighbours_wins():
    classes = {1: "music", 2: "music", 3: "dialogue", 4: None}
    r = classify(np.array([0.9, 0.88, 0.5, 0.95, -np.inf]), _ids(1, 2, 3, 4), classes)
    assert r.klass == "music" and r.confidence > 0.9
    # Unlabelled tracks are neighbours but do not vote; neighbours are distinct tracks, most similar first.
    assert [t for t, _ in r.neighbours] == [1, 2, 3]


def test_abstains_when_far_or_split():
    classes = {1: "music", 2: "dialogue"}
    far = classify(np.array([0.1, 0.05, -np.inf]), _ids(1, 2), classes)
    assert far.klass == "unknown"
    split = classify(np.array([0.8, 0.8, -np.inf]), _ids(1, 2), classes)
    assert split.klass == "unknown" and split.confidence == 0.5
    nobody = classify(np.array([0.9, -np.inf]), _ids(5), classes)
    assert (nobody.klass, nobody.confidence) == ("unknown", 0.0)


def test_each_track_votes_once_with_its_best_window():
    # Track 1's many windows do not outvote two dialogue tracks; its best window is its similarity.
    classes = {1: "music", 2: "dialogue", 3: "dialogue"}
    sims = np.array([0.9, 0.89, 0.88, 0.87, 0.86, 0.9, 0.9, -np.inf])
    ids = np.array([*vector_ids(1, 5), vector_ids(2, 1)[0], vector_ids(3, 1)[0], -1])
    r = classify(sims, ids, classes, ClassifyConfig(k=3, sharpness=1.0, min_share=0.5))
    assert r.klass == "dialogue" and abs(r.confidence - 2 / 3) < 1e-3
    assert r.neighbours == [(1, 0.9), (2, 0.9), (3, 0.9)]
    # only the k most similar labelled tracks vote
    r = classify(sims, ids, classes, ClassifyConfig(k=1, min_share=0.5))
    assert (r.klass, r.confidence) == ("music", 1.0)


def test_closer_neighbours_count_more():
    classes = {1: "both", 2: "dialogue", 3: "dialogue"}
    r = classify(np.array([0.95, 0.6, 0.6, -np.inf]), _ids(1, 2, 3), classes, ClassifyConfig(sharpness=20.0))
    assert r.klass == "both"
