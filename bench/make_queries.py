#!/usr/bin/env python3
"""Build a benchmark query set from any folder (or manifest) of music and speech.

For every reference excerpt (a random offset inside a random reference track) one query file per condition is
written, so conditions are paired: they differ only by the degradation.  Negatives are cuts of music that is not
in the reference set, cuts of real speech, and cuts of synthesized music (``unknown_synth``: equal-tempered tones
over drum patterns from :func:`audioid.synth.music_track`, a lattice of pitches and beats that real music shares
more with itself than noise does); by name, also unknown music under a louder voice (``unknown_speech_m6db``,
``unknown_speech_m12db``).  Everything is deterministic for a given ``--seed``.

Usage::

    python bench/make_queries.py ~/.cache/ml-audio-id/corpus/manifest.csv /tmp/bench-queries \
        --per-condition 100 --seed 1

Given a corpus manifest (``path,kind,source_package,...``), music is split by source package (≈ composer):
``--holdout`` of the tracks is set aside and not used at all (the team's own held-out check), ``--unknown-fraction``
becomes the unknown-music negatives, the rest are references.  Folders are split by their first sub-folder the
same way.  ``--unknown DIR`` takes the negatives from another folder instead.

Writes under OUT_DIR::

    queries/<condition>/NNNN.mp3   the queries
    truth.csv                      query_path,reference_path,condition[,details...] (empty reference: negative)
    references.csv                 path,label,title,artist,group: the reference set (an ``audioid`` manifest)
    unknown.csv, holdout.csv       path,group of the unknown-music pool and the held-out tracks
    split.csv                      path,group,role of every music file considered
    meta.json                      arguments, counts and groups of each role
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from typing import Callable, Sequence

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import NEGATIVE_CONDITIONS, is_corpus_manifest, read_corpus_manifest, write_truth  # noqa: E402

from audioid import synth  # noqa: E402
from audioid.index.sources import iter_audio_files, reference_specs  # noqa: E402

SPEED = 1.02                      # the speed_2pct condition
OUTPUT_RATES = (22050, 44100, 48000)
TELEPHONE_RATE = 8000
TELEPHONE_BITRATE_K = 64          # the highest MP3 bitrate at 8 kHz (MPEG-2.5)
MUSIC_FLOOR_DBFS = -45.0          # 100 ms frames quieter than this count as silence in a music cut
MIN_AUDIBLE = 0.9                 # fraction of non-silent frames a music cut needs
SPEECH_MIN_ACTIVE = 0.5           # fraction of active 20 ms frames a speech cut needs
OFFSET_TRIES = 30
SYNTH_SECONDS = 45.0              # length of the synthesized songs unknown_synth queries are cut from (at least)
SYNTH_RATE = 22050


# --------------------------------------------------------------------------------------------- sources and split

@dataclass(frozen=True)
class Source:
    """An audio file usable for cuts; ``group`` (package, composer or folder) keeps negatives held-out."""

    path: str
    group: str
    duration_s: float


def _duration(path: str) -> float:
    try:
        return float(sf.info(path).duration)
    except (sf.LibsndfileError, RuntimeError):
        return 0.0


def _folder_sources(folder: str) -> list[Source]:
    """Audio files under ``folder``, grouped by their first sub-folder (the folder's own name if flat)."""
    root = os.path.abspath(folder)
    out = []
    for p in iter_audio_files(root):
        parts = os.path.relpath(p, root).split(os.sep)
        group = parts[0] if len(parts) > 1 else os.path.basename(root)
        out.append(Source(os.path.abspath(p), group, _duration(p)))
    return out


def load_sources(arg: str, kind: str) -> list[Source]:
    """Music or speech sources from a folder, a corpus manifest (rows of ``kind``) or an ``audioid`` manifest.

    Corpus rows marked ``holdout`` in a ``split.csv`` beside the manifest are left out.
    """
    if os.path.isdir(arg):
        return _folder_sources(arg)
    if is_corpus_manifest(arg):
        split_csv = os.path.join(os.path.dirname(os.path.abspath(arg)), "split.csv")
        held = set()
        if os.path.exists(split_csv):
            held = {r["path"] for r in read_corpus_manifest(split_csv) if r.get("split") == "holdout"}
        return [Source(r["path"], r["source_package"], float(r.get("duration_s") or 0) or _duration(r["path"]))
                for r in read_corpus_manifest(arg, kind) if r["path"] not in held]
    specs = reference_specs(arg)
    return [Source(os.path.abspath(s.path), s.artist or os.path.basename(os.path.dirname(s.path)),
                   _duration(s.path)) for s in specs]


def default_speech(refs_arg: str) -> str | None:
    """Speech beside a corpus manifest: ``speech_passages.csv``, ``speech_passages/``, else the manifest itself."""
    if not is_corpus_manifest(refs_arg):
        return None
    base = os.path.dirname(os.path.abspath(refs_arg))
    for cand in ("speech_passages.csv", "speech_passages"):
        if os.path.exists(os.path.join(base, cand)):
            return os.path.join(base, cand)
    return refs_arg if read_corpus_manifest(refs_arg, "speech") else None


def split_by_group(sources: Sequence[Source], fractions: dict[str, float], rng: np.random.Generator
                   ) -> dict[str, list[Source]]:
    """Assign whole groups to roles so each role gets about its fraction of the files; the rest are references.

    Groups are visited in a seeded random order and a group joins a role only if that brings the role's size
    closer to its target.  With fewer groups than roles + 1, files are split one by one instead (then unknown
    music may share a composer with the references; a warning says so).
    """
    roles = [r for r, f in fractions.items() if f > 0]
    groups: dict[str, list[Source]] = {}
    for s in sources:
        groups.setdefault(s.group, []).append(s)
    if len(groups) < len(roles) + 1:
        if roles:
            print(f"warning: only {len(groups)} group(s); splitting {', '.join(roles)} by file, not by group",
                  file=sys.stderr)
        groups = {s.path: [s] for s in sources}
    names = sorted(groups)
    order = [names[i] for i in rng.permutation(len(names))]
    out: dict[str, list[Source]] = {r: [] for r in [*fractions, "reference"]}
    used: set[str] = set()
    for role in roles:
        target = fractions[role] * len(sources)
        for g in order:
            if g in used or len(used) == len(names) - 1:
                continue
            have = len(out[role])
            if abs(have + len(groups[g]) - target) < abs(have - target):
                out[role].extend(groups[g])
                used.add(g)
    for g in names:
        if g not in used:
            out["reference"].extend(groups[g])
    return out


# ------------------------------------------------------------------------------------------------- audio helpers

def read_cut(path: str, offset_s: float, seconds: float) -> tuple[np.ndarray, int]:
    """``seconds`` of ``path`` from ``offset_s`` as float32 ``(frames, channels)`` (at most two channels)."""
    with sf.SoundFile(path) as f:
        sr = f.samplerate
        f.seek(int(round(offset_s * sr)))
        x = f.read(int(round(seconds * sr)), dtype="float32", always_2d=True)
    if x.shape[1] > 2:
        x = x.mean(axis=1, keepdims=True)
    return x, sr


def frame_dbfs(x: np.ndarray, sr: int, frame_s: float) -> np.ndarray:
    """RMS level in dBFS of consecutive ``frame_s`` frames of ``x`` (channels pooled)."""
    n = max(1, int(sr * frame_s))
    m = len(x) // n
    if m == 0:
        return np.array([-120.0])
    p = np.mean(np.square(x[: m * n].reshape(m, n, -1), dtype=np.float64), axis=(1, 2))
    return 10 * np.log10(p + 1e-12)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def mix_rms(x: np.ndarray) -> float:
    """RMS of the mono mix of ``(frames, channels)`` audio: the level a mono matcher sees."""
    return rms(x.mean(axis=1))


def speech_level(x: np.ndarray, sr: int) -> tuple[float, float]:
    """Active speech level (RMS over 20 ms frames within 30 dB of the loudest) and the active fraction."""
    db = frame_dbfs(x, sr, 0.02)
    active = (db > db.max() - 30.0) & (db > -60.0)
    if not active.any():
        return 0.0, 0.0
    return float(np.sqrt(np.mean(10 ** (db[active] / 10)))), float(active.mean())


def pink_noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS mono pink (1/f power) noise from 20 Hz up, shaped in the frequency domain.

    Without the 20 Hz floor much of a 10 s pink noise's power would be inaudible infrasound.
    """
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec *= np.where(f >= 20.0, 1.0 / np.sqrt(np.maximum(f, 20.0)), 0.0)
    y = np.fft.irfft(spec, n=n)
    return (y / np.sqrt(np.mean(y ** 2))).astype(np.float32)


def as_channels(y: np.ndarray, channels: int) -> np.ndarray:
    """Mono ``(n,)`` or ``(n, 1)`` audio repeated to ``channels`` columns."""
    y = y.reshape(len(y), -1)
    return y if y.shape[1] == channels else np.repeat(y[:, :1], channels, axis=1)


def resample(x: np.ndarray, sr_in: float, sr_out: float) -> np.ndarray:
    if sr_in == sr_out:
        return x
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def encode_mp3(x: np.ndarray, sr: int, path: str, bitrate_k: int) -> None:
    """Write ``x`` (float32 ``(frames, channels)`` at ``sr``) as a CBR MP3 with ffmpeg/LAME, byte-reproducibly.

    Peaks above 0.99 are scaled down first (mixing can exceed full scale); the level is otherwise kept.
    """
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > 0.99:
        x = x * (0.99 / peak)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "f32le", "-ar", str(sr),
           "-ac", str(x.shape[1]), "-i", "pipe:0", "-c:a", "libmp3lame", "-b:a", f"{bitrate_k}k",
           "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact", path]
    proc = subprocess.run(cmd, input=x.tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed on {path}: {proc.stderr.decode(errors='replace').strip()}")


# ---------------------------------------------------------------------------------------------------- conditions

@dataclass
class Cut:
    """Material one query is made from: the music (long enough for the speed change) and optional speech."""

    music: np.ndarray            # (frames, channels) at sr
    sr: int
    seconds: float
    speech: np.ndarray | None = None   # mono, at sr, ``seconds`` long
    speech_rms: float = 0.0
    rng: np.random.Generator | None = None

    def head(self, seconds: float | None = None) -> np.ndarray:
        return self.music[: int(round((seconds or self.seconds) * self.sr))]


def _mix_speech(cut: Cut, music_to_speech_db: float) -> np.ndarray:
    m = cut.head()
    gain = mix_rms(m) / max(cut.speech_rms, 1e-9) * 10 ** (-music_to_speech_db / 20)
    return m + gain * as_channels(cut.speech[: len(m)], m.shape[1])


def _pink(cut: Cut, snr_db: float) -> np.ndarray:
    # Levels are those of the mono mix the matcher sees, and every channel gets the same noise (independent
    # noise per channel would lose 3 dB in the down-mix).
    m = cut.head()
    noise = pink_noise(len(m), cut.sr, cut.rng)
    return m + mix_rms(m) * 10 ** (-snr_db / 20) * as_channels(noise, m.shape[1])


def _telephone(cut: Cut) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    mono = cut.head().mean(axis=1)
    sos = butter(4, [300.0, 3400.0], btype="bandpass", fs=cut.sr, output="sos")
    return resample(sosfilt(sos, mono).astype(np.float32), cut.sr, TELEPHONE_RATE)


def _speed(cut: Cut, speed: float) -> np.ndarray:
    # Read the samples as if recorded at sr * speed and bring them back to sr: pitch and tempo rise together.
    return resample(cut.music, cut.sr * speed, cut.sr)[: int(round(cut.seconds * cut.sr))]


def _per_channel(y: np.ndarray, sr: int, process: Callable[..., np.ndarray], **kw) -> np.ndarray:
    return np.stack([process(y[:, ch], sr, **kw) for ch in range(y.shape[1])], axis=1)


def _tempo(cut: Cut, rate: float) -> np.ndarray:
    # Tempo alone, pitch kept (a broadcast's time compression): librosa's phase vocoder, channels first.
    import librosa

    y = librosa.effects.time_stretch(np.ascontiguousarray(cut.music.T), rate=rate).T
    return y[: int(round(cut.seconds * cut.sr))]


@dataclass(frozen=True)
class Condition:
    """A query degradation: ``render`` maps a cut to samples at the cut's rate (or at ``fixed_rate``)."""

    name: str
    render: Callable[[Cut], np.ndarray]
    bitrate_k: int = 128
    fixed_rate: int | None = None
    speed: float = 1.0            # reference seconds per query second
    needs_speech: bool = False
    default: bool = True          # in a set made without --conditions


CONDITIONS: dict[str, Condition] = {c.name: c for c in [
    Condition("clean", lambda c: c.head()),
    Condition("mp3_32k", lambda c: c.head(), bitrate_k=32),
    Condition("pink_10db", lambda c: _pink(c, 10.0)),
    Condition("pink_0db", lambda c: _pink(c, 0.0)),
    Condition("speech_0db", lambda c: _mix_speech(c, 0.0), needs_speech=True),
    Condition("speech_m6db", lambda c: _mix_speech(c, -6.0), needs_speech=True),
    Condition("telephone", _telephone, bitrate_k=TELEPHONE_BITRATE_K, fixed_rate=TELEPHONE_RATE),
    Condition("excerpt_3s", lambda c: c.head(3.0)),
    Condition("speed_2pct", lambda c: _speed(c, SPEED), speed=SPEED),
    # Beyond the list, asked for by name only: tempo changes without a pitch change, ...
    Condition("tempo_m3pct", lambda c: _tempo(c, 0.97), speed=0.97, default=False),
    Condition("tempo_p2pct", lambda c: _tempo(c, 1.02), speed=1.02, default=False),
    Condition("tempo_p4pct", lambda c: _tempo(c, 1.04), speed=1.04, default=False),
    # ... a station's air chain (EQ, multiband compression, clipping), on the music and on a voice over it, a
    # music bed ducked 12 dB under the voice, and a fade-out over the last 4 s.
    Condition("broadcast", lambda c: _per_channel(c.head(), c.sr, synth.air_chain), default=False),
    Condition("broadcast_speech_m6db", lambda c: _per_channel(_mix_speech(c, -6.0), c.sr, synth.air_chain),
              needs_speech=True, default=False),
    Condition("speech_m12db", lambda c: _mix_speech(c, -12.0), needs_speech=True, default=False),
    Condition("fadeout", lambda c: _per_channel(c.head(), c.sr, synth.fade_out, seconds=4.0), default=False),
]}


def _stretch(conditions: Sequence[str]) -> float:
    """Seconds of music a positive cut reads per query second: at least ``SPEED``'s, so that sets made before the
    tempo conditions existed come out the same for a given seed."""
    return max([SPEED, *(CONDITIONS[c].speed for c in conditions)])


#: Negatives by name only: unknown music under a voice this many dB louder (music-to-speech), as a host talks
#: over a bed that is in no index; the check of weak candidates looks for music among a voice's partials, so
#: these are where a false match would show first.
UNKNOWN_UNDER_SPEECH = {"unknown_speech_m6db": -6.0, "unknown_speech_m12db": -12.0}

#: What a set holds when --conditions is not given: the issue's conditions and the plain negatives.
DEFAULT_CONDITIONS = (*[name for name, c in CONDITIONS.items() if c.default],
                      *[c for c in NEGATIVE_CONDITIONS if c not in UNKNOWN_UNDER_SPEECH])


# ------------------------------------------------------------------------------------------------------- planning

def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys`` (not on job order or worker)."""
    return np.random.default_rng([seed, *(k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys)])


def pick_music_cut(src: Source, seconds: float, rng: np.random.Generator) -> tuple[float, np.ndarray, int]:
    """A seeded random cut of ``src`` that is not mostly silence (the best of a few tries otherwise)."""
    best: tuple[float, float, np.ndarray, int] | None = None
    for _ in range(OFFSET_TRIES):
        offset = float(rng.uniform(0.0, max(0.0, src.duration_s - seconds - 0.5)))
        x, sr = read_cut(src.path, offset, seconds)
        if len(x) < int(seconds * sr) - 1:
            continue
        audible = float(np.mean(frame_dbfs(x, sr, 0.1) > MUSIC_FLOOR_DBFS))
        if best is None or audible > best[0]:
            best = (audible, offset, x, sr)
        if audible >= MIN_AUDIBLE:
            break
    if best is None:
        raise RuntimeError(f"{src.path}: could not read {seconds:.1f} s from it")
    return best[1], best[2], best[3]


def pick_speech_cut(sources: Sequence[Source], seconds: float, sr: int, rng: np.random.Generator
                    ) -> tuple[str, float, np.ndarray, float]:
    """A seeded random ``seconds`` of mostly active speech, mono at ``sr``; short files are chained.

    Returns ``(path, offset_s, samples, active_level)``; ``path`` is the first file used.
    """
    long_enough = [s for s in sources if s.duration_s >= seconds + 0.5]
    pool = long_enough or list(sources)
    best = None
    for _ in range(OFFSET_TRIES):
        src = pool[int(rng.integers(len(pool)))]
        offset = float(rng.uniform(0.0, max(0.0, src.duration_s - seconds - 0.2)))
        x, ssr = read_cut(src.path, offset, seconds)
        parts, have = [x.mean(axis=1)], len(x) / ssr
        while have < seconds:                   # chain prompts of the same group until long enough
            same = [s for s in sources if s.group == src.group] or list(sources)
            y, ysr = read_cut(same[int(rng.integers(len(same)))].path, 0.0, seconds - have)
            if len(y) == 0:
                break
            parts.append(resample(y.mean(axis=1), ysr, ssr))
            have += len(y) / ysr
        n = int(round(seconds * sr))
        y = resample(np.concatenate(parts), ssr, sr)[:n]
        y = np.pad(y, (0, n - len(y)))
        level, active = speech_level(y, sr)
        if best is None or active > best[4]:
            best = (src.path, offset, y, level, active)
        if active >= SPEECH_MIN_ACTIVE:
            break
    return best[0], best[1], best[2], best[3]


@dataclass(frozen=True)
class Job:
    """Everything one worker needs to write the queries of one cut."""

    kind: str                   # "positive" or a negative condition name
    index: int
    source: Source | None
    conditions: tuple[str, ...]
    out_dir: str
    seconds: float
    seed: int
    speech: tuple[Source, ...] = ()


def _out_rate(seed: int, condition: str, index: int) -> int:
    """A seeded choice among 22.05/44.1/48 kHz, so that decoders and resamplers see varied rates."""
    return int(OUTPUT_RATES[int(_rng(seed, "rate", condition, index).integers(len(OUTPUT_RATES)))])


def _write(job: Job, condition: str, y: np.ndarray, sr: int, bitrate_k: int, fixed_rate: int | None) -> dict:
    out_sr = fixed_rate or _out_rate(job.seed, condition, job.index)
    y = resample(y, sr, out_sr) if fixed_rate is None else y
    y = y.reshape(len(y), -1)
    path = os.path.join(job.out_dir, "queries", condition, f"{job.index:04d}.mp3")
    encode_mp3(y, out_sr, path, bitrate_k)
    return {"query_path": path, "condition": condition, "sample_rate": out_sr, "channels": y.shape[1],
            "bitrate_k": bitrate_k, "duration_s": round(len(y) / out_sr, 3)}


def _add_speech(cut: Cut, job: Job, rng: np.random.Generator) -> dict:
    """Give ``cut`` a seeded speech cut at its rate; returns the truth columns that say which."""
    path, offset, cut.speech, cut.speech_rms = pick_speech_cut(job.speech, job.seconds, cut.sr, rng)
    return {"speech_path": path, "speech_offset_s": round(offset, 3)}


def run_job(job: Job) -> list[dict]:
    """Write the queries of one cut; returns their truth rows."""
    rng = _rng(job.seed, job.kind, job.index)
    if job.kind == "speech_only":
        path, off, y, _ = pick_speech_cut(job.speech, job.seconds, 16000, rng)
        row = _write(job, "speech_only", y, 16000, 128, None)
        return [dict(row, reference_path="", source_path=path, source_offset_s=round(off, 3))]
    if job.kind == "unknown_synth":
        song_seed = int(rng.integers(1 << 31))
        song_s = max(SYNTH_SECONDS, job.seconds)
        offset = float(rng.uniform(0.0, song_s - job.seconds))
        start = int(round(offset * SYNTH_RATE))
        y = synth.music_track(song_seed, song_s, SYNTH_RATE)[start: start + int(round(job.seconds * SYNTH_RATE))]
        row = _write(job, "unknown_synth", y, SYNTH_RATE, 128, None)
        return [dict(row, reference_path="", source_path=f"audioid.synth.music_track(seed={song_seed})",
                     source_offset_s=round(offset, 3))]
    need = job.seconds * (_stretch(job.conditions) if job.kind == "positive" else 1.0) + 0.05
    offset, music, sr = pick_music_cut(job.source, need, rng)
    cut = Cut(music=music, sr=sr, seconds=job.seconds)
    if job.kind == "unknown_music":
        row = _write(job, job.kind, cut.head(), sr, 128, None)
        return [dict(row, reference_path="", source_path=job.source.path, source_offset_s=round(offset, 3),
                     group=job.source.group)]
    if job.kind in UNKNOWN_UNDER_SPEECH:
        speech_info = _add_speech(cut, job, rng)
        row = _write(job, job.kind, _mix_speech(cut, UNKNOWN_UNDER_SPEECH[job.kind]), sr, 128, None)
        return [dict(row, reference_path="", source_path=job.source.path, source_offset_s=round(offset, 3),
                     group=job.source.group, **speech_info)]
    speech_info = _add_speech(cut, job, rng) if any(CONDITIONS[c].needs_speech for c in job.conditions) else {}
    rows = []
    for name in job.conditions:
        cond = CONDITIONS[name]
        cut.rng = _rng(job.seed, "noise", name, job.index)
        row = _write(job, name, cond.render(cut), sr, cond.bitrate_k, cond.fixed_rate)
        rows.append(dict(row, reference_path=job.source.path, source_path=job.source.path,
                         source_offset_s=round(offset, 3), ref_offset_s=round(offset, 3), speed=cond.speed,
                         group=job.source.group, **(speech_info if cond.needs_speech else {})))
    return rows


# -------------------------------------------------------------------------------------------------------- main

EXTRA_FIELDS = ("ref_offset_s", "speed", "sample_rate", "channels", "bitrate_k", "duration_s", "group",
                "source_path", "source_offset_s", "speech_path", "speech_offset_s")


def _write_list(path: str, sources: Sequence[Source]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "group", "duration_s"])
        for s in sources:
            w.writerow([s.path, s.group, f"{s.duration_s:.3f}"])


def _write_references(path: str, refs: Sequence[Source]) -> None:
    """An ``audioid`` manifest of the references (absolute paths; label ``group/stem``)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "title", "artist", "group", "duration_s"])
        for s in refs:
            stem = os.path.splitext(os.path.basename(s.path))[0]
            w.writerow([s.path, f"{s.group}/{stem}", stem, s.group, s.group, f"{s.duration_s:.3f}"])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("refs", help="music: folder, corpus manifest.csv or audioid manifest (path,label,...)")
    ap.add_argument("out_dir", help="where queries/, truth.csv and references.csv are written")
    ap.add_argument("--speech", help="speech folder or manifest (default: the corpus' speech passages)")
    ap.add_argument("--unknown", help="folder of music not in the references (default: held-out groups of REFS)")
    ap.add_argument("--per-condition", type=int, default=50, help="queries per condition (default 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--query-seconds", type=float, default=10.0)
    ap.add_argument("--conditions", default=",".join(DEFAULT_CONDITIONS),
                    help="comma-separated subset of: " + ", ".join([*CONDITIONS, *NEGATIVE_CONDITIONS])
                    + " [default: all but " + ", ".join(c for c in [*CONDITIONS, *NEGATIVE_CONDITIONS]
                                                        if c not in DEFAULT_CONDITIONS) + "]")
    ap.add_argument("--unknown-fraction", type=float, default=0.2,
                    help="share of REFS music (whole groups) used as unknown music when --unknown is not given")
    ap.add_argument("--holdout", type=float, default=0.15,
                    help="share of REFS music (whole groups) set aside, used neither as reference nor unknown")
    ap.add_argument("--max-refs", type=int, default=0, help="keep at most this many references (0 = all)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    unknown = [c for c in args.conditions.split(",") if c and c not in CONDITIONS and c not in NEGATIVE_CONDITIONS]
    if unknown:
        ap.error(f"unknown condition(s): {', '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    conditions = [c for c in args.conditions.split(",") if c]
    positives = tuple(c for c in conditions if c in CONDITIONS)
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    seed = args.seed

    music = [s for s in load_sources(args.refs, "music")
             if s.duration_s > args.query_seconds * _stretch(positives) + 1]
    fractions = {"holdout": args.holdout, "unknown": 0.0 if args.unknown else args.unknown_fraction}
    roles = split_by_group(music, fractions, _rng(seed, "split"))
    refs = roles["reference"]
    if args.max_refs and len(refs) > args.max_refs:
        keep = set(_rng(seed, "max-refs").choice(len(refs), args.max_refs, replace=False).tolist())
        refs = [s for i, s in enumerate(refs) if i in keep]
    unknown = load_sources(args.unknown, "music") if args.unknown else roles["unknown"]
    unknown = [s for s in unknown if s.duration_s > args.query_seconds + 1]
    speech_arg = args.speech or default_speech(args.refs)
    speech = tuple(load_sources(speech_arg, "speech")) if speech_arg else ()
    speech = tuple(s for s in speech if s.duration_s > 0)
    if not refs:
        sys.exit("error: no reference music left after the split")
    under_speech = [c for c in conditions if c in UNKNOWN_UNDER_SPEECH]
    needs_speech = ("speech_only" in conditions or bool(under_speech)
                    or any(CONDITIONS[c].needs_speech for c in positives))
    if needs_speech and not speech:
        sys.exit("error: speech conditions asked for but no speech found (use --speech)")
    if ("unknown_music" in conditions or under_speech) and not unknown:
        sys.exit("error: unknown music asked for but there is none (use --unknown or --unknown-fraction)")

    n = args.per_condition
    common = dict(out_dir=out_dir, seconds=args.query_seconds, seed=seed, speech=speech)
    ref_order = _rng(seed, "refs").permutation(len(refs))
    unk_order = _rng(seed, "unknown").permutation(len(unknown)) if unknown else []
    jobs = []
    if positives:
        jobs += [Job("positive", i, refs[ref_order[i % len(refs)]], positives, **common) for i in range(n)]
    for kind in [c for c in conditions if c == "unknown_music" or c in UNKNOWN_UNDER_SPEECH]:
        jobs += [Job(kind, i, unknown[unk_order[i % len(unknown)]], (), **common) for i in range(n)]
    for kind in ("speech_only", "unknown_synth"):
        if kind in conditions:
            jobs += [Job(kind, i, None, (), **common) for i in range(n)]

    rows: list[dict] = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for k, job_rows in enumerate(pool.map(run_job, jobs, chunksize=1), 1):
            rows.extend(job_rows)
            if k % 25 == 0 or k == len(jobs):
                print(f"\r{k}/{len(jobs)} cuts, {len(rows)} queries", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    order = {c: i for i, c in enumerate(conditions)}
    rows.sort(key=lambda r: (order[r["condition"]], r["query_path"]))
    write_truth(os.path.join(out_dir, "truth.csv"), rows, EXTRA_FIELDS)
    _write_references(os.path.join(out_dir, "references.csv"), refs)
    _write_list(os.path.join(out_dir, "unknown.csv"), unknown)
    _write_list(os.path.join(out_dir, "holdout.csv"), roles["holdout"])
    with open(os.path.join(out_dir, "split.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "group", "role"])
        ref_paths = {s.path for s in refs}
        for role, srcs in roles.items():
            for s in srcs:
                w.writerow([s.path, s.group, role if role != "reference" or s.path in ref_paths else "unused"])
    meta = {
        "args": vars(args), "speech_source": speech_arg,
        "counts": {"references": len(refs), "reference_hours": round(sum(s.duration_s for s in refs) / 3600, 3),
                   "unknown_pool": len(unknown), "holdout": len(roles["holdout"]), "speech_files": len(speech),
                   "queries": len(rows), "per_condition": {c: sum(r["condition"] == c for r in rows)
                                                           for c in conditions}},
        "groups": {role: sorted({s.group for s in srcs}) for role, srcs in
                   [("reference", refs), ("unknown", unknown), ("holdout", roles["holdout"])]},
        "conditions": {c: {f.name: getattr(CONDITIONS[c], f.name) for f in fields(Condition) if f.name != "render"}
                       for c in positives},
    }
    with open(os.path.join(out_dir, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    c = meta["counts"]
    print(f"{c['queries']} queries in {out_dir}/queries; {c['references']} references "
          f"({c['reference_hours']} h, groups: {', '.join(meta['groups']['reference'])}); "
          f"unknown pool {c['unknown_pool']} ({', '.join(meta['groups']['unknown'])}); "
          f"holdout {c['holdout']} ({', '.join(meta['groups']['holdout'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
