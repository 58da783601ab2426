"""Cut long recordings into end-first pieces for labelling (``audioid chunk``).

Every audio file under a source folder is decoded once at its own rate and channel count and cut from the end
towards the start (:func:`audioid.fingerprint.audio.chunks_from_end` positions): ``<stem>_chunk_1`` is the last
piece, the outro, which is what the index classifies.  Pieces keep the file's relative folder under OUT.

OUT holds an append-only processed log (``chunked.jsonl``), one JSON object per source file and run, keyed by the
file's content hash: a file whose bytes were already chunked is skipped even when renamed, a changed file is
chunked again (its old pieces replaced), and failures are recorded with their reasons and retried next run.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..fingerprint.audio import AudioError, chunks_from_end
from ..fingerprint.decode import decode
from .parallel import ordered_map
from .sources import iter_audio_files
from .store import now_iso, read_jsonl

LOG_NAME = "chunked.jsonl"

#: Output formats: extension, libsndfile major format and subtype.  MP3 is LAME inside libsndfile.
FORMATS = {
    "wav": ("wav", "WAV", "PCM_16"),
    "flac": ("flac", "FLAC", "PCM_16"),
    "ogg": ("ogg", "OGG", "VORBIS"),
    "mp3": ("mp3", "MP3", "MPEG_LAYER_III"),
}


@dataclass(frozen=True)
class ChunkOptions:
    """How files are cut.

    Attributes
    ----------
    seconds : float
        Length of each piece.
    keep_short : bool
        Keep the leftover piece at the start of a file when it is shorter than ``seconds`` (and a file shorter
        than ``seconds`` as one piece).
    fmt : str
        Output format, a key of :data:`FORMATS`.
    """

    seconds: float = 10.0
    keep_short: bool = False
    fmt: str = "wav"

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"seconds must be positive, got {self.seconds!r}")
        if self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")


@dataclass
class FileResult:
    """What happened to one source file (one line of the processed log)."""

    source: str                 # path relative to the source folder
    content_hash: str = ""
    status: str = "done"        # done | skipped | failed
    chunks: list[dict] = field(default_factory=list)    # {"file": path relative to OUT, "start_s": float}
    duration_s: float = 0.0
    error: str | None = None


@dataclass
class ChunkReport:
    """What one ``chunk`` run did, file by file in input order."""

    results: list[FileResult] = field(default_factory=list)

    def of(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio decoded by this run."""
        return sum(r.duration_s for r in self.of("done"))


def read_log(out: str | os.PathLike) -> list[dict]:
    """The processed log of OUT, oldest first (empty when OUT has none); a run killed mid-write is redone."""
    return read_jsonl(os.path.join(os.fspath(out), LOG_NAME))


def summary(out: str | os.PathLike) -> dict:
    """Totals over every run recorded in OUT's log: files chunked and failed (latest outcome per source path),
    pieces and hours of audio."""
    latest: dict[str, dict] = {}
    for e in read_log(out):
        latest[e["source"]] = e
    done = [e for e in latest.values() if e["status"] == "done"]
    return {"files_done": len(done), "files_failed": sum(e["status"] == "failed" for e in latest.values()),
            "chunks": sum(len(e["chunks"]) for e in done),
            "hours": round(sum(e.get("duration_s", 0.0) for e in done) / 3600.0, 4)}


def _write_piece(path: str, y: np.ndarray, sr: int, fmt: str) -> None:
    import soundfile as sf

    _ext, major, subtype = FORMATS[fmt]
    tmp = path + ".part"
    # Written under a temporary name: an interrupted run never leaves a truncated piece under the real one.
    sf.write(tmp, y, sr, format=major, subtype=subtype)
    os.replace(tmp, path)


