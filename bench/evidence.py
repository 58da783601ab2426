#!/usr/bin/env python3
"""The evidence behind each no-match decision: the top candidate's false-alarm expectation (votes), its peak
check's p-value (``index.verify``) and their Fisher combination, for the queries of a benchmark set.

Shows how far the rejected true matches and the closest negatives are from the decision (``bench/RESULTS.md``,
"Votes and peaks combined").  A calibrated null gives a smallest combined p near 1 / n over n negatives.

Usage::

    python bench/evidence.py /tmp/bench-queries/truth.csv --index /tmp/bench-index \\
        --conditions pink_0db,speech_m6db,unknown_music,speech_only
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import read_truth, same_file  # noqa: E402

from audioid.index.identify import Identifier  # noqa: E402
from audioid.index.verify import combined_p, verify  # noqa: E402


def evidence(ident: Identifier, path: str, outro_seconds: float) -> dict | None:
    """Top candidate of one query as the identifier sees it before deciding, or None when there is none."""
    audio = ident.load_outro(path, outro_seconds)
    spectrum, peaks, cand = ident.candidate(audio.samples, audio.sample_rate)
    if cand is None:
        return None
    p = verify(peaks, spectrum, cand, ident.reader.segments, ident.reader.config, ident.config.max_postings)
    track = ident.reader.catalog.get(cand.track_id)
    return {"track_path": track.source_path if track else None, "votes": int(cand.votes),
            "false_alarms": float(cand.false_alarms), "p": p,
            "combined": None if p is None else combined_p(cand.false_alarms, p)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("truth", help="truth.csv from make_queries.py")
    ap.add_argument("--index", required=True, help="index of the set's references")
    ap.add_argument("--conditions", help="comma-separated conditions (default: all)")
    ap.add_argument("--outro-seconds", type=float, default=10.0)
    ap.add_argument("--out", help="per-query JSON lines")
    args = ap.parse_args(argv)
    wanted = set(args.conditions.split(",")) if args.conditions else None
    rows = [r for r in read_truth(args.truth) if wanted is None or r.condition in wanted]
    ident = Identifier.open(args.index)
    mc = ident.config
    records = []
    for row in rows:
        ev = evidence(ident, row.query_path, args.outro_seconds)
        rec = {"query_path": row.query_path, "condition": row.condition, "negative": row.negative,
               "right": bool(ev and not row.negative and same_file(ev["track_path"], row.reference_path)),
               **(ev or {})}
        records.append(rec)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)

    def show(r: dict) -> str:
        if "false_alarms" not in r:
            return f"  {r['condition']:<14} {os.path.basename(r['query_path'])}: no candidate"
        p = "n/a" if r["p"] is None else f"{r['p']:.2g}"
        comb = "n/a" if r["combined"] is None else f"{r['combined']:.2g}"
        top = "right track" if r["right"] else ("negative" if r["negative"] else "wrong track")
        return (f"  {r['condition']:<14} {os.path.basename(r['query_path'])}: votes {r['votes']:>3}, false alarms "
                f"{r['false_alarms']:.2g}, peak check p {p}, combined {comb} ({top})")

    print(f"decision: match when false alarms < {mc.max_false_alarms:g}, or combined < {mc.rescue_p:.3g} "
          f"(= peak check p {mc.verify_p:g} alone)")
    pos = [r for r in records if not r["negative"]]
    weak = [r for r in pos if r.get("false_alarms", float("inf")) >= mc.max_false_alarms]
    print(f"\npositives: {len(pos)}; rejected by the votes alone: {len(weak)}")
    for r in sorted(weak, key=lambda r: r.get("combined") if r.get("combined") is not None else 2.0):
        print(show(r))
    neg = [r for r in records if r["negative"]]
    ranked = sorted((r for r in neg if r.get("combined") is not None), key=lambda r: r["combined"])
    if neg:
        print(f"\nnegatives: {len(neg)}; smallest combined p {ranked[0]['combined']:.2g} "
              f"(about {1 / len(neg):.2g} expected for the smallest of {len(neg)} under a calibrated null)"
              if ranked else f"\nnegatives: {len(neg)}; none has a candidate with a peak check")
        for r in ranked[:5]:
            print(show(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
