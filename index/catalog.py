"""The catalog: SQLite tables of reference tracks and of every label change (the label log).

Rows carry the postings segment that holds their hashes and, once removed, the generation that removed them; a
reader only believes rows whose segment its MANIFEST names and that its generation has not removed, so a crash
between writing rows and swapping the MANIFEST never shows half an add or remove.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

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
    metadata      TEXT NOT NULL DEFAULT '{}',
    removed_in    INTEGER
);
CREATE INDEX IF NOT EXISTS tracks_hash ON tracks (content_hash);
CREATE INDEX IF NOT EXISTS tracks_label ON tracks (label);
CREATE TABLE IF NOT EXISTS label_log (
    seq           INTEGER PRIMARY KEY,
    generation    INTEGER NOT NULL,
    at            TEXT NOT NULL,
    who           TEXT NOT NULL,
    action        TEXT NOT NULL CHECK (action IN ('add', 'relabel', 'remove')),
    content_hash  TEXT NOT NULL,
    track_id      INTEGER,
    label         TEXT,
    class         TEXT,
    title         TEXT,
    artist        TEXT,
    source        TEXT,
    predicted     TEXT,
    predicted_confidence REAL,
    nn_similarity REAL
);
CREATE INDEX IF NOT EXISTS label_log_hash ON label_log (content_hash);
"""

