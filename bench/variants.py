#!/usr/bin/env python3
"""A larger reference set from a smaller one: every reference also resampled to other speeds (pitch and tempo
together), as filler for measuring identification on a bigger index than the corpus can give.

The shifts default to -7, -5, -3, +3, +5, +7 semitones (speed x0.67 to x1.50), all outside the +-3 % speed
search, so a query of an original is not a match for a variant, while the variants add music of the corpus'
own styles, keys and textures.  Variants are written as 16 kHz mono FLAC (what the index analyses); the output
manifest lists the originals first, then the variants (labelled ``variant/<label>/<shift>``).

Usage::

    python bench/variants.py /tmp/bench-queries/references.csv /tmp/big          # writes /tmp/big/refs.csv
    audioid index build /tmp/big/refs.csv --index /tmp/big/idx
    python bench/identify.py /tmp/bench-queries/references.csv /tmp/bench-queries/truth.csv \\
        --index /tmp/big/idx --skip-build --no-cold
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Sequence

import soundfile as sf

from audioid.fingerprint.audio import load, resample

RATE = 16000


def write_variants(job: tuple[dict[str, str], str, tuple[int, ...]]) -> list[dict[str, str]]:
    """Write the variants of one reference row; returns their manifest rows."""
    row, out_dir, shifts = job
    y = load(row["path"], RATE).samples
    rows = []
    for k in shifts:
        speed = 2.0 ** (k / 12.0)
        z = resample(y, RATE * speed, RATE)          # read as if recorded at RATE x speed: played speed x faster
        path = os.path.join(out_dir, "variants", f"{row['label'].replace('/', '__')}__{k:+d}.flac")
        if not os.path.exists(path):
            sf.write(path, z, RATE)
        rows.append({**row, "path": path, "label": f"variant/{row['label']}/{k:+d}",
                     "duration_s": f"{len(z) / RATE:.3f}"})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("references", help="references.csv from make_queries.py (path,label,...)")
    ap.add_argument("out_dir", help="folder for variants/ and refs.csv")
    ap.add_argument("--shifts", default="-7,-5,-3,3,5,7", help="semitone shifts, comma-separated")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    shifts = tuple(int(s) for s in args.shifts.split(",") if s)
    if any(abs(2.0 ** (k / 12.0) - 1.0) <= 0.03 for k in shifts):
        ap.error("a shift within the +-3 % speed search would make variants matches of the originals' queries")
    with open(args.references, newline="", encoding="utf-8") as f:
        refs = list(csv.DictReader(f))
    if not refs:
        sys.exit(f"error: {args.references} lists no references")
    os.makedirs(os.path.join(args.out_dir, "variants"), exist_ok=True)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        variants = [r for rows in pool.map(write_variants, [(r, args.out_dir, shifts) for r in refs]) for r in rows]
    out = os.path.join(args.out_dir, "refs.csv")
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, list(refs[0]))
        w.writeheader()
        w.writerows(refs + variants)
    hours = sum(float(r.get("duration_s") or 0) for r in refs + variants) / 3600
    print(f"{len(refs)} references + {len(variants)} variants ({hours:.1f} h) in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
