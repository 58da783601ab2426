"""Decoding tests on real files made here (numpy/soundfile, and ffmpeg when installed).

Reference decodes come from ffmpeg (an independent MP3/AAC decoder) where available; tails are checked sample
by sample against full decodes, end-aligned.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
import warnings

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioid import synth
from audioid.fingerprint import decode as dec
from audioid.fingerprint.audio import Audio, AudioError, chunks_from_end, load, trailing_silence
from audioid.fingerprint.decode import decode

FFMPEG = shutil.which("ffmpeg") and shutil.which("ffprobe")
needs_ffmpeg = pytest.mark.skipif(not FFMPEG, reason="ffmpeg not installed")


# ------------------------------------------------------------------------------------------------ helpers

def signal(sr: int, seconds: float, channels: int = 1, seed: int = 0, loud_start: float = 0.0) -> np.ndarray:
    """A chord plus noise bursts, different per channel: (frames, channels) float32.

    The bursts make a VBR encoder change bitrate.  A loud noisy start makes the first frames big: mpg123
    estimates a headerless file's length from the first frame's bitrate, so libsndfile then stops early.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(sr * seconds))) / sr
    out = np.empty((len(t), channels), np.float32)
    for c in range(channels):
        f0 = 220.0 * (1 + c / 4)
        chord = sum(np.sin(2 * np.pi * f0 * k * t + c) for k in (1, 1.25, 1.5)) / 3
        bursts = rng.standard_normal(len(t)) * (np.sin(2 * np.pi * (0.3 + 0.1 * c) * t) > 0.3)
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 0.05 * t + c)
        out[:, c] = 0.35 * chord * env + 0.12 * bursts
    n = int(loud_start * sr)
    out[:n] = 0.5 * rng.standard_normal((n, channels))
    if n:
        out[n:] *= 0.3
    return out


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def ffmpeg_decode(path) -> tuple[np.ndarray, int]:
    """Full decode by ffmpeg at the native rate: (frames, channels) float32, rate."""
    meta = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                           "stream=sample_rate,channels", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True).stdout.strip().split(",")
    rate, ch = int(meta[0]), int(meta[1])
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32).reshape(-1, ch), rate


