"""Consistency check of an index directory: MANIFEST, catalog, postings, vectors and label log agree.

What a crash may legitimately leave behind (staging folders, a catalog or segment no MANIFEST names, catalog
rows and log entries of a generation never committed) is reported as a warning: readers ignore it and the next
writer removes it.  Anything a reader would trust and that does not add up is an error.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field

import numpy as np

from .postings import Segment
from .store import MANIFEST, IndexReader, IndexStoreError, stale_entries
from .vectors import VectorSegment, track_of


@dataclass
class CheckReport:
    """Outcome of :func:`check_index`: ``ok`` when there are no errors."""

    path: str
    generation: int | None = None
    tracks: int = 0
    postings: int = 0
    vectors: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {"path": self.path, "ok": self.ok, "generation": self.generation, "tracks": self.tracks,
                "postings": self.postings, "vectors": self.vectors, "errors": self.errors,
                "warnings": self.warnings}


def _check_segment(seg: Segment, frames: int, rep: CheckReport) -> None:
    # Segment.open already refused value and bucket tables of the wrong length (the reader would not open).
    name = seg.name
    b = np.asarray(seg.buckets)
    if b[0] != 0 or np.any(np.diff(b) < 0):
        rep.errors.append(f"segment {name}: bucket table does not partition its {len(seg.low)} postings")
    t = seg.tracks
    if len(t) and (np.any(np.diff(t[:, 0]) <= 0) or np.any(t[:-1, 0] + t[:-1, 1] > t[1:, 0])):
        rep.errors.append(f"segment {name}: track frame ranges are not sorted and disjoint")
    values = np.asarray(seg.values, dtype=np.int64)
    if len(values):
        if values.max() >= frames:
            rep.errors.append(f"segment {name}: postings point past the index's frame space ({frames})")
        outside = int(np.sum(seg.track_at(values) < 0))
        if outside:
            rep.errors.append(f"segment {name}: {outside} postings point outside every track of the segment")
    rep.postings += len(values)
    peaks = seg.all_peaks()
    if peaks is not None and len(peaks[0]):
        stray = int(np.sum(seg.track_at(peaks[0]) < 0))
        if stray:
            rep.errors.append(f"segment {name}: {stray} verification peaks lie outside every track of the segment")


def _check_vectors(vs: VectorSegment | None, seg: Segment, rep: CheckReport) -> None:
    # An unreadable vectors file already kept the reader from opening.
    tracks = set(seg.tracks[:, 2].tolist())
    if vs is None:
        if tracks:
            rep.errors.append(f"segment {seg.name}: no vectors for its {len(tracks)} tracks")
        return
    ids = vs.ids()
    owners = set(track_of(ids).tolist())
    if owners - tracks:
        rep.errors.append(f"segment {seg.name}: vectors of tracks the segment does not hold: "
                          f"{sorted(owners - tracks)[:5]}")
    if tracks - owners:
        rep.errors.append(f"segment {seg.name}: tracks without vectors: {sorted(tracks - owners)[:5]}")
    rep.vectors += len(ids)


def check_index(path: str | os.PathLike) -> CheckReport:
    """Check that an index's parts agree; see the module docstring for what counts as an error.

    Parameters
    ----------
    path : path
        Index directory.

    Returns
    -------
    CheckReport
        Never raises for a damaged index: what is wrong is in ``errors``.
    """
    path = os.fspath(path)
    rep = CheckReport(path)
    try:
        reader = IndexReader(path)
    except IndexStoreError as e:
        rep.errors.append(str(e))
        return rep
    try:
        m = reader.manifest
        rep.generation = reader.generation
        live = list(m["segments"])
        seg_rows: dict[str, set[tuple[int, int, int]]] = {}
        vectors = {v.name: v for v in reader.vectors}
        for seg in reader.segments:
            _check_segment(seg, reader.frames, rep)
            _check_vectors(vectors.get(seg.name), seg, rep)
            seg_rows[seg.name] = {tuple(int(v) for v in r) for r in seg.tracks}
        db = reader.catalog.db
        (integrity,) = db.execute("PRAGMA integrity_check").fetchone()
        if integrity != "ok":
            rep.errors.append(f"catalog: SQLite integrity check says {integrity!r}")
        rows = db.execute("SELECT id, segment, frame_start, frame_count, removed_in, content_hash FROM tracks"
                          ).fetchall()
        removed = {tuple(r) for r in m.get("removed", [])}
        in_catalog: dict[str, set[tuple[int, int, int]]] = {s: set() for s in live}
        for tid, segment, start, count, removed_in, _digest in rows:
            if segment not in in_catalog:
                rep.warnings.append(f"catalog: track {tid} belongs to segment {segment}, which no MANIFEST names "
                                    f"(left by an interrupted write; ignored)")
                continue
            in_catalog[segment].add((start, count, tid))
            gone = removed_in is not None and removed_in <= rep.generation
            if gone != ((start, count) in removed):
                rep.errors.append(f"catalog: track {tid} is {'removed' if gone else 'live'} in the catalog but "
                                  f"{'live' if gone else 'removed'} in {MANIFEST}")
            if removed_in is not None and removed_in > rep.generation:
                rep.warnings.append(f"catalog: track {tid} was removed by generation {removed_in}, never "
                                    f"committed (ignored)")
        for s in live:
            if in_catalog[s] != seg_rows.get(s, set()):
                rep.errors.append(f"segment {s}: its track table and the catalog disagree "
                                  f"({len(seg_rows.get(s, ()))} vs {len(in_catalog[s])} tracks)")
        live_tracks = reader.catalog.tracks()
        rep.tracks = len(live_tracks)
        log = reader.catalog.log_entries()
        logged = {e["content_hash"] for e in log if e["action"] == "add"}
        missing = [t.id for t in live_tracks if t.content_hash not in logged]
        if missing:
            rep.errors.append(f"label log: no 'add' entry for tracks {missing[:5]}")
        (later,) = db.execute("SELECT COUNT(*) FROM label_log WHERE generation > ?", [rep.generation]).fetchone()
        if later:
            rep.warnings.append(f"label log: {later} entries of a generation never committed (ignored)")
        if reader.vectors:
            dims = {v.index.d for v in reader.vectors}
            if dims != {reader.embedding.standardizer.out_dim}:
                rep.errors.append(f"vectors: dimension {sorted(dims)} but the embedding makes "
                                  f"{reader.embedding.standardizer.out_dim}")
    except (sqlite3.Error, OSError, ValueError, KeyError) as e:
        rep.errors.append(f"{path}: cannot be read ({type(e).__name__}: {e})")
    finally:
        reader.close()
    for rel, why in stale_entries(path, m):
        rep.warnings.append(f"{rel}: {why} (the next write removes it)")
    return rep