# predicted*, nn_similarity: the class the index predicted for an added track before it learnt it (prequential
# evaluation, see ``audioid index report``) and its nearest labelled neighbour's similarity.
LOG_COLUMNS = ("at", "who", "action", "content_hash", "track_id", "label", "class", "title", "artist", "source",
               "predicted", "predicted_confidence", "nn_similarity")

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
    """Thin wrapper over the SQLite catalog.

    Reads see the tracks of ``segments`` (the live ones) that ``generation`` has not removed.  Threads may share
    one Catalog: its statements run one at a time and each to the end (:meth:`_rows`), so the connection holds
    its shared lock only while a statement runs.  Interleaved statements of several threads on one connection
    could otherwise keep that lock held for as long as queries keep coming, and a writer (another connection)
    would wait for it until SQLite's timeout ("database is locked").
    """

    def __init__(self, path: str, segments: Iterable[str], *, generation: int | None = None,
                 readonly: bool = False):
        self.path = path
        self.segments = tuple(segments)
        self.generation = generation
        # A writer killed inside a transaction leaves a hot journal that the next connection must roll back,
        # which a mode=ro connection cannot do ("attempt to write a readonly database").  So readers open
        # read-write where they may (query_only keeps them from changing anything) and read-only only where
        # the folder is not writable.
        if not readonly:
            mode = "rwc"
        else:
            mode = "rw" if os.access(os.path.dirname(os.path.abspath(path)), os.W_OK) else "ro"
        self.db = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        if readonly:
            self.db.execute("PRAGMA query_only=ON")
        else:
            self.db.execute("PRAGMA journal_mode=DELETE")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        """All rows of one read statement, run to the end under this catalog's lock (see the class docstring)."""
        with self._lock:
            return self.db.execute(sql, list(args)).fetchall()

    def _live(self) -> tuple[str, list]:
        marks = ",".join("?" * len(self.segments)) or "NULL"
        where, args = f"segment IN ({marks})", list(self.segments)
        if self.generation is None:
            return where + " AND removed_in IS NULL", args
        return where + " AND (removed_in IS NULL OR removed_in > ?)", args + [self.generation]

    def get(self, track_id: int) -> Track | None:
        where, args = self._live()
        rows = self._rows(f"SELECT {', '.join(_COLUMNS)} FROM tracks WHERE id = ? AND {where}", [track_id, *args])
        return _row_to_track(rows[0]) if rows else None

    def by_label(self, label: str) -> list[Track]:
        where, args = self._live()
        rows = self._rows(f"SELECT {', '.join(_COLUMNS)} FROM tracks WHERE label = ? AND {where} ORDER BY id",
                          [label, *args])
        return [_row_to_track(r) for r in rows]

    def by_content_hash(self, content_hash: str) -> Track | None:
        where, args = self._live()
        rows = self._rows(f"SELECT {', '.join(_COLUMNS)} FROM tracks WHERE content_hash = ? AND {where} LIMIT 1",
                          [content_hash, *args])
        return _row_to_track(rows[0]) if rows else None

    def brief(self, track_ids: Iterable[int]) -> dict[int, tuple[str, str | None]]:
        """``{id: (label, class)}`` of the live tracks among ``track_ids`` (one query: used per identify)."""
        ids = [int(i) for i in track_ids]
        if not ids:
            return {}
        where, args = self._live()
        rows = self._rows(f"SELECT id, label, class FROM tracks WHERE id IN ({','.join('?' * len(ids))}) "
                          f"AND {where}", [*ids, *args])
        return {i: (label, klass) for i, label, klass in rows}

    def _filtered(self, label: str | None, klass: str | None) -> tuple[str, list]:
        where, args = self._live()
        for column, value in (("label", label), ("class", klass)):
            if value is not None:
                where, args = f"{where} AND {column} = ?", [*args, value]
        return where, args

    def tracks(self, *, label: str | None = None, klass: str | None = None, limit: int | None = None,
               offset: int = 0) -> list[Track]:
        """Live tracks by id, optionally only those with ``label`` and/or class ``klass``, one page of them."""
        where, args = self._filtered(label, klass)
        rows = self._rows(f"SELECT {', '.join(_COLUMNS)} FROM tracks WHERE {where} ORDER BY id LIMIT ? OFFSET ?",
                          [*args, -1 if limit is None else limit, offset])
        return [_row_to_track(r) for r in rows]

    def count(self, *, label: str | None = None, klass: str | None = None) -> int:
        """How many live tracks :meth:`tracks` with the same filters lists in all."""
        where, args = self._filtered(label, klass)
        ((n,),) = self._rows(f"SELECT COUNT(*) FROM tracks WHERE {where}", args)
        return n

    def totals(self) -> dict[str, float]:
        where, args = self._live()
        ((n, dur, hashes),) = self._rows(
            f"SELECT COUNT(*), COALESCE(SUM(duration_s), 0), COALESCE(SUM(n_hashes), 0) FROM tracks WHERE {where}",
            args)
        return {"tracks": n, "duration_s": dur, "hashes": hashes}

    def next_id(self) -> int:
        ((m,),) = self._rows("SELECT COALESCE(MAX(id), 0) FROM tracks")
        return m + 1

    def insert(self, tracks: Iterable[Track]) -> None:
        rows = [(t.id, t.label, t.title, t.artist, t.klass, t.source_path, t.content_hash, t.duration_s,
                 t.added_at, t.segment, t.frame_start, t.frame_count, t.n_hashes, json.dumps(t.metadata))
                for t in tracks]
        with self._lock, self.db:
            self.db.executemany(f"INSERT INTO tracks ({', '.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})",
                                rows)

    def move_tracks(self, segments: Sequence[str], to_segment: str, frame_starts: dict[int, int]) -> None:
        """A merge of ``segments`` into ``to_segment``: their removed tracks are dropped for good, and each track
        of ``frame_starts`` (id -> new first frame) moves there, in one transaction."""
        marks = ",".join("?" * len(segments)) or "NULL"
        with self._lock, self.db:
            self.db.execute(f"DELETE FROM tracks WHERE segment IN ({marks}) AND removed_in IS NOT NULL",
                            list(segments))
            self.db.executemany("UPDATE tracks SET segment = ?, frame_start = ? WHERE id = ?",
                                [(to_segment, start, tid) for tid, start in frame_starts.items()])

    def mark_removed(self, track_ids: Iterable[int], generation: int) -> None:
        """Remove tracks as of ``generation`` (readers of earlier generations still see them)."""
        with self._lock, self.db:
            self.db.executemany("UPDATE tracks SET removed_in = ? WHERE id = ? AND removed_in IS NULL",
                                [(generation, int(i)) for i in track_ids])

    def relabel(self, track_id: int, entry: dict[str, Any], generation: int, **fields: str | None) -> None:
        """Set ``label``, ``title``, ``artist`` and/or ``class`` of a track (keys with value None are kept) and
        log ``entry`` for ``generation``, in one transaction: a crash leaves both or neither."""
        changes = {k: v for k, v in fields.items() if v is not None}
        assign = ", ".join(f"{k} = ?" for k in changes)
        with self._lock, self.db:
            if changes:
                self.db.execute(f"UPDATE tracks SET {assign} WHERE id = ?", [*changes.values(), track_id])
            self._log([entry], generation)

    def log(self, entries: Iterable[dict[str, Any]], generation: int) -> None:
        """Append label-log entries (dicts with keys of ``LOG_COLUMNS``; missing ones are NULL) made by the
        write that commits ``generation``."""
        with self._lock, self.db:
            self._log(entries, generation)

    def _log(self, entries: Iterable[dict[str, Any]], generation: int) -> None:
        rows = [(generation, *(e.get(c) for c in LOG_COLUMNS)) for e in entries]
        if rows:
            self.db.executemany(f"INSERT INTO label_log (generation, {', '.join(LOG_COLUMNS)}) "
                                f"VALUES (?, {','.join('?' * len(LOG_COLUMNS))})", rows)

    def forget_uncommitted(self, generation: int) -> None:
        """Undo what a writer that crashed before committing a generation after ``generation`` left behind:
        rows of segments no MANIFEST names, removals and log entries of generations never committed."""
        marks = ",".join("?" * len(self.segments)) or "NULL"
        with self._lock, self.db:
            self.db.execute(f"DELETE FROM tracks WHERE segment NOT IN ({marks})", list(self.segments))
            self.db.execute("UPDATE tracks SET removed_in = NULL WHERE removed_in > ?", [generation])
            self.db.execute("DELETE FROM label_log WHERE generation > ?", [generation])

    def log_entries(self) -> list[dict[str, Any]]:
        """The label log as of this catalog's generation, oldest first (each entry with its ``generation``)."""
        limit = "" if self.generation is None else " WHERE generation <= ?"
        rows = self._rows(f"SELECT generation, {', '.join(LOG_COLUMNS)} FROM label_log{limit} ORDER BY seq",
                          [] if self.generation is None else [self.generation])
        return [dict(zip(("generation", *LOG_COLUMNS), r)) for r in rows]
