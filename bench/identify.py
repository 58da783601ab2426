#!/usr/bin/env python3
"""Benchmark identification: build an index of REFS, identify every query of a truth file, report.

Usage::

    python bench/identify.py /tmp/bench-queries/references.csv /tmp/bench-queries/truth.csv \
        --index /tmp/bench-index --out /tmp/bench-queries/results.jsonl

Measures build speed (x real time, also per core), index size per hour of reference audio, warm identify latency
(one ``Identifier`` for all queries; p50/p95 per call, decoding included), cold ``audioid identify`` CLI time,
peak RSS, top-1 hit rate per condition (a hit: status ``match`` and the matched track's ``source_path`` is the
truth reference), false positives on negatives, and the score distributions of positives vs negatives for
threshold calibration.  Prints markdown (for ``bench/RESULTS.md``), writes one JSON line per query to ``--out``
and the summary to ``--summary`` (default: ``--out`` with ``.summary.json``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, fields, replace
from typing import Any, Iterable, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TruthRow, percentiles, read_truth, same_file, wilson_interval  # noqa: E402

from audioid.fingerprint.audio import load  # noqa: E402
from audioid.index.build import build_index  # noqa: E402
from audioid.index.identify import Identifier, MatchConfig  # noqa: E402
from audioid.index.sources import reference_specs  # noqa: E402
from audioid.index.store import disk_bytes  # noqa: E402

COLD_RUNS = 5
SCORE_BINS = (0, 5, 8, 10, 15, 20, 30, 50, 100)
SCORE_SWEEP = (0, 8, 10, 12, 15, 20, 25, 30, 40, 50)
CONF_SWEEP = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


# ---------------------------------------------------------------------------------------------------------- build

def run_build(refs: str, index_dir: str, jobs: int | None) -> dict[str, Any]:
    """Build the index of ``refs`` at ``index_dir``, timed; returns speed and what the build reported."""
    specs = reference_specs(refs)
    jobs = jobs or os.cpu_count() or 1
    t0 = time.perf_counter()
    report = build_index(specs, index_dir, jobs=jobs)
    wall = time.perf_counter() - t0
    audio_s = sum(t.duration_s for t in report.added)
    return {"references": len(specs), "added": len(report.added), "duplicates": len(report.duplicates),
            "failed": [{"path": p, "error": e} for p, e in report.failed], "generation": report.generation,
            "wall_s": wall, "jobs": jobs, "audio_s": audio_s,
            "x_realtime": audio_s / wall if wall else None,
            "x_realtime_per_core": audio_s / wall / jobs if wall else None}


def index_stats(ident: Identifier, index_dir: str) -> dict[str, Any]:
    """Size on disk and indexed audio of an open index."""
    totals = ident.reader.catalog.totals()
    size = disk_bytes(index_dir)
    hours = totals["duration_s"] / 3600
    return {"tracks": totals["tracks"], "audio_h": hours, "hashes": totals["hashes"], "bytes": size,
            "mb_per_hour": size / 1e6 / hours if hours else None,
            "landmark_config": ident.reader.config.to_dict(), "match_config": asdict(ident.config)}


# ------------------------------------------------------------------------------------------------------ identify

def classify(row: TruthRow, status: str, matched_path: str | None) -> str:
    """Outcome of one query: ``hit``, ``wrong`` (another track), ``miss`` (no match), ``fp``, ``tn`` or ``error``."""
    if status == "error":
        return "error"
    if row.negative:
        return "fp" if status == "match" else "tn"
    if status != "match":
        return "miss"
    return "hit" if same_file(matched_path, row.reference_path) else "wrong"


def offset_error(row: TruthRow, result: dict[str, Any]) -> float | None:
    """|reported - true| reference offset of the analysed audio, when the truth file gives the cut's offset."""
    ref_off, res_off = row.extra.get("ref_offset_s"), result.get("offset_s")
    if not ref_off or res_off is None:
        return None
    speed = float(row.extra.get("speed") or 1.0)
    expected = float(ref_off) + float(result.get("query_start_s") or 0.0) * speed
    return abs(float(res_off) - expected)


