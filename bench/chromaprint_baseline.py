"""Side by side with Chromaprint (AcoustID's fingerprinter) on the same queries.

Chromaprint fingerprints a whole file as a stream of 32-bit sub-fingerprints (about 8 a second) and AcoustID
looks tracks up by their opening two minutes, so it has no excerpt search of its own.  This gives it the best
one it could have: every query's raw fingerprint (``fpcalc -raw``) is slid over every reference's, and the
reference and offset with the fewest differing bits win (brute force, exact).  A query is a match when that
bit error rate is under a threshold; the report gives the hit rate per condition at the threshold that keeps
every negative of the set out (the most favourable one, chosen after the fact) and at a fixed 0.35 (about a
third of the bits differing), next to ``audioid``'s own answers from a ``bench/identify.py`` run on the same truth file.

    python bench/chromaprint_baseline.py TRUTH REFERENCES --ours RESULTS.jsonl [--cache DIR] [--jobs N]

Needs ``fpcalc`` (Debian ``libchromaprint-tools``).  Reference fingerprints are cached by path, size and
modification time (``--cache``, default ``~/.cache/ml-audio-id/chromaprint``).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import read_truth, same_file, wilson_interval  # noqa: E402

#: A fixed cut-off for "the same recording": bit error rate of the aligned sub-fingerprints (0.5 is chance).
FIXED_BER = 0.35


def fingerprint(path: str) -> np.ndarray:
    """Raw Chromaprint sub-fingerprints of a whole file (uint32)."""
    out = subprocess.run(["fpcalc", "-raw", "-json", "-length", "0", path], capture_output=True, text=True,
                         timeout=600)
    try:
        return np.asarray(json.loads(out.stdout)["fingerprint"], dtype=np.uint32)
    except (ValueError, KeyError) as e:
        raise RuntimeError(f"fpcalc failed on {path}: {out.stderr.strip()[-200:]}") from e


def cached_fingerprint(path: str, cache: str) -> np.ndarray:
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    file = os.path.join(cache, key + ".npy")
    if os.path.exists(file):
        return np.load(file)
    fp = fingerprint(path)
    np.save(file + ".tmp.npy", fp)
    os.replace(file + ".tmp.npy", file)
    return fp


def best_alignment(query: np.ndarray, refs: Sequence[np.ndarray]) -> tuple[int, float]:
    """(reference index, bit error rate) of the query's best full-overlap alignment over all references."""
    n = len(query)
    best = (-1, 1.0)
    if n == 0:
        return best
    for i, ref in enumerate(refs):
        if len(ref) < n:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(ref, n)
        errors = np.bitwise_count(windows ^ query).sum(axis=1, dtype=np.int64)
        ber = float(errors.min()) / (32 * n)
        if ber < best[1]:
            best = (i, ber)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("truth", help="truth.csv from make_queries.py")
    ap.add_argument("references", help="references.csv from make_queries.py (the indexed tracks)")
    ap.add_argument("--ours", required=True, help="per-query JSON lines from bench/identify.py on the same truth")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/ml-audio-id/chromaprint"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threshold", type=float, help="the zero-false-positive BER threshold, when the set has no "
                    "negatives of its own (e.g. measured on another set with the same references)")
    args = ap.parse_args(argv)
    if shutil.which("fpcalc") is None:
        ap.error("fpcalc not found: apt-get install libchromaprint-tools")
    os.makedirs(args.cache, exist_ok=True)

    with open(args.references, newline="", encoding="utf-8") as f:
        ref_paths = [row["path"] for row in csv.DictReader(f)]
    rows = read_truth(args.truth)
    with open(args.ours, encoding="utf-8") as f:
        ours = {json.loads(line)["query_path"]: json.loads(line) for line in f if line.strip()}
    missing = [r.query_path for r in rows if r.query_path not in ours]
    if missing:
        ap.error(f"{len(missing)} queries have no result in {args.ours} (first: {missing[0]})")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:        # fpcalc runs as a subprocess: threads suffice
        refs = list(pool.map(lambda p: cached_fingerprint(p, args.cache), ref_paths))
    print(f"{len(refs)} reference fingerprints in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    t0 = time.perf_counter()

    def judge(row):
        t = time.perf_counter()
        i, ber = best_alignment(fingerprint(row.query_path), refs)
        right = i >= 0 and not row.negative and same_file(ref_paths[i], row.reference_path)
        return row, right, ber, time.perf_counter() - t

    judged = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for k, j in enumerate(pool.map(judge, rows), 1):
            judged.append(j)
            if k % 100 == 0:
                print(f"{k}/{len(rows)}", file=sys.stderr)
    print(f"{len(rows)} queries in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    negatives = [ber for row, _, ber, _ in judged if row.negative]
    # A match must beat every negative.
    oracle = args.threshold if args.threshold is not None else min(negatives) if negatives else None
    where = "given" if args.threshold is not None else "on this set"
    print(f"Chromaprint {subprocess.run(['fpcalc', '-version'], capture_output=True, text=True).stdout.strip()}; "
          f"{len(refs)} references; zero-false-positive threshold ({where}): "
          f"{'none (no negatives)' if oracle is None else f'BER < {oracle:.3f}'}\n")
    print("| condition | n | audioid hits | Chromaprint top-1 right | Chromaprint hits at BER < zero-FP threshold "
          f"| Chromaprint hits at BER < {FIXED_BER} | Chromaprint median BER of its pick |")
    print("|---|---|---|---|---|---|---|")
    conditions = list(dict.fromkeys(row.condition for row, *_ in judged))
    for cond in conditions:
        group = [(row, right, ber) for row, right, ber, _ in judged if row.condition == cond]
        n = len(group)
        if group[0][0].negative:
            continue
        ours_hits = sum(ours[row.query_path]["outcome"] == "hit" for row, _, _ in group)
        top1 = sum(right for _, right, _ in group)
        at_oracle = None if oracle is None else sum(right and ber < oracle for _, right, ber in group)
        at_fixed = sum(right and ber < FIXED_BER for _, right, ber in group)

        def pct(k: int) -> str:
            lo, hi = wilson_interval(k, n)
            return f"{100 * k / n:.1f} % ({100 * lo:.0f}-{100 * hi:.0f})"

        print(f"| {cond} | {n} | {pct(ours_hits)} | {pct(top1)} | {'n/a' if at_oracle is None else pct(at_oracle)} "
              f"| {pct(at_fixed)} | "
              f"{np.median([ber for _, _, ber in group]):.3f} |")
    if negatives:
        print("\n| negatives | n | audioid false positives | Chromaprint false positives at BER < "
              f"{FIXED_BER} | Chromaprint lowest BER |")
        print("|---|---|---|---|---|")
    for cond in conditions:
        group = [(row, ber) for row, _, ber, _ in judged if row.condition == cond and row.negative]
        if group:
            fp = sum(ours[row.query_path]["outcome"] == "fp" for row, _ in group)
            print(f"| {cond} | {len(group)} | {fp} | {sum(ber < FIXED_BER for _, ber in group)} | "
                  f"{min(ber for _, ber in group):.3f} |")
    secs = sorted(s for *_, s in judged)
    print(f"\nChromaprint per query (fpcalc + brute-force alignment over all references, {args.jobs} threads): "
          f"median {1000 * secs[len(secs) // 2]:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
