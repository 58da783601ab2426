"""Hierarchical cluster-guided labelling (HCGL), after Wigness, Draper & Beveridge, "Efficient Label Collection for
Unlabeled Image Datasets" (CVPR 2015), adapted to audio clips; plus the one-by-one random and uncertain orders.

The pool is embedded once (the index's transformed vectors) and clustered once into a Ward hierarchy, on the
vectors' discriminant coordinates (:func:`guided_space`): in the index's own axes a music bed ties its
speech-over-music clips to itself down to small clusters, so few groups would hold one class.  When the pool
is large, k-means micro-clusters are its leaves, so 30,000 clips need a 2,000-leaf linkage rather than a
30,000-point one.  Each cluster is ranked by *structural change*: how long it survives as a separate cluster
before it merges, relative to the height at which it merges (``1 - h(node) / h(parent)``), times its size (one
answer labels all of it).  The annotator hears the best-ranked cluster with no labelled, skipped or split member,
as its medoid plus a few diverse members (farthest-first from the medoid, so an odd one out is heard); one answer
labels the whole group (majority group labelling), "mixed" splits it into its children (a mixed leaf into single
clips).  Once enough labels exist, a group whose members the kNN vote over the labels so far puts in different
classes is flagged and split without asking, and a group-labelled clip that the vote puts in another class is
heard again (a review) whenever that is worth more than the next check: fixing a wrong label counts as two
labels gained (it stops misleading the vote as well as adding a right label), against the open members a
check's group would label per check still to hear.  The hierarchy is never rebuilt between answers: everything after
the build is a pure function of the answers, so a session resumes by replaying its log.

Pure numpy/scipy: no index, no files.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..fingerprint.discriminant import Discriminant
from .classify import CLASSES

#: Class index of each class name (the arrays below hold indices; -1 = no label).
CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}


@dataclass(frozen=True)
class HcglConfig:
    """Parameters of the hierarchy and of what a question shows.

    Attributes
    ----------
    max_points : int
        Largest pool clustered clip by clip (Ward's memory grows with its square); larger pools are first
        reduced to ``micro_clusters`` k-means centroids.
    micro_clusters : int
        Leaves of the hierarchy for large pools.
    kmeans_iter : int
        Lloyd iterations of the micro-clustering.
    offset : float
        The constant coordinate :func:`guided_space` appends to the standardised discriminant coordinates
        before putting them on the unit sphere, in the discriminant fit set's standard deviations: similarity
        then falls evenly with distance out to about this far.
    checks : float
        Diverse members heard besides the medoid of a group, per doubling of its size (``ceil(checks *
        log2(size))``, at most ``max_checks``): the larger the group, the more a wrong answer costs, so the more
        of it is heard before one answer labels it.
    max_checks : int
        Most diverse members heard per group.
    flag_share : float
        A group is split without asking when at least this share of its members' kNN votes goes to classes
        other than the commonest one.
    flag_min_labels : int
        Labelled clips needed before kNN votes are trusted to flag groups and dispute group labels.
    review_gain : float
        Labels gained by hearing a disputed group-labelled clip, per unit of the kNN vote share against its
        label (the chance that it is wrong): a wrong label fixed is worth two, as it both misleads and lacks.
    k, sharpness : int, float
        kNN vote over labelled clips (as :class:`audioid.index.classify.ClassifyConfig`: ``k`` nearest
        labelled clips, weight ``exp(sharpness * similarity)``).
    seed : int
        Seed of the k-means initialisation (the hierarchy is a deterministic function of the vectors and it).
    """

    max_points: int = 4000
    micro_clusters: int = 2000
    kmeans_iter: int = 10
    offset: float = 3.0
    checks: float = 0.85
    max_checks: int = 12
    flag_share: float = 0.5
    flag_min_labels: int = 30
    review_gain: float = 2.0
    k: int = 5
    sharpness: float = 10.0
    seed: int = 0


def guided_space(vectors: np.ndarray, discriminant: Discriminant, cfg: HcglConfig = HcglConfig()) -> np.ndarray:
    """The vectors the hierarchy and its questions work on: index vectors on ``discriminant``'s axes (the shipped
    :func:`audioid.fingerprint.discriminant.default_discriminant`), standardised, with ``cfg.offset`` appended,
    L2-normalised; shape ``(n, axes + 1)``."""
    return discriminant.project(vectors, cfg.offset)


@dataclass
class Hierarchy:
    """A Ward hierarchy over a pool, in scipy's node numbering (leaves ``0..L-1``, merges ``L..2L-2``).

    Attributes
    ----------
    order : np.ndarray
        Pool indices in dendrogram order: every node's members are ``order[start[node]:end[node]]``.
    start, end : np.ndarray
        Member range of each node in ``order``.
    children : np.ndarray
        ``(n_nodes, 2)`` child nodes (-1 for leaves).
    parent : np.ndarray
        Parent node (-1 for the root).
    height : np.ndarray
        Merge height (0 for leaves).
    score : np.ndarray
        Structural-change rank of each node (higher first).
    """

    order: np.ndarray
    start: np.ndarray
    end: np.ndarray
    children: np.ndarray
    parent: np.ndarray
    height: np.ndarray
    score: np.ndarray

    @property
    def n_leaves(self) -> int:
        return (len(self.children) + 1) // 2

    def members(self, node: int) -> np.ndarray:
        return self.order[self.start[node]:self.end[node]]

    def size(self) -> np.ndarray:
        return self.end - self.start


def kmeans(x: np.ndarray, k: int, n_iter: int, seed: int) -> np.ndarray:
    """Lloyd's k-means from ``k`` distinct rows drawn with ``seed``; returns each row's cluster (empty clusters
    dropped, labels renumbered ``0..k'-1``).  Distances by one matrix product per iteration: scipy's ``kmeans2``
    takes minutes at 30,000 x 2,000."""
    from scipy.sparse import csr_matrix

    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(len(x), k, replace=False)]
    labels = np.full(len(x), -1)
    for _ in range(n_iter):
        # |x|^2 is the same for every centroid of a row: the nearest one is the argmin of the rest.
        new = ((centroids * centroids).sum(axis=1)[None, :] - 2.0 * (x @ centroids.T)).argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        sums = csr_matrix((np.ones(len(x), x.dtype), (labels, np.arange(len(x)))), shape=(k, len(x))) @ x
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return np.unique(labels, return_inverse=True)[1]


def build_hierarchy(vectors: np.ndarray, cfg: HcglConfig = HcglConfig()) -> Hierarchy:
    """Ward hierarchy of ``vectors`` (one row per clip), over k-means micro-clusters when there are more than
    ``cfg.max_points`` rows."""
    from scipy.cluster.hierarchy import linkage

    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("cannot cluster an empty pool")
    if n > cfg.max_points:
        leaf_of = kmeans(x.astype(np.float32), min(cfg.micro_clusters, n), cfg.kmeans_iter, cfg.seed)
        n_leaves = int(leaf_of.max()) + 1
        counts = np.bincount(leaf_of, minlength=n_leaves)
        points = np.stack([x[leaf_of == i].mean(axis=0) for i in range(n_leaves)])
    else:
        leaf_of, n_leaves, counts, points = np.arange(n), n, np.ones(n, np.int64), x
    n_nodes = 2 * n_leaves - 1
    children = np.full((n_nodes, 2), -1, np.int64)
    height = np.zeros(n_nodes)
    if n_leaves > 1:
        # Centroids weighted by their clip counts are not what Ward on clips would give, but close: leaves
        # are small and tight, and the hierarchy only has to rank groups, not be exact.
        z = linkage(points, method="ward")
        children[n_leaves:] = z[:, :2].astype(np.int64)
        height[n_leaves:] = z[:, 2]
    parent = np.full(n_nodes, -1, np.int64)
    for node in range(n_leaves, n_nodes):
        parent[children[node]] = node
    # Dendrogram order of the leaves (iterative DFS from the root): each node covers a contiguous range.
    leaf_order, stack = [], [n_nodes - 1]
    while stack:
        node = stack.pop()
        if node < n_leaves:
            leaf_order.append(node)
        else:
            stack.extend(children[node][::-1])
    by_leaf = np.argsort(leaf_of, kind="stable")
    leaf_start = np.concatenate([[0], np.cumsum(counts)])
    order = np.concatenate([by_leaf[leaf_start[i]:leaf_start[i + 1]] for i in leaf_order])
    start, end = np.zeros(n_nodes, np.int64), np.zeros(n_nodes, np.int64)
    pos = 0
    for leaf in leaf_order:
        start[leaf], end[leaf] = pos, pos + counts[leaf]
        pos += counts[leaf]
    for node in range(n_leaves, n_nodes):      # scipy numbers merges after their children
        a, b = children[node]
        start[node], end[node] = min(start[a], start[b]), max(end[a], end[b])
    size = end - start
    ph = np.where(parent >= 0, height[np.maximum(parent, 0)], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        persistence = np.where(ph > 0, 1.0 - height / ph, 0.0)
    return Hierarchy(order, start, end, children, parent, height, persistence * size)


def medoid_and_diverse(vectors: np.ndarray, members: np.ndarray, n_diverse: int) -> tuple[int, list[int]]:
    """The member closest to the group's mean direction (its medoid under cosine similarity: vectors are
    L2-normalised) and up to ``n_diverse`` others picked farthest-first from it and from each other."""
    v = vectors[members]
    medoid = int(np.argmax(v @ v.mean(axis=0)))
    chosen = [medoid]
    nearest = v @ v[medoid]
    for _ in range(min(n_diverse, len(members) - 1)):
        far = int(np.argmin(nearest))
        if nearest[far] >= 1.0 - 1e-6:      # the rest are duplicates of what was chosen
            break
        chosen.append(far)
        nearest = np.maximum(nearest, v @ v[far])
    return int(members[medoid]), [int(members[i]) for i in chosen[1:]]


class KnnState:
    """The kNN vote of every pool clip over the labelled clips, kept up to date one label at a time.

    Holds each clip's ``k`` most similar labelled clips (each its own track, weights as the index's vote), so a
    new label costs one pass over the pool rather than a new search of every clip.
    """

    def __init__(self, vectors: np.ndarray, k: int = 5, sharpness: float = 10.0):
        self.vectors = vectors
        self.k, self.sharpness = k, sharpness
        self.known: dict[int, int] = {}
        self._sims = np.full((len(vectors), k), -np.inf, np.float32)
        self._classes = np.zeros((len(vectors), k), np.int64)

    def sync(self, labelled: dict[int, int]) -> None:
        """Make the labelled set ``{pool index: class index}``: added labels are folded in, anything else (an
        undo, a changed label) rebuilds."""
        if any(self.known.get(i, c) != c for i, c in labelled.items()) or not self.known.keys() <= labelled.keys():
            self.known = {}
            self._sims.fill(-np.inf)
        for i, c in labelled.items():
            if i not in self.known:
                self._add(i, c)

    def _add(self, i: int, c: int) -> None:
        s = self.vectors @ self.vectors[i]
        worst = self._sims.argmin(axis=1)
        rows = np.flatnonzero(s > self._sims[np.arange(len(s)), worst])
        self._sims[rows, worst[rows]] = s[rows]
        self._classes[rows, worst[rows]] = c
        self.known[i] = c

    def vote(self) -> tuple[np.ndarray, np.ndarray]:
        """Winning class index (-1 when nothing is labelled) and its share of the vote, per pool clip."""
        n = len(self.vectors)
        if not self.known:
            return np.full(n, -1, np.int64), np.zeros(n)
        valid = np.isfinite(self._sims)
        w = np.where(valid, np.exp(self.sharpness * (np.where(valid, self._sims, 0) - self._sims.max(axis=1,
                                                                                                    keepdims=True))), 0)
        votes = np.stack([(w * (self._classes == c)).sum(axis=1) for c in range(len(CLASSES))], axis=1)
        share = votes / votes.sum(axis=1, keepdims=True)
        return share.argmax(axis=1), share.max(axis=1)


@dataclass(frozen=True)
class Question:
    """What to do next.

    A clip to hear (``clip`` >= 0), as the next check of group ``node`` or on its own (``node`` -1), or again
    because the kNN vote disputes its group label (``review``); or, when a group's checks are all labelled and
    agree, the group label to apply (``clip`` -1, ``klass`` its class index) to ``members``.
    """

    node: int
    clip: int
    checks: list[int]         # pool indices heard for the group: its medoid, then its diverse members
    members: np.ndarray       # pool indices of the group
    klass: int = -1
    review: bool = False


class GuidedQueue:
    """HCGL question order over one hierarchy, a function of the answers given so far (so it can be replayed).

    Every clip heard is labelled on its own; a group is labelled as a whole once its medoid and diverse members
    are all labelled with one class.  A group is out of the running once it holds a group-labelled or skipped
    clip, heard clips of two classes (it is mixed), a node the annotator split, or (with enough labels) kNN
    votes split across classes (:class:`HcglConfig` ``flag_share``).  Group-labelled clips that the kNN vote
    over heard clips puts in another class are reviewed, most confidently disputed first, when that gains more
    than the next check (:class:`HcglConfig` ``review_gain``) and once nothing else is left.
    """

    def __init__(self, vectors: np.ndarray, hierarchy: Hierarchy, cfg: HcglConfig = HcglConfig()):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.h = hierarchy
        self.cfg = cfg
        self.knn = KnnState(self.vectors, cfg.k, cfg.sharpness)
        self._rank = np.argsort(-hierarchy.score, kind="stable")
        self._checks: dict[int, list[int]] = {}

    @classmethod
    def for_pool(cls, vectors: np.ndarray, discriminant: Discriminant, cfg: HcglConfig = HcglConfig()
                 ) -> "GuidedQueue":
        """The queue over a pool's index vectors: its hierarchy built on their :func:`guided_space`."""
        space = guided_space(vectors, discriminant, cfg)
        return cls(space, build_hierarchy(space, cfg), cfg)

    def n_checks(self, size: int) -> int:
        """Diverse members heard for a group of ``size`` clips."""
        return min(self.cfg.max_checks, int(np.ceil(self.cfg.checks * np.log2(max(size, 1)))))

    def checks(self, node: int) -> list[int]:
        """Medoid and diverse members of ``node`` (computed once per node)."""
        if node not in self._checks:
            members = self.h.members(node)
            medoid, diverse = medoid_and_diverse(self.vectors, members, self.n_checks(len(members)))
            self._checks[node] = [medoid, *diverse]
        return self._checks[node]

    def _per_node(self, mask: np.ndarray) -> np.ndarray:
        c = np.concatenate([[0], np.cumsum(mask[self.h.order])])
        return c[self.h.end] - c[self.h.start]

    def next(self, labels: np.ndarray, grouped: np.ndarray, skipped: np.ndarray, split: set[int]
             ) -> Question | None:
        """The next question.

        Parameters
        ----------
        labels : np.ndarray
            Class index per pool clip (-1: unlabelled).
        grouped : np.ndarray
            Clips labelled by a group answer (not heard).
        skipped : np.ndarray
            Clips the annotator skipped.
        split : set of int
            Nodes the annotator called mixed.
        """
        h, cfg = self.h, self.cfg
        heard = (labels >= 0) & ~grouped
        self.knn.sync({int(i): int(labels[i]) for i in np.flatnonzero(heard)})
        per_class = np.stack([self._per_node(heard & (labels == c)) for c in range(len(CLASSES))])
        blocked = ((per_class > 0).sum(axis=0) > 1) | (self._per_node(grouped | skipped) > 0)
        review, review_gain = None, 0.0       # no disputed clip: any other question gains more
        if heard.sum() >= cfg.flag_min_labels:
            pred, share = self.knn.vote()
            votes = np.stack([self._per_node(pred == c) for c in range(len(CLASSES))])
            blocked |= 1.0 - votes.max(axis=0) / h.size() >= cfg.flag_share
            disputed = np.flatnonzero(grouped & ~skipped & (pred >= 0) & (pred != labels))
            if len(disputed):
                review = int(disputed[np.argmax(share[disputed])])
                review_gain = cfg.review_gain * float(share[review])
        for node in np.flatnonzero(blocked).tolist() + list(split):
            node = int(h.parent[node])
            while node >= 0 and not blocked[node]:      # a group holding a mixed one is mixed
                blocked[node] = True
                node = int(h.parent[node])
        blocked[list(split)] = True
        open_ = self._per_node((labels < 0) & ~skipped) > 0
        candidates = self._rank[(open_ & ~blocked)[self._rank]]
        if len(candidates):
            node = int(candidates[0])
            checks = self.checks(node)
            todo = [i for i in checks if labels[i] < 0]
            members = h.members(node)
            if not todo:
                return Question(node, -1, checks, members, int(labels[checks[0]]))
            # A pure group labels its open members for the checks still to hear.
            if review_gain < np.count_nonzero(labels[members] < 0) / len(todo):
                return Question(node, todo[0], checks, members)
        else:
            rest = np.flatnonzero((labels < 0) & ~skipped)
            if len(rest) and review_gain < 1.0:
                return Question(-1, int(rest[0]), [], rest[:1])
        return None if review is None else Question(-1, review, [], np.array([review]), review=True)


def uncertain_order(knn: KnnState, labels: np.ndarray, handled: np.ndarray, rng: np.random.Generator
                    ) -> int | None:
    """The unhandled clip whose kNN vote over the labelled clips is least confident (random until ``knn.k``
    labels exist; ties broken at random)."""
    rest = np.flatnonzero(~handled)
    if not len(rest):
        return None
    lab = np.flatnonzero(labels >= 0)
    if len(lab) < knn.k:
        return int(rng.choice(rest))
    knn.sync({int(i): int(labels[i]) for i in lab})
    _pred, share = knn.vote()
    share = share[rest]
    return int(rng.choice(rest[share == share.min()]))
