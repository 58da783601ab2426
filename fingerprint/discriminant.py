"""Discriminant axes of the index vectors: the directions that separate music, dialogue and speech over music.

The shipped embedding transform (:func:`fingerprint.embedding.default_standardizer`) keeps the principal axes of
its fit set, which is what nearest-neighbour similarity needs; clustering for label collection needs clusters
that hold one class, and in those axes a music bed ties its speech-over-music clips to itself.  Fisher's linear
discriminant, fitted once on the same labelled fit set (``bench/fit_embedding_stats.py``) and shipped in the
same file, gives the (classes - 1) axes along which the classes lie apart.  :meth:`Discriminant.project` maps
index vectors onto them, standardised by the fit set's spread and placed on the unit sphere (with a constant
coordinate, so that distances keep their meaning), which is what :mod:`index.hcgl` clusters.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.linalg import eigh

from .embedding import EmbeddingConfig, _short_floats, standardizer_path

# Ridge added to the within-class scatter, relative to its mean variance: keeps the axes defined when a
# direction does not vary inside the classes.
_RIDGE = 1e-3


@dataclass(frozen=True)
class Discriminant:
    """Fisher discriminant axes of index vectors and the spread of the fit set along them.

    Attributes
    ----------
    axes : np.ndarray of float32
        ``(dim, n_axes)``: ``vectors @ axes`` are the discriminant coordinates.
    mean, scale : np.ndarray of float32
        ``(n_axes,)``: the fit set's mean and standard deviation along each axis.
    classes : tuple of str
        The classes it was fitted on.
    """

    axes: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    classes: tuple

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: np.ndarray) -> "Discriminant":
        """Fit on index vectors ``(n, dim)`` and their class names ``labels`` (at least two classes).

        Each axis' sign is fixed (largest coefficient positive), so a refit on the same data gives the same
        axes.
        """
        x = np.asarray(vectors, dtype=np.float64)
        labels = np.asarray(labels)
        classes = tuple(sorted(set(labels.tolist())))
        if x.ndim != 2 or len(x) != len(labels) or len(classes) < 2:
            raise ValueError("need (n, dim) vectors and one label per vector, of at least two classes")
        mu = x.mean(axis=0)
        within = np.zeros((x.shape[1], x.shape[1]))
        between = np.zeros_like(within)
        for c in classes:
            xc = x[labels == c]
            d = xc - xc.mean(axis=0)
            within += d.T @ d
            between += len(xc) * np.outer(xc.mean(axis=0) - mu, xc.mean(axis=0) - mu)
        within = within / len(x) + _RIDGE * np.trace(within) / len(x) / len(within) * np.eye(len(within))
        values, vecs = eigh(between / len(x), within)
        axes = vecs[:, np.argsort(-values)[:len(classes) - 1]]
        axes *= np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(axes.shape[1])])
        coords = x @ axes
        return cls(axes=axes.astype(np.float32), mean=coords.mean(axis=0).astype(np.float32),
                   scale=coords.std(axis=0).astype(np.float32), classes=classes)

    def coordinates(self, vectors: np.ndarray) -> np.ndarray:
        """Standardised discriminant coordinates ``(n, n_axes)`` of index vectors (0 mean, unit spread on the
        fit set)."""
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != len(self.axes):
            raise ValueError(f"expected vectors of dimension {len(self.axes)}, got shape {v.shape}")
        return (v @ self.axes - self.mean) / self.scale

    def project(self, vectors: np.ndarray, offset: float) -> np.ndarray:
        """Unit vectors ``(n, n_axes + 1)``: the standardised coordinates with ``offset`` appended, normalised.

        Cosine similarity between them falls with distance in the coordinates (as on a sphere seen from its
        centre), so cosine-based clustering and medoids work on them; a larger ``offset`` flattens the map.
        """
        z = self.coordinates(vectors)
        z = np.hstack([z, np.full((len(z), 1), offset, np.float32)])
        return np.ascontiguousarray(z / np.linalg.norm(z, axis=1, keepdims=True), dtype=np.float32)

    def to_dict(self) -> dict:
        return {"classes": list(self.classes), "axes": _short_floats(self.axes), "mean": _short_floats(self.mean),
                "scale": _short_floats(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> "Discriminant":
        axes = np.asarray(d["axes"], dtype=np.float32)
        mean, scale = (np.asarray(d[k], dtype=np.float32) for k in ("mean", "scale"))
        if not (axes.ndim == 2 and mean.shape == scale.shape == (axes.shape[1],) and (scale > 0).all()
                and np.isfinite(axes).all() and np.isfinite(mean).all()):
            raise ValueError("discriminant needs (dim, n) axes and n positive scales")
        return cls(axes=axes, mean=mean, scale=scale, classes=tuple(d["classes"]))


@lru_cache(maxsize=4)
def default_discriminant(cfg: EmbeddingConfig = EmbeddingConfig()) -> Discriminant:
    """The discriminant shipped with the embedding transform of ``cfg.version`` (same file, same fit set).

    Raises
    ------
    ValueError
        The package ships no discriminant for that version.
    """
    path = standardizer_path(cfg)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)["discriminant"]
    except (OSError, KeyError) as e:
        raise ValueError(f"no shipped discriminant for embedding config version {cfg.version} in "
                         f"{os.path.basename(path)}: fit one with bench/fit_embedding_stats.py") from e
    d = Discriminant.from_dict(data)
    for a in (d.axes, d.mean, d.scale):
        a.flags.writeable = False        # one cached instance is shared by every caller
    return d
