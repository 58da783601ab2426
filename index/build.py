"""Writing an index: analyse reference files (in parallel), then commit a new generation atomically."""
from __future__ import annotations

import getpass
import hashlib
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..fingerprint.audio import AudioError, load, resample
from ..fingerprint.config import LandmarkConfig
from ..fingerprint.landmarks import hash_bits, reference_pairs, reference_peaks, strongest
from ..fingerprint.tags import read_tags
from .catalog import CLASSES, Catalog, Track
from .embeddings import EmbeddingSetup, Vote, track_prediction
from .parallel import ordered_map
from .postings import track_gap, write_segment
from .sources import ReferenceSpec
from .store import (LOCK, MANIFEST, IndexReader, IndexStoreError, NoSuchTrackError, collect_garbage, new_manifest,
                    now_iso, read_manifest, write_manifest, writer_lock)
from .vectors import VectorSegment, track_of, vector_ids, write_vectors


@dataclass
class Analysis:
    """A reference file analysed: content hash, duration, landmark hashes and window embeddings (or the error
    that stopped it)."""

    spec: ReferenceSpec
    content_hash: str = ""
    duration_s: float = 0.0
    n_frames: int = 0
    hashes: np.ndarray | None = None
    times: np.ndarray | None = None
    peak_times: np.ndarray | None = None     # verification peaks: frame and FFT bin
    peak_bins: np.ndarray | None = None
    vectors: np.ndarray | None = None
    error: str | None = None


@dataclass
class WriteReport:
    """What a build or add did."""

    added: list[Track] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)   # (path, existing track id)
    failed: list[tuple[str, str]] = field(default_factory=list)       # (path, error message)
    skipped: list[tuple[str, str]] = field(default_factory=list)      # (path, why): removed per the label log
    generation: int = 0


def default_who() -> str:
    """Who a label change is logged as: ``$AUDIOID_USER``, else the login name."""
    who = os.environ.get("AUDIOID_USER")
    if who:
        return who
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def label_state(entries: Iterable[dict]) -> dict[str, dict]:
    """The latest labels (and whether removed) per content hash, replaying a label log in order."""
    state: dict[str, dict] = {}
    for e in entries:
        cur = state.setdefault(e["content_hash"], {"removed": False})
        if e["action"] == "remove":
            cur["removed"] = True
            continue
        cur["removed"] = False
        for key in ("label", "class", "title", "artist"):
            if e.get(key) is not None:
                cur[key] = e[key]
    return state


def content_hash(path: str) -> str:
    """SHA-256 of the file's bytes: the key that detects duplicates and keys the label log."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def analyse_reference(spec: ReferenceSpec, cfg: LandmarkConfig, setup: EmbeddingSetup) -> Analysis:
    """Decode, fingerprint and embed one reference file; errors are returned, not raised, so a build goes on.

    The file is decoded once at the embedding's rate; the landmarks' lower rate is resampled from that.  A title
    or artist the spec lacks comes from the file's tags (:func:`audioid.fingerprint.tags.read_tags`), if any.
    """
    try:
        audio = load(spec.path, setup.sample_rate)
        digest = content_hash(spec.path)
    except AudioError as e:
        return Analysis(spec, error=str(e))
    except OSError as e:
        return Analysis(spec, error=f"{spec.path}: {e.strerror or e}")
    if spec.title is None or spec.artist is None:       # what a manifest says wins over the file's tags
        tags = read_tags(spec.path, audio.tags)
        spec = replace(spec, title=spec.title or tags.get("title"), artist=spec.artist or tags.get("artist"))
    y = resample(audio.samples, setup.sample_rate, cfg.sample_rate)
    peaks = reference_peaks(y, cfg)
    hashes, times = reference_pairs(peaks, cfg)
    n_frames = 1 + max(0, len(y) - cfg.n_fft) // cfg.hop_length
    if len(hashes) == 0:
        return Analysis(spec, error=f"{spec.path}: no landmarks (silent or too short to fingerprint)")
    check = strongest(peaks, cfg.verify_peaks_per_s, cfg)       # empty when the config stores none
    return Analysis(spec, content_hash=digest, duration_s=len(y) / cfg.sample_rate, n_frames=n_frames,
                    hashes=hashes, times=times, vectors=setup.reference_vectors(audio.samples),
                    peak_times=check.time.astype(np.int64), peak_bins=np.rint(check.freq).astype(np.int64))


def _analyse_star(args: tuple[ReferenceSpec, LandmarkConfig, EmbeddingSetup]) -> Analysis:
    return analyse_reference(*args)


def analyse_all(specs: Sequence[ReferenceSpec], cfg: LandmarkConfig, setup: EmbeddingSetup,
                jobs: int | None = None, progress: Callable[[Analysis], None] | None = None) -> Iterator[Analysis]:
    """Analyse ``specs`` in input order, over ``jobs`` processes (default: one per core)."""
    for a in ordered_map(_analyse_star, [(s, cfg, setup) for s in specs], jobs):
        if progress:
            progress(a)
        yield a


@contextmanager
def _staging(path: str) -> Iterator[str]:
    """A private folder inside the index for a write's new files; removed afterwards, whatever happens."""
    staging = os.path.join(path, f".staging-{uuid.uuid4().hex}")
    os.makedirs(staging)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_frames(path: str, next_frame: int) -> None:
    if next_frame >= 2**32:
        raise IndexStoreError(f"{path}: index is full (2^32 frames); rebuild it, or split it into several")


