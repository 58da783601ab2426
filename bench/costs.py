"""What the embeddings cost, as ratios measured in one process (robust on a shared machine).

* Build: for every ``--every``-th reference, the landmark-only analysis (decode at 8 kHz, hashes) and the full
  analysis the index runs (decode at 16 kHz, resample, hashes, window embeddings), interleaved file by file.
* Identify: for every ``--every``-th query (decoded once, last 10 s), the landmark search and the class vote
  (embedding + kNN + catalog), interleaved query by query on a warm index.

Usage::

    OMP_NUM_THREADS=1 python bench/costs.py /tmp/bench-queries/references.csv /tmp/bench-queries/truth.csv \\
        --index /tmp/bench-index2
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import read_truth  # noqa: E402

from audioid.fingerprint.audio import load, resample  # noqa: E402
from audioid.fingerprint.landmarks import reference_hashes  # noqa: E402
from audioid.index.identify import Identifier  # noqa: E402
from audioid.index.sources import reference_specs  # noqa: E402


def build_costs(refs: str, ident: Identifier, every: int) -> str:
    cfg, setup = ident.reader.config, ident.reader.embedding
    old = new = emb = dur = 0.0
    specs = reference_specs(refs)[::every]
    for spec in specs:
        t0 = time.perf_counter()
        reference_hashes(load(spec.path, cfg.sample_rate).samples, cfg)
        t1 = time.perf_counter()
        audio = load(spec.path, setup.sample_rate)
        reference_hashes(resample(audio.samples, setup.sample_rate, cfg.sample_rate), cfg)
        t2 = time.perf_counter()
        setup.reference_vectors(audio.samples)
        t3 = time.perf_counter()
        old, new, emb, dur = old + t1 - t0, new + t3 - t1, emb + t3 - t2, dur + audio.duration_s
    return (f"build, {len(specs)} references ({dur / 60:.0f} min): landmarks only {dur / old:.0f}x real time, "
            f"landmarks + embeddings {dur / new:.0f}x (ratio {old / new:.2f}); embeddings alone {dur / emb:.0f}x")


def identify_costs(truth: str, ident: Identifier, every: int) -> str:
    sr = ident.sample_rate
    audio = [load(r.query_path, sr, tail_seconds=10).samples for r in read_truth(truth)[::every]]
    for y in audio[:5]:  # warm-up
        ident.identify_samples(y, sr)
    marks, votes = [], []
    for y in audio:
        t0 = time.perf_counter()
        ident.identify_samples(y, sr)
        t1 = time.perf_counter()
        ident.classify_samples(y, sr)
        t2 = time.perf_counter()
        marks.append((t1 - t0) - (t2 - t1))
        votes.append(t2 - t1)

    def pct(a: list[float]) -> str:
        return f"p50 {np.median(a) * 1000:.1f} ms, p95 {np.percentile(a, 95) * 1000:.1f} ms"

    return (f"identify, {len(audio)} decoded queries: landmark search {pct(marks)}; class vote {pct(votes)} "
            f"(load average {os.getloadavg()[0]:.1f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("refs", help="references (folder or manifest) the index was built from")
    ap.add_argument("truth", help="truth.csv from make_queries.py")
    ap.add_argument("--index", required=True)
    ap.add_argument("--every", type=int, default=5, help="use every N-th reference and query (default 5)")
    args = ap.parse_args(argv)
    ident = Identifier.open(args.index)
    try:
        print(identify_costs(args.truth, ident, args.every))
        print(build_costs(args.refs, ident, args.every))
    finally:
        ident.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
