"""Dense embeddings in FAISS, one small index per postings segment.

Each segment that holds embeddings has a ``vectors.faiss`` beside its postings, written once (like the postings:
adds write a new segment, never rewrite an old one).  Vector ids pack the catalog track id and the window number,
so a neighbour names its track.  Removed tracks are filtered out of search results by id, which works for every
FAISS index type, including those that cannot delete (HNSW); the next build drops them for good.

The index type is a FAISS ``index_factory`` string.  ``"SQfp16"`` (exhaustive inner product over
L2-normalised vectors, i.e. cosine similarity, stored in half precision) is the default; ``"Flat"`` keeps
float32, and approximate types such as ``"IVF256,Flat"`` or ``"HNSW32"`` suit large indexes.  Inputs must be
C-contiguous float32 (FAISS rejects float64, which numpy 2 readily produces).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .parallel import openmp_as_the_process

WINDOW_BITS = 20          # vector id = track_id << WINDOW_BITS | window number
FILENAME = "vectors.faiss"
# Search-time accuracy of approximate types, measured by bench/vectors.py (1M clustered vectors, 32 dims, one
# thread): IVF1024 probing 128 lists has recall@10 0.99 at 0.8 ms per query; HNSW32 needs efSearch 2048 for
# 0.96 (3.7 ms; 1024 gives only 0.91).
IVF_PROBE_SHARE = 8       # probe an eighth of the lists
HNSW_EF_SEARCH = 2048


def vector_ids(track_id: int, n_windows: int) -> np.ndarray:
    """Ids of a track's ``n_windows`` embedding vectors."""
    if n_windows >= 1 << WINDOW_BITS:
        raise ValueError(f"too many windows for one track ({n_windows})")
    return (np.int64(track_id) << WINDOW_BITS) | np.arange(n_windows, dtype=np.int64)


def track_of(ids: np.ndarray) -> np.ndarray:
    """Track ids of vector ids (-1 stays -1: FAISS' 'no result')."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.where(ids < 0, -1, ids >> WINDOW_BITS)


def _as_float32(vectors: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"expected a (n, dim) matrix, got shape {v.shape}")
    return v


def faiss_spec(factory: str, n: int) -> str:
    """The ``index_factory`` string built for ``n`` vectors: an IVF's list count shrinks to what ``n`` can train
    (FAISS wants ~39 vectors per list), and a bare ``IVFk`` gets flat lists."""
    spec = factory.strip()
    if spec.upper().startswith("IVF"):
        head, _, rest = spec.partition(",")
        spec = f"IVF{max(1, min(int(head[3:]), n // 39))},{rest or 'Flat'}"
    return spec


def build_faiss(vectors: np.ndarray, ids: np.ndarray, factory: str):
    """A FAISS index of ``factory`` type over ``vectors`` (inner product), with ``ids``.

    IVF types are trained on the vectors themselves; with too few vectors for the requested number of lists,
    the list count shrinks to what the data can train (FAISS wants ~39 vectors per list).
    """
    import faiss

    vectors = _as_float32(vectors)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n, dim = vectors.shape
    index = faiss.index_factory(dim, faiss_spec(factory, n), faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vectors)
    # IVF indexes take ids themselves; others (Flat, HNSW) need an id map.
    if isinstance(index, faiss.IndexIVF):
        index.add_with_ids(vectors, ids)
        return index
    mapped = faiss.IndexIDMap2(index)
    mapped.add_with_ids(vectors, ids)
    return mapped


def write_vectors(segment_dir: str, vectors: np.ndarray, ids: np.ndarray, factory: str) -> None:
    """Write a segment's vector index (to a temporary name, fsynced, then renamed)."""
    import faiss

    path = os.path.join(segment_dir, FILENAME)
    tmp = path + ".tmp"
    faiss.write_index(build_faiss(vectors, ids, factory), tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def search_knob(index) -> tuple[object, str] | None:
    """The object and attribute that trade speed for recall in ``index`` (IVF ``nprobe``, HNSW ``efSearch``,
    through an id map), or None for exact types."""
    import faiss

    try:
        return faiss.extract_index_ivf(index), "nprobe"
    except RuntimeError:  # not an IVF index
        pass
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return (inner.hnsw, "efSearch") if hasattr(inner, "hnsw") else None


def apply_search_defaults(index) -> int | None:
    """Set the default search setting of an approximate ``index`` (see :data:`IVF_PROBE_SHARE`,
    :data:`HNSW_EF_SEARCH`); returns the value set, None for exact types."""
    knob = search_knob(index)
    if knob is None:
        return None
    params, name = knob
    value = max(1, params.nlist // IVF_PROBE_SHARE) if name == "nprobe" else HNSW_EF_SEARCH
    setattr(params, name, value)
    return value


@dataclass
class VectorSegment:
    """One segment's vector index, opened for search."""

    name: str
    index: object

    @classmethod
    def open(cls, segment_dir: str) -> "VectorSegment | None":
        """The segment's vector index, memory-mapped where FAISS can; None when the segment has none."""
        import faiss

        path = os.path.join(segment_dir, FILENAME)
        if not os.path.exists(path):
            return None
        index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
        apply_search_defaults(index)
        return cls(os.path.basename(segment_dir), index)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        """Ids of every stored vector, whatever the index type (IVF types keep them in their inverted lists)."""
        import faiss

        if hasattr(self.index, "id_map"):        # IndexIDMap2 over Flat, HNSW, ...
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        inv = faiss.extract_index_ivf(self.index).invlists
        return np.concatenate([faiss.rev_swig_ptr(inv.get_ids(i), inv.list_size(i)).copy()
                               for i in range(inv.nlist)] or [np.zeros(0, np.int64)]).astype(np.int64)

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored ``(vectors, ids)``, for compaction."""
        import faiss

        ids = self.ids()
        if hasattr(self.index, "id_map"):
            return self.index.index.reconstruct_n(0, len(self)), ids
        ivf = faiss.extract_index_ivf(self.index)
        ivf.make_direct_map()
        if not len(ids):
            return np.zeros((0, ivf.d), np.float32), ids
        return np.stack([ivf.reconstruct(int(i)) for i in ids]), ids

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, vector ids), each ``(n_queries, k)``; missing results have id -1."""
        openmp_as_the_process()
        return self.index.search(_as_float32(queries), k)


def search_segments(segments: list[VectorSegment], queries: np.ndarray, k: int,
                    removed_tracks: set[int] | frozenset[int] = frozenset()) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` neighbours over all segments, skipping vectors of removed tracks.

    Returns ``(similarities, vector ids)`` of shape ``(n_queries, k)``, best first, id -1 where fewer exist.
    """
    queries = _as_float32(queries)
    n = len(queries)
    sims = np.full((n, k), -np.inf, np.float32)
    ids = np.full((n, k), -1, np.int64)
    # Over-fetch so that filtering removed tracks still leaves k results.
    fetch = k + min(len(removed_tracks) * 8, 1024)
    for seg in segments:
        if len(seg) == 0:
            continue
        s, i = seg.search(queries, min(fetch, len(seg)))
        if removed_tracks:
            dead = np.isin(track_of(i), list(removed_tracks))
            s = np.where(dead, -np.inf, s)
            i = np.where(dead, -1, i)
        s, i = np.concatenate([sims, s], axis=1), np.concatenate([ids, i], axis=1)
        i = np.where(i < 0, -1, i)
        s = np.where(i < 0, -np.inf, s)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        sims, ids = np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)
    return sims, ids
