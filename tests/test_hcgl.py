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
            labels[q.clip], grouped[q.clip] = truth[q.clip], False
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


def test_disputed_group_labels_are_reviewed_when_nothing_gains_more():
    # Heard clips of two classes (P: 0, Q: 1); R sits next to Q but was group-labelled 0 (wrong); S sits next
    # to P, group-labelled 0 (right); T is an open blob of 40 clips far from everything.
    x, blob = blobs([30, 30, 8, 8, 40], seed=5)
    rng = np.random.default_rng(5)
    x[60:68] = x[30:38] + 0.01 * rng.standard_normal((8, x.shape[1]))        # R beside Q
    x[68:76] = x[0:8] + 0.01 * rng.standard_normal((8, x.shape[1]))          # S beside P
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = np.array([0, 1, 1, 0, 0])[blob]
    labels = np.where(blob < 2, truth, -1)
    labels[blob == 2], labels[blob == 3] = 0, 0
    grouped = (blob == 2) | (blob == 3)
    queue = GuidedQueue(x, build_hierarchy(x))
    no_skips = np.zeros(len(x), bool)
    # An open group of 40 labels 40 clips per few checks: that comes first.
    q = queue.next(labels, grouped, no_skips, set())
    assert not q.review and q.clip >= 0 and set(blob[q.members]) == {4}
    labels[blob == 4], grouped[blob == 4] = 0, True
    # Nothing open: each wrong group label is heard again (and becomes a heard label), the right ones never.
    reviewed = []
    while (q := queue.next(labels, grouped, no_skips, set())) is not None:
        assert q.review and q.node == -1 and list(q.members) == [q.clip]
        reviewed.append(q.clip)
        labels[q.clip], grouped[q.clip] = truth[q.clip], False
    assert sorted(reviewed) == list(range(60, 68))
    assert (labels == truth).all()
    # Below flag_min_labels heard clips the kNN vote is not trusted, so nothing is disputed.
    labels[60:68], grouped[60:68] = 0, True
    strict = GuidedQueue(x, queue.h, replace(HcglConfig(), flag_min_labels=61))
    assert strict.next(labels, grouped, no_skips, set()) is None


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


def _three_classes(n=150, dim=32, seed=0):
    """Three classes in ``dim`` dimensions that differ along two directions only, with a large shared spread in
    the others (as a music bed shared by music and speech-over-music clips)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3 * n, dim)) * np.r_[0.3, 0.3, np.full(dim - 2, 3.0)]
    labels = np.repeat(np.array(["music", "dialogue", "both"]), n)
    x[labels == "dialogue", 0] += 2.0
    x[labels == "both", 1] += 2.0
    return x.astype(np.float32), labels


def test_discriminant_finds_the_directions_that_separate_the_classes():
    from audioid.fingerprint.discriminant import Discriminant

    x, labels = _three_classes()
    d = Discriminant.fit(x, labels)
    assert d.axes.shape == (32, 2) and d.classes == ("both", "dialogue", "music")
    # Nearly all the axes' weight lies on the two separating dimensions, not on the high-variance rest.
    assert np.all(np.linalg.norm(d.axes[:2], axis=0) / np.linalg.norm(d.axes, axis=0) > 0.95)
    z = d.coordinates(x)
    assert np.allclose(z.mean(axis=0), 0, atol=1e-4) and np.allclose(z.std(axis=0), 1, atol=1e-3)
    # A refit gives the same axes (signs fixed), and the dict form reads back to the same projection.
    again = Discriminant.from_dict(d.to_dict())
    assert np.array_equal(Discriminant.fit(x, labels).axes, d.axes)
    assert np.allclose(again.project(x, 3.0), d.project(x, 3.0), atol=1e-6)


def test_guided_space_makes_class_pure_groups_where_the_raw_vectors_do_not():
    """Ward on the raw vectors groups by the shared spread; on the discriminant space, by class."""
    from audioid.fingerprint.discriminant import Discriminant
    from audioid.index.hcgl import guided_space

    x, labels = _three_classes(seed=1)
    d = Discriminant.fit(x, labels)
    test, truth = _three_classes(seed=2)                        # clips the axes were not fitted on
    raw = test / np.linalg.norm(test, axis=1, keepdims=True)
    space = guided_space(test, d)
    assert space.shape == (len(test), 3) and np.allclose(np.linalg.norm(space, axis=1), 1, atol=1e-6)

    def purity(vectors):
        from scipy.cluster.hierarchy import fcluster, linkage
        cut = fcluster(linkage(vectors, "ward"), 3, "maxclust")
        majority = [max(np.sum((cut == c) & (truth == k)) for k in np.unique(truth)) for c in np.unique(cut)]
        return sum(majority) / len(truth)

    assert purity(space) > 0.9 > 0.6 > purity(raw)


def test_shipped_discriminant_matches_the_shipped_transform():
    from audioid.fingerprint.discriminant import default_discriminant
    from audioid.fingerprint.embedding import default_standardizer

    d = default_discriminant()
    assert d.classes == ("both", "dialogue", "music")
    assert d.axes.shape == (default_standardizer().out_dim, 2) and (d.scale > 0).all()


def test_shipped_discriminant_puts_synthetic_music_and_speech_apart():
    from audioid import synth
    from audioid.fingerprint.discriminant import default_discriminant
    from audioid.index.embeddings import EmbeddingSetup
    from audioid.index.hcgl import guided_space

    setup = EmbeddingSetup.default()
    sr = setup.sample_rate
    music = [synth.music_track(seed, 10.0, sr) for seed in range(1, 5)]
    speech = [synth.speech_like(seed, 10.0, sr) for seed in range(1, 5)]
    space = guided_space(np.concatenate([setup.query_vector(y, sr) for y in music + speech]), default_discriminant())
    sim = space @ space.T
    within = (sim[:4, :4].sum() - 4 + sim[4:, 4:].sum() - 4) / 24
    assert within > 0.95 and sim[:4, 4:].max() < 0.9