def _write_segment(staging: str, name: str, cfg: LandmarkConfig, hashes: list[np.ndarray],
                   values: list[np.ndarray], table: np.ndarray, vectors: list[np.ndarray], ids: list[np.ndarray],
                   factory: str, peaks: tuple[list[np.ndarray], list[np.ndarray]] | None) -> None:
    """Write segment ``name`` (postings, verification peaks as ``(global frames, bins)`` parts when every track
    has them, and vectors when there are any) into ``staging``."""
    write_segment(os.path.join(staging, name), np.concatenate(hashes) if hashes else np.zeros(0, np.uint32),
                  np.concatenate(values) if values else np.zeros(0, np.int64), table, hash_bits(cfg),
                  None if peaks is None else tuple(np.concatenate(p) if p else np.zeros(0, np.int64)
                                                   for p in peaks))
    if sum(len(x) for x in vectors):
        write_vectors(os.path.join(staging, name), np.concatenate(vectors), np.concatenate(ids), factory)


def _publish(path: str, staging: str, segment: str, files: Sequence[str], manifest: dict) -> None:
    """Move a write's new segment and top-level ``files`` from ``staging`` into the index, commit ``manifest``
    (the atomic step: readers see the new generation from here on), then remove what it no longer uses."""
    os.makedirs(os.path.join(path, "postings"), exist_ok=True)
    os.rename(os.path.join(staging, segment), os.path.join(path, "postings", segment))
    for name in files:
        os.rename(os.path.join(staging, name), os.path.join(path, name))
    write_manifest(path, manifest)
    collect_garbage(path, manifest)


