"""The identify record: one dataclass that the library returns and the CLI and HTTP API serialise."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

STATUSES = ("match", "no_match", "error")


@dataclass
class Result:
    """What identify says about one input (or, with ``all_matches``, one stretch of it).

    ``offset_s`` is where in the reference the analysed query audio starts; ``query_start_s``/``query_end_s``
    locate the analysed (or matched) audio within the input file.
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
    query_start_s: float | None = None
    query_end_s: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELDS = tuple(Result.__dataclass_fields__)
