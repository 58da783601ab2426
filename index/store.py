"""The on-disk index: one directory, readable without a server, swapped atomically by writers.

Layout::

    INDEX/
      MANIFEST.json          format version, configs, live segments and catalog; replaced by atomic rename
      catalog-<gen>.sqlite   tracks (rows tagged with their segment) and the label log
      embedding-<gen>.json   embedding config, its fixed transform and the FAISS index type (see embeddings.py)
      postings/<segment>/    immutable segments: postings (see postings.py) and vectors.faiss (see vectors.py)
      LOCK                   held by the one writer

A writer takes LOCK, writes new files, then replaces MANIFEST.json; readers open what one MANIFEST names, so they
always see one consistent generation.  Files no MANIFEST names are removed by the next writer.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from ..fingerprint.config import LandmarkConfig
from .catalog import CLASSES, Catalog
from .classify import ClassifyConfig
from .embeddings import EmbeddingSetup, Vote, classify_vectors
from .examples import Examples, examples_for, examples_vote
from .postings import Segment, track_gap
from .vectors import VectorSegment

FORMAT_NAME = "ml-audio-id-index"
FORMAT_VERSION = 2
MANIFEST = "MANIFEST.json"
LOCK = "LOCK"


class IndexStoreError(Exception):
    """The index directory is missing, locked, damaged or of a format this version does not understand."""


class NoSuchTrackError(IndexStoreError):
    """A track id or label that the index does not hold (a server answers 404)."""


class IndexLockedError(IndexStoreError):
    """Another writer holds the index's lock (a server retries or answers 409 instead of failing)."""