#: Settings that make the matcher accept its best candidate whatever its strength (those the config has are used).
LOOSE_SETTINGS = {"max_false_alarms": math.inf, "min_votes": 1, "min_ratio": 1.0}


def loose_identifier(ident: Identifier) -> Identifier | None:
    """An identifier on the same index that reports its best candidate even when it would reject it.

    Used to tell, for a rejected query, whether the candidate was right (the decision was too strict) or
    another track (the fingerprint found nothing); ``None`` when the config has none of :data:`LOOSE_SETTINGS`.
    """
    names = {f.name for f in fields(ident.config)}
    changes = {k: v for k, v in LOOSE_SETTINGS.items() if k in names}
    return Identifier(ident.reader, replace(ident.config, **changes)) if changes else None


def match_confidence(result: dict[str, Any]) -> float:
    """The library's confidence that the query is a match, for every status.

    For ``no_match`` the library reports its confidence in the no-match, so this is ``1 - confidence`` (0 when
    no candidate was found at all).  Matches are above 0.5, rejections below, by the library's design.
    """
    conf = float(result.get("confidence") or 0.0)
    if result.get("status") == "match":
        return conf
    return 1.0 - conf if result.get("score") else 0.0


def identify_all(ident: Identifier, rows: Sequence[TruthRow], outro_seconds: float, out_path: str
                 ) -> list[dict[str, Any]]:
    """Identify every query once with a warm identifier; one record per query, also written as JSON lines.

    Rejected queries are identified a second time, untimed, with :func:`loose_identifier`; the record's
    ``top_candidate`` then says which track the matcher would have named and whether that was right.
    """
    paths = {t.id: t.source_path for t in ident.reader.catalog.tracks()}
    loose = loose_identifier(ident)
    if rows:  # warm-up (first-call costs such as lazy imports and page faults), not timed
        ident.identify_file(rows[0].query_path, outro_seconds=outro_seconds)
    records = []
    with open(out_path, "w", encoding="utf-8") as out:
        for k, row in enumerate(rows, 1):
            t0 = time.perf_counter()
            res = ident.identify_file(row.query_path, outro_seconds=outro_seconds)
            ms = (time.perf_counter() - t0) * 1000
            r = res.to_dict()
            class_ms = None
            if r["status"] != "error":
                # The class vote's share of that time, timed alone on the same decoded audio.
                audio = load(row.query_path, ident.sample_rate, tail_seconds=outro_seconds or None)
                t0 = time.perf_counter()
                ident.classify_samples(audio.samples, ident.sample_rate)
                class_ms = round((time.perf_counter() - t0) * 1000, 2)
            matched = paths.get(r.get("track_id")) if r.get("status") == "match" else None
            rec = {"query_path": row.query_path, "condition": row.condition, "reference_path": row.reference_path,
                   "outcome": classify(row, r["status"], matched), "matched_path": matched, "ms": round(ms, 2),
                   "class_ms": class_ms,
                   "offset_error_s": offset_error(row, r), "sample_rate": row.extra.get("sample_rate"),
                   "match_confidence": match_confidence(r), "result": r, "top_candidate": None}
            if loose is not None and r["status"] == "no_match":
                lr = loose.identify_file(row.query_path, outro_seconds=outro_seconds)
                top = paths.get(lr.track_id) if lr.status == "match" else None
                rec["top_candidate"] = {"path": top, "score": lr.score, "right": same_file(top, row.reference_path)}
            records.append(rec)
            out.write(json.dumps(rec) + "\n")
            if k % 50 == 0 or k == len(rows):
                print(f"\ridentified {k}/{len(rows)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return records


def cold_cli(index_dir: str, query: str, runs: int = COLD_RUNS) -> dict[str, Any]:
    """Median wall time of ``audioid identify --index DIR QUERY`` in fresh processes, or why it is n/a."""
    exe = shutil.which("audioid")
    if not exe:
        return {"available": False, "reason": "no audioid command on PATH"}
    probe = subprocess.run([exe, "identify", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        return {"available": False, "reason": f"`audioid identify --help` failed: "
                                              f"{(probe.stderr or probe.stdout).strip().splitlines()[-1:]}"}
    times, codes, last = [], [], ""
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run([exe, "identify", "--index", index_dir, query], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        codes.append(p.returncode)
        last = (p.stdout or p.stderr).strip()[:300]
    if any(codes):
        return {"available": False, "reason": f"`audioid identify` exited {sorted(set(codes))}: {last}",
                "times_s": times, "exit_codes": codes, "query": query}
    return {"available": True, "median_s": statistics.median(times), "times_s": times, "exit_codes": codes,
            "query": query, "last_output": last}


# ------------------------------------------------------------------------------------------------------- summary

def _median(values: Iterable[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(statistics.median(v)) if v else None


def summarise_condition(recs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts, rates with 95 % Wilson intervals, median score/confidence/latency/offset error of one group."""
    n = len(recs)
    counts = {o: sum(r["outcome"] == o for r in recs) for o in ("hit", "wrong", "miss", "fp", "tn", "error")}
    negative = recs[0]["reference_path"] is None if recs else False
    k = counts["fp"] if negative else counts["hit"]
    lo, hi = wilson_interval(k, n)
    scores = [r["result"].get("score") or 0 for r in recs]
    counts["miss_top_right"] = sum(r["outcome"] == "miss" and bool((r["top_candidate"] or {}).get("right"))
                                   for r in recs)
    return {"n": n, "negative": negative, **counts, "rate": k / n if n else None, "ci95": [lo, hi],
            "median_score": _median(scores),
            "median_score_hits": _median(r["result"]["score"] for r in recs if r["outcome"] == "hit"),
            "median_confidence": _median(r["result"].get("confidence") for r in recs),
            "p50_ms": _median(r["ms"] for r in recs),
            "median_offset_error_s": _median(r["offset_error_s"] for r in recs if r["outcome"] == "hit"),
            "offset_within_1s": (sum(1 for r in recs if r["outcome"] == "hit" and r["offset_error_s"] is not None
                                     and r["offset_error_s"] <= 1.0) / counts["hit"]) if counts["hit"] else None}


def score_report(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Score and match-confidence distributions of positives (hits, misses, wrong tracks) vs negatives.

    The threshold sweeps ask "what if a match also needed at least this score (or match confidence)?": they are
    exact because they only reject more, never accept what the matcher rejected.
    """
    pos = [r for r in records if r["reference_path"] is not None and r["outcome"] != "error"]
    neg = [r for r in records if r["reference_path"] is None and r["outcome"] != "error"]
    hits = [r for r in pos if r["outcome"] == "hit"]
    groups = {"negatives": neg, "positive hits": hits,
              "positive no-match": [r for r in pos if r["outcome"] == "miss"],
              "positive wrong track": [r for r in pos if r["outcome"] == "wrong"]}
    score = lambda r: float(r["result"].get("score") or 0)  # noqa: E731
    mconf = lambda r: float(r["match_confidence"])  # noqa: E731
    max_neg = max((score(r) for r in neg), default=None)
    max_neg_conf = max((mconf(r) for r in neg), default=None)

    def sweep(key, thresholds):
        return [{"threshold": t,
                 "hit_rate": sum(key(r) >= t for r in hits) / len(pos) if pos else None,
                 "wrong_rate": sum(r["outcome"] == "wrong" and key(r) >= t for r in pos) / len(pos) if pos else None,
                 "fp_rate": sum(r["outcome"] == "fp" and key(r) >= t for r in neg) / len(neg) if neg else None}
                for t in thresholds]

    score_ts = sorted({*SCORE_SWEEP, *([int(max_neg) + 1] if max_neg is not None else [])})
    # Thresholds at or below the matcher's own 0.5 change nothing; only a higher "above every negative" one is shown.
    conf_ts = sorted({*CONF_SWEEP, *([round(max_neg_conf + 5e-5, 4)] if max_neg_conf and max_neg_conf >= 0.5 else [])})
    bins = list(SCORE_BINS) + [math.inf]
    return {
        "score": {k: percentiles(score(r) for r in g) for k, g in groups.items()},
        "match_confidence": {k: percentiles(mconf(r) for r in g) for k, g in groups.items()},
        "negative_score_by_condition": {c: percentiles(score(r) for r in neg if r["condition"] == c)
                                        for c in sorted({r["condition"] for r in neg})},
        "max_negative_score": max_neg,
        "max_negative_match_confidence": max_neg_conf,
        "hits_above_max_negative_score": (sum(score(r) > max_neg for r in hits) / len(hits)
                                          if hits and max_neg is not None else None),
        "histogram_bins": [f"{lo:g}-{hi - 1:g}" if hi != math.inf else f">={lo:g}"
                           for lo, hi in zip(bins[:-1], bins[1:])],
        "score_histogram": {k: np.histogram([score(r) for r in g], bins=bins)[0].tolist()
                            for k, g in groups.items()},
        "score_sweep": sweep(score, score_ts),
        "confidence_sweep": sweep(mconf, conf_ts),
    }


# ------------------------------------------------------------------------------------------------------ markdown

def _f(x: Any, fmt: str = "{:.1f}", na: str = "n/a") -> str:
    return na if x is None or (isinstance(x, float) and np.isnan(x)) else fmt.format(x)


def _pct(x: float | None) -> str:
    return _f(None if x is None else 100 * x, "{:.1f} %")


def _dist_table(title: str, dists: dict[str, dict], fmt: str) -> list[str]:
    keys = ("min", "p1", "p5", "p10", "p50", "p90", "p95", "p99", "max")
    out = ["", title, "", "| group | n | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for label, d in dists.items():
        out.append(f"| {label} | {d['n']} | " + " | ".join(_f(d[k], fmt, "-") for k in keys) + " |")
    return out


def _sweep_table(what: str, rows: Sequence[dict], fmt: str) -> list[str]:
    out = ["", f"| match also needs {what} >= | hit rate (all positives) | wrong-track rate | FP rate (negatives) |",
           "|---|---|---|---|"]
    out += [f"| {fmt.format(s['threshold'])} | {_pct(s['hit_rate'])} | {_pct(s['wrong_rate'])} | "
            f"{_pct(s['fp_rate'])} |" for s in rows]
    return out


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown: headline metrics, per-condition results, per-rate results, calibration."""
    b, ix, lat, cold = summary["build"], summary["index"], summary["latency_ms"], summary["cold_cli"]
    rss, sr, lib = summary["peak_rss_mb"], summary["scores"], summary["library"]
    ci = lambda c: f"{_pct(c['rate'])} ({_pct(c['ci95'][0])}-{_pct(c['ci95'][1])})"  # noqa: E731
    lines = [f"Queries: {summary['queries']} ({summary['truth']}); references: {ix['tracks']} tracks, "
             f"{ix['audio_h']:.2f} h; {summary['host']}; audioid {summary['audioid_version']} "
             f"(git {lib['git'] or 'n/a'}, sources {lib['sources_sha256']}).", "", "| metric | value |", "|---|---|"]
    load = summary["load_average_1min"]
    lines[0] += f" Load average {load['start']:.1f} at start, {load['end']:.1f} at end."
    if max(load.values()) > 0.5 * (os.cpu_count() or 1):
        lines[0:0] = ["**Warning: the machine was busy with other work; timings are pessimistic.**", ""]
    changed = {k: v for k, v in summary["index"]["match_config"].items() if getattr(MatchConfig(), k) != v}
    if changed:
        lines[0] += " Match settings changed: " + ", ".join(f"{k}={v}" for k, v in changed.items()) + "."
    if lib.get("changed_during_run"):
        lines[0:0] = ["**Warning: the library's sources changed during this run; rerun for consistent figures.**", ""]
    if b:
        lines += [f"| build wall time | {b['wall_s']:.1f} s ({b['jobs']} jobs; {b['added']} added, "
                  f"{b['duplicates']} duplicates, {len(b['failed'])} failed) |",
                  f"| build speed | {_f(b['x_realtime'], '{:.0f}')}x real time "
                  f"({_f(b['x_realtime_per_core'], '{:.0f}')}x per core) |"]
    cold_text = (f"{cold['median_s'] * 1000:.0f} ms median of {len(cold['times_s'])} runs"
                 if cold.get("available") else f"n/a ({cold.get('reason')})")
    lines += [f"| index size | {ix['bytes'] / 1e6:.1f} MB, {_f(ix['mb_per_hour'], '{:.2f}')} MB per hour of audio |",
              f"| warm identify per query | p50 {_f(lat['p50'], '{:.0f}')} ms, p95 {_f(lat['p95'], '{:.0f}')} ms, "
              f"max {_f(lat['max'], '{:.0f}')} ms |",
              f"| of which the class vote (embedding + kNN) | p50 {_f(lat.get('class_p50'), '{:.1f}')} ms, "
              f"p95 {_f(lat.get('class_p95'), '{:.1f}')} ms |",
              f"| cold CLI identify | {cold_text} |",
              f"| peak RSS | {rss['self']:.0f} MB this process, {rss['children']:.0f} MB largest child |", "",
              "| condition | n | top-1 hit rate (95 % CI) | wrong track | no match (top candidate right) "
              "| median score (all / hits) | median conf. | hits with offset within 1 s | p50 ms |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, c in summary["conditions"].items():
        if not c["negative"]:
            errors = f", {c['error']} errors" if c["error"] else ""
            lines.append(f"| {name} | {c['n']} | {ci(c)} | {c['wrong']} | {c['miss']} ({c['miss_top_right']}){errors} "
                         f"| {_f(c['median_score'], '{:.0f}')} / {_f(c['median_score_hits'], '{:.0f}')} "
                         f"| {_f(c['median_confidence'], '{:.2f}')} | {_pct(c['offset_within_1s'])} "
                         f"| {_f(c['p50_ms'], '{:.0f}')} |")
    lines += ["", "| negatives | n | false-positive rate (95 % CI) | median score | max score | p50 ms |",
              "|---|---|---|---|---|---|"]
    for name, c in summary["conditions"].items():
        if c["negative"]:
            lines.append(f"| {name} | {c['n']} | {ci(c)} | {_f(c['median_score'], '{:.0f}')} | "
                         f"{_f(sr['negative_score_by_condition'][name]['max'], '{:.0f}')} | "
                         f"{_f(c['p50_ms'], '{:.0f}')} |")
    lines += ["", "| query sample rate | positives | hit rate | negatives | FP rate |", "|---|---|---|---|---|"]
    lines += [f"| {rate} | {c['positives']} | {_pct(c['hit_rate'])} | {c['negatives']} | {_pct(c['fp_rate'])} |"
              for rate, c in summary["by_sample_rate"].items()]
    lines += _dist_table("Score (aligned votes):", sr["score"], "{:.0f}")
    lines += _dist_table("Match confidence (confidence of matches, 1 - confidence of rejections):",
                         sr["match_confidence"], "{:.3f}")
    lines += ["", f"Max negative score {_f(sr['max_negative_score'], '{:.0f}')} "
              f"({_pct(sr['hits_above_max_negative_score'])} of hits score above it); max negative match "
              f"confidence {_f(sr['max_negative_match_confidence'], '{:.4f}')}.", "",
              "| score | " + " | ".join(sr["histogram_bins"]) + " |", "|---" * (len(sr["histogram_bins"]) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(c) for c in counts) + " |"
              for name, counts in sr["score_histogram"].items()]
    lines += _sweep_table("score", sr["score_sweep"], "{:g}")
    lines += _sweep_table("match confidence", sr["confidence_sweep"], "{:.4g}")
    return "\n".join(lines)


def misses_text(records: Sequence[dict[str, Any]], limit: int, base: str) -> str:
    """Every positive that was not a hit and every false positive (up to ``limit``), one line each.

    Query paths are shown relative to ``base`` (the truth file's folder).
    """
    bad = [r for r in records if r["outcome"] in ("miss", "wrong", "fp", "error")]
    lines = [f"{len(bad)} misses / false positives" + (f" (first {limit})" if len(bad) > limit else "") + ":"]
    for r in bad[:limit]:
        res = r["result"]
        got = os.path.basename(r["matched_path"]) if r["matched_path"] else res.get("error") or "-"
        want = os.path.basename(r["reference_path"]) if r["reference_path"] else "(none)"
        top = r["top_candidate"]
        top_text = "" if not top else (f" top={'RIGHT' if top['right'] else os.path.basename(top['path'] or '-')}")
        lines.append(f"  {r['outcome']:5s} {r['condition']:13s} sr={r['sample_rate'] or '?':>5} "
                     f"score={res.get('score')} conf={res.get('confidence')} "
                     f"{os.path.relpath(r['query_path'], base)} want={want} got={got}{top_text}")
    return "\n".join(lines)


def library_state() -> dict[str, str | None]:
    """Git description of the checkout ``audioid`` is imported from and a digest of its Python sources.

    Taken at start and end of a run: if the digest differs, the library changed while the benchmark ran (the
    CLI subprocesses then run other code than the in-process build and queries).  Works for the editable
    install (``index/`` is ``audioid.index``) and for a plain copy of the package alike.
    """
    import hashlib
    import importlib

    digest = hashlib.sha256()
    folders = []
    for name in ("audioid", "audioid.fingerprint", "audioid.index", "audioid.cli", "audioid.api"):
        try:
            folders.append(os.path.dirname(os.path.abspath(importlib.import_module(name).__file__)))
        except (ImportError, TypeError):
            continue
    for folder in folders:
        for fname in sorted(os.listdir(folder)):
            if fname.endswith(".py"):
                with open(os.path.join(folder, fname), "rb") as f:
                    digest.update(f"{os.path.basename(folder)}/{fname}".encode() + b"\0" + f.read())
    try:
        out = subprocess.run(["git", "-C", folders[-1] if folders else ".", "describe", "--always", "--dirty"],
                             capture_output=True, text=True)
        git = out.stdout.strip() or None
    except OSError:
        git = None
    return {"git": git, "sources_sha256": digest.hexdigest()[:16],
            "imported_from": folders[0] if folders else None}


def _peak_rss_mb() -> dict[str, float]:
    # ru_maxrss is in KiB on Linux; RUSAGE_CHILDREN is the largest waited-for child (build workers, CLI runs).
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def summarise(records: Sequence[dict[str, Any]], args: argparse.Namespace, build: dict | None, index: dict,
              cold: dict) -> dict[str, Any]:
    """Everything the run measured, as one JSON-ready dict."""
    import audioid

    by_cond: dict[str, list] = defaultdict(list)
    by_rate: dict[str, list] = defaultdict(list)
    for r in records:
        by_cond[r["condition"]].append(r)
        by_rate[str(r["sample_rate"] or "?")].append(r)
    rates = {}
    for rate, recs in sorted(by_rate.items()):
        pos = [r for r in recs if r["reference_path"] is not None]
        neg = [r for r in recs if r["reference_path"] is None]
        rates[rate] = {"positives": len(pos), "hit_rate": sum(r["outcome"] == "hit" for r in pos) / len(pos)
                       if pos else None, "negatives": len(neg),
                       "fp_rate": sum(r["outcome"] == "fp" for r in neg) / len(neg) if neg else None}
    ms = [r["ms"] for r in records]
    cms = [r["class_ms"] for r in records if r.get("class_ms") is not None]
    return {
        "truth": os.path.abspath(args.truth), "refs": os.path.abspath(args.refs), "index_dir": args.index,
        "queries": len(records), "outro_seconds": args.outro_seconds,
        "host": f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores",
        # Timings are only comparable on an otherwise idle machine: the 1-min load average says how idle it was.
        "load_average_1min": {"start": args.load_start, "end": os.getloadavg()[0]},
        "audioid_version": getattr(audioid, "__version__", "?"), "library": args.library_state,
        "build": build, "index": index, "cold_cli": cold,
        "latency_ms": {"p50": float(np.percentile(ms, 50)) if ms else None,
                       "p95": float(np.percentile(ms, 95)) if ms else None, "max": max(ms, default=None),
                       "mean": float(np.mean(ms)) if ms else None,
                       "class_p50": _median(r["class_ms"] for r in records),
                       "class_p95": float(np.percentile(cms, 95)) if cms else None},
        "conditions": {c: summarise_condition(recs) for c, recs in by_cond.items()},
        "by_sample_rate": rates,
        "scores": score_report(records),
        "peak_rss_mb": _peak_rss_mb(),
    }


# ---------------------------------------------------------------------------------------------------------- main

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("refs", help="references: folder or audioid manifest (make_queries.py writes references.csv)")
    ap.add_argument("truth", help="truth.csv from make_queries.py")
    ap.add_argument("--index", help="index folder (default: a new temporary folder, removed afterwards)")
    ap.add_argument("--skip-build", action="store_true", help="use the existing --index as it is")
    ap.add_argument("--jobs", type=int, default=None, help="build processes (default: one per core)")
    ap.add_argument("--outro-seconds", type=float, default=10.0)
    ap.add_argument("--out", help="per-query JSON lines (default: results.jsonl beside the truth file)")
    ap.add_argument("--summary", help="summary JSON (default: --out with .summary.json)")
    ap.add_argument("--markdown", help="also write the markdown tables to this file")
    ap.add_argument("--misses", type=int, default=60, help="list at most this many misses (default 60)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold CLI timing")
    ap.add_argument("--match", action="append", default=[], metavar="NAME=VALUE",
                    help="a MatchConfig setting for this run (repeatable), e.g. line_false_alarms=inf")
    args = ap.parse_args(argv)
    if args.skip_build and not args.index:
        ap.error("--skip-build needs --index")
    try:
        args.match = match_settings(args.match)
    except ValueError as e:
        ap.error(str(e))
    return args


def match_settings(items: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` items as :class:`MatchConfig` changes, each value of its field's type (``inf`` allowed)."""
    defaults, out = MatchConfig(), {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in {f.name for f in fields(MatchConfig)}:
            raise ValueError(f"--match {item!r}: expected NAME=VALUE with NAME a MatchConfig field")
        kind = type(getattr(defaults, name))
        try:
            out[name] = kind(value)
        except ValueError:
            raise ValueError(f"--match {item!r}: {name} takes {kind.__name__} values") from None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.library_state = library_state()
    args.load_start = os.getloadavg()[0]
    rows = read_truth(args.truth)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.truth)), "results.jsonl")
    summary_path = args.summary or os.path.splitext(out)[0] + ".summary.json"
    temp = None
    if not args.index:
        temp = args.index = tempfile.mkdtemp(prefix="audioid-bench-index-")
    try:
        build = None
        if not args.skip_build:
            print(f"building {args.index} from {args.refs} ...", file=sys.stderr)
            build = run_build(args.refs, args.index, args.jobs)
            print(f"built in {build['wall_s']:.1f} s ({build['x_realtime']:.0f}x real time)", file=sys.stderr)
        ident = Identifier.open(args.index, MatchConfig(**args.match))
        try:
            index = index_stats(ident, args.index)
            known = {os.path.realpath(t.source_path) for t in ident.reader.catalog.tracks() if t.source_path}
            absent = {r.reference_path for r in rows if r.reference_path and os.path.realpath(r.reference_path)
                      not in known}
            if absent:
                print(f"warning: {len(absent)} truth reference(s) are not in the index, e.g. {sorted(absent)[0]}",
                      file=sys.stderr)
            records = identify_all(ident, rows, args.outro_seconds, out)
        finally:
            ident.close()
        first_pos = next((r.query_path for r in rows if r.condition == "clean"), rows[0].query_path if rows else None)
        cold = {"available": False, "reason": "skipped"} if args.no_cold or not first_pos \
            else cold_cli(args.index, first_pos)
        end_state = library_state()
        args.library_state["changed_during_run"] = end_state["sources_sha256"] != args.library_state["sources_sha256"]
        if args.library_state["changed_during_run"]:
            print("warning: the library's sources changed during this run", file=sys.stderr)
        summary = summarise(records, args, build, index, cold)
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    with open(summary_path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=float)
    md = markdown(summary)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(md + "\n")
    print(md)
    print()
    print(misses_text(records, args.misses, os.path.dirname(os.path.abspath(args.truth))))
    print(f"\nper-query records: {out}\nsummary: {summary_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
