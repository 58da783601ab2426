"""kNN speed and recall of the embedding store (issue 3 targets).

    python bench/vectors.py [--n 1000000] [--dim 96] [--queries 200] [--factory IVF4096,Flat]

Builds an exact index (``Flat``) and an approximate one (``--factory``) over ``--n`` unit vectors drawn around
clustered centres (real embeddings are clustered, uniform random ones are the hardest case for IVF), then
reports the time per single query (one query per call, as identify does) and recall@10 of the approximate
index against the exact one, for several ``nprobe`` settings.  Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from audioid.index.vectors import build_faiss  # noqa: E402


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
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--factory", default="IVF4096,Flat")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    import faiss

    data = clustered(args.n, args.dim, 0)
    queries = clustered(args.queries, args.dim, 1)
    ids = np.arange(args.n, dtype=np.int64)
    rows = []
    t = time.perf_counter()
    exact = build_faiss(data, ids, "Flat")
    build_exact = time.perf_counter() - t
    p50, p95, truth = per_query_ms(exact, queries, args.k)
    rows.append(("Flat (exact)", "-", f"{build_exact:.1f}", f"{p50:.2f}", f"{p95:.2f}", "1.000"))
    t = time.perf_counter()
    approx = build_faiss(data, ids, args.factory)
    build_approx = time.perf_counter() - t
    ivf = None
    try:
        ivf = faiss.extract_index_ivf(approx)
    except RuntimeError:
        pass
    for nprobe in ([8, 16, 32, 64, 128] if ivf is not None else [None]):
        if ivf is not None:
            ivf.nprobe = nprobe
        p50, p95, got = per_query_ms(approx, queries, args.k)
        recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(got, truth)])
        rows.append((args.factory, str(nprobe or "-"), f"{build_approx:.1f}", f"{p50:.2f}", f"{p95:.2f}",
                     f"{recall:.3f}"))
    print(f"{args.n:,} vectors x {args.dim} dims, {args.queries} single queries, k={args.k}, "
          f"faiss {faiss.__version__}, {os.cpu_count()} cores\n")
    print("| index | nprobe | build s | p50 ms/query | p95 ms/query | recall@10 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
