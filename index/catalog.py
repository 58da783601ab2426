"""The catalog: one SQLite table of reference tracks.

Rows carry the postings segment that holds their hashes; a reader only believes rows whose segment the index's
MANIFEST names, so a crash between writing rows and swapping the MANIFEST never shows half an add.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS tracks (
    id            INTEGER PRIMARY KEY,
    label         TEXT NOT NULL,
    title         TEXT,
    artist        TEXT,
    class         TEXT CHECK (class IS NULL OR class IN ('music', 'dialogue', 'both')),
    source_path   TEXT,
    content_hash  TEXT NOT NULL,
    duration_s    REAL NOT NULL,
    added_at      TEXT NOT NULL,
    segment       TEXT NOT NULL,
    frame_start   INTEGER NOT NULL,
    frame_count   INTEGER NOT NULL,
    n_hashes      INTEGER NOT NULL,
    metadata      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS tracks_hash ON tracks (content_hash);
CREATE INDEX IF NOT EXISTS tracks_label ON tracks (label);
"""

CLASSES = ("music", "dialogue", "both")


@dataclass
class Track:
    """One reference track as the catalog holds it."""

    id: int
    label: str
    title: str | None = None
    artist: str | None = None
    klass: str | None = None
    source_path: str | None = None
    content_hash: str = ""
    duration_s: float = 0.0
    added_at: str = ""
    segment: str = ""
    frame_start: int = 0
    frame_count: int = 0
    n_hashes: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"track_id": self.id, "label": self.label, "title": self.title, "artist": self.artist,
                "class": self.klass, "source_path": self.source_path, "content_hash": self.content_hash,
                "duration_s": round(self.duration_s, 3), "added_at": self.added_at,
                "n_hashes": self.n_hashes, "metadata": self.metadata}


_COLUMNS = ("id", "label", "title", "artist", "class", "source_path", "content_hash", "duration_s", "added_at",
            "segment", "frame_start", "frame_count", "n_hashes", "metadata")


def _row_to_track(row: sqlite3.Row) -> Track:
    values = dict(zip(_COLUMNS, row))
    values["klass"] = values.pop("class")
    values["metadata"] = json.loads(values["metadata"] or "{}")
    return Track(**values)


class Catalog:
    """Thin wrapper over the SQLite catalog; ``segments`` restricts reads to live segments."""

    def __init__(self, path: str, segments: Iterable[str], *, readonly: bool = False):
        self.path = path
        self.segments = tuple(segments)
        uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
        self.db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)
        if not readonly:
            self.db.execute("PRAGMA journal_mode=DELETE")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _live(self) -> tuple[str, list[str]]:
        marks = ",".join("?" * len(self.segments)) or "NULL"
        return f"segment IN ({marks})", list(self.segments)

    def get(self, track_id: int) -> Track | None:
        where, args = self._live()
        row = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM tracks WHERE id = ? AND {where}",
                              [track_id, *args]).fetchone()
        return _row_to_track(row) if row else None

    def by_content_hash(self, content_hash: str) -> Track | None:
        where, args = self._live()
        row = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM tracks WHERE content_hash = ? AND {where}",
                              [content_hash, *args]).fetchone()
        return _row_to_track(row) if row else None

    def tracks(self) -> list[Track]:
        where, args = self._live()
        rows = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM tracks WHERE {where} ORDER BY id", args)
        return [_row_to_track(r) for r in rows]

    def totals(self) -> dict[str, float]:
        where, args = self._live()
        n, dur, hashes = self.db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(duration_s), 0), COALESCE(SUM(n_hashes), 0) FROM tracks WHERE {where}",
            args).fetchone()
        return {"tracks": n, "duration_s": dur, "hashes": hashes}

    def next_id(self) -> int:
        (m,) = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM tracks").fetchone()
        return m + 1

    def insert(self, tracks: Iterable[Track]) -> None:
        rows = [(t.id, t.label, t.title, t.artist, t.klass, t.source_path, t.content_hash, t.duration_s,
                 t.added_at, t.segment, t.frame_start, t.frame_count, t.n_hashes, json.dumps(t.metadata))
                for t in tracks]
        with self.db:
            self.db.executemany(f"INSERT INTO tracks ({', '.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})",
                                rows)
