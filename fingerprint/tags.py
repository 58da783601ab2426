"""Title and artist from a file's own tags: ID3 in MP3, Vorbis comments in FLAC and Ogg, RIFF INFO in WAV
(through libsndfile), and for what only ffmpeg reads (M4A, WMA, ...) through ffprobe.  References indexed from a
folder get their title and artist from here."""
from __future__ import annotations

import json
import os
import subprocess
import unicodedata

import soundfile as sf

from .decode import _tools

#: Longest title or artist kept: tags are free text written by anyone.
MAX_TAG_CHARS = 200
_FIELDS = ("title", "artist")


def read_tags(path: str | os.PathLike) -> dict[str, str]:
    """``title`` and ``artist`` as far as the file's tags give them (neither when it has none or cannot be read).

    Each is one line of printable text (control characters and line breaks become spaces, runs of spaces one),
    at most :data:`MAX_TAG_CHARS` characters.  Reading tags never raises: they are optional.
    """
    path = os.fspath(path)
    found = _sndfile_tags(path)
    if found is None:
        found = _ffprobe_tags(path)
    return {k: v for k in _FIELDS if (v := _clean(found.get(k)))}


def _sndfile_tags(path: str) -> dict[str, str] | None:
    """libsndfile's string fields of the file; None when libsndfile cannot open it."""
    try:
        with sf.SoundFile(path) as f:
            return f.copy_metadata()
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError):
        return None


def _ffprobe_tags(path: str) -> dict[str, str]:
    """The container's tags as ffprobe reads them (keys lower-cased); empty without ffprobe or on any failure."""
    ffprobe = _tools()[1]
    if ffprobe is None:
        return {}
    cmd = [ffprobe, "-v", "error", "-show_entries", "format_tags", "-of", "json", "file:" + os.path.abspath(path)]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                           timeout=30)
        tags = json.loads(r.stdout or "{}").get("format", {}).get("tags", {})
    except (subprocess.SubprocessError, OSError, ValueError, AttributeError):
        return {}
    return {str(k).lower(): v for k, v in tags.items() if isinstance(v, str)} if isinstance(tags, dict) else {}


def _clean(text: str | None) -> str | None:
    if not text:
        return None
    # Control characters and line or paragraph breaks separate words; invisible format characters (a
    # right-to-left override that would disguise the text) and unassigned code points go.
    kept = (" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    text = " ".join("".join(c for c in kept if unicodedata.category(c)[0] != "C").split())
    return text[:MAX_TAG_CHARS].rstrip() or None
