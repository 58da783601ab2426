"""Writing an index: analyse reference files (in parallel), then commit a new generation atomically."""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..fingerprint.audio import AudioError, load
from ..fingerprint.config import LandmarkConfig
from ..fingerprint.landmarks import hash_bits, reference_hashes
from .catalog import Catalog, Track
from .postings import write_segment
from .sources import ReferenceSpec
from .store import (IndexStoreError, collect_garbage, new_manifest, now_iso, read_manifest, write_manifest,
                    writer_lock)


@dataclass
class Analysis:
    """A reference file analysed: content hash, duration and landmark hashes (or the error that stopped it)."""

    spec: ReferenceSpec
    content_hash: str = ""
    duration_s: float = 0.0
    n_frames: int = 0
    hashes: np.ndarray | None = None
    times: np.ndarray | None = None
    error: str | None = None


@dataclass
class WriteReport:
    """What a build or add did."""

    added: list[Track] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)   # (path, existing track id)
    failed: list[tuple[str, str]] = field(default_factory=list)       # (path, error message)
    generation: int = 0


def content_hash(path: str) -> str:
    """SHA-256 of the file's bytes: the key that detects duplicates and keys the label log."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def analyse_reference(spec: ReferenceSpec, cfg: LandmarkConfig) -> Analysis:
    """Decode and fingerprint one reference file; errors are returned, not raised, so a build goes on."""
    try:
        audio = load(spec.path, cfg.sample_rate)
        digest = content_hash(spec.path)
    except AudioError as e:
        return Analysis(spec, error=str(e))
    except OSError as e:
        return Analysis(spec, error=f"{spec.path}: {e.strerror or e}")
    hashes, times = reference_hashes(audio.samples, cfg)
    n_frames = 1 + max(0, len(audio.samples) - cfg.n_fft) // cfg.hop_length
    if len(hashes) == 0:
        return Analysis(spec, error=f"{spec.path}: no landmarks (silent or too short to fingerprint)")
    return Analysis(spec, content_hash=digest, duration_s=len(audio.samples) / cfg.sample_rate,
                    n_frames=n_frames, hashes=hashes, times=times)


def _analyse_star(args: tuple[ReferenceSpec, LandmarkConfig]) -> Analysis:
    return analyse_reference(*args)


def analyse_all(specs: Sequence[ReferenceSpec], cfg: LandmarkConfig, jobs: int | None = None,
                progress: Callable[[Analysis], None] | None = None) -> Iterator[Analysis]:
    """Analyse ``specs`` in input order, over ``jobs`` processes (default: one per core)."""
    jobs = jobs or os.cpu_count() or 1
    work = [(s, cfg) for s in specs]
    if jobs == 1 or len(work) <= 1:
        results: Iterable[Analysis] = map(_analyse_star, work)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=min(jobs, len(work)))
        results = pool.map(_analyse_star, work, chunksize=1)
    try:
        for a in results:
            if progress:
                progress(a)
            yield a
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)


def _commit(path: str, manifest: dict, analyses: Iterable[Analysis], report: WriteReport, *, fresh: bool) -> None:
    """Write one new segment (and, for a fresh build, a new catalog), then swap the MANIFEST."""
    cfg = LandmarkConfig.from_dict(manifest["landmark_config"])
    gen = int(manifest["generation"]) + 1
    staging = os.path.join(path, f".staging-{uuid.uuid4().hex}")
    os.makedirs(staging)
    try:
        if fresh:
            cat_name = f"catalog-{gen:06d}.sqlite"
            catalog = Catalog(os.path.join(staging, cat_name), [])
        else:
            cat_name = manifest["catalog"]
            catalog = Catalog(os.path.join(path, cat_name), manifest["segments"])
        seg_name = f"seg-{gen:06d}-{uuid.uuid4().hex[:8]}"
        next_id = catalog.next_id()
        next_frame = int(manifest["next_frame"])
        seen: dict[str, int] = {}
        tracks, hash_parts, value_parts = [], [], []
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
            t = Track(id=next_id, label=a.spec.label, title=a.spec.title, artist=a.spec.artist, klass=a.spec.klass,
                      source_path=os.path.abspath(a.spec.path), content_hash=a.content_hash,
                      duration_s=a.duration_s, added_at=now_iso(), segment=seg_name, frame_start=next_frame,
                      frame_count=a.n_frames, n_hashes=len(a.hashes), metadata=dict(a.spec.metadata))
            seen[a.content_hash] = next_id
            tracks.append(t)
            hash_parts.append(a.hashes)
            value_parts.append(a.times.astype(np.int64) + next_frame)
            next_id += 1
            # A gap as long as the target zone keeps offset piles of neighbouring tracks apart.
            next_frame += a.n_frames + cfg.dt_max + 2
        if next_frame >= 2**32:
            raise IndexStoreError(f"{path}: index is full (2^32 frames); split it")
        if not tracks and not fresh:
            catalog.close()
            report.generation = int(manifest["generation"])
            return
        track_table = np.array([[t.frame_start, t.frame_count, t.id] for t in tracks], np.int64).reshape(-1, 3)
        write_segment(os.path.join(staging, seg_name),
                      np.concatenate(hash_parts) if hash_parts else np.zeros(0, np.uint32),
                      np.concatenate(value_parts) if value_parts else np.zeros(0, np.uint32), track_table,
                      hash_bits(cfg))
        catalog.insert(tracks)
        catalog.close()
        os.makedirs(os.path.join(path, "postings"), exist_ok=True)
        os.rename(os.path.join(staging, seg_name), os.path.join(path, "postings", seg_name))
        if fresh:
            os.rename(os.path.join(staging, cat_name), os.path.join(path, cat_name))
        new = dict(manifest, generation=gen, catalog=cat_name, next_frame=next_frame, updated_at=now_iso(),
                   segments=([] if fresh else list(manifest["segments"])) + [seg_name])
        write_manifest(path, new)
        report.added.extend(tracks)
        report.generation = gen
        collect_garbage(path, new)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_index(specs: Sequence[ReferenceSpec], path: str, *, config: LandmarkConfig | None = None,
                jobs: int | None = None, progress: Callable[[Analysis], None] | None = None) -> WriteReport:
    """Build (or rebuild) the index at ``path`` from ``specs``.

    The new index is written beside the old one and swapped in atomically: readers see the old index until the
    swap, then the new one.  Unreadable files are reported in the returned :class:`WriteReport` and skipped.
    """
    cfg = config or LandmarkConfig()
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise IndexStoreError(f"{path}: exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, "MANIFEST.json")):
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
        report = WriteReport()
        _commit(path, manifest, analyse_all(specs, cfg, jobs, progress), report, fresh=True)
        return report


def add_to_index(specs: Sequence[ReferenceSpec], path: str, *, jobs: int | None = None,
                 progress: Callable[[Analysis], None] | None = None) -> WriteReport:
    """Add references to an existing index as one new segment, effective for the next query; no rebuild."""
    path = os.fspath(path)
    read_manifest(path)  # fail before taking the lock if it is not an index
    with writer_lock(path):
        manifest = read_manifest(path)
        cfg = LandmarkConfig.from_dict(manifest["landmark_config"])
        report = WriteReport()
        _commit(path, manifest, analyse_all(specs, cfg, jobs, progress), report, fresh=False)
        return report
