"""Speed of ``audioid chunk`` on MP3: seconds of audio cut per second of wall time on one process.

MP3 copies (128 kbit/s, LAME through libsndfile) of real corpus music tracks are made once in
``~/.cache/ml-audio-id/bench/chunk-mp3/``; each run chunks them into a fresh folder with ``--jobs 1`` and
prints the real-time factor per output format (hashing, decoding and writing included).

Usage::

    OPENBLAS_NUM_THREADS=1 python bench/chunk.py [--tracks 20] [--formats wav,flac,mp3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import read_corpus_manifest  # noqa: E402
from fit_embedding_stats import CACHE, CORPUS  # noqa: E402

from audioid import synth  # noqa: E402
from audioid.index.chunking import ChunkOptions, chunk_folder  # noqa: E402


def mp3_set(corpus: str, n: int) -> str:
    """Folder of ``n`` MP3 copies of corpus music tracks (made once)."""
    import soundfile as sf

    out = os.path.join(CACHE, "chunk-mp3")
    os.makedirs(out, exist_ok=True)
    rows = read_corpus_manifest(os.path.join(corpus, "manifest.csv"), "music")[:n]
    for i, r in enumerate(rows):
        path = os.path.join(out, f"track{i:03d}.mp3")
        if not os.path.exists(path):
            y, sr = sf.read(r["path"], dtype="float32")
            synth.write_mp3(path, y, sr if sr in (32000, 44100, 48000) else 44100)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--tracks", type=int, default=20)
    ap.add_argument("--formats", default="wav,flac,mp3")
    args = ap.parse_args(argv)
    src = mp3_set(args.corpus, args.tracks)
    print("| output | files | audio (min) | wall (s) | x real time, one process |\n|---|---|---|---|---|")
    for fmt in args.formats.split(","):
        out = tempfile.mkdtemp(prefix="chunk-bench-")
        try:
            t0 = time.perf_counter()
            report = chunk_folder(src, out, ChunkOptions(fmt=fmt), jobs=1)
            wall = time.perf_counter() - t0
        finally:
            shutil.rmtree(out)
        audio = report.audio_seconds
        print(f"| {fmt} | {len(report.of('done'))} | {audio / 60:.1f} | {wall:.2f} | {audio / wall:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
