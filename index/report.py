"""Drift report: is the music / dialogue / both model still right about what users add?

Every ``add`` predicts each new track's class from what the index knew before it, and logs the prediction beside
the label (prequential evaluation: each label is a test case before it becomes training data).  The report sets
those predictions against the tracks' current class (a later relabel counts as the truth) and shows, overall
and over time, accuracy, abstentions and how similar new tracks are to anything already labelled: falling
accuracy or falling neighbour similarity means new material no longer looks like the labelled set.
"""
from __future__ import annotations

import os
from collections import Counter

import numpy as np

from .build import label_state
from .catalog import CLASSES
from .store import IndexReader


def _summary(rows: list[dict]) -> dict:
    n = len(rows)
    correct = sum(r["predicted"] == r["truth"] for r in rows)
    abstained = sum(r["predicted"] == "unknown" for r in rows)
    decided = n - abstained
    sims = [r["nn_similarity"] for r in rows if r["nn_similarity"] is not None]
    return {"n": n,
            "accuracy": round(correct / n, 4) if n else None,
            "accuracy_decided": round(correct / decided, 4) if decided else None,
            "abstention": round(abstained / n, 4) if n else None,
            "nn_similarity_median": round(float(np.median(sims)), 4) if sims else None}


def drift_report(path: str | os.PathLike, *, batch: int = 50) -> dict:
    """Class balance, prequential accuracy per class and over time, abstention and neighbour similarity.

    Parameters
    ----------
    path : path
        Index directory.
    batch : int
        Predictions per row of the ``trend`` table, in the order they were made.

    Returns
    -------
    dict
        ``tracks``, ``class_balance`` (live tracks per class, ``unlabelled`` included), ``predicted`` (overall
        summary), ``per_class`` (summary per true class), ``confusion`` (``{truth: {predicted: n}}``) and
        ``trend`` (one summary per ``batch`` predictions, oldest first).  A summary holds ``n``, ``accuracy``
        (abstentions count as errors), ``accuracy_decided``, ``abstention`` and ``nn_similarity_median``.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    reader = IndexReader(os.fspath(path))
    try:
        tracks = reader.catalog.tracks()
        log = reader.catalog.log_entries()
    finally:
        reader.close()
    truth = {h: s.get("class") for h, s in label_state(log).items() if not s["removed"]}
    rows = [{"truth": truth[e["content_hash"]], "predicted": e["predicted"], "nn_similarity": e["nn_similarity"],
             "at": e["at"]}
            for e in log
            if e["action"] == "add" and e.get("predicted") and truth.get(e["content_hash"]) in CLASSES]
    confusion = {c: dict(Counter(r["predicted"] for r in rows if r["truth"] == c)) for c in CLASSES}
    trend = []
    for i in range(0, len(rows), batch):
        part = rows[i:i + batch]
        trend.append({"from": part[0]["at"], "to": part[-1]["at"], **_summary(part)})
    return {"tracks": len(tracks),
            "class_balance": dict(Counter(t.klass or "unlabelled" for t in tracks)),
            "predicted": _summary(rows),
            "per_class": {c: _summary([r for r in rows if r["truth"] == c]) for c in CLASSES},
            "confusion": confusion,
            "trend": trend}