def best_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 3000) -> tuple[int, float]:
    """Lag of ``a`` against ``b`` (same length, mono) with the highest normalised correlation, and that value."""
    n = len(a)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    xc = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    lags = np.r_[0:max_lag + 1, -max_lag:0]
    vals = xc[lags]
    i = int(np.argmax(vals))
    return int(lags[i]), float(vals[i] / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def assert_end_aligned(tail: np.ndarray, ref: np.ndarray, atol: float = 1e-4) -> None:
    """``tail`` is exactly the end of ``ref`` (two decoders: tiny float differences allowed)."""
    n = len(tail)
    assert len(ref) >= n
    end = ref[-n:]
    lag, corr = best_lag(tail.mean(axis=1), end.mean(axis=1))
    assert lag == 0 and corr > 0.9999, (lag, corr)
    assert np.abs(tail - end).max() < atol


def mp3_frames_without_xing(path, out) -> None:
    """Copy an MP3 with its Xing/Info frame removed (a headerless stream, as ffmpeg writes to a pipe)."""
    data = Path(path).read_bytes()
    with open(path, "rb") as f:
        start = dec._id3v2_end(f)
    n = dec._header_length(data[start], data[start + 1], data[start + 2])
    Path(out).write_bytes(data[:start] + data[start + n:])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Shared fixture files (made once)."""
    d = tmp_path_factory.mktemp("audio")
    out = {}
    y = signal(44100, 30, 2)
    out["wav"] = d / "a.wav"
    sf.write(out["wav"], y, 44100, subtype="PCM_16")
    out["flac"] = d / "a.flac"
    sf.write(out["flac"], y, 44100)
    for name, fmt, sub, rate in (("ogg", "OGG", "VORBIS", 44100), ("opus", "OGG", "OPUS", 48000),
                                 ("mp3", "MP3", "MPEG_LAYER_III", 44100)):
        out[name] = d / f"a.{name}"
        # libsndfile's Vorbis encoder crashes on very large single writes: write in blocks
        yy = y if rate == 44100 else signal(rate, 30, 2)
        with sf.SoundFile(out[name], "w", rate, 2, format=fmt, subtype=sub) as f:
            for i in range(0, len(yy), 8192):
                f.write(yy[i:i + 8192])
    # libsndfile writes VBR MP3 with a Xing header; without it the trap appears (no ffmpeg needed)
    vbr = d / "sf_vbr.mp3"
    with sf.SoundFile(vbr, "w", 44100, 1, format="MP3", subtype="MPEG_LAYER_III", compression_level=0.3,
                      bitrate_mode="VARIABLE") as f:
        src = signal(44100, 90, 1, seed=3, loud_start=3.0)
        for i in range(0, len(src), 8192):
            f.write(src[i:i + 8192])
    out["sf_vbr_xing"] = vbr
    out["sf_vbr_nox"] = d / "sf_vbr_nox.mp3"
    mp3_frames_without_xing(vbr, out["sf_vbr_nox"])
    out["sf_vbr_src"] = src
    out["dir"] = d
    return out


# ------------------------------------------------------------------------------------------------ formats

@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "opus", "mp3"])
def test_formats_full_and_tail(files, fmt):
    full = load(files[fmt], 8000)
    assert isinstance(full, Audio) and full.sample_rate == 8000 and full.samples.dtype == np.float32
    assert full.samples.ndim == 1 and full.start_s == 0.0
    assert abs(full.duration_s - 30.0) < 0.1
    assert abs(len(full.samples) - full.duration_s * 8000) <= 2
    assert 0.05 < np.sqrt(np.mean(full.samples ** 2)) < 0.5
    tail = load(files[fmt], 8000, tail_seconds=7.5)
    assert len(tail.samples) == 60000
    assert tail.duration_s == full.duration_s
    assert abs(tail.start_s + 7.5 - full.duration_s) < 0.002
    i = round(tail.start_s * 8000)
    assert abs(tail.start_s * 8000 - i) < 1e-6  # on the sample grid of the full read
    np.testing.assert_allclose(tail.samples, full.samples[i:i + len(tail.samples)], atol=2e-5)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("channels,fmt", [(1, "wav"), (2, "flac"), (6, "wav"), (3, "flac")])
def test_rates_and_channels(tmp_path, rate, channels, fmt):
    y = signal(rate, 4.0, channels, seed=rate + channels)
    p = tmp_path / f"x.{fmt}"
    sf.write(p, y, rate, subtype="FLOAT" if fmt == "wav" else "PCM_24")
    d = decode(p)
    assert d.sample_rate == rate and d.data.shape == (len(y), channels) and d.total_frames == len(y)
    full = load(p, 16000)
    assert abs(full.duration_s - 4.0) < 1e-9
    if rate == 16000:
        np.testing.assert_allclose(full.samples, y.mean(axis=1), atol=1e-4 if fmt == "flac" else 1e-6)
    tail = load(p, 16000, tail_seconds=1.0)
    assert len(tail.samples) == 16000 and abs(tail.start_s - 3.0) < 1e-3
    i = round(tail.start_s * 16000)
    np.testing.assert_allclose(tail.samples, full.samples[i:i + 16000], atol=2e-5)


@pytest.mark.parametrize("fmt", ["mp3", "flac"])
def test_native_rate_load_keeps_the_file_rate(files, fmt):
    full = load(files[fmt], None)
    d = decode(files[fmt])
    assert full.sample_rate == d.sample_rate and len(full.samples) == len(d.data)
    np.testing.assert_allclose(full.samples, d.data.mean(axis=1), atol=1e-6)
    tail = load(files[fmt], None, tail_seconds=2.5)
    assert tail.sample_rate == d.sample_rate and len(tail.samples) == round(2.5 * d.sample_rate)
    i = round(tail.start_s * d.sample_rate)
    np.testing.assert_allclose(tail.samples, full.samples[i:i + len(tail.samples)], atol=2e-5)
    with pytest.raises(ValueError, match="sample_rate must be positive"):
        load(files[fmt], 0)


def test_tail_longer_than_file_gives_whole_file(files):
    a = load(files["flac"], 8000, tail_seconds=1000)
    assert a.start_s == 0.0 and abs(len(a.samples) / 8000 - 30.0) < 0.01


def test_nan_inf_float_wav_is_sanitised(tmp_path):
    y = signal(8000, 2.0, 2)
    y[100:200] = np.nan
    y[300, 1] = np.inf
    y[400, 0] = -np.inf
    y[500] = 3e38  # finite, but the channel mean overflows float32
    p = tmp_path / "nan.wav"
    sf.write(p, y, 8000, subtype="FLOAT")
    for a in (load(p, 8000), load(p, 8000, tail_seconds=1.95)):
        assert np.isfinite(a.samples).all()
    assert load(p, 8000).samples[150] == 0.0


# ------------------------------------------------------------------------------------------------ MP3

def test_headerless_vbr_mp3_without_ffmpeg(files, monkeypatch):
    """libsndfile truncates a VBR MP3 without Xing header; we must not (no ffmpeg involved)."""
    monkeypatch.setattr(dec, "_tools", lambda: (None, None))
    nox, xing = files["sf_vbr_nox"], files["sf_vbr_xing"]
    assert sf.info(nox).frames < 0.8 * sf.info(xing).frames  # the trap is there
    full = decode(nox)
    ref = decode(xing)
    # same frames: the headerless timeline keeps the 1105-sample encoder+decoder delay the Xing one drops
    assert full.total_frames == len(full.data)
    assert abs(full.total_frames - (ref.total_frames + 1105)) <= 1152 * 2
    tail = decode(nox, 12.0)
    assert tail.total_frames == full.total_frames
    assert len(tail.data) == 12 * 44100
    np.testing.assert_allclose(tail.data, full.data[tail.start_frame:], rtol=0, atol=3e-7)  # = a full decode
    # and the real end, not the middle: the Xing twin's decode ends (pad - 529) samples earlier, its LAME tag says
    head = xing.read_bytes()[:1000]
    lame = head.find(b"LAME")
    d0, d1, d2 = head[lame + 21:lame + 24]
    end_trim = (((d1 & 0x0F) << 8) | d2) - 529
    assert_end_aligned(tail.data[:len(tail.data) - end_trim], ref.data, atol=1e-3)
    a = load(nox, 8000, tail_seconds=12.0)
    # the tail sits on the 8 kHz grid of a full read, so it ends within one sample of the file's end
    assert abs(a.duration_s - 90.0) < 0.1 and abs(a.start_s + 12.0 - a.duration_s) < 1 / 8000


def test_mp3_tail_is_bit_identical_to_full_decode(files):
    for key in ("mp3", "sf_vbr_xing"):
        full = decode(files[key])
        for tail_s in (0.5, 5.0, 29.0):
            t = decode(files[key], tail_s)
            assert t.total_frames == full.total_frames
            # identical but for an occasional last-bit rounding difference in mpg123's synthesis
            np.testing.assert_allclose(t.data, full.data[t.start_frame:], rtol=0, atol=3e-7)


def test_trailing_silence_counts_the_quiet_frames_at_the_end():
    sr = 8000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr).astype(np.float32)
    dither = np.random.default_rng(0).uniform(-1e-4, 1e-4, 2 * sr).astype(np.float32)   # -80 dBFS
    assert trailing_silence(tone, sr) == 0.0
    assert trailing_silence(np.concatenate([tone, dither]), sr) == pytest.approx(2.0, abs=0.05)
    assert trailing_silence(np.concatenate([tone[:7], np.zeros(sr, np.float32)]), sr) == pytest.approx(1.0, abs=0.05)
    assert trailing_silence(dither, sr) == 2.0 and trailing_silence(np.zeros(0, np.float32), sr) == 0.0
    # -50 dBFS hiss is sound, not silence
    assert trailing_silence(np.concatenate([tone, 10 * dither + 3e-3]), sr) == 0.0


def test_mp3_decodes_to_the_same_samples_on_two_cores(files, tmp_path):
    """With a second core lent, an MP3 decodes as two halves at once; the joined halves are the one-core
    samples, for a tail and for a short file read whole, with a trusted, a missing or a synthetic Xing header."""
    from contextlib import contextmanager

    from audioid.index.parallel import on_spare_core

    lent = []

    @contextmanager
    def helper(fn, *args):
        lent.append(args)
        with on_spare_core(fn, *args) as result:
            yield result

    mpeg2 = tmp_path / "mpeg2.mp3"
    synth.write_mp3(mpeg2, signal(22050, 12.0, 1, seed=5), 22050, 32)
    for path in (files["mp3"], files["sf_vbr_xing"], files["sf_vbr_nox"], mpeg2):
        for tail_s in (10.0, 200.0, None):
            one = decode(path, tail_s)
            lent.clear()
            two = decode(path, tail_s, helper=helper)
            assert lent or tail_s is None, f"{path.name} {tail_s}: not split"
            assert (two.sample_rate, two.start_frame, two.total_frames) == \
                (one.sample_rate, one.start_frame, one.total_frames)
            np.testing.assert_allclose(two.data, one.data, rtol=0, atol=3e-7)
    # Where anonymous in-memory files are not to be had, the chunks are read from memory all the same.
    def refused(*_args):
        raise OSError(38, "Function not implemented")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "memfd_create", refused, raising=False)
        np.testing.assert_array_equal(decode(files["mp3"], 10.0, helper=helper).data, decode(files["mp3"], 10.0).data)
    # A file too short to be worth splitting decodes on one core.
    short = tmp_path / "short.mp3"
    synth.write_mp3(short, signal(44100, 2.0, 2, seed=6), 44100, 128)
    lent.clear()
    np.testing.assert_array_equal(decode(short, 10.0, helper=helper).data, decode(short, 10.0).data)
    assert not lent


@needs_ffmpeg
@pytest.mark.parametrize("rate,opts", [
    (8000, ["-b:a", "16k"]), (8000, ["-q:a", "7", "-write_xing", "0"]),
    (22050, ["-q:a", "5", "-write_xing", "0"]), (22050, ["-b:a", "48k", "-write_xing", "0"]),
    (44100, ["-b:a", "128k"]), (44100, ["-q:a", "4"]), (48000, ["-q:a", "2", "-write_xing", "0"]),
    (32000, ["-b:a", "64k", "-write_xing", "0"]),
])
def test_mp3_by_ffmpeg_matches_ffmpeg_decode(tmp_path, rate, opts):
    y = signal(rate, 25.0, 2, seed=rate, loud_start=1.5)
    src = tmp_path / "src.wav"
    sf.write(src, y, rate, subtype="PCM_16")
    p = tmp_path / "x.mp3"
    ffmpeg("-i", str(src), "-c:a", "libmp3lame", *opts, str(p))
    ref, ref_rate = ffmpeg_decode(p)
    full = decode(p)
    assert full.sample_rate == ref_rate == rate
    assert full.total_frames == len(ref)  # the exact length, with or without a Xing header
    tail = decode(p, 6.0)
    assert tail.total_frames == len(ref) and len(tail.data) == 6 * rate
    assert_end_aligned(tail.data, ref)
    np.testing.assert_allclose(tail.data, full.data[tail.start_frame:], rtol=0, atol=3e-7)


@needs_ffmpeg
def test_headerless_vbr_trap_ffmpeg_made(tmp_path):
    """The case from the notes: ffmpeg VBR with -write_xing 0; libsndfile reads a fraction of it."""
    y = signal(44100, 120.0, 1, seed=7, loud_start=4.0)
    src = tmp_path / "src.wav"
    sf.write(src, y, 44100, subtype="PCM_16")
    p = tmp_path / "vbr_nox.mp3"
    ffmpeg("-i", str(src), "-c:a", "libmp3lame", "-q:a", "4", "-write_xing", "0", str(p))
    ref, _ = ffmpeg_decode(p)
    assert sf.info(p).frames < 0.7 * len(ref)  # libsndfile's estimate: the trap
    a = decode(p, 10.0)
    assert a.total_frames == len(ref)
    assert_end_aligned(a.data, ref)
    assert decode(p).total_frames == len(ref)


@needs_ffmpeg
def test_long_mp3_tail_is_fast_and_right(tmp_path):
    """60 minutes of headerless VBR MP3 (an ffmpeg-made minute, repeated): only the end is decoded."""
    piece = tmp_path / "piece.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=60:sample_rate=8000", "-f", "lavfi",
           "-i", "anoisesrc=d=60:r=8000:a=0.1:seed=1", "-filter_complex", "amix", "-ac", "1",
           "-c:a", "libmp3lame", "-q:a", "6", "-write_xing", "0", "-id3v2_version", "0", str(piece))
    long = tmp_path / "long.mp3"
    long.write_bytes(piece.read_bytes() * 60)  # MP3 frames concatenate; each piece starts a fresh reservoir
    ref, _ = ffmpeg_decode(piece)
    t0 = time.perf_counter()
    a = load(long, 8000, tail_seconds=10.0)
    took = time.perf_counter() - t0
    t0 = time.perf_counter()
    d = decode(long, 10.0)
    took_decode = time.perf_counter() - t0
    print(f"\n60-min headerless VBR MP3: load tail {took * 1000:.1f} ms, decode tail {took_decode * 1000:.1f} ms")
    assert d.total_frames == 60 * len(ref)
    assert abs(a.duration_s - 60 * len(ref) / 8000) < 1e-9
    assert abs(a.start_s + 10.0 - a.duration_s) < 1 / 8000
    assert_end_aligned(d.data, ref)
    xing = tmp_path / "long_xing.mp3"
    ffmpeg("-stream_loop", "59", "-i", str(piece), "-c", "copy", str(xing))  # ffmpeg writes a Xing header
    b = decode(xing, 10.0)
    assert abs(b.total_frames / 8000 - d.total_frames / 8000) < 1.0


def test_mp3_trailing_tags_and_cbr_without_header(files, tmp_path):
    """ID3v1 and APE tags at the end are not audio; a CBR stream without header is counted by its lattice."""
    base = decode(files["mp3"])
    data = files["mp3"].read_bytes()
    with open(files["mp3"], "rb") as f:
        start = dec._id3v2_end(f)
    n = dec._header_length(data[start], data[start + 1], data[start + 2])
    body = data[:start] + data[start + n:]  # libsndfile's CBR file without its Info frame
    ape = b"APETAGEX" + struct.pack("<IIII", 2000, 32, 0, 0) + bytes(8)
    p = tmp_path / "tags.mp3"
    p.write_bytes(body + ape + b"TAG" + bytes(125))
    full = decode(p)
    tail = decode(p, 3.0)
    assert tail.total_frames == full.total_frames
    np.testing.assert_allclose(tail.data, full.data[tail.start_frame:], rtol=0, atol=3e-7)
    assert abs(full.total_frames - base.total_frames - 1105) <= 1152 * 2


def test_truncated_mp3_and_lying_xing(files, tmp_path):
    """A cut file with a Xing header that promises more: length comes from the frames that exist."""
    data = files["sf_vbr_xing"].read_bytes()
    p = tmp_path / "cut.mp3"
    p.write_bytes(data[: len(data) // 2 + 77])  # mid-frame
    full = decode(p)
    tail = decode(p, 4.0)
    assert tail.total_frames == full.total_frames < decode(files["sf_vbr_xing"]).total_frames * 0.7
    np.testing.assert_allclose(tail.data, full.data[tail.start_frame:], rtol=0, atol=3e-7)


# ------------------------------------------------------------------------------------------------ ffmpeg

@needs_ffmpeg
@pytest.mark.parametrize("ext,codec", [("m4a", "aac"), ("aac", "aac")])
def test_ffmpeg_formats(tmp_path, ext, codec):
    y = signal(22050, 20.0, 2, seed=5)
    src = tmp_path / "src.wav"
    sf.write(src, y, 22050, subtype="PCM_16")
    p = tmp_path / f"x.{ext}"
    ffmpeg("-i", str(src), "-c:a", codec, "-b:a", "96k", str(p))
    full = load(p, 8000)
    assert abs(full.duration_s - 20.0) < 0.1
    tail = load(p, 8000, tail_seconds=5.0)
    assert len(tail.samples) == 40000
    i = round(tail.start_s * 8000)
    np.testing.assert_allclose(tail.samples, full.samples[i:i + 40000], atol=2e-3)
    assert best_lag(tail.samples, full.samples[-40000:])[0] == 0


def test_without_ffmpeg_m4a_errors_clearly_and_others_work(files, tmp_path, monkeypatch):
    monkeypatch.setattr(dec, "_tools", lambda: (None, None))
    p = tmp_path / "x.m4a"
    p.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A mp42isom" + bytes(2000))
    with pytest.raises(AudioError, match="ffmpeg") as e:
        load(p, 8000)
    assert str(p) in str(e.value)
    assert load(files["mp3"], 8000, tail_seconds=2).samples.size == 16000


@needs_ffmpeg
def test_ffmpeg_errors_are_short_and_leave_no_process(tmp_path):
    y = signal(22050, 5.0, 1)
    src = tmp_path / "src.wav"
    sf.write(src, y, 22050)
    p = tmp_path / "x.m4a"
    ffmpeg("-i", str(src), "-c:a", "aac", str(p))
    data = p.read_bytes()
    bad = tmp_path / "bad.m4a"
    bad.write_bytes(data[:200])  # cut inside the header atoms
    with pytest.raises(AudioError) as e:
        load(bad, 8000)
    msg = str(e.value)
    assert str(bad) in msg and len(msg) < 600 and "\n" not in msg
    # No ffmpeg left behind, not even a zombie (other tests may have started a process pool's fork server).
    assert not [(comm, state) for comm, state in _children() if comm == "ffmpeg" or state == "Z"]


def _children() -> list[tuple[str, str]]:
    """(command name, state) of this process' children, from /proc."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if int(rest[1]) == os.getpid():
            out.append((comm, rest[0]))
    return out


# ------------------------------------------------------------------------------------------------ bad input

def _expect_error(path, *, tail=None, match=None):
    with pytest.raises(AudioError, match=match) as e:
        load(path, 8000, tail_seconds=tail)
    assert str(path) in str(e.value)
    return str(e.value)


def test_missing_directory_empty(tmp_path):
    _expect_error(tmp_path / "nope.mp3", match="no such file")
    _expect_error(tmp_path, match="directory")
    (tmp_path / "empty.mp3").write_bytes(b"")
    _expect_error(tmp_path / "empty.mp3", match="empty")
    (tmp_path / "f").write_bytes(b"x")
    _expect_error(tmp_path / "f" / "x.mp3", match="no such file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_refused_without_blocking(tmp_path):
    p = tmp_path / "pipe.wav"
    os.mkfifo(p)
    _expect_error(p, match="not a regular file")


@pytest.mark.parametrize("content,what", [
    (b"hello, this is a text file renamed to .mp3\n" * 40, "text"),
    (b"\x89PNG\r\n\x1a\n" + bytes(500), "PNG"),
    (b"\xff\xd8\xff\xe0" + bytes(500), "JPEG"),
    (b"PK\x03\x04" + bytes(500), "ZIP"),
])
def test_non_audio_renamed_mp3(tmp_path, content, what):
    p = tmp_path / "song.mp3"
    p.write_bytes(content)
    _expect_error(p, match=what)


@pytest.mark.parametrize("ext", ["mp3", "wav", "flac", "m4a", "ogg"])
def test_random_bytes(tmp_path, ext):
    p = tmp_path / f"noise.{ext}"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 50000, dtype=np.uint8).tobytes())
    _expect_error(p)


