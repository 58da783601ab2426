"""Deterministic hostile inputs for the reliability tests and the fuzz run (issue 6).

:func:`make_hostile_set` writes a folder of bad, strange and borderline files and returns one :class:`Case` per
file saying what ``audioid identify`` must answer for it: an error record whose message names the file and the
problem, or a correct ``match`` / ``no_match``.  The signals come from :mod:`audioid.synth` and the references
from :func:`reference_tracks`, so an index built from :func:`write_references` can check the ``match`` cases.
:func:`mutate` makes random damaged variants of a real file (truncation, bit flips, header rewrites, chunk
splices) for ``bench/fuzz_inputs.py``.

Everything is a pure function of ``seed`` except what the platform decides: a FIFO needs ``os.mkfifo``, and an
unreadable file cannot be made for ``root`` (who reads anything), so that case is returned with ``skip`` set.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import synth

SR = 16000                # rate of the references and of most cases
REF_SECONDS = 30.0
N_REFS = 3
TALK_S, MUSIC_S = 3.0, 22.0   # a recording: presenter talk, then the last MUSIC_S of a reference (its outro)
LONG_HOURS = 6.0
CACHE_DIR = Path.home() / ".cache" / "ml-audio-id" / "hostile"

# What a record may be: each expectation lists the statuses it accepts.
EXPECT_STATUSES = {"error": {"error"}, "match": {"match"}, "no_match": {"no_match"},
                   "not_match": {"error", "no_match"}, "any": {"error", "match", "no_match"}}


@dataclass(frozen=True)
class Case:
    """One hostile input and the answer it must get.

    Attributes
    ----------
    name : str
        Short unique id, e.g. ``"truncated-flac-mid"``.
    kind : str
        Family of the case (``"truncated"``, ``"lying-wav"``, ``"names"``, ...).
    path : str
        The file (a ``str`` with surrogate escapes when the name is not UTF-8, as ``os.fsdecode`` gives).
    expect : str
        A key of :data:`EXPECT_STATUSES`: ``error``, ``match``, ``no_match``, ``not_match`` (error or no_match: a
        false match is the only wrong answer) or ``any`` (a record of any status; what matters is no crash).
    label : str or None
        The reference a ``match`` must name.
    mentions : tuple of str
        An ``error`` record's message contains one of these (case-insensitive); empty: any message.
    scanned : bool
        Whether a folder scan lists the file (FIFOs, dangling symlinks and symlink loops are skipped).
    skip : str or None
        Why the case could not be made here (its file does not exist).
    """

    name: str
    kind: str
    path: str
    expect: str
    label: str | None = None
    mentions: tuple[str, ...] = ()
    scanned: bool = True
    skip: str | None = None


def reference_tracks(seed: int = 0) -> dict[str, np.ndarray]:
    """The references the ``match`` cases come from: label -> float32 mono samples at :data:`SR`."""
    return {f"ref{seed}-{k}": synth.music_track(1000 * seed + k, REF_SECONDS, SR) for k in range(1, N_REFS + 1)}


def write_references(folder: str | os.PathLike, seed: int = 0) -> list[Path]:
    """Write :func:`reference_tracks` as ``<label>.wav`` files into ``folder`` (created); returns their paths."""
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for label, y in reference_tracks(seed).items():
        paths.append(folder / f"{label}.wav")
        sf.write(paths[-1], y, SR, subtype="PCM_16")
    return paths


def recording(track: np.ndarray, seed: int) -> np.ndarray:
    """A broadcast-like recording of ``track``: :data:`TALK_S` of speech, then the track's last :data:`MUSIC_S`."""
    return np.concatenate([synth.speech_like(seed, TALK_S, SR), track[-int(MUSIC_S * SR):]])


