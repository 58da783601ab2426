"""kNN speed and recall of the embedding store (issue 3 targets).

    python bench/vectors.py [--n 1000000] [--dim 32] [--queries 200] [--threads 1]
        [--factory IVF1024,Flat --factory HNSW32]

Builds an exact index (``Flat``) and approximate ones (``--factory``, repeatable) with the library's
:func:`build_faiss` over ``--n`` unit vectors drawn around clustered centres (real embeddings are clustered,
uniform random ones are the hardest case for IVF), then reports the time per single query (one query per call,
as identify does) and recall@10 of each approximate index against the exact one: IVF for several ``nprobe``,
HNSW for several ``efSearch``, each also at the setting :meth:`VectorSegment.open` applies by default.  Prints
a markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from audioid.index.vectors import apply_search_defaults, build_faiss, search_knob  # noqa: E402


def clustered(n: int, dim: int, seed: int, centres: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    v = c[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def per_query_ms(index, queries: np.ndarray, k: int) -> tuple[float, float, np.ndarray]:
    times, ids = [], []
    for q in queries:
        t = time.perf_counter()
        _, i = index.search(q[None, :], k)
        times.append(time.perf_counter() - t)
        ids.append(i[0])
    return float(np.median(times) * 1e3), float(np.percentile(times, 95) * 1e3), np.array(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--factory", action="append", help="approximate index type(s); default IVF1024,Flat and HNSW32")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="FAISS threads (1 on a shared machine: "
                    "a query split over busy cores waits for the slowest)")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)

    data = clustered(args.n, args.dim, 0)
    queries = clustered(args.queries, args.dim, 1)
    ids = np.arange(args.n, dtype=np.int64)
    rows = []
    t = time.perf_counter()
    exact = build_faiss(data, ids, "Flat")
    build_exact = time.perf_counter() - t
    p50, p95, truth = per_query_ms(exact, queries, args.k)
    rows.append(("Flat (exact)", "-", f"{build_exact:.1f}", f"{p50:.2f}", f"{p95:.2f}", "1.000"))
    for factory in args.factory or ["IVF1024,Flat", "HNSW32"]:
        t = time.perf_counter()
        approx = build_faiss(data, ids, factory)
        build_s = time.perf_counter() - t
        default = apply_search_defaults(approx)
        params, knob = search_knob(approx)
        values = [16, 32, 64, 128, 256] if knob == "nprobe" else [64, 128, 256, 512, 1024, 2048]
        for v in sorted(set(values) | {getattr(params, knob)}):
            setattr(params, knob, v)
            p50, p95, got = per_query_ms(approx, queries, args.k)
            recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(got, truth)])
            rows.append((factory, f"{knob} {v}{' (default)' if v == default else ''}", f"{build_s:.1f}",
                         f"{p50:.2f}", f"{p95:.2f}", f"{recall:.3f}"))
    print(f"{args.n:,} vectors x {args.dim} dims, {args.queries} single queries, k={args.k}, "
          f"faiss {faiss.__version__}, {args.threads} of {os.cpu_count()} cores\n")
    print("| index | search setting | build s | p50 ms/query | p95 ms/query | recall@10 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
