#!/usr/bin/env python3
"""Benchmark tail reads against full decodes: 5-min and 60-min MP3 (with and without Xing header) and a FLAC.

Usage::

    python bench/decode_tail.py [--dir /tmp/decode-bench] [--tail 10] [--repeat 3]

Makes its test files once in ``--dir`` (ffmpeg when installed, else soundfile; a long MP3 is one encoded minute
repeated, since MP3 frames concatenate).  For each file prints the best of ``--repeat`` timings of

* ``tail``:  ``load(path, 8000, tail_seconds=TAIL)`` -- what identification does per query;
* ``full``:  a full decode (``decode(path)``), what reading the whole file would cost;
* ``sf-seek``: the naive libsndfile way (``SoundFile.seek(frames - n)`` + read), for comparison, with whether
  it returned the real end (it does not for headerless VBR MP3);

and the ratio full / tail.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from audioid.fingerprint.audio import load  # noqa: E402
from audioid.fingerprint.decode import decode  # noqa: E402


def _signal(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Stereo chord with noise bursts (so VBR bitrates vary)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    bursts = rng.standard_normal((len(t), 2)) * (np.sin(2 * np.pi * 0.3 * t) > 0.3)[:, None]
    return (0.3 * chord[:, None] + 0.1 * bursts).astype(np.float32)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_files(folder: str) -> dict[str, str]:
    """Create (once) the benchmark files; returns label -> path."""
    import soundfile as sf

    os.makedirs(folder, exist_ok=True)
    have_ffmpeg = shutil.which("ffmpeg") is not None
    paths = {}
    minute_wav = os.path.join(folder, "minute.wav")
    if not os.path.exists(minute_wav):
        sf.write(minute_wav, _signal(44100, 60), 44100, subtype="PCM_16")

    def mp3_minute(name: str, opts: list[str]) -> str:
        p = os.path.join(folder, name)
        if not os.path.exists(p):
            if have_ffmpeg:
                _ffmpeg("-i", minute_wav, "-c:a", "libmp3lame", *opts, "-id3v2_version", "0", p)
            else:  # libsndfile writes a Xing header; fine for the CBR files
                y, sr = sf.read(minute_wav, dtype="float32")
                with sf.SoundFile(p, "w", sr, 2, format="MP3", subtype="MPEG_LAYER_III") as f:
                    for i in range(0, len(y), 8192):
                        f.write(y[i:i + 8192])
        return p

    def repeated(src: str, name: str, times: int) -> str:
        """``src``'s bytes ``times`` over: a long stream whose MPEG frames all carry the same header."""
        p = os.path.join(folder, name)
        if not os.path.exists(p):
            with open(src, "rb") as f:
                data = f.read()
            with open(p, "wb") as f:
                f.write(data * times)
        return p

    cbr = mp3_minute("minute_cbr.mp3", ["-b:a", "128k", "-write_xing", "0"])
    for minutes in (5, 60):
        paths[f"MP3 CBR 128k, {minutes} min, no header"] = repeated(cbr, f"cbr_{minutes}min.mp3", minutes)
    if have_ffmpeg:
        # one continuous CBR encode (a repeated minute drifts off the CBR frame lattice at every join)
        p = os.path.join(folder, "cbr_60min_one_encode.mp3")
        if not os.path.exists(p):
            _ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=3600:sample_rate=44100", "-f", "lavfi",
                    "-i", "anoisesrc=d=3600:r=44100:a=0.05", "-filter_complex", "amix", "-ac", "2",
                    "-c:a", "libmp3lame", "-b:a", "128k", "-write_xing", "0", "-id3v2_version", "0", p)
        paths["MP3 CBR 128k, 60 min, no header, one encode"] = p
        vbr = mp3_minute("minute_vbr.mp3", ["-q:a", "2", "-write_xing", "0"])
        for minutes in (5, 60):
            paths[f"MP3 VBR V2, {minutes} min, no header"] = repeated(vbr, f"vbr_{minutes}min_nox.mp3", minutes)
            px = os.path.join(folder, f"vbr_{minutes}min_xing.mp3")
            if not os.path.exists(px):
                _ffmpeg("-stream_loop", str(minutes - 1), "-i", vbr, "-c", "copy", px)
            paths[f"MP3 VBR V2, {minutes} min, Xing"] = px
    flac = os.path.join(folder, "10min.flac")
    if not os.path.exists(flac):
        y = _signal(44100, 60)
        with sf.SoundFile(flac, "w", 44100, 2, subtype="PCM_16") as f:
            for _ in range(10):
                f.write(y)
    paths["FLAC 16-bit, 10 min"] = flac
    return paths


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _sf_seek_tail(path: str, tail: float):
    import soundfile as sf

    with sf.SoundFile(path) as f:
        n = int(tail * f.samplerate)
        f.seek(max(0, f.frames - n))
        return f.read(n, dtype="float32", always_2d=True)


def _verdict(seek_read: np.ndarray, full) -> str:
    """Does a naive seek read equal the end of the full decode?"""
    n = len(seek_read)
    if n == 0 or len(full.data) < n:
        return "NO (short read)"
    bad = np.flatnonzero(np.abs(seek_read - full.data[-n:]).max(axis=1) > 1e-4)
    if len(bad) == 0:
        return "yes"
    if bad[-1] < n // 20:
        return f"yes but first {1000 * (bad[-1] + 1) / full.sample_rate:.0f} ms wrong (bit reservoir)"
    return "NO: audio from the wrong place"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/decode-bench", help="where the test files are made (kept)")
    ap.add_argument("--tail", type=float, default=10.0, help="tail length in seconds")
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings")
    args = ap.parse_args(argv)
    paths = make_files(args.dir)
    print(f"| file | size MB | tail {args.tail:g} s | full decode | full / tail | libsndfile seek | seek gives the end? |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    for label, p in paths.items():
        t_tail, a = _best(lambda: load(p, 8000, tail_seconds=args.tail), args.repeat)
        t_full, full = _best(lambda: decode(p), 1 if "60 min" in label else args.repeat)
        t_seek, s = _best(lambda: _sf_seek_tail(p, args.tail), args.repeat)
        print(f"| {label} | {os.path.getsize(p) / 1e6:.1f} | {t_tail * 1000:.1f} ms | {t_full * 1000:.0f} ms "
              f"| {t_full / t_tail:.0f}x | {t_seek * 1000:.1f} ms | {_verdict(s, full)} |")
        assert abs(a.start_s + args.tail - full.total_frames / full.sample_rate) < 1e-3, label
    return 0


if __name__ == "__main__":
    sys.exit(main())