def _commit(path: str, manifest: dict, analyses: Iterable[Analysis], report: WriteReport, *, fresh: bool,
            who: str, setup: EmbeddingSetup, old_log: list[dict] | None = None,
            from_log: dict[str, dict] | None = None, predict: Callable[[np.ndarray], Vote] | None = None) -> None:
    """Write one new segment (and, for a fresh build, a new catalog and embedding setup), then swap the MANIFEST.

    A fresh build carries ``old_log`` (the previous catalog's label log) over and logs only content new to it;
    with ``from_log`` (see :func:`label_state`) the labels of known content replace the source's, and content
    removed there stays out.  ``predict`` (adds) gives the class the index predicts for a track's vectors
    before learning it; the prediction is logged for the drift report.
    """
    cfg = LandmarkConfig.from_dict(manifest["landmark_config"])
    gen = int(manifest["generation"]) + 1
    with _staging(path) as staging:
        emb_name = manifest.get("embedding")
        if fresh:
            cat_name = f"catalog-{gen:06d}.sqlite"
            catalog = Catalog(os.path.join(staging, cat_name), [])
            for entry in old_log or []:
                catalog.log([entry], entry["generation"])
            emb_name = f"embedding-{gen:06d}.json"
            setup.write(os.path.join(staging, emb_name))
        else:
            cat_name = manifest["catalog"]
            catalog = Catalog(os.path.join(path, cat_name), manifest["segments"])
            catalog.forget_uncommitted(int(manifest["generation"]))
        seg_name = f"seg-{gen:06d}-{uuid.uuid4().hex[:8]}"
        next_id = catalog.next_id()
        next_frame = int(manifest["next_frame"])
        seen: dict[str, int] = {}
        tracks, hash_parts, value_parts, vector_parts, id_parts, predictions = [], [], [], [], [], {}
        peaks: tuple[list[np.ndarray], list[np.ndarray]] | None = ([], []) if cfg.verify_peaks_per_s > 0 else None
        for a in analyses:
            if a.error:
                report.failed.append((a.spec.path, a.error))
                continue
            dup = seen.get(a.content_hash)
            if dup is None:
                existing = catalog.by_content_hash(a.content_hash)
                dup = existing.id if existing else None
            if dup is not None:
                report.duplicates.append((a.spec.path, dup))
                continue
            known = (from_log or {}).get(a.content_hash)
            if known and known["removed"]:
                report.skipped.append((a.spec.path, "removed according to the label log"))
                continue
            spec = a.spec
            if known:
                spec = replace(spec, label=known.get("label", spec.label), klass=known.get("class", spec.klass),
                               title=known.get("title", spec.title), artist=known.get("artist", spec.artist))
            t = Track(id=next_id, label=spec.label, title=spec.title, artist=spec.artist, klass=spec.klass,
                      source_path=os.path.abspath(a.spec.path), content_hash=a.content_hash,
                      duration_s=a.duration_s, added_at=now_iso(), segment=seg_name, frame_start=next_frame,
                      frame_count=a.n_frames, n_hashes=len(a.hashes), metadata=dict(a.spec.metadata))
            seen[a.content_hash] = next_id
            tracks.append(t)
            hash_parts.append(a.hashes)
            value_parts.append(a.times.astype(np.int64) + next_frame)
            vector_parts.append(a.vectors)
            id_parts.append(vector_ids(t.id, len(a.vectors)))
            if peaks is not None:
                peaks[0].append(a.peak_times + next_frame)
                peaks[1].append(a.peak_bins)
            if predict is not None:
                predictions[t.id] = predict(a.vectors)
            next_id += 1
            next_frame += a.n_frames + track_gap(cfg)
        _check_frames(path, next_frame)
        if not tracks and not fresh:
            catalog.close()
            report.generation = int(manifest["generation"])
            return
        track_table = np.array([[t.frame_start, t.frame_count, t.id] for t in tracks], np.int64).reshape(-1, 3)
        _write_segment(staging, seg_name, cfg, hash_parts, value_parts, track_table, vector_parts, id_parts,
                       setup.factory, peaks)
        catalog.insert(tracks)
        # A rebuild re-reads known recordings: that is no label change, so only new content is logged.
        logged = {e["content_hash"] for e in old_log or []}
        catalog.log(({"at": t.added_at, "who": who, "action": "add", "content_hash": t.content_hash,
                      "track_id": t.id, "label": t.label, "class": t.klass, "title": t.title, "artist": t.artist,
                      "source": t.source_path, **_prediction_fields(predictions.get(t.id))}
                     for t in tracks if t.content_hash not in logged), gen)
        catalog.close()
        new = dict(manifest, generation=gen, catalog=cat_name, embedding=emb_name, next_frame=next_frame,
                   updated_at=now_iso(),
                   segments=([] if fresh else list(manifest["segments"])) + [seg_name])
        _publish(path, staging, seg_name, [cat_name, emb_name] if fresh else [], new)
        report.added.extend(tracks)
        report.generation = gen


