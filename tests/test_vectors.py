"""FAISS vector segments: real FAISS indexes on disk, every factory type, removal by filtering."""
from __future__ import annotations

import numpy as np
import pytest

from audioid.index.vectors import (HNSW_EF_SEARCH, IVF_PROBE_SHARE, VectorSegment, build_faiss, search_knob,
                                  search_segments, track_of, vector_ids, write_vectors)


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("factory", ["SQfp16", "Flat", "IVF16,Flat", "HNSW16"])
def test_segments_search_like_one_exact_index(tmp_path, factory):
    rng = np.random.default_rng(0)
    dim, per_track = 24, 5
    vecs = {t: _unit(rng, per_track, dim) for t in range(1, 41)}
    segs = []
    for name, tracks in (("a", range(1, 21)), ("b", range(21, 41))):
        d = tmp_path / name
        d.mkdir()
        write_vectors(str(d), np.concatenate([vecs[t] for t in tracks]),
                      np.concatenate([vector_ids(t, per_track) for t in tracks]), factory)
        segs.append(VectorSegment.open(str(d)))
    assert sum(len(s) for s in segs) == 200
    queries = np.stack([vecs[7][2], vecs[33][4]]) + 0.01 * rng.standard_normal((2, dim)).astype(np.float32)
    sims, ids = search_segments(segs, queries, k=5)
    assert list(track_of(ids[:, 0])) == [7, 33]
    assert list(ids[:, 0] & 0xFFFFF) == [2, 4]
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first
    # Removing a track (even from an index type that cannot delete) hides it from results.
    sims, ids = search_segments(segs, queries, k=5, removed_tracks={7})
    assert 7 not in set(track_of(ids).ravel())
    assert track_of(ids[1, :1])[0] == 33


@pytest.mark.parametrize("factory, knob", [("Flat", None), ("IVF64,Flat", "nprobe"), ("HNSW16", "efSearch")])
def test_opened_segments_get_the_default_search_setting(tmp_path, factory, knob):
    rng = np.random.default_rng(2)
    write_vectors(str(tmp_path), _unit(rng, 64 * 39, 16), vector_ids(1, 64 * 39), factory)
    seg = VectorSegment.open(str(tmp_path))
    found = search_knob(seg.index)
    if knob is None:
        assert found is None
        return
    params, name = found
    assert name == knob
    expected = 64 // IVF_PROBE_SHARE if knob == "nprobe" else HNSW_EF_SEARCH
    assert getattr(params, name) == expected
    # the knob of a freshly built index is the same object kind (bench/vectors.py sets it there)
    assert search_knob(build_faiss(_unit(rng, 64 * 39, 16), vector_ids(2, 64 * 39), factory))[1] == knob


def test_no_vectors_file_means_no_segment(tmp_path):
    assert VectorSegment.open(str(tmp_path)) is None


def test_fewer_results_than_k_are_padded(tmp_path):
    rng = np.random.default_rng(1)
    write_vectors(str(tmp_path), _unit(rng, 3, 8), vector_ids(1, 3), "Flat")
    sims, ids = search_segments([VectorSegment.open(str(tmp_path))], _unit(rng, 1, 8), k=5)
    assert list(ids[0, 3:]) == [-1, -1] and np.all(np.isinf(sims[0, 3:]))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="too many windows"):
        vector_ids(1, 1 << 20)


def test_factory_check_accepts_what_the_build_accepts():
    from audioid.index.embeddings import check_factory

    for factory in ("Flat", "IVF256", "ivf64,Flat", "HNSW32"):
        check_factory(factory, 32)
        build_faiss(np.eye(64, 32, dtype=np.float32), np.arange(64), factory)
    with pytest.raises(ValueError, match="not a usable FAISS"):
        check_factory("Bogus12", 32)