def chunk_file(path: str, out_dir: str, rel_stem: str, opts: ChunkOptions, digest: str | None = None
               ) -> FileResult:
    """Cut one file into pieces ``OUT/<rel_stem>_chunk_<i>.<ext>``; errors are returned, not raised.

    Parameters
    ----------
    path : str
        Source audio file.
    out_dir : str
        OUT folder.
    rel_stem : str
        Source path relative to the source folder, without extension.
    opts : ChunkOptions
    digest : str or None
        The file's content hash when the caller has it already.
    """
    from .build import content_hash

    source = rel_stem + os.path.splitext(path)[1]
    try:
        digest = digest or content_hash(path)
        d = decode(path)
    except AudioError as e:
        return FileResult(source, digest or "", "failed", error=str(e))
    except OSError as e:
        return FileResult(source, digest or "", "failed", error=f"{path}: {e.strerror or e}")
    duration = d.total_frames / d.sample_rate
    try:
        pieces = chunks_from_end(d.data, d.sample_rate, opts.seconds, keep_short=opts.keep_short)
    except ValueError as e:
        return FileResult(source, digest, "failed", duration_s=duration, error=f"{path}: {e}")
    if not pieces:
        return FileResult(source, digest, "failed", duration_s=duration,
                          error=f"{path}: shorter than {opts.seconds:g} s ({duration:.1f} s); --keep-short keeps it")
    os.makedirs(os.path.join(out_dir, os.path.dirname(rel_stem)), exist_ok=True)
    chunks = []
    try:
        for i, (start_s, y) in enumerate(pieces, start=1):
            rel = f"{rel_stem}_chunk_{i}.{FORMATS[opts.fmt][0]}"
            _write_piece(os.path.join(out_dir, rel), y, d.sample_rate, opts.fmt)
            chunks.append({"file": rel, "start_s": round(start_s, 3)})
    except Exception as e:  # libsndfile raises its own error types (e.g. an MP3 rate LAME refuses)
        return FileResult(source, digest, "failed", duration_s=duration,
                          error=f"{path}: cannot write {opts.fmt} ({e})")
    return FileResult(source, digest, "done", chunks, duration)


def _chunk_star(args: tuple[str, str, str, ChunkOptions, str]) -> FileResult:
    return chunk_file(*args)


def _stale_pieces(previous: dict | None, result: FileResult) -> list[str]:
    """Pieces an earlier run wrote for this source path that this run did not write again."""
    if previous is None or previous["status"] != "done":
        return []
    kept = {c["file"] for c in result.chunks}
    return [c["file"] for c in previous["chunks"] if c["file"] not in kept]


def chunk_folder(source: str | os.PathLike, out: str | os.PathLike, opts: ChunkOptions = ChunkOptions(), *,
                 jobs: int | None = None, progress: Callable[[FileResult], None] | None = None) -> ChunkReport:
    """Cut every audio file under ``source`` (a folder, searched recursively, or one file) into end-first pieces
    in ``out``; files whose content OUT's processed log already holds are skipped.

    Parameters
    ----------
    source : path
        Folder or single audio file.
    out : path
        Output folder (created); holds the pieces and the processed log.
    opts : ChunkOptions
    jobs : int or None
        Processes (default: one per core).
    progress : callable or None
        Called with each file's :class:`FileResult` as it finishes.

    Returns
    -------
    ChunkReport
    """
    from .build import content_hash

    source, out = os.fspath(source), os.fspath(out)
    if os.path.isdir(source):
        base, files = source, list(iter_audio_files(source))
    elif os.path.exists(source):
        base, files = os.path.dirname(os.path.abspath(source)), [source]
    else:
        raise FileNotFoundError(f"{source}: no such file or folder")
    os.makedirs(out, exist_ok=True)
    log = read_log(out)
    done_hashes = {e["content_hash"] for e in log if e["status"] == "done"}
    last_by_source = {e["source"]: e for e in log}
    report = ChunkReport()
    with open(os.path.join(out, LOG_NAME), "a", encoding="utf-8") as logf:
        def record(r: FileResult) -> None:
            if r.status != "skipped":
                for stale in _stale_pieces(last_by_source.get(r.source), r):
                    try:
                        os.remove(os.path.join(out, stale))
                    except FileNotFoundError:
                        pass
                logf.write(json.dumps({"at": now_iso(), "source": r.source, "content_hash": r.content_hash,
                                       "status": r.status, "chunks": r.chunks, "duration_s": round(r.duration_s, 3),
                                       "seconds": opts.seconds, "format": opts.fmt, "error": r.error}) + "\n")
                logf.flush()   # each file is on record as soon as it is done: an interrupted run resumes there
            report.results.append(r)
            if progress:
                progress(r)

        work, owners = [], {}
        for f in files:
            rel_stem = os.path.splitext(os.path.relpath(os.path.abspath(f), os.path.abspath(base)))[0]
            rel = rel_stem + os.path.splitext(f)[1]
            # Hashing here costs a read of each file, which the OS then caches for the decode.
            try:
                digest = content_hash(f)
            except OSError as e:
                record(FileResult(rel, status="failed", error=f"{f}: {e.strerror or e}"))
                continue
            if digest in done_hashes:
                record(FileResult(rel, digest, "skipped"))
            elif rel_stem in owners:
                record(FileResult(rel, digest, "failed", error=(
                    f"{f}: its pieces would overwrite those of {owners[rel_stem]} (same name, other extension)")))
            else:
                owners[rel_stem] = rel
                done_hashes.add(digest)     # a second copy of the same bytes in this run is skipped too
                work.append((f, out, rel_stem, opts, digest))
        for r in ordered_map(_chunk_star, work, jobs):
            record(r)
    return report