def build_index(specs: Sequence[ReferenceSpec], path: str, *, config: LandmarkConfig | None = None,
                jobs: int | None = None, progress: Callable[[Analysis], None] | None = None,
                from_log: bool = False, who: str | None = None, vector_index: str | None = None) -> WriteReport:
    """Build (or rebuild) the index at ``path`` from ``specs``.

    The new index is written beside the old one and swapped in atomically: readers see the old index until the
    swap, then the new one.  Unreadable files are reported in the returned :class:`WriteReport` and skipped.
    The label log of the index being replaced is carried over; with ``from_log`` its latest labels (by content
    hash) override the source's, and content it removed is left out.  ``vector_index`` is the FAISS
    ``index_factory`` string of the embedding store (default: the replaced index's, else ``"SQfp16"``).
    """
    cfg = config or LandmarkConfig()
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise IndexStoreError(f"{path}: exists and is not a directory")
    # A folder holding only the writer's lock is what an interrupted first build leaves: it is still empty.
    if os.path.isdir(path) and set(os.listdir(path)) - {LOCK} and not os.path.exists(os.path.join(path, MANIFEST)):
        raise IndexStoreError(f"{path}: folder is not empty and not an ml-audio-id index; refusing to write there")
    with writer_lock(path):
        try:
            old = read_manifest(path)
        except IndexStoreError:
            old = None
        manifest = new_manifest(cfg)
        if old is not None:
            manifest["generation"] = old["generation"]
            manifest["created_at"] = old.get("created_at", manifest["created_at"])
        old_log = _read_log(path, old) if old is not None else []
        if from_log and old is None:
            raise IndexStoreError(f"{path}: --from-log needs an existing index whose label log to replay")
        if vector_index is None and old is not None and old.get("embedding"):
            vector_index = EmbeddingSetup.read(os.path.join(path, old["embedding"])).factory
        try:
            setup = EmbeddingSetup.default(vector_index)
        except ValueError as e:
            raise IndexStoreError(str(e)) from None
        report = WriteReport()
        _commit(path, manifest, analyse_all(specs, cfg, setup, jobs, progress), report, fresh=True,
                who=who or default_who(), setup=setup, old_log=old_log,
                from_log=label_state(old_log) if from_log else None)
        return report


def add_to_index(specs: Sequence[ReferenceSpec], path: str, *, jobs: int | None = None,
                 progress: Callable[[Analysis], None] | None = None, who: str | None = None) -> WriteReport:
    """Add references to an existing index as one new segment, effective for the next query; no rebuild.

    Each added track's class is first predicted from what the index already knows, and the prediction logged
    (prequential evaluation: see :func:`index.report.drift_report`).
    """
    path = os.fspath(path)
    read_manifest(path)  # fail before taking the lock if it is not an index
    with writer_lock(path):
        reader = IndexReader(path)
        try:
            report = WriteReport()

            def predict(vectors: np.ndarray) -> Vote:
                return track_prediction(reader.classify(vectors))

            _commit(path, reader.manifest, analyse_all(specs, reader.config, reader.embedding, jobs, progress),
                    report, fresh=False, who=who or default_who(), setup=reader.embedding, predict=predict)
        finally:
            reader.close()
        if len(read_manifest(path)["segments"]) > MAX_SEGMENTS:
            report.generation = _merge_policy(path, all_segments=False)
        return report


# Adds write one segment each; past this many segments an add also merges the newer ones (see merge_segments).
MAX_SEGMENTS = 16


