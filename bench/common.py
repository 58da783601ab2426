"""Helpers shared by the bench scripts: the truth file, corpus manifests and small statistics."""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

#: Columns every truth file starts with; further columns are optional details of how a query was made.
TRUTH_FIELDS = ("query_path", "reference_path", "condition")
#: Conditions whose queries must not match anything.
NEGATIVE_CONDITIONS = ("unknown_music", "speech_only", "unknown_synth", "unknown_speech_m6db",
                       "unknown_speech_m12db")


@dataclass(frozen=True)
class TruthRow:
    """One query of a benchmark set.

    Attributes
    ----------
    query_path : str
        Absolute path of the query file.
    reference_path : str or None
        Absolute path of the reference that plays in the query; ``None`` for negatives.
    condition : str
        Name of the degradation (``clean``, ``pink_0db``, ``unknown_music``, ...).
    extra : dict
        Any further columns of the truth file, as strings.
    """

    query_path: str
    reference_path: str | None
    condition: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def negative(self) -> bool:
        return self.reference_path is None


def _resolve(base: str, path: str) -> str:
    return os.path.normpath(os.path.join(base, path))


def read_truth(path: str) -> list[TruthRow]:
    """Read a truth CSV; relative paths in it are relative to the CSV's folder.

    Raises
    ------
    ValueError
        A required column is missing.
    """
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(TRUTH_FIELDS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: truth file lacks column(s) {', '.join(sorted(missing))}")
        rows = []
        for r in reader:
            ref = (r["reference_path"] or "").strip()
            rows.append(TruthRow(query_path=_resolve(base, r["query_path"]),
                                 reference_path=_resolve(base, ref) if ref else None,
                                 condition=r["condition"].strip(),
                                 extra={k: v for k, v in r.items() if k not in TRUTH_FIELDS and k is not None}))
    return rows


def write_truth(path: str, rows: Iterable[dict[str, object]], extra_fields: Sequence[str] = ()) -> None:
    """Write truth rows (dicts keyed by :data:`TRUTH_FIELDS` and ``extra_fields``).

    Query paths under the CSV's folder are written relative to it, so the set can be moved as one folder.
    """
    base = os.path.dirname(os.path.abspath(path))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[*TRUTH_FIELDS, *extra_fields], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            q = os.path.abspath(str(r["query_path"]))
            rel = os.path.relpath(q, base)
            w.writerow(dict(r, query_path=q if rel.startswith("..") else rel))


def same_file(a: str | None, b: str | None) -> bool:
    """Whether two paths name the same file (after resolving symlinks); ``None`` never matches."""
    if not a or not b:
        return False
    return os.path.realpath(a) == os.path.realpath(b)


def is_corpus_manifest(path: str) -> bool:
    """Whether ``path`` is a corpus manifest (CSV with ``path,kind,source_package`` columns)."""
    if not (os.path.isfile(path) and path.lower().endswith(".csv")):
        return False
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    return {"path", "kind", "source_package"} <= set(header)


def read_corpus_manifest(path: str, kind: str | None = None) -> list[dict[str, str]]:
    """Rows of a corpus manifest (optionally only one ``kind``), with ``path`` made absolute."""
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [dict(r, path=_resolve(base, r["path"])) for r in csv.DictReader(f)]
    return [r for r in rows if kind is None or r.get("kind") == kind]


def percentiles(values: Iterable[float], ps: Sequence[float] = (1, 5, 10, 50, 90, 95, 99)) -> dict[str, float]:
    """``n``, ``min``, ``max`` and the given percentiles of ``values`` (empty dict values are ``None``)."""
    v = np.asarray(list(values), dtype=float)
    out: dict[str, float] = {"n": int(len(v))}
    keys = ["min", *(f"p{p:g}" for p in ps), "max"]
    if len(v) == 0:
        out.update(dict.fromkeys(keys))
        return out
    out["min"] = float(v.min())
    out.update({f"p{p:g}": float(np.percentile(v, p)) for p in ps})
    out["max"] = float(v.max())
    return out


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k/n`` (95 % by default); ``(nan, nan)`` when ``n == 0``."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
