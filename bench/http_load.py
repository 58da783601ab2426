#!/usr/bin/env python3
"""Load test of ``POST /identify``: latency and throughput at 1, 4 and 16 concurrent clients, server memory over
many requests, and the library's own warm identify rate on the same files.

Usage::

    python bench/http_load.py --work /tmp/audioid-http-bench [--tracks 1000] [--requests 10000] [--threads N] \
        [--workers N]

The index holds ``--tracks`` synthetic songs (:mod:`audioid.synth`, 30 s each; built once into ``WORK/index``
and reused).  Queries are 10 s MP3 outros (128 kbps) of ``--queries`` indexed songs.  The server is the real
``audioid serve`` in its own process, by default with the server's own number of workers (its RSS, with several
workers the sum over the parent and its workers, is its own); clients are threads of this process, each with a
keep-alive connection (``http.client``), sending multipart uploads.  The library rate is measured in a process set
up as the server's are (:func:`audioid.index.parallel.worker_setup`: BLAS and OpenMP on one thread, a steady
heap).  Prints markdown for ``bench/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import http.client
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import timeit
import urllib.parse
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np
import soundfile as sf
from urllib3 import encode_multipart_formdata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import percentiles  # noqa: E402

from audioid import synth  # noqa: E402
from audioid.index.build import build_index  # noqa: E402
from audioid.index.identify import Identifier  # noqa: E402
from audioid.index.parallel import usable_cores, worker_setup  # noqa: E402
from audioid.index.sources import reference_specs  # noqa: E402
from audioid.index.store import IndexReader, IndexStoreError  # noqa: E402

SR = 16000
TRACK_S = 30.0
QUERY_S = 10.0


def _write_track(args: tuple[str, int]) -> None:
    folder, seed = args
    sf.write(os.path.join(folder, f"song{seed:05d}.flac"), synth.music_track(seed, TRACK_S, SR), SR)


def ensure_index(work: str, tracks: int, jobs: int) -> str:
    """``WORK/index`` with ``tracks`` synthetic songs, built unless an index of that size is there."""
    index = os.path.join(work, "index")
    try:
        reader = IndexReader(index)
        n = reader.catalog.totals()["tracks"]
        reader.close()
        if n == tracks:
            return index
    except IndexStoreError:
        pass
    refs = os.path.join(work, "refs")
    os.makedirs(refs, exist_ok=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        list(pool.map(_write_track, [(refs, s) for s in range(1, tracks + 1)], chunksize=16))
    print(f"synthesized {tracks} songs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    t0 = time.perf_counter()
    report = build_index(reference_specs(refs), index, jobs=jobs)
    print(f"indexed {len(report.added)} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return index


def make_queries(work: str, count: int, tracks: int) -> list[str]:
    """10 s MP3 outros of ``count`` indexed songs (seeds spread over the index)."""
    folder = os.path.join(work, "queries")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for seed in np.linspace(1, tracks, count).astype(int):
        path = os.path.join(folder, f"outro{seed:05d}.mp3")
        if not os.path.exists(path):
            synth.write_mp3(path, synth.music_track(int(seed), TRACK_S, SR)[-int(QUERY_S * SR):], SR)
        paths.append(path)
    return paths


def library_rate(index: str, files: list[str], calls: int, threads: int) -> float:
    """Warm identifications per second of one shared :class:`Identifier` called from ``threads`` threads."""
    ident = Identifier.open(index)
    try:
        for f in files:                                   # warm: page cache, FAISS, code paths
            ident.identify_file(f)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: ident.identify_file(files[i % len(files)]), range(calls)))
        return calls / (time.perf_counter() - t0)
    finally:
        ident.close()


def start_server(index: str, threads: int | None, log_path: str, workers: int | None = None
                 ) -> tuple[subprocess.Popen, str]:
    """``audioid serve`` on a free port (``threads`` and ``workers`` None: the server's defaults), its stderr after
    the first line copied to ``log_path`` (drained, so that a full pipe never blocks the server: waitress warns of
    queued requests under load)."""
    cmd = [sys.executable, "-m", "audioid.cli", "serve", "--index", index, "--port", "0",
           *(["--threads", str(threads)] if threads else []), *(["--workers", str(workers)] if workers else [])]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    if " on http://" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line}")

    def drain() -> None:
        with open(log_path, "w", buffering=1) as log:
            shutil.copyfileobj(proc.stderr, log)

    threading.Thread(target=drain, daemon=True).start()
    return proc, line.split(" on ")[1].split()[0]


def server_args(threads: int | None, workers: int | None) -> str:
    """How the bench started the server, for its report."""
    return " ".join([f"--threads {threads}" if threads else "(default threads)",
                     f"--workers {workers}" if workers else "(default workers)"])


def interpreter_ms() -> float:
    """Best of 5 timings of ``sum(range(10**6))`` in ms: how fast this machine runs Python, to compare runs made
    on different machines (the VM of bench/RESULTS.md's figures takes 12-15 ms)."""
    return min(timeit.repeat("sum(range(10**6))", number=1, repeat=5)) * 1000


def rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` and all its descendants (shared pages, such as the mapped index, count once per process)."""
    with open(f"/proc/{pid}/status") as f:
        own = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return own + sum(rss_mb(int(c)) for c in f.read().split())


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and all its descendants so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return own + sum(cpu_s(int(c)) for c in f.read().split())


def load(url: str, bodies: list[tuple[str, bytes]], clients: int, total: int) -> dict[str, Any]:
    """``total`` POST /identify requests from ``clients`` threads; latency percentiles, throughput, statuses."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    counter = iter(range(total))

    where = urllib.parse.urlsplit(url)

    def client() -> None:
        # http.client rather than requests: the clients share the server's cores, and requests costs three
        # times the CPU per request (1.1 against 0.35 ms), which the server's latency would pay for.
        conn = http.client.HTTPConnection(where.hostname, where.port)
        try:
            for i in counter:                     # shared iterator: next() on a range iterator is atomic
                name, data = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                body, ctype = encode_multipart_formdata({"file": (name, data, "audio/mpeg")})  # a new boundary
                conn.request("POST", "/identify", body, {"Content-Type": ctype})
                r = conn.getresponse()
                r.read()
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt * 1000)
                    statuses[r.status] = statuses.get(r.status, 0) + 1
        finally:
            conn.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    p = percentiles(latencies, (50, 95, 99))
    return {"clients": clients, "requests": total, "rps": total / wall, "p50": p["p50"], "p95": p["p95"],
            "p99": p["p99"], "max": p["max"], "statuses": statuses}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/audioid-http-bench", help="Folder for the index and queries.")
    ap.add_argument("--tracks", type=int, default=1000, help="Songs in the index.")
    ap.add_argument("--queries", type=int, default=20, help="Distinct query files.")
    ap.add_argument("--per-level", type=int, default=400, help="Requests per concurrency level.")
    ap.add_argument("--requests", type=int, default=10000, help="Requests of the memory run (at 4 clients).")
    ap.add_argument("--threads", type=int, default=None, help="Server threads (audioid serve --threads; default: "
                                                               "the server's).")
    ap.add_argument("--workers", type=int, default=None,
                    help="Server processes (audioid serve --workers; default: the server's, one per core).")
    ap.add_argument("--jobs", type=int, default=usable_cores(), help="Processes for building the index.")
    args = ap.parse_args(argv)

    speed = interpreter_ms()
    index = ensure_index(args.work, args.tracks, args.jobs)
    worker_setup()          # as the server's processes do (api.make_server): one-thread pools, a steady heap
    files = make_queries(args.work, args.queries, args.tracks)
    bodies = [(os.path.basename(f), open(f, "rb").read()) for f in files]
    lib1 = library_rate(index, files, args.per_level, 1)
    lib4 = library_rate(index, files, args.per_level, 4)

    proc, url = start_server(index, args.threads, os.path.join(args.work, "server.log"), args.workers)
    try:
        def measured(clients: int, total: int) -> dict[str, Any]:
            """``load`` with the CPU it cost, per request: the server's (all workers) and these clients'."""
            server0, client0 = cpu_s(proc.pid), time.process_time()
            r = load(url, bodies, clients, total)
            r["server_ms"] = (cpu_s(proc.pid) - server0) / total * 1000
            r["client_ms"] = (time.process_time() - client0) / total * 1000
            return r

        load(url, bodies, 4, 4 * len(bodies))             # warm the server (every worker) as the library was
        levels = [measured(c, args.per_level) for c in (1, 4, 16)]
        rss_before = rss_mb(proc.pid)
        memory = measured(4, args.requests)
        rss_after = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    errors = sum(n for r in [*levels, memory] for s, n in r["statuses"].items() if s >= 500)
    wrong = sum(n for r in [*levels, memory] for s, n in r["statuses"].items() if s != 200)
    print(f"index: {args.tracks} synthetic songs of {TRACK_S:g} s (audioid.synth); queries: {len(files)} MP3 "
          f"outros of {QUERY_S:g} s; server: audioid serve {server_args(args.threads, args.workers)}; "
          f"{os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}; load average "
          f"{os.getloadavg()[0]:.2f}; sum(range(10**6)) in {speed:.1f} ms\n")
    print(f"Library, warm, same files: {lib1:.1f} identifies/s in one thread, {lib4:.1f}/s from 4 threads.\n")
    print("| clients | requests | throughput (req/s) | vs library 1 thread | p50 ms | p95 ms | p99 ms | max ms "
          "| server CPU ms/request | client CPU ms/request | non-200 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in [*levels, {**memory, "clients": "4 (memory run)"}]:
        bad = sum(n for s, n in r["statuses"].items() if s != 200)
        print(f"| {r['clients']} | {r['requests']} | {r['rps']:.1f} | {r['rps'] / lib1:.0%} | {r['p50']:.1f} | "
              f"{r['p95']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['server_ms']:.1f} | {r['client_ms']:.1f} | "
              f"{bad} |")
    growth = rss_after / rss_before - 1
    checked = sum(r["requests"] for r in [*levels, memory])
    print(f"\nServer RSS {rss_before:.1f} MB before, {rss_after:.1f} MB after {args.requests} requests "
          f"({growth:+.1%}); of {checked} requests measured: 5xx {errors}, non-200 {wrong}.")


if __name__ == "__main__":
    main()