def test_random_bytes_behind_mpeg_sync_and_id3(tmp_path):
    junk = np.random.default_rng(2).integers(0, 256, 30000, dtype=np.uint8).tobytes()
    p = tmp_path / "a.mp3"
    p.write_bytes(b"\xff\xfb\x90\x64" + junk)
    _expect_error(p, match="MPEG")
    p.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x10" + bytes(16) + junk)
    _expect_error(p, match="MPEG")
    p.write_bytes(b"ID3\x04\x00\x00\x00\x00\x7f\x7f" + bytes(100))  # tag larger than the file
    _expect_error(p, match="ID3")


def test_truncated_wav(files, tmp_path):
    data = files["wav"].read_bytes()
    p = tmp_path / "cut.wav"
    p.write_bytes(data[:30])  # inside the header
    _expect_error(p)
    p.write_bytes(data[:44])  # header only: no samples
    _expect_error(p)
    p.write_bytes(data[: len(data) // 3])  # cut in the data: what is there decodes, tail is the real end
    a = load(p, 8000, tail_seconds=2.0)
    full = load(p, 8000)
    assert abs(full.duration_s - 10.0) < 0.01
    np.testing.assert_allclose(a.samples, full.samples[-16000:], atol=2e-5)


def test_zero_and_one_sample_files(tmp_path):
    p0, p1 = tmp_path / "zero.wav", tmp_path / "one.wav"
    sf.write(p0, np.zeros(0, np.float32), 44100)
    sf.write(p1, np.array([0.5], np.float32), 44100)
    _expect_error(p0, match="no audio samples")
    _expect_error(p1, match="too short")
    _expect_error(p1, tail=5.0, match="too short")
    p2 = tmp_path / "two.wav"
    sf.write(p2, np.array([0.5, -0.5], np.float32), 8000)
    assert len(load(p2, 8000).samples) == 2


def test_wav_header_claiming_six_hours_is_bounded(files, tmp_path):
    import tracemalloc

    data = bytearray(files["wav"].read_bytes())
    i = data.find(b"data")
    data[i + 4:i + 8] = struct.pack("<I", 6 * 3600 * 44100 * 4)
    data[4:8] = struct.pack("<I", 0xFFFFFFF0)
    p = tmp_path / "lie.wav"
    p.write_bytes(bytes(data))
    tracemalloc.start()
    a = load(p, 8000, tail_seconds=5.0)
    b = load(p, 8000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert abs(b.duration_s - 30.0) < 0.01 and abs(a.start_s - 25.0) < 0.01
    assert peak < 60e6


def test_flac_header_claiming_six_hours_and_flac_without_length(files, tmp_path):
    import tracemalloc

    data = bytearray(files["flac"].read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    # total samples: low 4 bits of byte 8+13 and the 4 bytes after (36 bits in all)
    si = 8
    claim = 6 * 3600 * 44100
    data[si + 13] = (data[si + 13] & 0xF0) | ((claim >> 32) & 0x0F)
    data[si + 14:si + 18] = struct.pack(">I", claim & 0xFFFFFFFF)
    p = tmp_path / "lie.flac"
    p.write_bytes(bytes(data))
    full = load(files["flac"], 8000)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        a = load(p, 8000, tail_seconds=5.0)
    except AudioError as e:
        # libFLAC fails where the promised frames are missing; without ffmpeg to cross-check, that is an error
        assert not FFMPEG and "truncated or corrupt" in str(e) and str(p) in str(e)
        a = None
    took = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 60e6 and took < 5
    if a is not None:
        assert abs(a.duration_s - 30.0) < 0.01
        np.testing.assert_allclose(a.samples, full.samples[-40000:], atol=2e-5)
    # no length at all (as written to a pipe): total samples 0
    data[si + 13] &= 0xF0
    data[si + 14:si + 18] = bytes(4)
    p.write_bytes(bytes(data))
    b = load(p, 8000, tail_seconds=5.0)
    np.testing.assert_allclose(b.samples, full.samples[-40000:], atol=2e-5)
    assert abs(b.duration_s - 30.0) < 0.01


@pytest.mark.parametrize("sr,channels,subtype,silence_s", [(8000, 1, "PCM_16", 1800), (44100, 2, "PCM_24", 0)])
def test_flac_tail_is_read_from_a_frame_near_the_end(tmp_path, monkeypatch, sr, channels, subtype, silence_s):
    # Half an hour of digital silence before the music makes libFLAC's own seek slow (it bisects on bytes);
    # the tail must come from our frame scan and equal what a seek gives.
    music = synth.music_track(12, 20.0, sr)
    y = np.concatenate([np.zeros(silence_s * sr, np.float32), music])
    y = np.repeat(y[:, None], channels, axis=1) * np.linspace(1.0, 0.5, channels)
    p = tmp_path / "long.flac"
    sf.write(p, y, sr, subtype=subtype)
    want = 10 * sr
    direct = dec._flac_tail(str(p), len(y), want, channels)
    assert direct is not None and direct.shape == (want, channels)
    with sf.SoundFile(p) as f:
        f.seek(len(y) - want)
        np.testing.assert_array_equal(direct, f.read(dtype="float32", always_2d=True))
    # decode() takes that path (a seek gives the same samples, so equal data alone would not show it).
    used = []
    real = dec._flac_tail
    monkeypatch.setattr(dec, "_flac_tail", lambda *a: used.append(real(*a)) or used[-1])
    d = dec.decode(p, 10.0)
    assert len(used) == 1 and used[0] is not None
    assert (d.start_frame, d.total_frames) == (len(y) - want, len(y))
    np.testing.assert_array_equal(d.data, direct)


def test_truncated_flac(files, tmp_path, monkeypatch):
    data = files["flac"].read_bytes()
    p = tmp_path / "cut.flac"
    p.write_bytes(data[: len(data) // 2])
    if FFMPEG:
        a = load(p, 8000, tail_seconds=3.0)
        full = load(files["flac"], 8000)
        i = round(a.start_s * 8000)
        assert 10 < a.duration_s < 20
        # the last few ms differ: the resampler sees the cut here and more signal in the intact file
        np.testing.assert_allclose(a.samples[:-80], full.samples[i:i + len(a.samples) - 80], atol=2e-3)
    monkeypatch.setattr(dec, "_tools", lambda: (None, None))
    _expect_error(p, tail=3.0, match="truncated or corrupt")


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "opus", "mp3", "sf_vbr_nox"])
def test_bit_flips_never_crash(files, tmp_path, fmt):
    """Corrupted files give audio (decoders resync) or an AudioError, never another exception or a hang."""
    rng = np.random.default_rng(hash(fmt) % 1000)
    base = bytearray(files[fmt].read_bytes())
    outcomes = set()
    for k in range(6):
        data = bytearray(base)
        region = 200 if k < 3 else len(data)  # header area first, then anywhere
        for pos in rng.integers(0, region, 8 if k < 3 else 400):
            data[pos] ^= 1 << int(rng.integers(0, 8))
        p = tmp_path / f"flip{k}{os.path.splitext(str(files[fmt]))[1]}"
        p.write_bytes(bytes(data))
        for tail in (None, 3.0):
            try:
                a = load(p, 8000, tail_seconds=tail)
                assert np.isfinite(a.samples).all() and len(a.samples) > 0
                outcomes.add("ok")
            except AudioError as e:
                assert str(p) in str(e)
                outcomes.add("error")
    assert outcomes


def _unreadable(tmp_path):
    p = tmp_path / "locked.wav"
    sf.write(p, signal(8000, 1.0), 8000)
    os.chmod(p, 0)
    return p


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_permission_denied(tmp_path):
    _expect_error(_unreadable(tmp_path), match="permission denied")


@pytest.mark.skipif(not hasattr(os, "fork") or os.geteuid() != 0, reason="needs root to drop to nobody")
def test_permission_denied_as_root_via_nobody():
    """Root ignores file modes, so the check runs in a forked child that drops to user nobody."""
    import tempfile

    d = tempfile.mkdtemp(prefix="audioid-perm-")
    try:
        os.chmod(d, 0o755)
        p = os.path.join(d, "locked.wav")
        sf.write(p, signal(8000, 1.0), 8000)
        os.chmod(p, 0)
        hidden = os.path.join(d, "hidden")
        os.mkdir(hidden, 0o700)
        sf.write(os.path.join(hidden, "x.wav"), signal(8000, 1.0), 8000)
        r, w = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12 warns about forking a process that has threads (the spare-core helper, FAISS'): the
            # child only opens two WAV files and exits, taking no lock those threads could hold.  A new
            # interpreter could not do it: nobody may not run the one under /root.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # child: never return into pytest
            try:
                os.close(r)
                os.setgid(65534)
                os.setuid(65534)
                msgs = []
                for q in (p, os.path.join(hidden, "x.wav")):
                    try:
                        load(q, 8000)
                        msgs.append("LOADED " + q)
                    except AudioError as e:
                        msgs.append(str(e))
                os.write(w, "\n".join(msgs).encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            out = f.read().splitlines()
        os.waitpid(pid, 0)
        assert len(out) == 2, out
        assert out[0].startswith(p) and "permission denied" in out[0]
        assert "hidden" in out[1] and "permission denied" in out[1]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_bad_arguments(files):
    with pytest.raises(ValueError):
        load(files["wav"], 0)
    with pytest.raises(ValueError):
        load(files["wav"], 8000, tail_seconds=-1)
    with pytest.raises(ValueError):
        load(files["wav"], 8000, tail_seconds=float("nan"))


# ------------------------------------------------------------------------------------------------ chunks

def test_chunks_from_end():
    sr = 10
    y = np.arange(95, dtype=np.float32)
    pieces = chunks_from_end(y, sr, 2.0)
    assert [s for s, _ in pieces] == [7.5, 5.5, 3.5, 1.5]  # last piece (the outro) first
    assert all(len(p) == 20 for _, p in pieces)
    np.testing.assert_array_equal(pieces[0][1], y[75:95])
    short = chunks_from_end(y, sr, 2.0, keep_short=True)
    assert short[-1][0] == 0.0 and len(short[-1][1]) == 15 and len(short) == 5
    assert chunks_from_end(y[:5], sr, 2.0) == []
    assert len(chunks_from_end(y[:5], sr, 2.0, keep_short=True)) == 1
    assert chunks_from_end(y[:0], sr, 2.0, keep_short=True) == []
    with pytest.raises(ValueError):
        chunks_from_end(y, sr, 0.0)
    with pytest.raises(ValueError):
        chunks_from_end(y, sr, 0.01)  # rounds to no sample at all