def _merge(path: str, names: Sequence[str]) -> int:
    """Replace the segments ``names`` of the index at ``path`` (lock held) by one, without removed tracks.

    Postings and vectors are copied, not recomputed.  The merged tracks get fresh frame ranges at the end of
    the frame space; the catalog is copied to a new file (readers of the previous generation keep theirs) with
    those tracks moved and the removed ones gone.  Returns the new generation.
    """
    reader = IndexReader(path)
    try:
        m, cfg = reader.manifest, reader.config
        gen = reader.generation + 1
        merged = [seg for seg in reader.segments if seg.name in names]
        live = {t.id: t for t in reader.catalog.tracks() if t.segment in names}
        next_frame = int(m["next_frame"])
        moved: dict[int, int] = {}                       # track id -> new frame_start
        for t in sorted(live.values(), key=lambda t: t.frame_start):
            moved[t.id] = next_frame
            next_frame += t.frame_count + track_gap(cfg)
        _check_frames(path, next_frame)
        hashes, values, vectors, ids = [], [], [], []
        peaks: tuple[list[np.ndarray], list[np.ndarray]] | None = ([], [])
        for seg in merged:
            keep_row = np.array([int(t) in moved for t in seg.tracks[:, 2]] + [False])
            shift = np.array([moved.get(int(t), 0) - int(s) for s, _n, t in seg.tracks] + [0], np.int64)

            def relocate(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                """(mask of the frames in live tracks, those frames at their tracks' new places)."""
                row = seg.track_at(frames)
                ok = keep_row[row]                       # row -1 (no track) indexes the trailing False
                return ok, frames[ok] + shift[row[ok]]

            ok, moved_values = relocate(np.asarray(seg.values, dtype=np.int64))
            hashes.append(seg.hashes()[ok])
            values.append(moved_values)
            seg_peaks = seg.all_peaks()
            if seg_peaks is None:
                peaks = None                             # one segment without them: the merged one has none
            elif peaks is not None:
                ok, moved_frames = relocate(seg_peaks[0])
                peaks[0].append(moved_frames)
                peaks[1].append(seg_peaks[1][ok])
            vs = VectorSegment.open(os.path.join(path, "postings", seg.name))
            if vs is not None:
                x, i = vs.vectors()
                keep = np.isin(track_of(i), list(moved))
                vectors.append(x[keep])
                ids.append(i[keep])
        table = np.array([[moved[t], live[t].frame_count, t] for t in sorted(moved, key=moved.get)],
                         np.int64).reshape(-1, 3)
        with _staging(path) as staging:
            seg_name = f"seg-{gen:06d}-{uuid.uuid4().hex[:8]}"
            _write_segment(staging, seg_name, cfg, hashes, values, table, vectors, ids, reader.embedding.factory,
                           peaks)
            cat_name = f"catalog-{gen:06d}.sqlite"
            catalog = Catalog(os.path.join(staging, cat_name), m["segments"])
            reader.catalog.db.backup(catalog.db)
            catalog.forget_uncommitted(gen - 1)                # what a crashed writer left in the old file
            catalog.move_tracks(names, seg_name, moved)
            catalog.close()
            # Removed tracks of the merged segments are gone for good: their ranges leave the manifest.
            merged_starts = {int(x) for seg in merged for x in seg.tracks[:, 0]}
            new = dict(m, generation=gen, catalog=cat_name, next_frame=next_frame, updated_at=now_iso(),
                       segments=[s for s in m["segments"] if s not in names] + [seg_name],
                       removed=[r for r in m.get("removed", []) if int(r[0]) not in merged_starts])
            _publish(path, staging, seg_name, [cat_name], new)
    finally:
        reader.close()
    return gen


def merge_segments(path: str | os.PathLike, *, all_segments: bool = True) -> int:
    """Merge an index's segments into one (``all_segments``) or its newer ones, dropping removed tracks.

    Queries look up every segment, so an index grown by many adds gets slower; merging brings it back to one
    lookup per query with the same answers.  Readers keep their generation; a crash leaves the index as it
    was.  Returns the new generation (the current one when there is nothing to merge).
    """
    path = os.fspath(path)
    read_manifest(path)  # fail before taking the lock if it is not an index
    with writer_lock(path):
        return _merge_policy(path, all_segments)


def _merge_policy(path: str, all_segments: bool) -> int:
    m = read_manifest(path)
    names = list(m["segments"])
    if not all_segments:
        # Size-tiered: keep the big first segment (the build) unless the newer ones outgrow it, so an add
        # costs a merge of recent material, not of the whole index.
        sizes = [os.path.getsize(os.path.join(path, "postings", n, "values.npy")) for n in names]
        if len(names) > 1 and sum(sizes[1:]) < sizes[0]:
            names = names[1:]
    if len(names) < 2 and not m.get("removed"):
        return int(m["generation"])
    return _merge(path, names)


def _prediction_fields(vote: Vote | None) -> dict:
    if vote is None:
        return {}
    return {"predicted": vote.klass, "predicted_confidence": vote.confidence,
            "nn_similarity": None if vote.top_similarity is None else round(vote.top_similarity, 4)}


def _read_log(path: str, manifest: dict) -> list[dict]:
    catalog = Catalog(os.path.join(path, manifest["catalog"]), manifest["segments"],
                      generation=int(manifest["generation"]), readonly=True)
    try:
        return catalog.log_entries()
    finally:
        catalog.close()


def _resolve(catalog: Catalog, refs: Sequence[str | int], path: str) -> list[Track]:
    """Tracks named by label or id (digits); an int is an id only (a label may be digits too).  An unknown
    reference is an error naming it."""
    found: dict[int, Track] = {}
    for ref in refs:
        text = str(ref)
        tracks = [] if isinstance(ref, int) else catalog.by_label(text)
        if not tracks and text.isdigit():
            t = catalog.get(int(text))
            tracks = [t] if t else []
        if not tracks:
            raise NoSuchTrackError(f"{path}: no track with id or label {text!r}")
        found.update((t.id, t) for t in tracks)
    return list(found.values())


@contextmanager
def _catalog_change(path: str) -> Iterator[tuple[dict, int, Catalog]]:
    """Lock the index for a catalog-only change; yields (manifest, the generation it will commit, catalog).

    Like every writer, it then removes what the index no longer uses, such as an interrupted write's leftovers.
    """
    path = os.fspath(path)
    read_manifest(path)  # fail before taking the lock if it is not an index
    with writer_lock(path):
        manifest = read_manifest(path)
        gen = int(manifest["generation"]) + 1
        catalog = Catalog(os.path.join(path, manifest["catalog"]), manifest["segments"])
        try:
            catalog.forget_uncommitted(gen - 1)
            yield manifest, gen, catalog
        finally:
            catalog.close()
        collect_garbage(path, read_manifest(path))


def remove_from_index(path: str, refs: Sequence[str | int], *, who: str | None = None) -> list[Track]:
    """Remove tracks (by id or label) from the index; effective for the next query, no rebuild.

    Their postings stay in the immutable segments and are ignored (the next build drops them); readers of
    the previous generation still see them.  Every removal is logged.
    """
    with _catalog_change(path) as (manifest, gen, catalog):
        tracks = _resolve(catalog, refs, path)
        catalog.mark_removed([t.id for t in tracks], gen)
        catalog.log(({"at": now_iso(), "who": who or default_who(), "action": "remove",
                      "content_hash": t.content_hash, "track_id": t.id, "label": t.label} for t in tracks), gen)
        removed = list(manifest.get("removed", [])) + [[t.frame_start, t.frame_count] for t in tracks]
        write_manifest(os.fspath(path), dict(manifest, generation=gen, removed=removed, updated_at=now_iso()))
        return tracks


def relabel_in_index(path: str, track_id: int, *, label: str | None = None, klass: str | None = None,
                     title: str | None = None, artist: str | None = None, who: str | None = None) -> Track:
    """Change a track's label, class, title or artist; logged, and effective for the next query."""
    if klass is not None and klass not in CLASSES:
        raise ValueError(f"class must be one of {', '.join(CLASSES)}, got {klass!r}")
    if all(v is None for v in (label, klass, title, artist)):
        raise ValueError("nothing to change: give a label, class, title or artist")
    with _catalog_change(path) as (manifest, gen, catalog):
        track = catalog.get(int(track_id))
        if track is None:
            raise NoSuchTrackError(f"{path}: no track with id {track_id}")
        # The new generation first, then the change and its log entry in one transaction: a crash in between
        # leaves the labels as they were (under a generation number that changed nothing), never a label change
        # without its log entry.  The new generation also tells long-running readers that something changed.
        write_manifest(os.fspath(path), dict(manifest, generation=gen, updated_at=now_iso()))
        catalog.relabel(track.id, {"at": now_iso(), "who": who or default_who(), "action": "relabel",
                                   "content_hash": track.content_hash, "track_id": track.id, "label": label,
                                   "class": klass, "title": title, "artist": artist}, gen,
                        label=label, title=title, artist=artist, **{"class": klass})
        return catalog.get(track.id)