def read_manifest(path: str) -> dict:
    """Read and validate ``path/MANIFEST.json``."""
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise IndexStoreError(f"{path}: no such index directory")
    try:
        with open(mpath, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise IndexStoreError(f"{path}: not an ml-audio-id index (no {MANIFEST}); build one with "
                          f"'audioid index build SOURCE --index {path}'") from None
    except (OSError, ValueError) as e:
        raise IndexStoreError(f"{path}: cannot read {MANIFEST} ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexStoreError(f"{path}: {MANIFEST} is not an ml-audio-id index manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexStoreError(f"{path}: index format version {version} is not supported by this ml-audio-id "
                          f"(it reads version {FORMAT_VERSION}); rebuild the index with this version")
    return manifest


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(path: str, manifest: dict) -> None:
    """Atomically replace ``path/MANIFEST.json``."""
    tmp = os.path.join(path, f".{MANIFEST}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(path, MANIFEST))
    _fsync_dir(path)


def new_manifest(cfg: LandmarkConfig) -> dict:
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "generation": 0,
            "landmark_config": cfg.to_dict(), "catalog": None, "embedding": None, "segments": [], "removed": [],
            "next_frame": 0,
            "created_at": now_iso(), "updated_at": now_iso()}


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Entries of an append-only JSON-lines log, oldest first (none when the file does not exist).

    A torn last line (a writer killed mid-line) is skipped: what it recorded is simply done again.
    """
    if not os.path.exists(path):
        return []
    entries = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextmanager
def writer_lock(path: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the index's writer lock; a second writer waits up to ``wait_s`` seconds, then fails clearly."""
    os.makedirs(path, exist_ok=True)
    fd = os.open(os.path.join(path, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    raise IndexLockedError(f"{path}: another process is writing to this index; try again when it "
                                           f"has finished") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def stale_entries(path: str, manifest: dict) -> list[tuple[str, str]]:
    """What in the index directory ``manifest`` does not use, as ``(path relative to the index, why)``.

    Left by replaced generations and interrupted writes: readers ignore it, :func:`collect_garbage` (every
    writer) removes it, ``audioid index check`` reports it.  A live catalog's own SQLite side files (its name
    plus a suffix) are in use, not stale.
    """
    out = []
    for name in sorted(os.listdir(path)):
        if name.startswith(".staging-"):
            out.append((name, "staging folder of an interrupted write"))
        elif name.startswith(f".{MANIFEST}."):
            out.append((name, f"temporary {MANIFEST} of an interrupted write"))
        elif any(name.startswith(kind + "-") and not name.startswith(manifest.get(kind) or "\0")
                 for kind in ("catalog", "embedding")):
            out.append((name, f"not named by {MANIFEST}"))
    pdir = os.path.join(path, "postings")
    live = set(manifest["segments"])
    for name in sorted(os.listdir(pdir)) if os.path.isdir(pdir) else []:
        if name not in live:
            out.append((f"postings/{name}", f"segment not named by {MANIFEST}"))
    return out


def collect_garbage(path: str, manifest: dict) -> None:
    """Remove what ``manifest`` does not use (:func:`stale_entries`)."""
    for rel, _why in stale_entries(path, manifest):
        full = os.path.join(path, rel)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            try:
                os.remove(full)
            except OSError:
                pass


def disk_bytes(path: str) -> int:
    """Bytes of all regular files under ``path`` (an index's size on disk)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class IndexReader:
    """One consistent generation of an index, opened read-only (postings memory-mapped, vectors loaded)."""

    def __init__(self, path: str):
        self.path = path
        self.manifest = read_manifest(path)
        self.config = LandmarkConfig.from_dict(self.manifest["landmark_config"])
        seg_dirs = [os.path.join(path, "postings", s) for s in self.manifest["segments"]]
        try:
            self.segments = [Segment.open(d) for d in seg_dirs]
            self.embedding = EmbeddingSetup.read(os.path.join(path, self.manifest["embedding"]))
            self.vectors = [v for v in map(VectorSegment.open, seg_dirs) if v is not None]
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            # RuntimeError: FAISS' error for an unreadable vectors.faiss.
            raise IndexStoreError(f"{path}: damaged index ({e})") from None
        cat = self.manifest["catalog"]
        if cat is None:
            raise IndexStoreError(f"{path}: index has no catalog")
        try:
            self.catalog = Catalog(os.path.join(path, cat), self.manifest["segments"], generation=self.generation,
                                   readonly=True)
        except sqlite3.Error as e:
            # Also what a reader sees when a newer writer removed this generation's catalog file meanwhile.
            raise IndexStoreError(f"{path}: cannot open the catalog {cat} ({e})") from None
        # Frame ranges of removed tracks, sorted: their postings stay in the immutable segments until the
        # next build, and hits inside these ranges are dropped.
        ranges = sorted(tuple(r) for r in self.manifest.get("removed", []))
        self.removed = np.array(ranges, dtype=np.int64).reshape(-1, 2)
        starts = self.removed[:, 0]
        self.removed_tracks = frozenset(int(i) for seg in self.segments
                                        for i in seg.tracks[np.isin(seg.tracks[:, 0], starts), 2])

    @property
    def frames(self) -> int:
        """Size of the global frame space that postings point into."""
        return int(self.manifest["next_frame"])

    @functools.cached_property
    def live_frames(self) -> int:
        """Frames of the tracks still in the index (with the gap after each): the frame space a query's hits
        can land in, since hits in removed tracks are dropped.  The no-match decision is sized by it (per query:
        computed once, a generation never changes)."""
        gap = track_gap(self.config)
        held = sum(int(seg.tracks[:, 1].sum()) + gap * len(seg.tracks) for seg in self.segments)
        return max(1, held - int(self.removed[:, 1].sum()) - gap * len(self.removed))

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    @functools.cached_property
    def labelled_counts(self) -> dict[str, int]:
        """Live tracks of each class (counted once: a label change makes a new generation)."""
        return {c: self.catalog.count(klass=c) for c in CLASSES}

    @functools.cached_property
    def builtin_examples(self) -> Examples | None:
        """The package's built-in examples (:mod:`index.examples`) if this index's vectors come from the transform
        they were made with."""
        return examples_for(self.embedding.config, self.embedding.standardizer)

    def vote_examples(self, below: int) -> Examples | None:
        """The built-in examples while this index holds fewer than ``below`` labelled tracks of some class."""
        return self.builtin_examples if examples_vote(self.labelled_counts, below) else None

    def classify(self, vectors: np.ndarray, cfg: ClassifyConfig = ClassifyConfig()) -> list[Vote]:
        """The music / dialogue / both vote for each row of ``vectors`` (index vectors) over this index, the
        built-in examples voting too where they do (:meth:`vote_examples`)."""
        return classify_vectors(vectors, self.vectors, self.removed_tracks, self.catalog, cfg,
                                self.vote_examples(cfg.examples_below))

    def stats(self) -> dict:
        """Tracks, their classes (how many of each, and unlabelled), hashes, hours of audio, size on disk, format
        version, generation, segments, embeddings, and whether the built-in examples vote too (with the default
        :class:`ClassifyConfig`)."""
        totals = self.catalog.totals()
        m = self.manifest
        classes = dict(self.labelled_counts)
        classes["unlabelled"] = int(totals["tracks"]) - sum(classes.values())
        examples = self.vote_examples(ClassifyConfig().examples_below)
        return {"tracks": int(totals["tracks"]), "classes": classes, "hashes": int(totals["hashes"]),
                "hours": round(totals["duration_s"] / 3600.0, 4), "size_bytes": disk_bytes(self.path),
                "format_version": m["format_version"], "generation": self.generation,
                "segments": len(m["segments"]), "vectors": sum(len(v) for v in self.vectors),
                "vector_index": self.embedding.factory,
                "builtin_examples": examples is not None,
                "created_at": m.get("created_at"),
                "updated_at": m.get("updated_at")}

    def close(self) -> None:
        self.catalog.close()