def wav_bytes(data: bytes, rate: int, channels: int, bits: int, *, fmt_tag: int = 1,
              data_size: int | None = None, riff_size: int | None = None, byte_rate: int | None = None,
              block_align: int | None = None) -> bytes:
    """A canonical 44-byte-header WAV around ``data``; every header field may be given a lie.

    Parameters
    ----------
    data : bytes
        The sample bytes, written as they are.
    rate, channels, bits : int
        Header's sample rate, channel count and bits per sample.
    fmt_tag : int
        1 = integer PCM, 3 = IEEE float.
    data_size, riff_size, byte_rate, block_align : int or None
        Header values; ``None`` writes the true (consistent) value.
    """
    align = channels * bits // 8 if block_align is None else block_align
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * align if byte_rate is None else byte_rate,
                      align, bits)
    riff = 36 + len(data) if riff_size is None else riff_size
    size = len(data) if data_size is None else data_size
    return (b"RIFF" + struct.pack("<I", riff & 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", size & 0xFFFFFFFF) + data)


def _pcm16(y: np.ndarray) -> bytes:
    return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


def encode(path: str | bytes | os.PathLike, y: np.ndarray, rate: int, fmt: str) -> None:
    """Write mono or ``(frames, channels)`` ``y`` as ``fmt`` (``wav``, ``mp3``, ``flac`` or ``ogg``)."""
    import soundfile as sf

    from .index.chunking import FORMATS

    if fmt == "mp3":
        synth.write_mp3(path, y, rate, 64)   # at a set bitrate
    else:
        _, major, subtype = FORMATS[fmt]
        sf.write(path, y, rate, format=major, subtype=subtype)


def write_long_file(path: str | os.PathLike, outro: np.ndarray, seconds: float, fmt: str = "flac") -> Path:
    """A file that really is ``seconds`` long: digital silence, then ``outro`` (mono at :data:`SR`) at its end.

    Silence compresses to almost nothing, so a 6-hour FLAC is about 1 MB and takes seconds to write (MP3 and Ogg
    take about a minute for 6 h).
    """
    import soundfile as sf

    from .index.chunking import FORMATS

    path = Path(path)
    block = np.zeros(60 * SR, np.float32)
    silence = int(seconds * SR) - len(outro)
    if silence < 0:
        raise ValueError(f"{seconds} s is shorter than the outro ({len(outro) / SR:.1f} s)")
    _, major, subtype = FORMATS[fmt]
    tmp = path.with_name(path.name + ".part")
    with sf.SoundFile(tmp, "w", SR, 1, format=major, subtype=subtype) as f:
        for start in range(0, silence, len(block)):
            f.write(block[:min(len(block), silence - start)])
        f.write(outro.astype(np.float32))
    os.replace(tmp, path)  # a cached file is complete or absent
    return path


def long_file(seconds: float = LONG_HOURS * 3600, fmt: str = "flac", seed: int = 0,
              cache_dir: str | os.PathLike = CACHE_DIR) -> tuple[Path, str]:
    """The long file of :func:`write_long_file` ending in the recording of reference 1, cached in ``cache_dir``.

    Returns
    -------
    (Path, str)
        The file and the label it must match.
    """
    label, track = next(iter(reference_tracks(seed).items()))
    path = Path(cache_dir) / f"long-{seed}-{int(seconds)}s.{fmt}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_long_file(path, recording(track, seed), seconds, fmt)
    return path, label


# --------------------------------------------------------------------------------------------- mutations ---

def _truncate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    # half the cuts fall in the first 4 KB, where headers and the first frames are
    cut = int(rng.integers(0, min(len(data), 4096))) if rng.random() < 0.5 else int(rng.integers(0, len(data)))
    return f"truncate@{cut}", data[:cut]


def _flip(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    if not data:
        return "flip(none)", data
    n = int(rng.integers(1, 65))
    span = min(len(data), 512) if rng.random() < 0.5 else len(data)
    pos = rng.integers(0, span, n)
    buf = np.frombuffer(data, np.uint8).copy()
    np.bitwise_xor.at(buf, pos, (1 << rng.integers(0, 8, n)).astype(np.uint8))
    return f"flip{n}<{span}", buf.tobytes()


_FIELD_VALUES = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)


def _rewrite(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """Overwrite a 1/2/4-byte field near the start (where headers keep sizes, rates and counts)."""
    width = int(rng.choice([1, 2, 4]))
    if len(data) < width:
        return "rewrite(none)", data
    at = int(rng.integers(0, min(len(data), 128) - width + 1))
    value = int(rng.choice(_FIELD_VALUES)) if rng.random() < 0.6 else int(rng.integers(0, 1 << (8 * width)))
    field = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little" if rng.random() < 0.5 else "big")
    return f"rewrite{width}@{at}={value:#x}", data[:at] + field + data[at + width:]


def _splice(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """Copy, drop or duplicate a chunk of the file elsewhere (a botched edit or a bad transfer)."""
    if len(data) < 2:
        return "splice(none)", data
    a = int(rng.integers(0, len(data) - 1))
    b = int(min(len(data), a + rng.integers(1, max(2, len(data) // 8))))
    at = int(rng.integers(0, len(data)))
    op = rng.integers(3)
    if op == 0:
        return f"drop[{a}:{b}]", data[:a] + data[b:]
    if op == 1:
        return f"insert[{a}:{b}]@{at}", data[:at] + data[a:b] + data[at:]
    return f"overwrite[{a}:{b}]@{at}", data[:at] + data[a:b] + data[at + b - a:]


MUTATIONS: dict[str, Callable[[bytes, np.random.Generator], tuple[str, bytes]]] = {
    "truncate": _truncate, "flip": _flip, "rewrite": _rewrite, "splice": _splice}


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """Apply one to three random :data:`MUTATIONS` to ``data``; returns a description and the damaged bytes."""
    steps = []
    for _ in range(int(rng.integers(1, 4))):
        what, data = MUTATIONS[str(rng.choice(list(MUTATIONS)))](data, rng)
        steps.append(what)
    return "+".join(steps), data


# ----------------------------------------------------------------------------------------------- the set ---

def make_hostile_set(folder: str | os.PathLike, seed: int = 0, *, long_seconds: float = 3600.0,
                     n_fuzz: int = 8) -> list[Case]:
    """Write the hostile inputs into ``folder`` (created) and say what each must get.

    Parameters
    ----------
    folder : path
        Where the files go; it should be empty.  Subfolders hold the name, FIFO and symlink cases.
    seed : int
        Selects the references (see :func:`reference_tracks`), truncation points, bit flips and mutations.
    long_seconds : float
        Length of the long FLAC (silence, then a recording): the tests use an hour, ``bench/fuzz_inputs.py``
        the 6 h :func:`long_file`.
    n_fuzz : int
        How many :func:`mutate` variants of the encoded recordings to add (expect ``any``).

    Returns
    -------
    list of Case
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 6])
    refs = reference_tracks(seed)
    labels = list(refs)
    rec = {label: recording(y, seed + k) for k, (label, y) in enumerate(refs.items())}
    cases: list[Case] = []

    def add(name: str, kind: str, content: bytes | None, expect: str, label: str | None = None,
            mentions: tuple[str, ...] = (), ext: str = "wav") -> Path:
        path = folder / f"{name}.{ext}"
        if content is not None:
            path.write_bytes(content)
        cases.append(Case(name, kind, os.fsdecode(path), expect, label, mentions))
        return path

    # Good encodings of each format: their bytes are what the truncations and flips damage.
    good: dict[str, tuple[str, bytes]] = {}
    for fmt, label in zip(("wav", "mp3", "flac", "ogg"), labels * 2):
        path = add(f"good-{fmt}", "good", None, "match", label, ext=fmt)
        encode(path, rec[label], SR, fmt)
        good[fmt] = (label, path.read_bytes())

    cases_empty(add)
    for fmt, (label, data) in good.items():
        # A cut inside the first bytes leaves no audio; a cut late in the music leaves >= 15 s whose end is music.
        head = int(rng.integers(1, 40))
        add(f"truncated-{fmt}-head", "truncated", data[:head], "error", ext=fmt,
            mentions=("truncat", "no audio", "0 frames", "cannot decode", "not a recognised", "too short",
                      "no mpeg", "corrupt"))
        late = int(len(data) * rng.uniform(0.6, 0.95))
        add(f"truncated-{fmt}-late", "truncated", data[:late], "match", label, ext=fmt)
        _, flipped = _flip(data, rng)
        add(f"bitflip-{fmt}", "bitflip", flipped, "any", ext=fmt)
    # Flips in WAV sample data only are a few clicks: the music is still recognised.
    label, data = good["wav"]
    buf = np.frombuffer(data, np.uint8).copy()
    buf[rng.integers(44, len(buf), 200)] ^= np.uint8(0x10)
    add("bitflip-wav-samples", "bitflip", buf.tobytes(), "match", label)

    cases_non_audio(add, rng)
    cases_lying_wav(add, rec[labels[0]], labels[0])
    cases_signals(add, rec[labels[1]], labels[1], rng)

    long_path = add("long-1h" if long_seconds == 3600 else f"long-{long_seconds:g}s", "long", None, "match",
                    labels[0], ext="flac")
    write_long_file(long_path, rec[labels[0]], long_seconds)

    # 8 channels at 192 kHz: the music on the first two, digital silence on the others (small as FLAC).
    from .fingerprint.audio import resample

    hi = resample(rec[labels[2]][-12 * SR:], SR, 192000)
    multi = np.zeros((len(hi), 8), np.float32)
    multi[:, 0] = multi[:, 1] = hi
    encode(add("8ch-192k", "multichannel", None, "match", labels[2], ext="flac"), multi, 192000, "flac")

    cases_names(folder, cases, rec[labels[1]], labels[1])
    cases_special(folder, cases, _pcm16(rec[labels[0]]))

    for k in range(n_fuzz):
        fmt = ("wav", "mp3", "flac", "ogg")[k % 4]
        what, data = mutate(good[fmt][1], rng)
        add(f"fuzz-{k}-{fmt}", f"fuzz:{what}", data, "any", ext=fmt)
    return cases


def cases_empty(add: Callable) -> None:
    """Empty files and files with 0 or 1 samples."""
    add("empty", "empty", b"", "error", mentions=("empty",), ext="mp3")
    add("empty-wav", "empty", b"", "error", mentions=("empty",))
    add("zero-samples", "tiny", wav_bytes(b"", SR, 1, 16), "error", mentions=("0 frames", "no audio"))
    add("one-sample", "tiny", wav_bytes(b"\x00\x40", SR, 1, 16), "error", mentions=("too short",))
    add("id3-only", "tiny", b"ID3\x04\x00\x00\x00\x00\x00\x10" + bytes(16), "error",
        mentions=("no audio after the id3",), ext="mp3")


def cases_non_audio(add: Callable, rng: np.random.Generator) -> None:
    """Other kinds of file renamed ``.mp3``."""
    import io
    import zipfile

    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("song.mp3", b"\xff\xfb" + bytes(1000))
    for name, content, what in (
            ("text", "Tracklist:\n1. Intro\n2. Outro \u2014 caf\u00e9\n".encode() * 50, "text"),
            ("png", b"\x89PNG\r\n\x1a\n" + rng.bytes(2000), "png"),
            ("zip", z.getvalue(), "zip"),
            ("elf", b"\x7fELF\x02\x01\x01" + bytes(9) + rng.bytes(4000), "executable"),
            ("pdf", b"%PDF-1.7\n" + rng.bytes(3000), "pdf"),
            ("html", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", "text")):
        add(f"not-audio-{name}", "non-audio", content, "error", mentions=("not an audio file", what), ext="mp3")
    add("random-bytes", "non-audio", rng.bytes(50000), "error", ext="mp3")
    # MPEG sync words followed by junk: looks like MP3 for a few bytes only
    add("sync-then-junk", "non-audio", (b"\xff\xfb\x90\x64" + rng.bytes(200)) * 40, "not_match", ext="mp3")


def cases_lying_wav(add: Callable, y: np.ndarray, label: str) -> None:
    """WAV headers that lie about length, rate and channels (the samples are a good 16-bit mono recording)."""
    pcm = _pcm16(y)
    n = len(pcm)
    # Longer than the file (6 h, or the 4 GB maximum): the real end is the end, and the music is there.
    add("wav-claims-6h", "lying-wav", wav_bytes(pcm, SR, 1, 16, data_size=6 * 3600 * SR * 2), "match", label)
    add("wav-claims-4gb", "lying-wav", wav_bytes(pcm, SR, 1, 16, data_size=0xFFFFFFFF, riff_size=0xFFFFFFFF),
        "match", label)
    # Shorter: only the claimed 20 s are read; their end is still in the music.
    add("wav-claims-less", "lying-wav", wav_bytes(pcm, SR, 1, 16, data_size=20 * SR * 2), "match", label)
    add("wav-riff-size-0", "lying-wav", wav_bytes(pcm, SR, 1, 16, riff_size=0), "match", label)
    # Wrong rate or channels with consistent fields: the audio is another speed, so no match (never a wrong one).
    add("wav-rate-48k", "lying-wav", wav_bytes(pcm, 48000, 1, 16), "not_match")
    add("wav-claims-stereo", "lying-wav", wav_bytes(pcm, SR, 2, 16), "not_match")
    # Impossible values.
    add("wav-rate-0", "lying-wav", wav_bytes(pcm, 0, 1, 16), "error", mentions=("rate", "cannot decode"))
    add("wav-rate-1", "lying-wav", wav_bytes(pcm, 1, 1, 16), "error", mentions=("sample rate",))
    add("wav-rate-4g", "lying-wav", wav_bytes(pcm, 0xFFFFFFFF, 1, 16, byte_rate=0), "error",
        mentions=("rate", "cannot decode"))
    add("wav-channels-0", "lying-wav", wav_bytes(pcm, SR, 0, 16, block_align=2), "error",
        mentions=("channel", "cannot decode"))
    add("wav-channels-65535", "lying-wav", wav_bytes(pcm, SR, 65535, 16, block_align=2), "error",
        mentions=("channel", "cannot decode"))
    add("wav-bits-0", "lying-wav", wav_bytes(pcm, SR, 1, 0, block_align=2), "not_match")
    add("wav-block-align-lie", "lying-wav", wav_bytes(pcm, SR, 1, 16, block_align=7), "any")
    add("wav-odd-data", "lying-wav", wav_bytes(pcm[:n - 1], SR, 1, 16), "match", label)


def cases_signals(add: Callable, y: np.ndarray, label: str, rng: np.random.Generator) -> None:
    """NaN/Inf floats, signals the analysis cannot use (20 kHz only, DC only, silence) and full-scale noise."""
    f = y.astype("<f4").copy()
    hit = rng.integers(0, len(f), len(f) // 200)
    f[hit] = np.array([np.nan, np.inf, -np.inf], np.float32)[rng.integers(0, 3, len(hit))]
    add("float-nan-inf-sprinkled", "nan-inf", wav_bytes(f.tobytes(), SR, 1, 32, fmt_tag=3), "match", label)
    add("float-all-nan", "nan-inf", wav_bytes(np.full(10 * SR, np.nan, "<f4").tobytes(), SR, 1, 32, fmt_tag=3),
        "no_match")
    add("float-huge", "nan-inf", wav_bytes(np.full(10 * SR, 3e38, "<f4").tobytes(), SR, 1, 32, fmt_tag=3),
        "no_match")
    t = np.arange(15 * 48000) / 48000
    add("tone-20khz", "signal", wav_bytes(_pcm16(0.8 * np.sin(2 * np.pi * 20000 * t)), 48000, 1, 16), "no_match")
    add("dc-only", "signal", wav_bytes(_pcm16(np.full(15 * SR, 0.7)), SR, 1, 16), "no_match")
    add("silence", "signal", wav_bytes(bytes(2 * 15 * SR), SR, 1, 16), "no_match")
    add("full-scale-noise", "signal", wav_bytes(_pcm16(rng.uniform(-1, 1, 15 * SR)), SR, 1, 16), "no_match")


def cases_names(folder: Path, cases: list[Case], y: np.ndarray, label: str) -> None:
    """Good recordings under names with newlines, quotes, ``$``, backticks, a leading dash and non-UTF-8 bytes."""
    sub = os.fsencode(folder / "names")
    os.makedirs(sub, exist_ok=True)
    for k, name in enumerate((b"new\nline.wav", b"quotes ' and \".flac", b"dollar $HOME `id` $(id).ogg",
                              b"-dash; rm -rf x.wav", b"latin1 caf\xe9 \xff\xfe.mp3", b"tab\there\r.wav")):
        path = os.path.join(sub, name)
        encode(path, y, SR, os.path.splitext(name)[1][1:].decode())  # bytes: soundfile cannot encode surrogates
        cases.append(Case(f"name-{k}", "names", os.fsdecode(path), "match", label))


def cases_special(folder: Path, cases: list[Case], pcm: bytes) -> None:
    """FIFOs, symlink loops, dangling links and an unreadable file in a folder that gets scanned."""
    sub = folder / "special"
    sub.mkdir(exist_ok=True)
    (sub / "loop-dir").symlink_to(".", target_is_directory=True)       # a folder that contains itself
    (sub / "a.mp3").symlink_to("b.mp3")
    (sub / "b.mp3").symlink_to("a.mp3")
    cases.append(Case("symlink-loop", "special", str(sub / "a.mp3"), "error",
                      mentions=("symbolic links", "cannot access"), scanned=False))
    (sub / "dangling.wav").symlink_to("nowhere.wav")
    cases.append(Case("dangling-symlink", "special", str(sub / "dangling.wav"), "error", mentions=("no such file",),
                      scanned=False))
    fifo = sub / "pipe.mp3"
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
        cases.append(Case("fifo", "special", str(fifo), "error", mentions=("not a regular file",), scanned=False))
    else:
        cases.append(Case("fifo", "special", str(fifo), "error", skip="no FIFOs on this platform"))
    locked = sub / "unreadable.wav"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cases.append(Case("unreadable", "special", str(locked), "error",
                          skip="running as root, who can read a file with mode 000"))
    else:
        locked.write_bytes(wav_bytes(pcm, SR, 1, 16))
        locked.chmod(0)
        cases.append(Case("unreadable", "special", str(locked), "error", mentions=("permission denied",)))
