"""The index's embedding side: how its vectors are made, and the music / dialogue / both vote for a query.

An index fixes its embedding once, at build: the :class:`EmbeddingConfig`, the :class:`Standardizer` (the
package's default transform, copied into the index so a later release cannot change what stored vectors mean)
and the FAISS ``index_factory`` string of its vector segments.  Adds reuse all three, so an index grown by adds
holds exactly the vectors of one built in one go.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..fingerprint.audio import resample
from ..fingerprint.embedding import EmbeddingConfig, Standardizer, default_standardizer, embed, embed_windows
from .catalog import Catalog
from .classify import Classification, ClassifyConfig, classify
from .examples import Examples
from .vectors import VectorSegment, search_segments, track_of

# Exhaustive search over half-precision vectors: similarities within 1e-3 of float32 ones, at half the size.
DEFAULT_FACTORY = "SQfp16"


@dataclass(frozen=True)
class EmbeddingSetup:
    """Embedding config, transform and vector index type of one index."""

    config: EmbeddingConfig
    standardizer: Standardizer
    factory: str = DEFAULT_FACTORY

    @classmethod
    def default(cls, factory: str | None = None) -> "EmbeddingSetup":
        cfg = EmbeddingConfig()
        std = default_standardizer(cfg)
        factory = (factory or DEFAULT_FACTORY).strip()
        check_factory(factory, std.out_dim)
        return cls(cfg, std, factory)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def reference_vectors(self, y: np.ndarray) -> np.ndarray:
        """Transformed vectors of a reference's overlapping windows (``y`` mono at :attr:`sample_rate`)."""
        _starts, raw = embed_windows(y, self.sample_rate, self.config)
        return self.standardizer.transform(raw)

    def query_vector(self, y: np.ndarray, sr: int) -> np.ndarray:
        """Transformed vector, shape ``(1, dim)``, of the last window of a query (its outro)."""
        y = resample(y, sr, self.sample_rate)
        window = int(round(self.config.window_s * self.sample_rate))
        return self.standardizer.transform(embed(y[-window:], self.sample_rate, self.config))

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "standardizer": self.standardizer.to_dict(),
                "factory": self.factory}

    @classmethod
    def from_dict(cls, d: dict) -> "EmbeddingSetup":
        return cls(EmbeddingConfig.from_dict(d["config"]), Standardizer.from_dict(d["standardizer"]),
                   str(d.get("factory", DEFAULT_FACTORY)))

    def write(self, path: str) -> None:
        """Write to ``path`` (a new file, fsynced: it becomes live when a MANIFEST names it)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def read(cls, path: str) -> "EmbeddingSetup":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def check_factory(factory: str, dim: int) -> None:
    """Raise ValueError naming ``factory`` when FAISS cannot build an inner-product index of ``dim`` from it."""
    import faiss

    from .vectors import faiss_spec

    try:
        # Checked as built for a large index (IVF list counts shrink for small ones, never grow).
        faiss.index_factory(dim, faiss_spec(factory, 1 << 40), faiss.METRIC_INNER_PRODUCT)
    except Exception as e:  # FAISS raises RuntimeError with its own text for every kind of bad string
        raise ValueError(f"vector index type {factory!r} is not a usable FAISS index_factory string ({e})") from None


@dataclass(frozen=True)
class Vote:
    """The class vote for one query vector, with the most similar reference tracks."""

    klass: str                       # music | dialogue | both | unknown
    confidence: float
    neighbours: list[dict]           # {"track_id", "label", "similarity"}, most similar first
    top_similarity: float | None     # the nearest neighbour's (None: the index holds no vectors)


def classify_vectors(vectors: np.ndarray, segments: Sequence[VectorSegment], removed_tracks: frozenset[int],
                     catalog: Catalog, cfg: ClassifyConfig = ClassifyConfig(),
                     examples: Examples | None = None) -> list[Vote]:
    """The kNN vote for each transformed vector (rows of ``vectors``) over an index's vector ``segments`` and the
    built-in ``examples`` that vote with them (:meth:`index.store.IndexReader.vote_examples`)."""
    if not segments:
        return [Vote("unknown", 0.0, [], None) for _ in range(len(vectors))]
    sims, ids = search_segments(list(segments), vectors, cfg.fetch, removed_tracks)
    tracks = track_of(ids)
    info = catalog.brief(np.unique(tracks[tracks >= 0]).tolist())
    classes = {t: klass for t, (_label, klass) in info.items()}
    near = examples.nearest(vectors, cfg.k) if examples is not None else [[]] * len(vectors)
    votes = []
    for row in range(len(vectors)):
        c: Classification = classify(sims[row], ids[row], classes, cfg, near[row])
        neighbours = [{"track_id": t, "label": info[t][0], "similarity": s} for t, s in c.neighbours if t in info]
        votes.append(Vote(c.klass, c.confidence, neighbours, neighbours[0]["similarity"] if neighbours else None))
    return votes


def majority_class(votes: Sequence[tuple[str | None, float]]) -> tuple[str, list[int]] | None:
    """The class most ``(class, confidence)`` votes name, abstentions (``unknown``, None) aside, ties to the larger
    summed confidence, with the indices of the votes naming it; None when every vote abstains."""
    tally: dict[str, list[int]] = {}
    for i, (klass, _conf) in enumerate(votes):
        if klass not in (None, "unknown"):
            tally.setdefault(klass, []).append(i)
    if not tally:
        return None
    klass = max(tally, key=lambda k: (len(tally[k]), sum(votes[i][1] for i in tally[k])))
    return klass, tally[klass]


def track_prediction(votes: Sequence[Vote]) -> Vote:
    """One vote for a whole track from its windows' votes: the class most windows got (:func:`majority_class`),
    with the share of windows that got it; ``unknown`` when every window abstained."""
    sims = [v.top_similarity for v in votes if v.top_similarity is not None]
    top = float(np.median(sims)) if sims else None
    won = majority_class([(v.klass, v.confidence) for v in votes])
    if won is None:
        return Vote("unknown", 0.0, [], top)
    klass, voters = won
    return Vote(klass, round(len(voters) / len(votes), 4), [], top)
