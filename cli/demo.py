"""``audioid demo``: synthesize references, index them, identify degraded broadcast-like excerpts.

Every query is a short "recording": a few seconds of a presenter talking, then the end of a song (the outro),
degraded the way broadcast captures are.  Two queries hold music or speech that is not in the index and must
come back ``no_match``, classed as music and dialogue by the labelled references (songs, a few speech clips
and talk over music).
"""
from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import click

from .output import Column, TableWriter

if TYPE_CHECKING:
    import numpy as np

SR = 22050
SONGS = [  # (label, title, seed, seconds)
    ("copper-lanterns", "Copper Lanterns", 1, 40),
    ("night-ferry", "Night Ferry", 2, 55),
    ("paper-orchard", "Paper Orchard", 3, 35),
    ("slow-comet", "Slow Comet", 4, 50),
    ("glass-harbour", "Glass Harbour", 5, 30),
    ("tin-parade", "Tin Parade", 6, 45),
]
OTHERS = [  # labelled non-music references, for the class vote: (label, class, seed, seconds)
    ("newsreader-a", "dialogue", 21, 30),
    ("newsreader-b", "dialogue", 22, 30),
    ("talk-over-music", "both", 23, 30),
]


def _other(klass: str, seed: int, seconds: float) -> "np.ndarray":
    from audioid import synth

    voice = synth.speech_like(seed, seconds, SR)
    return voice if klass == "dialogue" else synth.mix_at_snr(synth.music_track(seed, seconds, SR), voice, 0.0)


def _queries(songs: dict[str, "np.ndarray"]) -> list[tuple[str, str, "np.ndarray", int, int | None]]:
    """(file name, expected label or no_match, samples, sample rate, MP3 kbps or None) of each query."""
    import numpy as np

    from audioid import synth

    talk = synth.speech_like(7, 5.0, SR)

    def recording(label: str, seconds: float = 10.0) -> np.ndarray:
        return np.concatenate([talk, songs[label][-int(seconds * SR):]])

    def babble_over(y: np.ndarray, snr_db: float) -> np.ndarray:
        return synth.mix_at_snr(y, synth.babble(8, len(y) / SR, SR), snr_db)

    sped = synth.change_speed(songs["tin-parade"], SR, 1.02)
    seed, seconds = next((seed, seconds) for label, _, seed, seconds in SONGS if label == "paper-orchard")
    compressed = synth.music_track(seed, seconds / 1.03, SR, tempo=1.03)     # 3 % faster, pitch kept
    return [
        ("01-clean-outro.wav", "copper-lanterns", recording("copper-lanterns"), SR, None),
        ("02-pink-noise-5dB.mp3", "night-ferry",
         synth.mix_at_snr(recording("night-ferry"), synth.pink_noise(9, 15 * SR), 5.0), SR, 64),
        ("03-babble-over-3dB.wav", "paper-orchard", babble_over(recording("paper-orchard"), 3.0), SR, None),
        ("04-excerpt-3s.wav", "slow-comet", songs["slow-comet"][-3 * SR:], SR, None),
        ("05-telephone-8kHz.wav", "glass-harbour", _to_8k(synth.telephone_band(recording("glass-harbour"), SR)),
         8000, None),
        ("06-speed+2%-32kbps.mp3", "tin-parade", np.concatenate([talk, sped[-10 * SR:]]), SR, 32),
        ("07-unknown-song.wav", "no_match (music)", np.concatenate([talk, synth.music_track(99, 10.0, SR)]), SR,
         None),
        ("08-speech-only.wav", "no_match (dialogue)", synth.speech_like(11, 12.0, SR), SR, None),
        ("09-tempo+3%-64kbps.mp3", "paper-orchard", np.concatenate([talk, compressed[-10 * SR:]]), SR, 64),
    ]


def _to_8k(y):
    import soxr

    return soxr.resample(y, SR, 8000)


def run_demo(keep: str | None = None) -> bool:
    """Run the demo, print its table to stdout; True when every query came out as expected."""
    import soundfile as sf

    import audioid
    from audioid import synth

    t0 = time.monotonic()
    work = os.path.abspath(keep) if keep else tempfile.mkdtemp(prefix="audioid-demo-")
    refs, index, qdir = (os.path.join(work, d) for d in ("refs", "index", "queries"))
    try:
        for d in (refs, qdir):
            os.makedirs(d, exist_ok=True)
        songs = {}
        with open(os.path.join(refs, "manifest.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "title", "artist", "class", "seed"])
            for label, title, seed, seconds in SONGS:
                songs[label] = synth.music_track(seed, seconds, SR)
                sf.write(os.path.join(refs, f"{label}.flac"), songs[label], SR)
                w.writerow([f"{label}.flac", label, title, "audioid.synth", "music", seed])
            for label, klass, seed, seconds in OTHERS:
                sf.write(os.path.join(refs, f"{label}.flac"), _other(klass, seed, seconds), SR)
                w.writerow([f"{label}.flac", label, "", "audioid.synth", klass, seed])
        minutes = sum(s for *_, s in SONGS) / 60
        t1 = time.monotonic()
        report = audioid.build_index(os.path.join(refs, "manifest.csv"), index)
        click.echo(f"Synthesized {len(SONGS)} songs ({minutes:.1f} min) and {len(OTHERS)} speech references in "
                   f"{t1 - t0:.1f} s and indexed {len(report.added)} in {time.monotonic() - t1:.1f} s.")
        expected = {}
        for name, want, y, sr, kbps in _queries(songs):
            path = os.path.join(qdir, name)
            if kbps:
                synth.write_mp3(path, y, sr, kbps)
            else:
                sf.write(path, y, sr)
            expected[path] = want
        click.echo("Identifying the last 10 s of each recording (presenter talk, then a song's end, degraded):\n")
        table = TableWriter(sys.stdout, [
            Column("recording", lambda r: os.path.basename(r["path"]), 24),
            Column("expected", lambda r: r["expected"], 19),
            Column("status", lambda r: r["status"], 8),
            Column("label", lambda r: r["label"], 15),
            Column("score", lambda r: r["score"], 5, right=True),
            Column("conf", lambda r: f"{r['confidence']:.2f}", 4, right=True),
            Column("offset_s", lambda r: None if r["offset_s"] is None else f"{r['offset_s']:.2f}", 8, right=True),
            Column("speed", lambda r: None if r["speed"] is None else f"{r['speed']:.3f}", 5, right=True),
            Column("pitch", lambda r: None if r["pitch"] is None else f"{r['pitch']:.3f}", 5, right=True),
            Column("class", lambda r: r["class"], 8),
            Column("ok", lambda r: r["ok"], 3),
        ])
        good = 0
        for path, results in audioid.iter_identify(index, list(expected)):
            r = results[0].to_dict()
            got = r["label"] or f"{r['status']} ({r['class']})"
            ok = got == expected[path]
            good += ok
            table.write(dict(r, expected=expected[path], ok="yes" if ok else "NO"))
        click.echo(f"\n{good}/{len(expected)} as expected; whole demo took {time.monotonic() - t0:.1f} s.")
        if keep:
            click.echo(f"Kept in {work}: refs/ (songs + manifest.csv), index/, queries/. Try:\n"
                       f"  audioid identify --index {index} {qdir}\n"
                       f"  audioid index stats --index {index}")
        return good == len(expected)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
