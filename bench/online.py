"""Online learning costs: add one track to an existing index, then remove and relabel it (issue 3).

Works on a copy of ``--index`` (the original is never written), so it can run against the index that
``bench/identify.py`` built.  The added track is ``--track`` (any audio file; default: a synthesized 4-minute
MP3).  Prints, as markdown, the wall time of each step through the library (a warm process) and through the CLI
(a fresh process, start-up included), and checks that the track is named right after the add and no longer
right after the remove.

Usage::

    python bench/online.py --index /tmp/bench-index [--track some.mp3] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from audioid import synth
from audioid.fingerprint.audio import load
from audioid.index.build import add_to_index, relabel_in_index, remove_from_index
from audioid.index.identify import Identifier
from audioid.index.sources import reference_specs


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _cli(*args: str) -> float:
    exe = shutil.which("audioid") or sys.executable
    cmd = [exe, *args] if exe != sys.executable else [exe, "-m", "audioid.cli", *args]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", required=True, help="an existing index (copied, never modified)")
    ap.add_argument("--track", help="audio file to add (default: a synthesized 4-minute MP3)")
    ap.add_argument("--runs", type=int, default=3, help="repetitions of each timing (median reported)")
    args = ap.parse_args(argv)

    work = tempfile.mkdtemp(prefix="audioid-online-")
    try:
        track = args.track
        if not track:
            track = os.path.join(work, "new-track.mp3")
            synth.write_mp3(track, synth.music_track(4242, 240.0, 44100), 44100)
        duration = load(track, 8000).duration_s
        query = os.path.join(work, "outro.wav")
        import soundfile as sf

        y = load(track, 16000, tail_seconds=10).samples
        sf.write(query, y, 16000)
        rows: dict[str, list[float]] = {k: [] for k in ("lib add", "lib remove", "lib relabel", "cli add",
                                                          "cli remove")}
        checks = []
        for run in range(args.runs):
            idx = os.path.join(work, f"idx{run}")
            shutil.copytree(args.index, idx)
            before = Identifier.open(idx).identify_file(query)
            t, rep = _timed(lambda: add_to_index(reference_specs(track), idx, jobs=1))
            rows["lib add"].append(t)
            tid = rep.added[0].id
            found = Identifier.open(idx).identify_file(query)
            rows["lib relabel"].append(_timed(lambda: relabel_in_index(idx, tid, klass="music"))[0])
            rows["lib remove"].append(_timed(lambda: remove_from_index(idx, [tid]))[0])
            gone = Identifier.open(idx).identify_file(query)
            checks.append((before.label if before.status == "match" else before.status, found.track_id == tid,
                           gone.track_id != tid))
            # The same through the CLI, on a fresh copy (the file is a duplicate of nothing there).
            shutil.rmtree(idx)
            shutil.copytree(args.index, idx)
            rows["cli add"].append(_cli("index", "add", track, "--index", idx, "--jobs", "1"))
            rows["cli remove"].append(_cli("index", "remove", "new-track" if not args.track else
                                           os.path.splitext(os.path.basename(track))[0], "--index", idx))
            shutil.rmtree(idx)
        tracks = Identifier.open(args.index).reader.catalog.totals()["tracks"]
        print(f"Index {args.index} ({tracks} tracks); added track {duration:.0f} s; median of {args.runs} runs.\n")
        print("| step | median s | runs s |\n|---|---|---|")
        for k, v in rows.items():
            print(f"| {k} | {statistics.median(v):.3f} | {', '.join(f'{x:.3f}' for x in v)} |")
        print("\nchecks (before the add: status or track named; after the add: the new track is named; after the "
              "remove: it is not):", checks)
        ok = all(c[1:] == (True, True) for c in checks)
        print("all checks passed" if ok else "CHECK FAILED")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
