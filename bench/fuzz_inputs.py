#!/usr/bin/env python3
"""Fuzz the decoders and identify with damaged real files; time and measure the 6 h files against 3-minute ones.

Usage::

    python bench/fuzz_inputs.py [--cases 2000] [--seed 0] [--workers 2] [--timeout 30] [--dir DIR]
                                [--long flac,mp3,ogg] [--repeat 5] [--no-hostile]

* **Fuzz**: ``--cases`` mutations (:func:`audioid.hostile.mutate`: truncation, bit flips, header field rewrites,
  chunk splices, one to three of them) of real WAV, float WAV, MP3, FLAC and Ogg recordings of the
  :func:`audioid.hostile.reference_tracks`.  Each case is identified (last 10 s) in its own process, forked from
  a warm worker that has the index open, with a wall-time cap of ``--timeout``; the worker collects the child's
  peak RSS with ``wait4``.  Reported: cases, error records vs answers (and wrong matches), crashes (an
  exception escaping identify, a non-zero exit or a signal), hangs (the cap was hit), the slowest decode, the
  slowest identify and the highest peak RSS, with the case that set each.
* **Hostile set**: the same for every file of :func:`audioid.hostile.make_hostile_set` (with a 6 h FLAC).
* **Long files**: the 6 h files of :func:`audioid.hostile.long_file` (cached in ``~/.cache/ml-audio-id/hostile``;
  the MP3 and Ogg take about a minute each to make, once) against 3-minute files made the same way: median
  identify time and peak RSS of ``--repeat`` fresh processes each.

The worker runs FAISS on one OpenMP thread (its threads do not survive fork).
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from queue import Empty, Queue

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

OUTRO_S = 10.0
BASE_FORMATS = ("wav", "wav-float-44k-stereo", "mp3", "flac", "ogg")


# ------------------------------------------------------------------------------------------------ worker ---

def _child(ident, path: str) -> dict:
    """Identify ``path`` in the forked child; a decode is timed on its own first."""
    from audioid.fingerprint.audio import AudioError, load

    t0 = time.perf_counter()
    try:
        load(path, ident.sample_rate, tail_seconds=OUTRO_S)
    except AudioError:
        pass
    t1 = time.perf_counter()
    r = ident.identify_file(path, outro_seconds=OUTRO_S)
    t2 = time.perf_counter()
    return {"status": r.status, "label": r.label, "error": r.error, "decode_s": t1 - t0, "identify_s": t2 - t1}


def _run_case(ident, path: str, timeout: float) -> dict:
    """Fork a child that identifies ``path``; kill it after ``timeout`` s.  Adds ``outcome`` and ``rss_mb``."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        os.close(rfd)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)   # mpg123 and libsndfile chatter about bad frames
        try:
            out, code = _child(ident, path), 0
        except BaseException:
            out, code = {"traceback": traceback.format_exc()[-2000:]}, 3
        os.write(wfd, json.dumps(out).encode())
        os._exit(code)
    os.close(wfd)
    start = time.monotonic()
    chunks, status, usage, hung = [], None, None, False
    while status is None:
        ready, _, _ = select.select([rfd], [], [], 0.05)
        if ready:
            b = os.read(rfd, 65536)
            if b:
                chunks.append(b)
        done, st, ru = os.wait4(pid, os.WNOHANG)
        if done:
            status, usage = st, ru
        elif time.monotonic() - start > timeout:
            os.kill(pid, 9)
            _, status, usage = os.wait4(pid, 0)
            hung = True
    while True:
        b = os.read(rfd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(rfd)
    wall = time.monotonic() - start
    try:
        out = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        out = {}
    out.update(wall_s=wall, rss_mb=usage.ru_maxrss / 1024)
    if hung:
        out["outcome"] = "hang"
    elif os.WIFSIGNALED(status) or os.waitstatus_to_exitcode(status) != 0 or "status" not in out:
        out["outcome"] = "crash"
        out["exit"] = os.waitstatus_to_exitcode(status)
    else:
        out["outcome"] = out["status"]
    return out


def worker(index: str) -> None:
    """Serve requests (one JSON line ``{"path", "timeout"}`` per case) on stdin; answer one JSON line each."""
    from audioid.index.identify import Identifier

    ident = Identifier.open(index)
    base_rss = _rss_mb()
    print(json.dumps({"ready": True, "rss_mb": base_rss}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        print(json.dumps(_run_case(ident, req["path"], req["timeout"])), flush=True)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Pool:
    """``n`` warm workers; :meth:`run` identifies paths on them concurrently, results in input order."""

    def __init__(self, index: str, n: int):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
        self.procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", index],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       errors="surrogateescape", env=env) for _ in range(n)]
        self.base_rss = [json.loads(p.stdout.readline())["rss_mb"] for p in self.procs]

    def run(self, paths: list[str], timeout: float, progress: bool = False) -> list[dict]:
        results: list[dict | None] = [None] * len(paths)
        todo: Queue = Queue()
        for i, p in enumerate(paths):
            todo.put((i, p))

        def serve(proc: subprocess.Popen) -> None:
            while not todo.empty():
                try:
                    i, p = todo.get_nowait()
                except Empty:
                    return
                proc.stdin.write(json.dumps({"path": p, "timeout": timeout}) + "\n")
                proc.stdin.flush()
                results[i] = json.loads(proc.stdout.readline())
                if progress and (i + 1) % 200 == 0:
                    print(f"  ... {i + 1} cases", file=sys.stderr, flush=True)

        threads = [threading.Thread(target=serve, args=(p,)) for p in self.procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    def close(self) -> None:
        for p in self.procs:
            p.stdin.close()
            p.wait()


# ----------------------------------------------------------------------------------------------- parts ---

def _bases(folder: Path, seed: int) -> list[tuple[str, str, bytes]]:
    """(label, extension, bytes) of real encodings of each reference's recording, in each base format."""
    import soundfile as sf

    from audioid import hostile
    from audioid.fingerprint.audio import resample

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, (label, track) in enumerate(hostile.reference_tracks(seed).items()):
        rec = hostile.recording(track, seed + k)
        for fmt in BASE_FORMATS:
            ext = fmt.split("-")[0]
            path = folder / f"{label}-{fmt}.{ext}"
            if fmt == "wav-float-44k-stereo":
                y = resample(rec, hostile.SR, 44100)
                sf.write(path, np.stack([y, 0.5 * y], axis=1), 44100, subtype="FLOAT")
            else:
                hostile.encode(path, rec, hostile.SR, fmt)
            out.append((label, ext, path.read_bytes()))
    return out


def _summary(rows: list[dict], name_of) -> dict:
    outcomes: dict[str, int] = {}
    for r in rows:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1

    def worst(key: str) -> tuple[float, str]:
        i = max(range(len(rows)), key=lambda j: rows[j].get(key, 0.0))
        return rows[i].get(key, 0.0), name_of(i)

    return {"outcomes": outcomes, "max_decode": worst("decode_s"), "max_identify": worst("identify_s"),
            "max_rss": worst("rss_mb")}


def _print_summary(title: str, s: dict) -> None:
    print(f"{title}: " + ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items())))
    print(f"  max decode   {s['max_decode'][0] * 1000:8.1f} ms  ({s['max_decode'][1]})")
    print(f"  max identify {s['max_identify'][0] * 1000:8.1f} ms  ({s['max_identify'][1]})")
    print(f"  max peak RSS {s['max_rss'][0]:8.1f} MB  ({s['max_rss'][1]})")


def fuzz(pool: Pool, work: Path, n: int, seed: int, timeout: float) -> list[dict]:
    from audioid import hostile

    bases = _bases(work / "bases", seed)
    cases_dir = work / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    paths, meta = [], []
    for i in range(n):
        label, ext, data = bases[i % len(bases)]
        what, bad = hostile.mutate(data, np.random.default_rng([seed, 7, i]))
        p = cases_dir / f"{i:05d}.{ext}"
        p.write_bytes(bad)
        paths.append(str(p))
        meta.append((label, ext, what))
    t0 = time.perf_counter()
    rows = pool.run(paths, timeout, progress=True)
    elapsed = time.perf_counter() - t0
    wrong = sum(1 for r, (label, _, _) in zip(rows, meta) if r["outcome"] == "match" and r["label"] != label)
    s = _summary(rows, lambda i: f"{meta[i][1]} {meta[i][2]}")
    print(f"\nfuzz: {n} cases from {len(bases)} real files ({', '.join(BASE_FORMATS)}), {elapsed:.0f} s, "
          f"{len(pool.procs)} workers, cap {timeout:g} s per case")
    _print_summary("  outcomes", s)
    print(f"  wrong-label matches {wrong}")
    by_ext: dict[str, dict[str, int]] = {}
    for r, (_, ext, _) in zip(rows, meta):
        d = by_ext.setdefault(ext, {})
        d[r["outcome"]] = d.get(r["outcome"], 0) + 1
    for ext, d in sorted(by_ext.items()):
        print(f"  {ext:5s} " + ", ".join(f"{k} {v}" for k, v in sorted(d.items())))
    for r, (label, ext, what) in zip(rows, meta):
        if r["outcome"] in ("crash", "hang"):
            print(f"  {r['outcome'].upper()}: {ext} {what}: {r.get('traceback') or r.get('exit')}")
    return rows


def hostile_set(pool: Pool, work: Path, seed: int, timeout: float) -> None:
    from audioid import hostile

    folder = work / "hostile-set"
    shutil.rmtree(folder, ignore_errors=True)
    cases = [c for c in hostile.make_hostile_set(folder, seed, long_seconds=hostile.LONG_HOURS * 3600) if not c.skip]
    rows = pool.run([c.path for c in cases], timeout)
    bad = [(c, r) for c, r in zip(cases, rows) if r["outcome"] not in hostile.EXPECT_STATUSES[c.expect]
           or (c.expect == "match" and r["label"] != c.label)]
    print(f"\nhostile set: {len(cases)} files (make_hostile_set, seed {seed}, 6 h FLAC)")
    _print_summary("  outcomes", _summary(rows, lambda i: cases[i].name))
    print(f"  unexpected outcomes {len(bad)}" + "".join(f"\n    {c.name}: {r['outcome']} {r.get('error')}"
                                                          for c, r in bad))


def long_files(pool: Pool, formats: list[str], seed: int, repeat: int, timeout: float) -> None:
    from audioid import hostile

    print(f"\nlong files: identify the outro ({OUTRO_S:g} s), median of {repeat} fresh processes, peak RSS max")
    print(f"  {'file':24s} {'size':>9s} {'make':>7s} {'status':>9s} {'identify':>9s} {'decode':>8s} {'RSS':>8s}")
    for fmt in formats:
        for seconds in (180, hostile.LONG_HOURS * 3600):
            t0 = time.perf_counter()
            path, label = hostile.long_file(seconds, fmt, seed)
            made = time.perf_counter() - t0
            rows = pool.run([str(path)] * repeat, timeout)
            status = {r["outcome"] + ("" if r.get("label") in (None, label) else "(wrong)") for r in rows}
            print(f"  {path.name:24s} {path.stat().st_size / 1e6:7.2f}MB {made:6.1f}s {'/'.join(status):>9s} "
                  f"{np.median([r.get('identify_s', np.nan) for r in rows]) * 1000:7.0f}ms "
                  f"{np.median([r.get('decode_s', np.nan) for r in rows]) * 1000:6.0f}ms "
                  f"{max(r['rss_mb'] for r in rows):6.1f}MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=30.0, help="wall-time cap per case, seconds")
    ap.add_argument("--dir", default=None, help="work folder [default: a temporary one]")
    ap.add_argument("--long", default="flac,mp3,ogg", help="formats of the 6 h files ('' for none)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-hostile", action="store_true", help="skip the hostile set")
    ap.add_argument("--worker", metavar="INDEX", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return

    import audioid
    from audioid import hostile

    with tempfile.TemporaryDirectory(prefix="fuzz-inputs-") as tmp:
        work = Path(args.dir or tmp)
        refs = hostile.write_references(work / "refs", args.seed)
        index = str(work / "idx")
        audioid.build_index(work / "refs", index, jobs=1)
        pool = Pool(index, args.workers)
        try:
            print(f"{len(refs)} references indexed; worker RSS at rest "
                  f"{', '.join(f'{r:.1f}' for r in pool.base_rss)} MB (numpy, index open)")
            if args.cases:
                fuzz(pool, work, args.cases, args.seed, args.timeout)
            if not args.no_hostile:
                hostile_set(pool, work, args.seed, args.timeout)
            formats = [f for f in args.long.split(",") if f]
            if formats:
                long_files(pool, formats, args.seed, args.repeat, args.timeout)
        finally:
            pool.close()


if __name__ == "__main__":
    main()
