"""Built-in labelled examples for the music / dialogue / both vote.

An index votes with its own labelled references, and one that holds songs alone knows no speech: it calls every
outro music, talk included (``bench/classify.py --index-classes music --examples-below 0``: 0 of 729 dialogue
clips).  So the package ships index vectors of labelled 10 s clips of real recordings
(``bench/fit_embedding_stats.py``: 729 each of music of nine game soundtracks and song packages, speech of
five voice-prompt sets and game voice-overs, and that speech over that music at -12 to +6 dB music-to-speech),
and while the index holds fewer labelled tracks than :attr:`ClassifyConfig.examples_below` of any class, these
examples vote with its own.  All three classes of them, not only the missing ones: a music class of a few songs
against built-in *both* examples alone called 36 of 100 held-out music outros both (8 with all three; scratch,
bench/RESULTS.md).  The examples of one source recording vote as one track, as an index's windows do.

They are vectors only, valid for the shipped embedding transform: an index built with another transform (an
earlier release's) votes without them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np

from ..fingerprint.embedding import DATA_DIR, EmbeddingConfig, Standardizer, default_standardizer
from .classify import CLASSES


def _dtype(dim: int) -> np.dtype:
    """One example as stored: its class (index into CLASSES), its group (source recording), its index vector."""
    return np.dtype([("klass", "u1"), ("group", "<u4"), ("vector", "<f2", (dim,))])


@dataclass(frozen=True)
class Examples:
    """Labelled index vectors, sorted by group; the examples of a group vote as one track."""

    vectors: np.ndarray     # (n, dim) float32, unit length
    classes: np.ndarray     # (n,) class names
    groups: np.ndarray      # (n,) int, ascending

    def nearest(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """For each row of ``queries`` (unit index vectors), the ``(class, cosine similarity)`` of its ``k`` most
        similar groups, each with its most similar example, best first."""
        sims = np.asarray(queries, np.float32) @ self.vectors.T
        starts = np.flatnonzero(np.r_[True, self.groups[1:] != self.groups[:-1]])
        best = np.maximum.reduceat(sims, starts, axis=1)          # (queries, groups)
        klass = self.classes[starts]
        k = min(k, best.shape[1])
        top = np.argsort(-best, axis=1, kind="stable")[:, :k]
        return [[(str(klass[g]), float(best[row, g])) for g in top[row]] for row in range(len(best))]


def examples_path(cfg: EmbeddingConfig = EmbeddingConfig()) -> str:
    """Where the package keeps the examples of ``cfg.version``'s shipped transform."""
    return os.path.join(DATA_DIR, f"examples-v{cfg.version}.npy")


def to_records(vectors: np.ndarray, classes: Sequence[str], groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The stored form of examples (half-precision vectors, groups numbered in order of first appearance,
    sorted by group), what :func:`write_examples` saves, and the order it put the examples in."""
    vectors = np.asarray(vectors, np.float32)
    number: dict[str, int] = {}
    ids = np.array([number.setdefault(g, len(number)) for g in groups], np.uint32)
    rec = np.zeros(len(vectors), _dtype(vectors.shape[1]))
    rec["klass"] = [CLASSES.index(c) for c in classes]
    rec["group"] = ids
    rec["vector"] = vectors
    order = np.argsort(ids, kind="stable")
    return rec[order], order


def write_examples(path: str, records: np.ndarray) -> None:
    """Save :func:`to_records` output (``.npy``: the same records give the same bytes)."""
    np.save(path, records, allow_pickle=False)


def read_examples(path: str) -> np.ndarray | None:
    """The stored records at ``path`` (None when there is no such file)."""
    if not os.path.exists(path):
        return None
    return np.load(path, allow_pickle=False)


def shipped_examples(cfg: EmbeddingConfig = EmbeddingConfig()) -> Examples | None:
    """The examples shipped for ``cfg`` (None when the package holds none for its version), read once."""
    return _shipped(cfg)


@lru_cache(maxsize=4)
def _shipped(cfg: EmbeddingConfig) -> Examples | None:
    rec = read_examples(examples_path(cfg))
    if rec is None:
        return None
    ex = from_records(rec)
    for a in (ex.vectors, ex.classes, ex.groups):
        a.flags.writeable = False          # one cached instance is shared by every caller
    return ex


def from_records(records: np.ndarray) -> Examples:
    """The :class:`Examples` of stored records (:func:`to_records`)."""
    vectors = records["vector"].astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)       # unit length again after half precision
    return Examples(vectors, np.array(CLASSES)[records["klass"]], records["group"].astype(np.int64))


def examples_vote(labelled: Mapping[str, int], below: int) -> bool:
    """Whether built-in examples vote with an index holding ``labelled`` tracks of each class: while it holds
    fewer than ``below`` of some class (:attr:`ClassifyConfig.examples_below`)."""
    return min(labelled.get(c, 0) for c in CLASSES) < below


def examples_for(cfg: EmbeddingConfig, standardizer: Standardizer) -> Examples | None:
    """The shipped examples if an index with embedding ``cfg`` and ``standardizer`` can use them: its vectors
    must come from the transform they were made with."""
    try:
        shipped = default_standardizer(cfg)
    except ValueError:          # no transform shipped for this config version
        return None
    same = standardizer.config_version == shipped.config_version and all(
        np.array_equal(getattr(standardizer, f), getattr(shipped, f))      # (None equals None only)
        for f in ("mean", "scale", "weights", "components"))
    return shipped_examples(cfg) if same else None
