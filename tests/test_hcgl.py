"""HCGL on vectors with known structure: the hierarchy, group answers, mixed groups, flags, the kNN state."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from audioid.index.hcgl import GuidedQueue, HcglConfig, KnnState, build_hierarchy, uncertain_order


def blobs(sizes, spread=0.05, seed=0, dim=32):
    """Unit vectors around one random centre per blob; returns vectors and blob index per row."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), dim))
    x = np.concatenate([c + spread * np.linalg.norm(c) * rng.standard_normal((n, dim)) for c, n in zip(centres, sizes)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def label_all(queue, truth, limit=10_000):
    """Answer every question with the truth; returns (labels, grouped, clips heard)."""
    n = len(truth)
    labels, grouped, heard = np.full(n, -1), np.zeros(n, bool), 0
    for _ in range(limit):
        q = queue.next(labels, grouped, np.zeros(n, bool), set())
        if q is None:
            break
        if q.clip < 0:
            todo = q.members[labels[q.members] < 0]
            labels[todo], grouped[todo] = q.klass, True
        else:
            labels[q.clip] = truth[q.clip]
            heard += 1
    return labels, grouped, heard


def test_hierarchy_nodes_are_contiguous_ranges():
    x, _ = blobs([30, 20, 10])
    h = build_hierarchy(x)
    assert sorted(h.order.tolist()) == list(range(60))
    root = len(h.children) - 1
    assert h.start[root] == 0 and h.end[root] == 60 and h.parent[root] == -1
    for node in range(h.n_leaves, len(h.children)):
        a, b = h.children[node]
        assert set(h.members(node)) == set(h.members(a)) | set(h.members(b))
        assert h.height[node] >= max(h.height[a], h.height[b])


def test_micro_clusters_for_large_pools():
    x, truth = blobs([400, 300, 300], seed=1)
    cfg = replace(HcglConfig(), max_points=200, micro_clusters=50)
    h = build_hierarchy(x, cfg)
    assert h.n_leaves <= 50 and sorted(h.order.tolist()) == list(range(1000))
    labels, grouped, heard = label_all(GuidedQueue(x, h, cfg), truth % 3)
    assert (labels == truth % 3).mean() > 0.99 and heard < 100


def test_pure_groups_are_labelled_by_their_checks():
    x, truth = blobs([50, 40, 30], seed=2)
    queue = GuidedQueue(x, build_hierarchy(x))
    labels, grouped, heard = label_all(queue, truth)
    assert (labels == truth).all()
    assert heard <= 3 * (1 + queue.n_checks(50)) and grouped.sum() >= 100


def test_a_mixed_group_splits_instead_of_being_labelled():
    # Two tight blobs of different classes close together, a third far away: the hierarchy joins the close
    # pair into one group of two classes before it joins the third.
    rng = np.random.default_rng(3)
    centre, far = rng.standard_normal((2, 32))
    near = centre + 0.3 * np.linalg.norm(centre) / np.sqrt(32) * rng.standard_normal(32)
    x = np.concatenate([c + 0.02 * np.linalg.norm(c) * rng.standard_normal((40, 32)) for c in (centre, near, far)])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    truth = np.repeat([0, 1, 2], 40)
    h = build_hierarchy(x)
    pair = next(n for n in range(h.n_leaves, len(h.children))
                if set(truth[h.members(n)]) == {0, 1} and len(h.members(n)) == 80)
    queue = GuidedQueue(x, h)
    n = len(x)
    labels, grouped = np.full(n, -1), np.zeros(n, bool)
    asked = []
    while (q := queue.next(labels, grouped, np.zeros(n, bool), set())) is not None:
        asked.append(q)
        if q.clip < 0:
            todo = q.members[labels[q.members] < 0]
            labels[todo], grouped[todo] = q.klass, True
        else:
            labels[q.clip] = truth[q.clip]
    assert (labels == truth).all()
    # The mixed pair was looked at, its checks heard both classes, and it was never labelled as one group.
    assert any(q.node == pair for q in asked)
    assert {int(truth[i]) for i in queue.checks(pair)} == {0, 1}
    assert not any(q.clip < 0 and q.node == pair for q in asked)


def test_split_and_skipped_groups_are_not_asked():
    x, truth = blobs([30, 30], seed=4)
    h = build_hierarchy(x)
    queue = GuidedQueue(x, h)
    n = len(x)
    q = queue.next(np.full(n, -1), np.zeros(n, bool), np.zeros(n, bool), set())
    q2 = queue.next(np.full(n, -1), np.zeros(n, bool), np.zeros(n, bool), {q.node})
    assert q2.node != q.node and not set(h.members(q.node)) < set(h.members(q2.node))
    skipped = np.zeros(n, bool)
    skipped[q.clip] = True
    q3 = queue.next(np.full(n, -1), np.zeros(n, bool), skipped, set())
    assert q3.clip != q.clip and q.clip not in q3.members


def test_knn_state_matches_a_full_search_and_rebuilds_on_undo():
    x, truth = blobs([20, 20, 20], spread=0.5, seed=5)
    knn = KnnState(x, k=5)
    labelled = {0: 0, 25: 1, 45: 2, 3: 0, 30: 1, 50: 2}
    knn.sync(labelled)
    fresh = KnnState(x, k=5)
    fresh.sync(dict(list(labelled.items())[::-1]))
    assert np.array_equal(knn.vote()[0], fresh.vote()[0])
    del labelled[0]
    knn.sync(labelled)
    rebuilt = KnnState(x, k=5)
    rebuilt.sync(labelled)
    assert knn.known == labelled and np.allclose(knn.vote()[1], rebuilt.vote()[1])
    rng = np.random.default_rng(0)
    labels = np.full(60, -1)
    for i, c in labelled.items():
        labels[i] = c
    i = uncertain_order(knn, labels, labels >= 0, rng)
    assert labels[i] == -1
