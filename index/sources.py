"""Where reference and query files come from: folders (recursive), CSV manifests, single files."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator

from .catalog import CLASSES

AUDIO_EXTENSIONS = frozenset({".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4", ".aif",
                              ".aiff", ".wma", ".webm"})


class SourceError(Exception):
    """A reference source (folder or manifest) cannot be used; the message says why."""


@dataclass(frozen=True)
class ReferenceSpec:
    """A reference file and what the user told us about it."""

    path: str
    label: str
    title: str | None = None
    artist: str | None = None
    klass: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def iter_audio_files(folder: str) -> Iterator[str]:
    """Audio files under ``folder``, recursively, in sorted order; symlink loops and special files are skipped."""
    seen: set[tuple[int, int]] = set()

    def walk(d: str) -> Iterator[str]:
        try:
            st = os.stat(d)
        except OSError:
            return
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            try:
                if e.is_dir():
                    yield from walk(e.path)
                elif e.is_file() and os.path.splitext(e.name)[1].lower() in AUDIO_EXTENSIONS:
                    yield e.path
            except OSError:
                continue

    yield from walk(folder)


def expand_inputs(paths: Iterable[str]) -> list[str]:
    """Files stay as given (even if missing: they become error records); folders expand to their audio files."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            out.extend(iter_audio_files(p))
        else:
            out.append(p)
    return out


def read_manifest(path: str) -> list[ReferenceSpec]:
    """Read a CSV manifest with columns ``path,label`` and optional ``title,artist,class``.

    Paths are relative to the manifest's folder; any other column is kept as track metadata.
    """
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            missing = {"path", "label"} - set(cols)
            if missing:
                raise SourceError(f"{path}: manifest lacks column(s) {', '.join(sorted(missing))}")
            specs = []
            for lineno, row in enumerate(reader, start=2):
                rel = (row.get("path") or "").strip()
                label = (row.get("label") or "").strip()
                if not rel or not label:
                    raise SourceError(f"{path}:{lineno}: empty path or label")
                klass = (row.get("class") or "").strip().lower() or None
                if klass is not None and klass not in CLASSES:
                    raise SourceError(f"{path}:{lineno}: class must be one of {', '.join(CLASSES)}, got {klass!r}")
                extra = {k: v for k, v in row.items() if k not in {"path", "label", "title", "artist", "class"}
                         and k is not None and v not in (None, "")}
                specs.append(ReferenceSpec(path=os.path.join(base, rel), label=label,
                                           title=(row.get("title") or "").strip() or None,
                                           artist=(row.get("artist") or "").strip() or None,
                                           klass=klass, metadata=extra))
            return specs
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: manifest is not UTF-8 text ({e.reason})") from None
    except csv.Error as e:
        raise SourceError(f"{path}: bad CSV ({e})") from None


def reference_specs(source: str, *, label_from: str = "stem", klass: str | None = None) -> list[ReferenceSpec]:
    """Resolve a build/add SOURCE (folder, CSV manifest or single audio file) into reference specs.

    ``klass`` (music, dialogue or both) is the class of every file of a folder or the single file, and of the
    manifest rows that give none: a folder of songs or of recorded talk is labelled for the class vote at once.
    """
    if label_from not in ("stem", "parent"):
        raise SourceError(f"label_from must be 'stem' or 'parent', got {label_from!r}")
    if klass is not None and klass not in CLASSES:
        raise SourceError(f"class must be one of {', '.join(CLASSES)}, got {klass!r}")
    if os.path.isdir(source):
        files = list(iter_audio_files(source))
        if not files:
            raise SourceError(f"{source}: no audio files found")
        return [ReferenceSpec(path=f, label=_label_for(f, label_from), klass=klass) for f in files]
    if not os.path.exists(source):
        raise SourceError(f"{source}: no such file or folder")
    if source.lower().endswith(".csv"):
        return [s if s.klass or not klass else replace(s, klass=klass) for s in read_manifest(source)]
    return [ReferenceSpec(path=source, label=_label_for(source, label_from), klass=klass)]


def _label_for(path: str, label_from: str) -> str:
    if label_from == "parent":
        return os.path.basename(os.path.dirname(os.path.abspath(path)))
    return os.path.splitext(os.path.basename(path))[0]
