"""Music / dialogue / both by a distance-weighted vote of the nearest labelled tracks, with abstention.

Works on the output of :func:`index.vectors.search_segments` (similarities and vector ids, best first) and the
classes the catalog gives the neighbours' tracks.  It abstains (``unknown``) instead of guessing when the nearest
labelled neighbour is not similar enough or the vote is split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .vectors import track_of

CLASSES = ("music", "dialogue", "both")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ClassifyConfig:
    """How neighbours vote (defaults measured by ``bench/classify.py``).

    Attributes
    ----------
    k : int
        Labelled neighbour *tracks* that vote, each once with its most similar window: the windows of one
        track (overlapping, alike) are one piece of evidence, not several.
    sharpness : float
        A track's weight is ``exp(sharpness * similarity)``: closer neighbours count more.
    min_similarity : float
        Abstain when the nearest labelled neighbour's cosine similarity is below this (the query is unlike
        anything labelled).
    min_share : float
        Abstain when the winning class holds less than this share of the vote.
    neighbours : int
        Distinct tracks reported as "sounds like".
    fetch : int
        Nearest windows to search for per query (:func:`index.vectors.search_segments`' ``k``), enough to
        find ``k`` distinct tracks when neighbouring tracks contribute several windows each.
    examples_below : int
        While the index holds fewer labelled tracks than this of any class, the package's built-in examples of
        all three vote too (:mod:`index.examples`; 0 = never): an index of songs alone still tells talk from
        music.
    """

    k: int = 5
    sharpness: float = 10.0
    min_similarity: float = 0.3
    min_share: float = 0.6
    neighbours: int = 3
    fetch: int = 100
    examples_below: int = 5


@dataclass(frozen=True)
class Classification:
    """The vote's outcome for one query window."""

    klass: str                                  # music | dialogue | both | unknown
    confidence: float                           # winning share of the vote (0 when nobody voted)
    neighbours: list[tuple[int, float]]         # (track id, similarity), most similar first, distinct tracks


def classify(sims: np.ndarray, ids: np.ndarray, class_of: dict[int, str | None],
             cfg: ClassifyConfig = ClassifyConfig(), examples: Sequence[tuple[str, float]] = ()) -> Classification:
    """Vote over one query's neighbours.

    Parameters
    ----------
    sims, ids : np.ndarray
        One row of :func:`index.vectors.search_segments` output (best first; id -1 = no result), best
        ``cfg.fetch`` windows.
    class_of : dict
        Class of each neighbour track (None or missing = unlabelled: reported as a neighbour, no vote).
    cfg : ClassifyConfig
    examples : sequence of (class, similarity)
        Built-in example groups (:meth:`index.examples.Examples.nearest`): they vote like labelled tracks but
        are not reported as neighbours.
    """
    tracks = track_of(ids)
    valid = tracks >= 0
    best: dict[int, float] = {}                 # track -> its most similar window, in order of first appearance
    for t, s in zip(tracks[valid].tolist(), np.asarray(sims, dtype=np.float64)[valid].tolist()):
        best[t] = max(s, best.get(t, -np.inf))
    neighbours = [(t, round(s, 4)) for t, s in list(best.items())[: cfg.neighbours]]
    labelled = sorted([*((class_of.get(t), s) for t, s in best.items() if class_of.get(t) in CLASSES), *examples],
                      key=lambda cs: -cs[1])[: cfg.k]
    if not labelled:
        return Classification(UNKNOWN, 0.0, neighbours)
    votes = dict.fromkeys(CLASSES, 0.0)
    top = labelled[0][1]
    for c, s in labelled:
        votes[c] += float(np.exp(cfg.sharpness * (s - top)))  # relative to the best: no overflow
    winner = max(votes, key=votes.get)
    share = votes[winner] / sum(votes.values())
    if top < cfg.min_similarity or share < cfg.min_share:
        return Classification(UNKNOWN, round(share, 4), neighbours)
    return Classification(winner, round(share, 4), neighbours)
