#!/usr/bin/env python3
"""Soak test of ``audioid serve``: minutes of concurrent identify (90 %) and add/remove (10 %) traffic, then an
index consistency check and a findability check of every track the soak left added.

Usage::

    python bench/soak.py --work /tmp/audioid-soak [--minutes 10] [--clients 8] [--tracks 200]

The starting index holds ``--tracks`` synthetic songs (built once into ``WORK/index`` by
:func:`http_load.ensure_index`); each run soaks a fresh copy (``WORK/soak-index``).  Identify queries are 10 s
MP3 outros of indexed songs.  Writes use a pool of ``--pool`` further synthetic songs (``WORK/pool``, made once):
an add uploads a pool song that is not in the index (``POST /tracks``), a remove deletes one the soak added
(``DELETE /tracks/<id>``), which returns the song to the pool, so songs are added, removed and added again.
Writes keep about ``--added`` songs added (add below it, remove above it, either at it), so the index stays the
same size and its memory does not grow with it.  Prints one row per minute (requests, errors, 5xx, p99 latency,
server RSS at the minute's end and the median of its samples every 5 s), then markdown for
``bench/RESULTS.md``.  RSS growth is judged on the minute medians: the end-of-minute sample also holds whatever
heap the requests in flight at that moment use (several MB per add).  Exits 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import percentiles  # noqa: E402
from http_load import (QUERY_S, _write_track, ensure_index, load, make_queries, rss_mb,  # noqa: E402
                       start_server)

from audioid.index.parallel import usable_cores  # noqa: E402

POOL_SEED = 100_001        # pool songs' seeds start here, far from the index's 1..tracks
TIMEOUT_S = 120.0          # a request taking longer counts as hung


@dataclass
class Event:
    """One request: when it ended (s since the soak began), what it was, its status (0: no answer), its time."""

    t: float
    kind: str              # identify | add | delete
    status: int
    ms: float
    slug: str | None = None


@dataclass
class Pool:
    """Write songs: those not in the index (``free``) and those the soak added (``added``: seed -> track id)."""

    folder: str
    free: list[int]
    added: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def path(self, seed: int) -> str:
        return os.path.join(self.folder, f"song{seed:05d}.flac")


def ensure_pool(work: str, size: int, jobs: int) -> Pool:
    """``size`` synthetic songs in ``WORK/pool`` (made unless there)."""
    folder = os.path.join(work, "pool")
    os.makedirs(folder, exist_ok=True)
    pool = Pool(folder, list(range(POOL_SEED, POOL_SEED + size)))
    missing = [(folder, s) for s in pool.free if not os.path.exists(pool.path(s))]
    with ProcessPoolExecutor(jobs) as ex:
        list(ex.map(_write_track, missing, chunksize=8))
    return pool


def outro_wav(path: str) -> bytes:
    """The last ``QUERY_S`` seconds of the song at ``path`` as WAV bytes."""
    audio, sr = sf.read(path, dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, audio[-int(QUERY_S * sr):], sr, format="WAV")
    return buf.getvalue()


def problem_slug(r: requests.Response) -> str | None:
    if r.headers.get("Content-Type") != "application/problem+json":
        return None
    return r.json().get("type", "").rsplit(":", 1)[-1]


def client(url: str, n: int, bodies: list[tuple[str, bytes]], pool: Pool, stop: float, start: float,
           events: list[Event], write_share: float, added: int) -> None:
    """One client until ``stop`` (perf_counter): identify with probability ``1 - write_share``, else a write."""
    rng = random.Random(n)
    with requests.Session() as s:
        while time.perf_counter() < stop:
            kind, seed = "identify", None
            if rng.random() < write_share:
                with pool.lock:
                    # Keep about `added` songs added; a song is never in two requests at once.
                    n = len(pool.added)
                    if pool.free and (n < added or (n == added and rng.random() < 0.5)):
                        kind, seed = "add", pool.free.pop(rng.randrange(len(pool.free)))
                    elif pool.added:
                        kind, seed = "delete", rng.choice(list(pool.added))
                        track_id = pool.added.pop(seed)
            t0 = time.perf_counter()
            try:
                if kind == "identify":
                    name, data = bodies[rng.randrange(len(bodies))]
                    r = s.post(f"{url}/identify", files={"file": (name, data, "audio/mpeg")}, timeout=TIMEOUT_S)
                elif kind == "add":
                    with open(pool.path(seed), "rb") as f:
                        r = s.post(f"{url}/tracks", data={"label": f"soak{seed}", "who": "soak"},
                                   files={"file": (os.path.basename(pool.path(seed)), f, "audio/flac")},
                                   timeout=TIMEOUT_S)
                else:
                    r = s.delete(f"{url}/tracks/{track_id}", params={"who": "soak"}, timeout=TIMEOUT_S)
                status, slug = r.status_code, problem_slug(r)
            except requests.RequestException:
                status, slug = 0, None
            ms = (time.perf_counter() - t0) * 1000
            if kind != "identify":
                with pool.lock:     # the song's state follows what the server answered
                    if kind == "add" and status == 201:
                        pool.added[seed] = r.json()["track_id"]
                    elif kind == "add" or status == 200:
                        pool.free.append(seed)
                    else:
                        pool.added[seed] = track_id
            events.append(Event(time.perf_counter() - start, kind, status, ms, slug))   # list.append is atomic


def minute_row(minute: int, evs: list[Event], rss: float, samples: list[float]) -> dict:
    """The figures of one minute's requests ``evs``; ``rss`` is the server's RSS at its end, ``samples`` its
    RSS every few seconds during the minute."""
    def ok(e: Event) -> bool:
        return 200 <= e.status < 300

    ident = [e.ms for e in evs if e.kind == "identify"]
    writes = [e.ms for e in evs if e.kind != "identify"]
    return {"minute": minute, "requests": len(evs), "identify": len(ident),
            "adds": sum(e.kind == "add" and ok(e) for e in evs),
            "deletes": sum(e.kind == "delete" and ok(e) for e in evs),
            "409": sum(e.status == 409 for e in evs),
            "errors": sum(not ok(e) and e.status != 409 for e in evs),
            "5xx": sum(e.status >= 500 for e in evs), "no_answer": sum(e.status == 0 for e in evs),
            "p99_identify": percentiles(ident, (99,))["p99"], "p99_write": percentiles(writes, (99,))["p99"],
            "rss": rss, "rss_median": statistics.median(samples) if samples else rss}


def print_row(r: dict) -> None:
    print(f"| {r['minute']} | {r['requests']} | {r['identify']} | {r['adds']} | {r['deletes']} | {r['409']} | "
          f"{r['errors']} | {r['5xx']} | {r['p99_identify']:.0f} | {r['p99_write'] or 0:.0f} | {r['rss']:.1f} | "
          f"{r['rss_median']:.1f} |",
          flush=True)


def soak(url: str, pid: int, bodies: list[tuple[str, bytes]], pool: Pool, minutes: float, clients: int,
         write_share: float, added: int) -> tuple[list[dict], list[Event]]:
    """Run the clients for ``minutes``, printing a row at the end of each minute; the rows and all events."""
    events: list[Event] = []
    start = time.perf_counter()
    stop = start + minutes * 60
    rows: list[dict] = []
    print("| minute | requests | identify | adds | deletes | 409 | errors | 5xx | p99 identify ms | p99 write ms "
          "| server RSS MB (end) | (median) |\n|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    samples: list[tuple[float, float]] = []        # (minutes since start, RSS MB) every 5 s

    def sample() -> None:
        while time.perf_counter() < stop:
            samples.append(((time.perf_counter() - start) / 60, rss_mb(pid)))
            time.sleep(5.0)

    threading.Thread(target=sample, daemon=True).start()
    with ThreadPoolExecutor(clients) as ex:
        futures = [ex.submit(client, url, n, bodies, pool, stop, start, events, write_share, added)
                   for n in range(clients)]
        last = math.ceil(minutes)
        for minute in range(1, last + 1):
            time.sleep(max(0.0, start + min(minute, minutes) * 60 - time.perf_counter()))
            if minute == last:      # the last row also counts the requests still in flight at the end
                for f in futures:
                    f.result()
            done = [e for e in events if minute - 1 <= e.t / 60 and (e.t / 60 < minute or minute == last)]
            rows.append(minute_row(minute, done, rss_mb(pid), [m for t, m in samples if minute - 1 <= t < minute]))
            print_row(rows[-1])
    return rows, events


def verify(url: str, pool: Pool) -> tuple[int, list[str]]:
    """Identify the outro of every pool song: added ones must match their track, the others must not match a
    ``soak`` label (removed tracks stay removed).  The number checked and the failures."""
    failures = []
    with requests.Session() as s:
        for seed in sorted([*pool.added, *pool.free]):
            r = s.post(f"{url}/identify", files={"file": ("outro.wav", outro_wav(pool.path(seed)), "audio/wav")},
                       timeout=TIMEOUT_S)
            rec = r.json()
            if seed in pool.added and (rec.get("status") != "match" or rec.get("track_id") != pool.added[seed]):
                failures.append(f"added song {seed} (track {pool.added[seed]}): {r.status_code} {rec}")
            elif seed not in pool.added and rec.get("label") == f"soak{seed}":
                failures.append(f"removed song {seed} still matches: {rec.get('label')} {rec.get('track_id')}")
    return len(pool.added) + len(pool.free), failures


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/audioid-soak", help="Folder for the indexes, pool and queries.")
    ap.add_argument("--minutes", type=float, default=10.0, help="Length of the soak.")
    ap.add_argument("--clients", type=int, default=8, help="Concurrent clients.")
    ap.add_argument("--tracks", type=int, default=200, help="Songs in the starting index.")
    ap.add_argument("--pool", type=int, default=120, help="Songs the writes add and remove.")
    ap.add_argument("--queries", type=int, default=20, help="Distinct identify query files.")
    ap.add_argument("--write-share", type=float, default=0.1, help="Share of requests that are writes.")
    ap.add_argument("--added", type=int, default=10, help="Pool songs the writes keep added, about.")
    ap.add_argument("--threads", type=int, default=4, help="Server threads (audioid serve --threads).")
    ap.add_argument("--workers", type=int, default=1,
                    help="Server processes (audioid serve --workers). One, as in every soak figure in "
                         "bench/RESULTS.md since issue 6; the server's own default is one per core.")
    ap.add_argument("--jobs", type=int, default=usable_cores(), help="Processes for building.")
    args = ap.parse_args(argv)

    base = ensure_index(args.work, args.tracks, args.jobs)
    pool = ensure_pool(args.work, args.pool, args.jobs)
    files = make_queries(args.work, args.queries, args.tracks)
    bodies = [(os.path.basename(f), open(f, "rb").read()) for f in files]
    index = os.path.join(args.work, "soak-index")
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(base, index)

    log_path = os.path.join(args.work, "server.log")
    proc, url = start_server(index, args.threads, log_path, args.workers)
    try:
        load(url, bodies, args.clients, 2 * len(bodies))            # warm-up, outside the figures
        rss_start = rss_mb(proc.pid)
        rows, events = soak(url, proc.pid, bodies, pool, args.minutes, args.clients, args.write_share, args.added)
        alive = proc.poll() is None
        checked, failures = verify(url, pool)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    check = subprocess.run([sys.executable, "-m", "audioid.cli", "index", "check", "--index", index, "--json"],
                           capture_output=True, text=True)
    rep = json.loads(check.stdout)
    with open(log_path) as f:
        tracebacks = f.read().count("Traceback")

    total = lambda key: sum(r[key] for r in rows)  # noqa: E731
    slugs = sorted({e.slug for e in events if e.status == 409})
    # Growth is measured from the end of the first minute, as p99 is: the first write loads the write path
    # (analysis, segment building), a one-off the warm-up's identifies do not touch.
    rss_first, rss_end = rows[0]["rss_median"], rows[-1]["rss_median"]
    p99_ratio = max(r["p99_identify"] for r in rows) / rows[0]["p99_identify"]
    print(f"\n{total('requests')} requests in {args.minutes:g} min from {args.clients} clients "
          f"({total('identify')} identify, {total('adds')} adds, {total('deletes')} deletes; 409s {total('409')} "
          f"{slugs}); errors {total('errors')} (no answer {total('no_answer')}), 5xx {total('5xx')}; server "
          f"{'alive' if alive else 'DEAD'} at the end, {tracebacks} tracebacks in its log; RSS {rss_start:.1f} MB "
          f"after the identify warm-up; minute medians {rss_first:.1f} MB in minute 1, {rss_end:.1f} MB in the last "
          f"({rss_end / rss_first - 1:+.1%}), max {max(r['rss_median'] for r in rows):.1f} MB; end-of-minute "
          f"samples {rows[0]['rss']:.1f} -> {rows[-1]['rss']:.1f} MB ({rows[-1]['rss'] / rows[0]['rss'] - 1:+.1%}); "
          f"worst minute's p99 identify {p99_ratio:.2f}x the first's.")
    print(f"index check: exit {check.returncode}, ok={rep['ok']}, generation {rep['generation']}, {rep['tracks']} "
          f"tracks, {len(rep['warnings'])} warnings, errors {rep['errors']}")
    print(f"findability: {checked} pool songs identified, {len(pool.added)} added at the end; "
          f"{len(failures)} failures" + "".join(f"\n  {f}" for f in failures[:10]))
    met = (alive and total("5xx") == 0 and total("errors") == 0 and tracebacks == 0 and rss_end <= 1.05 * rss_first
           and p99_ratio <= 2.0 and check.returncode == 0 and not failures)
    print("all targets met" if met else "TARGET MISSED")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
