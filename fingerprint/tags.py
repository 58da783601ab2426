"""Title and artist from a file's own tags: ID3 in MP3, Vorbis comments in FLAC and Ogg, RIFF INFO in WAV
(through libsndfile), and for what only ffmpeg reads (M4A, WMA, ...) through ffprobe.  References indexed from a
folder get their title and artist from here."""
from __future__ import annotations

import os
import unicodedata
from typing import Mapping

import soundfile as sf

from .audio import AudioError
from .decode import _tools, probe

#: Longest title or artist kept: tags are free text written by anyone.
MAX_TAG_CHARS = 200
_FIELDS = ("title", "artist")


def read_tags(path: str | os.PathLike, known: Mapping[str, str] | None = None) -> dict[str, str]:
    """``title`` and ``artist`` as far as the file's tags give them (neither when it has none or cannot be read).

    ``known`` are the container's tags when decoding read them already (:attr:`Audio.tags`, for what only
    ffmpeg decodes), so the file is not probed twice.  Each value is one line of printable text (control
    characters and line breaks become spaces, runs of spaces one), at most :data:`MAX_TAG_CHARS` characters.
    Reading tags never raises: they are optional.
    """
    path = os.fspath(path)
    found = known if known is not None else _sndfile_tags(path)
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
    """The container's tags as ffprobe reads them (:func:`decode.probe`); empty without ffprobe or on failure."""
    ffprobe = _tools()[1]
    if ffprobe is None:
        return {}
    try:
        return probe(path, ffprobe, "libsndfile cannot open it")[3]
    except AudioError:
        return {}


def _clean(text: str | None) -> str | None:
    if not text:
        return None
    # Control characters and line or paragraph breaks separate words; invisible format characters (a
    # right-to-left override that would disguise the text) and unassigned code points go.
    kept = (" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    text = " ".join("".join(c for c in kept if unicodedata.category(c)[0] != "C").split())
    return text[:MAX_TAG_CHARS].rstrip() or None
