"""The identify record: one dataclass that the library returns and the CLI and HTTP API serialise."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STATUSES = ("match", "no_match", "error")


@dataclass
class Result:
    """What identify says about one input (or, with ``all_matches``, one stretch of it).

    ``offset_s`` is where in the reference the analysed query audio starts; ``query_start_s``/``query_end_s``
    locate the analysed (or matched) audio within the input file.  ``speed`` is how many times as fast the
    query plays as the reference, ``pitch`` the ratio of its frequencies (equal to ``speed`` for audio played
    faster, 1 for audio time-compressed with its pitch kept).  ``klass`` (``class`` when serialised) is
    music / dialogue / both / unknown by the kNN vote over labelled reference windows, with
    ``class_confidence`` (the winning share of the vote) and ``neighbours``, the most similar reference tracks
    (``track_id``, ``label``, ``similarity``), whether or not the landmarks matched.
    """

    path: str | None
    status: str
    label: str | None = None
    title: str | None = None
    artist: str | None = None
    track_id: int | None = None
    score: int = 0
    confidence: float = 0.0
    offset_s: float | None = None
    speed: float | None = None
    pitch: float | None = None
    query_start_s: float | None = None
    query_end_s: float | None = None
    klass: str | None = None
    class_confidence: float | None = None
    neighbours: list[dict] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict, whose deep copy costs more than the rest of the record
        # (every HTTP identify answers with one); the neighbours are the only nested values.
        d = {key: getattr(self, name) for key, name in _KEYS}
        if d["neighbours"] is not None:
            d["neighbours"] = [dict(n) for n in d["neighbours"]]
        return d


_KEYS = tuple(("class" if k == "klass" else k, k) for k in Result.__dataclass_fields__)
FIELDS = tuple(key for key, _ in _KEYS)
