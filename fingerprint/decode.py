"""Container/codec decoding: soundfile (libsndfile) first, ffmpeg for what libsndfile cannot read.

Three decoders live here:

* **MPEG audio** (MP3, and MP2/MP1 through the generic path) gets its own handling.  libsndfile hands MP3 to
  mpg123, which takes the stream length from a Xing/Info header or, without one, *estimates* it from the first
  frame's bitrate -- and libsndfile then stops every read at that estimate.  A VBR file without a header is
  silently truncated.  We parse MPEG frame headers ourselves: the true length comes from the Xing header, from
  a CBR check at a few sampled positions, or from a full frame-header scan; the tail is read by cutting the
  stream at a frame boundary near the end and decoding only those bytes, behind a synthetic Xing frame that
  tells mpg123 the exact frame count.  This costs the same for a 3-minute and a 3-hour file and is
  bit-identical to a full decode (after a few warm-up frames that fill the bit reservoir).  Given a second
  core, the two halves of a tail decode at once, the second from a few warm-up frames before its start.
* **Everything libsndfile reads** (WAV, FLAC, Ogg Vorbis, Opus, AIFF, ...): seek to the tail; when the header
  lies (claims more frames than the file holds, or no length at all) fall back to a sequential read that keeps
  only the last window, so memory follows the tail window and time follows the real file, never the claim.
* **ffmpeg** (M4A/AAC, WMA, WebM, ... and files libsndfile chokes on), as a subprocess piping raw float32,
  with ``-sseof`` for tails.  Without ffmpeg those formats give a clear :class:`AudioError`.

All paths return the same thing: float32 ``(frames, channels)`` at the file's native rate plus where those
frames sit in the file, so :func:`audioid.fingerprint.audio.load` can resample on the same sample grid for a
tail as for a full read.
"""
from __future__ import annotations

import io
import math
import mmap
import os
import shutil
import stat
import struct
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, ContextManager, Iterator

import numpy as np

from .audio import AudioError

_READ_BLOCK = 1 << 16        # frames per soundfile read: bounds memory when a header lies about the length
_HEAD_BYTES = 1 << 16        # bytes read up front to recognise the format
_MIN_RATE, _MAX_RATE = 1000, 1_536_000
_FFMPEG_TAIL_MARGIN_S = 3.0  # -sseof seeks by container index; ask for more and cut at the real end

#: Runs ``fn(*args)`` on another core within a ``with`` block, which gets a function returning its result:
#: the shape of :func:`audioid.index.parallel.on_spare_core`.
Helper = Callable[..., ContextManager[Callable[[], np.ndarray]]]


@dataclass(frozen=True)
class Decoded:
    """Frames decoded from a file and where they sit in it.

    Attributes
    ----------
    data : np.ndarray
        float32 ``(frames, channels)`` at ``sample_rate``.
    sample_rate : int
        Native rate of the file in Hz.
    start_frame : int
        Index of ``data[0]`` in the whole decoded file.
    total_frames : int
        Length of the whole decoded file in frames (exact, or the container's estimate for some ffmpeg inputs).
    tags : dict or None
        The container's text tags (keys lower-cased) where decoding read them anyway (ffprobe, for what only
        ffmpeg decodes); None where it did not look (:func:`audioid.fingerprint.tags.read_tags` reads them).
    """

    data: np.ndarray
    sample_rate: int
    start_frame: int
    total_frames: int
    tags: dict[str, str] | None = None


def decode_file(path: str, tail_seconds: float | None) -> tuple[np.ndarray, int, float, float]:
    """Decode ``path`` (or only its last ``tail_seconds``).

    Returns
    -------
    tuple
        ``(data, native_rate, start_s, duration_s)`` with ``data`` float32 ``(frames, channels)``.
    """
    d = decode(path, tail_seconds)
    return d.data, d.sample_rate, d.start_frame / d.sample_rate, d.total_frames / d.sample_rate


def decode(path: str | os.PathLike, tail_seconds: float | None = None, *, grid: int | None = None,
           helper: Helper | None = None) -> Decoded:
    """Decode a file, or only its last ``tail_seconds``, to float32 frames at the native rate.

    Parameters
    ----------
    path : str or path-like
        The audio file.
    tail_seconds : float or None
        Seconds wanted from the end; ``None`` or ``0`` decodes the whole file.  A tail longer than the file
        gives the whole file.
    grid : int or None
        Target rate the caller will resample to.  A tail then starts on a native frame index that maps to a
        whole sample at that rate, so resampling the tail reproduces the samples of a full-file resample.
    helper : callable or None
        Lends a second core (:data:`Helper`): an MP3 tail then decodes as two halves at once, with the
        same samples.

    Returns
    -------
    Decoded

    Raises
    ------
    AudioError
        Missing, unreadable, empty, truncated-to-nothing, corrupt or non-audio file; the message names the
        file and the problem.
    """
    path = os.fspath(path)
    tail = float(tail_seconds) if tail_seconds else None
    if tail is not None and not (tail > 0 and math.isfinite(tail)):
        raise ValueError(f"tail_seconds must be positive and finite, got {tail_seconds!r}")
    if tail is not None:
        tail = min(tail, 1e7)  # longer than any file; keeps frame arithmetic finite
    size, head = _check_file(path)
    kind = _sniff(path, head)
    if kind == "mpeg":
        try:
            result = _decode_mpeg(path, size, tail, grid, helper)
        except (OSError, ValueError, IndexError, struct.error) as e:  # e.g. the file changed under us
            raise AudioError(f"{path}: cannot decode MP3 ({type(e).__name__}: {e})") from None
        if result is None:  # not a layer III stream we can frame (MP2, free format): libsndfile decides
            result = _decode_with_fallback(path, tail, grid)
    elif kind == "ffmpeg":
        result = _decode_ffmpeg(path, tail, grid, reason="not a format libsndfile reads")
    else:
        result = _decode_with_fallback(path, tail, grid)
    if result.sample_rate < _MIN_RATE or result.sample_rate > _MAX_RATE:
        raise AudioError(f"{path}: implausible sample rate {result.sample_rate} Hz (corrupt header?)")
    if len(result.data) == 0:
        raise AudioError(f"{path}: no audio samples (0 frames)")
    if result.total_frames < 2:
        raise AudioError(f"{path}: too short to analyse ({result.total_frames} sample)")
    return result


# ---------------------------------------------------------------------------------------------------------
# File checks and format sniffing
# ---------------------------------------------------------------------------------------------------------

def _check_file(path: str) -> tuple[int, bytes]:
    """Stat and open ``path``; return its size and first bytes, or raise an AudioError saying what is wrong."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except PermissionError:
        raise AudioError(f"{path}: permission denied (cannot reach the file)") from None
    except NotADirectoryError:
        raise AudioError(f"{path}: no such file (a parent of it is not a directory)") from None
    except (OSError, ValueError) as e:
        raise AudioError(f"{path}: cannot access file ({getattr(e, 'strerror', None) or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        # reading a FIFO or a device could block forever or never end
        raise AudioError(f"{path}: not a regular file (FIFO, socket or device)")
    if st.st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except PermissionError:
        raise AudioError(f"{path}: permission denied (cannot read the file)") from None
    except OSError as e:
        raise AudioError(f"{path}: cannot read file ({e.strerror or e})") from None
    if not head:
        raise AudioError(f"{path}: empty file (0 bytes)")
    return st.st_size, head


_NON_AUDIO_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"), (b"7z\xbc\xaf\x27\x1c", "a 7z archive"), (b"\xfd7zXZ\x00", "an xz archive"),
    (b"\x7fELF", "an executable"), (b"SQLite format 3\x00", "an SQLite database"),
)
# Containers libsndfile cannot open: skip straight to ffmpeg.
_FFMPEG_MAGIC = (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", b"\x1a\x45\xdf\xa3", b"#!AMR", b"MAC ", b"wvpk", b"MPCK",
                 b"MP+", b"TTA1", b"FLV")


def _id3v2_end(f, pos: int = 0) -> int:
    """Offset just past any ID3v2 tags starting at ``pos`` (several may be stacked)."""
    while True:
        f.seek(pos)
        h = f.read(10)
        if len(h) < 10 or h[:3] != b"ID3" or h[3] == 0xFF or any(b & 0x80 for b in h[6:10]):
            return pos
        size = (h[6] << 21) | (h[7] << 14) | (h[8] << 7) | h[9]
        pos += 10 + size + (10 if h[5] & 0x10 else 0)  # footer flag


def _looks_like_text(buf: bytes) -> bool:
    """True when ``buf`` is printable text (ASCII/UTF-8), i.e. certainly not an audio container."""
    sample = buf[:4096]
    if not sample:
        return False
    control = sample.translate(None, bytes(range(0x20, 0x7F)) + b"\t\n\r\f" + bytes(range(0x80, 0x100)))
    if control:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(sample) - 3  # a character cut at the end of the sample
    return True


def _sniff(path: str, head: bytes) -> str:
    """Classify a file by content: ``'mpeg'``, ``'ffmpeg'`` or ``'other'`` (try libsndfile); raise for non-audio."""
    for magic, what in _NON_AUDIO_MAGIC:
        if head.startswith(magic):
            raise AudioError(f"{path}: not an audio file (looks like {what})")
    if _looks_like_text(head):
        raise AudioError(f"{path}: not an audio file (looks like text)")
    start = 0
    body = head
    if head.startswith(b"ID3"):
        with open(path, "rb") as f:
            start = _id3v2_end(f)
            f.seek(start)
            body = f.read(64)
    if body[4:8] == b"ftyp" or any(body.startswith(m) for m in _FFMPEG_MAGIC):
        return "ffmpeg"
    if len(body) >= 2 and body[0] == 0xFF and (body[1] & 0xF6) == 0xF0:  # ADTS AAC: MPEG sync, layer 0
        return "ffmpeg"
    if body.startswith((b"RIFF", b"RIFX", b"RF64", b"BW64", b"FORM", b"fLaC", b"OggS", b".snd", b"caff")):
        return "other"
    if start > 0 or (len(body) >= 4 and _header_length(body[0], body[1], body[2])):
        return "mpeg"
    return "other"


# ---------------------------------------------------------------------------------------------------------
# MPEG audio frames
# ---------------------------------------------------------------------------------------------------------

_BITRATES_KBPS = {  # (MPEG-1?, layer) -> kbit/s by bitrate index 0..14 (0 = free format)
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits
_GAPLESS_DELAY = 529  # decoder delay mpg123 and ffmpeg remove at the start when they know the frame count
_WARMUP_FRAMES = 16   # bit reservoir reaches back <= 511 bytes: ~10 frames at the lowest bitrates, + overlap


@dataclass(frozen=True)
class _FrameInfo:
    version: int  # header version bits: 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    layer: int
    bitrate: int  # bit/s
    sample_rate: int
    length: int  # bytes, padding included
    samples: int  # per frame
    mono: bool


def _parse_header(b0: int, b1: int, b2: int, b3: int) -> _FrameInfo | None:
    """Decode a 4-byte MPEG audio frame header; ``None`` if it is not a valid, fixed-bitrate header."""
    if b0 != 0xFF or (b1 & 0xE0) != 0xE0:
        return None
    version, layer_bits, br_idx, sr_idx = (b1 >> 3) & 3, (b1 >> 1) & 3, b2 >> 4, (b2 >> 2) & 3
    if version == 1 or layer_bits == 0 or br_idx in (0, 15) or sr_idx == 3 or (b3 & 3) == 2:
        return None
    layer, mpeg1 = 4 - layer_bits, version == 3
    bitrate = _BITRATES_KBPS[(mpeg1, layer)][br_idx] * 1000
    rate = _RATES[version][sr_idx]
    pad = (b2 >> 1) & 1
    if layer == 1:
        length, samples = (12 * bitrate // rate + pad) * 4, 384
    elif layer == 2:
        length, samples = 144 * bitrate // rate + pad, 1152
    else:
        length, samples = (144 if mpeg1 else 72) * bitrate // rate + pad, (1152 if mpeg1 else 576)
    return _FrameInfo(version, layer, bitrate, rate, length, samples, (b3 >> 6) == 3)


def _header_length(b0: int, b1: int, b2: int) -> int:
    h = _parse_header(b0, b1, b2, 0)
    return h.length if h else 0


def _length_table(b1: int, b2: int) -> list[int]:
    """Frame length by ``(byte1 << 8) | byte2`` for headers of the same stream as ``b1, b2``; 0 = not one.

    A stream keeps its version, layer and sample rate, so only bitrate, padding, CRC and private bits may
    vary; anything else that looks like a sync word is data, not a frame.
    """
    return _length_table_for(b1 & 0xFE, b2 & 0x0C)


@lru_cache(maxsize=32)
def _length_table_for(b1: int, b2: int) -> list[int]:
    table = [0] * 65536
    for crc in (0, 1):
        c1 = (b1 & 0xFE) | crc
        for rest in range(64):  # bitrate index (4 bits), padding, private bit
            c2 = ((rest >> 2) << 4) | (b2 & 0x0C) | (rest & 3)
            table[(c1 << 8) | c2] = _header_length(0xFF, c1, c2)
    return table


def _scan_frames(buf, start: int, end: int, table: list[int]) -> list[int]:
    """Offsets of the complete MPEG frames in ``buf[start:end]``.

    Once in sync, each header gives the next frame's offset, so the loop costs one table lookup per frame
    (~0.4 us; 60 min of 44.1 kHz audio is 138,000 frames).  To find or regain sync, a candidate must be
    followed by two more valid headers, so sync words inside audio data or tags are not taken for frames.
    """
    offsets: list[int] = []
    append = offsets.append
    pos = start
    synced = False
    while pos + 4 <= end:
        if synced and buf[pos] == 0xFF:
            n = table[(buf[pos + 1] << 8) | buf[pos + 2]]
            if n and pos + n <= end:
                append(pos)
                pos += n
                continue
        synced = False
        pos = _resync(buf, pos, end, table)
        if pos < 0:
            break
        synced = True
    return offsets


def _resync(buf, pos: int, end: int, table: list[int]) -> int:
    """First offset >= ``pos`` where three valid frame headers follow each other (or reach ``end``); -1 if none."""
    while True:
        pos = buf.find(b"\xff", pos, end - 3)
        if pos < 0:
            return -1
        p, ok = pos, 0
        while ok < 3:
            if p == end:  # the stream ends exactly after a valid frame
                ok = 3
                break
            if p + 3 > end or buf[p] != 0xFF:
                break
            n = table[(buf[p + 1] << 8) | buf[p + 2]]
            if not n or p + n > end:
                break
            p += n
            ok += 1
        if ok == 3:
            return pos
        pos += 1


@dataclass
class _Mp3Stream:
    """What we learn about an MP3 from its first frame, its end and (when needed) a frame scan."""

    first: int           # offset of the first frame (the Xing/VBRI frame when there is one)
    audio_start: int     # offset of the first audio frame
    audio_end: int       # end of MPEG data (trailing ID3v1/APE/Lyrics3 tags excluded)
    info: _FrameInfo
    table: list[int]
    header: bytes        # first frame's 4 header bytes
    xing_frames: int | None = None
    xing_bytes: int | None = None
    has_lame: bool = False
    enc_delay: int = 0
    enc_padding: int = 0
    vbri_frames: int | None = None


def _tags_end(f, size: int) -> int:
    """End of the audio data: ``size`` minus trailing ID3v1, APEv2 and Lyrics3v2 tags."""
    end = size
    while end > 0:
        f.seek(max(0, end - 160))
        tail = f.read(end - max(0, end - 160))
        if len(tail) >= 128 and tail[-128:-125] == b"TAG":
            end -= 128
        elif len(tail) >= 32 and tail[-32:-24] == b"APETAGEX":
            tag_size = struct.unpack("<I", tail[-20:-16])[0]
            flags = struct.unpack("<I", tail[-12:-8])[0]
            end -= tag_size + (32 if flags & 0x80000000 else 0)  # the header is not counted in the size
        elif len(tail) >= 15 and tail[-9:] == b"LYRICS200" and tail[-15:-9].isdigit():
            end -= int(tail[-15:-9]) + 15
        else:
            return max(end, 0)
    return 0


def _probe_mp3(path: str, f, mm, size: int) -> _Mp3Stream | None:
    """Find the first frame and any Xing/Info/VBRI header; ``None`` if this is not layer III we can frame."""
    start = _id3v2_end(f)
    if start >= size:
        raise AudioError(f"{path}: no audio after the ID3 tag (truncated file?)")
    audio_end = _tags_end(f, size)
    search_end = min(audio_end, start + (1 << 20))
    pos = start
    while True:  # the first candidate whose next two headers match it
        pos = mm.find(b"\xff", pos, search_end - 3)
        if pos < 0:
            raise AudioError(f"{path}: no MPEG audio frames found (corrupt or not an MP3)")
        hdr = mm[pos:pos + 4]
        if _parse_header(*hdr) is not None:
            table = _length_table(hdr[1], hdr[2])
            if _resync(mm, pos, audio_end, table) == pos:
                break
        pos += 1
    info = _parse_header(*hdr)
    s = _Mp3Stream(first=pos, audio_start=pos, audio_end=audio_end, info=info, table=table, header=bytes(hdr))
    if info.layer != 3:
        return None
    frame = mm[pos:pos + info.length]
    x = 4 + (0 if hdr[1] & 1 else 2) + _side_info_bytes(info.version, info.mono)
    if frame[x:x + 4] in (b"Xing", b"Info"):
        flags = struct.unpack(">I", frame[x + 4:x + 8])[0]
        o = x + 8
        if flags & 1:
            s.xing_frames = struct.unpack(">I", frame[o:o + 4])[0]
            o += 4
        if flags & 2:
            s.xing_bytes = struct.unpack(">I", frame[o:o + 4])[0]
            o += 4
        o += (100 if flags & 4 else 0) + (4 if flags & 8 else 0)
        lame = frame[o:o + 24]
        if len(lame) == 24 and lame[:4].isalpha():  # "LAME", "Lavc", "Lavf", ... encoder tag with gapless info
            s.has_lame = True
            s.enc_delay = (lame[21] << 4) | (lame[22] >> 4)
            s.enc_padding = ((lame[22] & 0x0F) << 8) | lame[23]
        s.audio_start = pos + info.length
    elif frame[36:40] == b"VBRI":
        s.vbri_frames = struct.unpack(">I", frame[36 + 14:36 + 18])[0]
        s.audio_start = pos + info.length
    return s


def _xing_trusted(s: _Mp3Stream, size: int) -> bool:
    """A Xing frame count is trusted unless its byte count shows the file was cut or extended."""
    if not s.xing_frames:
        return False
    if s.xing_bytes is None:
        return True
    region = s.audio_end - s.first
    if s.xing_frames > _max_frames(s):
        return False
    return any(abs(s.xing_bytes - r) <= 4096 for r in (region, size, region - (s.audio_start - s.first)))


def _cbr_frames(s: _Mp3Stream, mm, last_offset: int) -> int | None:
    """Frame count of a constant-bitrate stream, or ``None`` when the stream is not CBR.

    Headers are sampled at ten places; a CBR stream has one bitrate everywhere and its frames sit on a
    lattice of the mean frame size (padding keeps each frame within one slot of it), so the count follows
    from the last frame's offset without reading the rest of the file.
    """
    info, br_idx = s.info, s.header[2] >> 4
    if info.layer == 1:
        mean, slot = 48 * info.bitrate / info.sample_rate, 4
    else:
        mean, slot = (144 if info.layer == 2 or info.version == 3 else 72) * info.bitrate / info.sample_rate, 1
    span = last_offset - s.audio_start
    if span <= 0:
        return 1
    for p in [s.audio_start + span * k // 10 for k in range(1, 10)] + [last_offset]:
        offsets = _scan_frames(mm, p, min(s.audio_end, p + 8192), s.table)[:4]
        if not offsets:
            return None
        for o in offsets:
            d = o - s.audio_start
            if (mm[o + 2] >> 4) != br_idx or abs(d - round(d / mean) * mean) > slot + 0.5:
                return None
    return round(span / mean) + 1


def _side_info_bytes(version: int, mono: bool) -> int:
    """Length of a layer III frame's side information (after its header and CRC)."""
    return (17 if mono else 32) if version == 3 else (9 if mono else 17)


def _mute_first_frame(chunk: bytearray, at: int, s: _Mp3Stream) -> None:
    """Zero the side information of the frame at ``at`` in ``chunk``, the first of a chunk cut from the middle of
    a stream: it then decodes as silence instead of reaching back into bit-reservoir bytes the chunk does not
    hold (mpg123 reports each such frame on stderr), and its bytes still fill the reservoir of the frames after
    it.  It is a warm-up frame, whose samples are dropped anyway.  (Zeroing more frames than this one makes
    mpg123 report failed dequantizations instead.)  A CRC-protected frame is left as it is: zeroing would break
    its checksum."""
    if chunk[at + 1] & 1:              # no CRC after the header
        side = _side_info_bytes(s.info.version, (chunk[at + 3] >> 6) == 3)
        chunk[at + 4:at + 4 + side] = bytes(side)


def _xing_frame(s: _Mp3Stream, n_frames: int) -> bytes:
    """A silent layer III frame holding only a Xing header with ``n_frames``.

    mpg123 then knows the exact frame count of the bytes that follow instead of estimating it from the first
    frame's bitrate (the estimate is what truncates VBR files).
    """
    b1 = s.header[1] | 1           # no CRC
    b3 = s.header[3]
    side = _side_info_bytes(s.info.version, (b3 >> 6) == 3)
    for br_idx in range(1, 15):    # smallest frame that holds the side info and the tag
        b2 = (br_idx << 4) | (s.header[2] & 0x0C)
        length = _header_length(0xFF, b1, b2)
        if length >= 4 + side + 12:
            break
    frame = bytearray(length)
    frame[:4] = bytes((0xFF, b1, b2, b3))
    frame[4 + side:4 + side + 12] = b"Xing" + struct.pack(">II", 1, n_frames)
    return bytes(frame)


def _decode_mpeg(path: str, size: int, tail: float | None, grid: int | None,
                 helper: Helper | None = None) -> Decoded | None:
    """Decode an MP3 with an exact length; ``None`` hands the file to the generic path (MP1/MP2, free format)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        s = _probe_mp3(path, f, mm, size)
        if s is None:
            return None
        spf, sr = s.info.samples, s.info.sample_rate
        trusted = _xing_trusted(s, size)
        if s.xing_frames is not None:
            # mpg123 and ffmpeg both drop the encoder delay (or just their own decoder delay) at the start and,
            # with a trusted LAME tag, the end padding: that is the timeline of a full decode.
            start_trim = (s.enc_delay if s.has_lame else 0) + _GAPLESS_DELAY
            end_trim = max(0, s.enc_padding - _GAPLESS_DELAY) if (s.has_lame and trusted) else 0
        else:
            start_trim = end_trim = 0

        if tail is None:
            return _mp3_full(path, mm, s, trusted, start_trim, end_trim)

        last = _last_frames(mm, s, 1)
        if not last:
            raise AudioError(f"{path}: no complete MPEG audio frame (truncated file?)")
        n_frames = None
        if trusted:
            n_frames = s.xing_frames
        elif s.xing_frames is None and s.vbri_frames is None:
            n_frames = _cbr_frames(s, mm, last[-1])
        if n_frames is None:
            # VBR without a usable header (none, a Xing count the file size contradicts, or VBRI, whose
            # count conventions vary between encoders): count the frames, a fast walk over their headers
            n_frames = len(_scan_frames(mm, s.audio_start, s.audio_end, s.table))
        total = max(0, n_frames * spf - start_trim - end_trim)
        want = _tail_frames(total, tail, sr, grid)
        if want >= total:  # a short file: all of it, on two cores if lent
            return _mp3_full(path, mm, s, trusted, start_trim, end_trim, helper)
        need = math.ceil((want + end_trim + _GAPLESS_DELAY) / spf) + _WARMUP_FRAMES
        offsets = _last_frames(mm, s, need)
        if len(offsets) < need:
            return _mp3_full(path, mm, s, trusted, start_trim, end_trim)
        data = _read_frames(path, mm, s, offsets, helper)
        if end_trim:
            data = data[:len(data) - end_trim]
        if len(data) < want:  # the decoder dropped damaged frames: decode it all and cut the end
            full = _mp3_full(path, mm, s, trusted, start_trim, end_trim)
            want = min(want, len(full.data))
            return Decoded(full.data[len(full.data) - want:], sr, len(full.data) - want, len(full.data))
        return Decoded(np.ascontiguousarray(data[-want:]), sr, total - want, total)


def _read_frames(path: str, mm, s: _Mp3Stream, offsets: list[int], helper: Helper | None = None,
                 pad: int = 0) -> np.ndarray:
    """Decode the consecutive frames at ``offsets`` as one stream behind a synthetic Xing frame (which makes
    mpg123 drop its decoder delay), after ``pad`` rows of zeros.

    With a ``helper`` the first half decodes on another core while this thread decodes the second, starting
    ``_WARMUP_FRAMES`` early: after them the decoder's state (bit reservoir, overlap, filter bank) is the one a
    single decode has there, so the joined halves are the single decode's samples.
    """
    spf = s.info.samples

    def read(lo: int, hi: int, pad: int = 0) -> np.ndarray:
        # The stream is copied into memory: far smaller than its decoded samples.
        last = offsets[hi - 1]
        end = last + s.table[(mm[last + 1] << 8) | mm[last + 2]]
        n = _generous(hi - lo)
        xing = _xing_frame(s, n)
        chunk = bytearray(xing) + mm[offsets[lo]:end]
        if offsets[lo] != s.audio_start:
            _mute_first_frame(chunk, len(xing), s)
        with _in_memory(chunk) as source:
            return _sf_read_mp3(path, source, n * spf, pad)

    mid = len(offsets) // 2
    if helper is None or mid < 4 * _WARMUP_FRAMES:
        return read(0, len(offsets), pad)
    with helper(read, 0, mid, pad) as first_half:
        second = read(mid - _WARMUP_FRAMES, len(offsets))
        first = first_half()
    # Each decode drops the decoder delay at its start; a half that came back short dropped damaged frames,
    # and only a single decode knows where its samples belong.
    cut_first, cut_second = pad + mid * spf - _GAPLESS_DELAY, _WARMUP_FRAMES * spf - _GAPLESS_DELAY
    if len(first) < cut_first or len(second) < cut_second:
        return read(0, len(offsets), pad)
    return np.concatenate([first[:cut_first], second[cut_second:]])


def _last_frames(mm, s: _Mp3Stream, count: int) -> list[int]:
    """Offsets of the last ``count`` frames (fewer if the stream is shorter), reading only near the end."""
    mean = max(s.info.length, 64)
    if s.xing_frames and s.xing_bytes:
        mean = max(mean, s.xing_bytes // max(1, s.xing_frames))
    window = (count + 8) * mean * 2 + 4096
    while True:
        lo = max(s.audio_start, s.audio_end - window)
        offsets = _scan_frames(mm, lo, s.audio_end, s.table)
        if len(offsets) > count or lo == s.audio_start:
            return offsets[-count:]
        window *= 2


def _mp3_full(path: str, mm, s: _Mp3Stream, trusted: bool, start_trim: int, end_trim: int,
              helper: Helper | None = None) -> Decoded:
    """Whole-file MP3 decode with no truncation (on two cores with a ``helper``)."""
    sr = s.info.sample_rate
    if trusted and helper is None:
        # mpg123 knows the true length from the Xing header: let libsndfile read the file itself
        data = _sf_read_mp3(path, os.fsencode(path), _max_frames(s) * s.info.samples)
        return Decoded(data, sr, 0, len(data))
    offsets = _scan_frames(mm, s.audio_start, s.audio_end, s.table)
    if not offsets:
        raise AudioError(f"{path}: no complete MPEG audio frame (truncated file?)")
    # Without a trusted header, mpg123 would stop at its estimate: give it the counted frames in a synthetic
    # Xing frame.  Knowing a count, mpg123 drops its 529-sample decoder delay.  Shift the result onto the
    # timeline a plain decode of this file has: every sample of every frame without a Xing header (as
    # ffmpeg does too), minus the encoder delay when the file's own Xing/LAME header gives one, and minus
    # the end padding a trusted one gives (as mpg123 reading the file itself does).
    shift = start_trim - _GAPLESS_DELAY
    data = _read_frames(path, mm, s, offsets, helper, pad=max(0, -shift))
    if shift > 0:
        data = data[shift:]
    if end_trim:
        data = data[:len(data) - end_trim]
    return Decoded(data, sr, 0, len(data))


def _max_frames(s: _Mp3Stream) -> int:
    """Most frames the file's bytes can hold (all at the lowest bitrate): a bound no header can talk past."""
    return (s.audio_end - s.first) // _shortest_frame(s.header[1] & 0xFE, s.header[2] & 0x0C) + 1


@lru_cache(maxsize=32)
def _shortest_frame(b1: int, b2: int) -> int:
    """Shortest frame length of a stream whose headers start like ``b1, b2`` (see :func:`_length_table`)."""
    return min(t for t in _length_table_for(b1, b2) if t)


def _generous(n_frames: int) -> int:
    """Frame count for a synthetic Xing header.

    Too high is harmless (decoding ends at the end of the data, and an unknown-length end is not trimmed);
    too low would cut the end, should mpg123 find a frame in bytes our scanner skipped as junk.
    """
    return n_frames + n_frames // 64 + 16


# ---------------------------------------------------------------------------------------------------------
# FLAC tails
# ---------------------------------------------------------------------------------------------------------
# libFLAC seeks by bisecting on byte positions, which is slow (over a second) when the bitrate is very uneven,
# e.g. hours of silence before the music.  Instead, find a frame header shortly before the tail ourselves and
# decode from there: FLAC frames are self-contained, so the STREAMINFO block plus the frames from that one on
# is a valid stream of the tail.

_FLAC_FIRST_WINDOW = 1 << 21   # bytes read back from the end first; doubled until a frame before the tail is found


def _crc8(data: bytes) -> int:
    """FLAC frame-header CRC-8 (polynomial x^8 + x^2 + x + 1)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _flac_frame_start(buf: bytes, i: int, block_size: int, channels: int) -> int | None:
    """First sample of the frame whose header starts at ``buf[i]``, or None when it is not a valid header."""
    if i + 16 > len(buf):
        return None
    b2, b3 = buf[i + 2], buf[i + 3]
    bs_code, rate_code, ch_code = b2 >> 4, b2 & 0xF, b3 >> 4
    if bs_code == 0 or rate_code == 15 or ch_code > 10 or (b3 >> 1) & 7 == 3 or b3 & 1:
        return None
    if (ch_code + 1 if ch_code < 8 else 2) != channels:
        return None
    first = buf[i + 4]
    n = 1 if first < 0x80 else next((k for k in range(2, 8) if first >> (7 - k) == (0xFF >> (7 - k)) - 1), 0)
    if n == 0:
        return None
    number = first & (0x7F >> n if n > 1 else 0x7F)
    for k in range(1, n):
        cont = buf[i + 4 + k]
        if cont >> 6 != 2:
            return None
        number = number << 6 | (cont & 0x3F)
    end = i + 4 + n + {6: 1, 7: 2}.get(bs_code, 0) + {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if end >= len(buf) or _crc8(buf[i:end]) != buf[end]:
        return None
    return number * block_size if buf[i + 1] == 0xF8 else number   # fixed block size: frame number


def _flac_tail(path: str, claimed: int, want: int, channels: int) -> np.ndarray | None:
    """The last ``want`` frames of a FLAC file of ``claimed`` frames, read from a frame near the end; None
    when the file does not lend itself (no fixed-size STREAMINFO layout, no frame found, a decode that does
    not end where the header says)."""
    import soundfile as sf

    with open(path, "rb") as f:
        head = f.read(1 << 16)
        if head[:4] != b"fLaC" or head[4] & 0x7F != 0 or len(head) < 42:
            return None
        info = bytearray(head[8:42])
        pos = 4
        while pos + 4 <= len(head):       # skip the metadata blocks
            last, length = head[pos] & 0x80, int.from_bytes(head[pos + 1:pos + 4], "big")
            pos += 4 + length
            if last:
                break
        else:
            return None
        min_block = int.from_bytes(info[0:2], "big")
        start_needed = claimed - want
        size = f.seek(0, os.SEEK_END)
        window = _FLAC_FIRST_WINDOW
        while True:
            offset = max(pos, size - window)
            f.seek(offset)
            buf = f.read(size - offset)
            arr = np.frombuffer(buf, np.uint8)
            cands = np.flatnonzero((arr[:-1] == 0xFF) & ((arr[1:] & 0xFE) == 0xF8))
            # The last few headers that start at or before the tail, newest first: a chance sync pattern in
            # the audio data can pass the CRC-8, and then the decode below does not add up; try an earlier one.
            before = []
            for i in cands[::-1].tolist():
                first = _flac_frame_start(buf, i, min_block, channels)
                if first is not None and first <= start_needed:
                    before.append((i, first))
                    if len(before) == 3:
                        break
            if before or offset == pos:
                break
            window *= 2
    # STREAMINFO with the total length and MD5 unknown (they describe the whole file), as the only metadata.
    info[13] &= 0xF0
    info[14:18] = bytes(4)
    info[18:34] = bytes(16)
    for i, first in before:
        stream = b"fLaC" + bytes([0x80, 0, 0, 34]) + bytes(info) + buf[i:]
        try:
            with sf.SoundFile(io.BytesIO(stream)) as g:
                data, total = _read_blocks(g, want)
        except (_MidStreamError, sf.LibsndfileError, RuntimeError, ValueError):
            continue
        if total == claimed - first and len(data) == want:
            return data
    return None


# ---------------------------------------------------------------------------------------------------------
# libsndfile
# ---------------------------------------------------------------------------------------------------------

class _MidStreamError(Exception):
    """libsndfile failed after decoding some audio (truncated or corrupt data)."""

    def __init__(self, message: str, frames_read: int):
        super().__init__(message)
        self.frames_read = frames_read


def _sf_error(e: Exception) -> str:
    msg = getattr(e, "error_string", "") or str(e)
    msg = msg.split(": ", 1)[-1] if msg.startswith("Error opening") else msg
    return msg.strip() or type(e).__name__


def _tail_frames(total: int, tail: float, rate: int, grid: int | None) -> int:
    """Frames to return for a tail: ``tail`` seconds, starting on the resampling grid, capped at ``total``."""
    want = min(total, math.ceil(tail * rate))
    if grid and grid != rate:
        # start on a native frame that is a whole sample at the target rate (step <= rate: at most 1 s more)
        step = rate // math.gcd(rate, int(grid))
        want = total - (total - want) // step * step
    return want


def _read_block(f, n: int) -> np.ndarray:
    """Read up to ``n`` frames from an open SoundFile without seeking.

    ``SoundFile.read`` seeks to its own position after every call.  That seek fails at the end of a stream
    of unknown length (a FLAC written to a pipe: the last block's samples are lost with the error) and, in a
    VBR MP3, makes mpg123 restart with an empty bit reservoir.  So call libsndfile's ``sf_readf_float``
    directly when soundfile exposes it (it has since 0.9), else fall back to the public method.
    """
    import soundfile as sf

    snd, ffi = getattr(sf, "_snd", None), getattr(sf, "_ffi", None)
    if snd is None or ffi is None or not hasattr(snd, "sf_readf_float") or getattr(f, "_file", None) is None:
        return f.read(n, dtype="float32", always_2d=True)
    out = np.empty((n, f.channels), np.float32)
    got = snd.sf_readf_float(f._file, ffi.cast("float *", out.ctypes.data), n)
    code = snd.sf_error(f._file)  # a decode error comes with a short read and is cleared by the next one
    if code:
        raise sf.LibsndfileError(code, "")
    return out[:max(0, got)]


class _TailBlocks:
    """Blocks read from a stream, of which only the last ``keep`` units (frames or bytes) are held."""

    def __init__(self, keep: int | None):
        self.keep, self.blocks, self.held, self.total = keep, [], 0, 0

    def add(self, block) -> None:
        self.blocks.append(block)
        self.held += len(block)
        self.total += len(block)
        if self.keep is not None:
            while len(self.blocks) > 1 and self.held - len(self.blocks[0]) >= self.keep:
                self.held -= len(self.blocks.pop(0))


def _read_blocks(f, keep: int | None) -> tuple[np.ndarray, int]:
    """Read an open SoundFile to its end in blocks; keep only the last ``keep`` frames when given.

    Returns the frames and how many were read in all.  Never allocates from the header's claimed length.
    """
    import soundfile as sf

    tail = _TailBlocks(keep)
    while True:
        try:
            b = _read_block(f, _READ_BLOCK)
        except (sf.LibsndfileError, RuntimeError, ValueError, MemoryError) as e:
            raise _MidStreamError(_sf_error(e), tail.total) from None
        if len(b) == 0:
            break
        tail.add(b)
    if not tail.blocks:
        return np.zeros((0, max(1, f.channels)), np.float32), 0
    data = tail.blocks[0] if len(tail.blocks) == 1 else np.concatenate(tail.blocks)
    if keep is not None and len(data) > keep:
        data = data[len(data) - keep:]
    return data, tail.total


@contextmanager
def _in_memory(data: bytes | bytearray) -> Iterator[int | io.BytesIO]:
    """``data`` as a file libsndfile can open: an anonymous in-memory file (Linux), which it reads in C with the
    GIL released, so two halves of a tail decode truly at once; elsewhere a BytesIO, which it reads through
    Python callbacks (one per frame, each taking the GIL)."""
    fd = None
    try:
        fd = os.memfd_create("audioid-mp3", os.MFD_CLOEXEC)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        source: int | io.BytesIO = fd
    except (AttributeError, OSError):    # not Linux, a sandbox that forbids it, or no memory for it
        source = io.BytesIO(data)
    try:
        yield source
    finally:
        if fd is not None:
            os.close(fd)


def _sf_read_mp3(path: str, source, limit: int, pad: int = 0) -> np.ndarray:
    """Decode an MPEG stream (path, file descriptor or file-like) through libsndfile in one read of at most
    ``limit`` frames.

    ``pad`` rows of zeros come first (read straight into one buffer: no copy of a long decode).

    One read, not blocks: ``SoundFile.read`` seeks back to its own position after every call, and a seek in
    a VBR MP3 makes mpg123 resume with an empty bit reservoir -- blockwise reads come back with runs of zeros.
    The stream length libsndfile reports comes from a Xing header we checked or wrote, and ``limit`` (derived
    from the file size) caps it anyway.
    """
    import soundfile as sf

    try:
        with sf.SoundFile(source, closefd=False) as f:
            n = min(f.frames, limit) if 0 < f.frames < (1 << 62) else limit
            out = np.empty((pad + n, f.channels), np.float32)
            out[:pad] = 0
            got = len(f.read(out=out[pad:]))
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise AudioError(f"{path}: cannot decode MPEG audio ({_sf_error(e)})") from None
    except MemoryError:
        raise AudioError(f"{path}: not enough memory to decode {limit} frames") from None
    return out[:pad + got]


def _decode_sndfile(path: str, tail: float | None, grid: int | None) -> Decoded:
    """Decode through libsndfile: seek for a tail when the claimed length holds, else stream the real data.

    Paths go to soundfile as bytes: it encodes a ``str`` strictly, which fails for a name that is not UTF-8.
    """
    import soundfile as sf

    with sf.SoundFile(os.fsencode(path)) as f:
        sr, claimed = f.samplerate, f.frames
        if sr < _MIN_RATE or sr > _MAX_RATE:
            raise AudioError(f"{path}: implausible sample rate {sr} Hz (corrupt header?)")
        if tail is None:
            data, total = _read_blocks(f, None)
            return Decoded(data, sr, 0, total)
        known = 0 < claimed < (1 << 62) and f.seekable()
        if known:
            want = _tail_frames(claimed, tail, sr, grid)
            start = claimed - want
            if f.format == "FLAC" and start:
                data = _flac_tail(path, claimed, want, f.channels)
                if data is not None:
                    return Decoded(data, sr, start, claimed)
            try:
                if start:
                    f.seek(start)
                data, got = _read_blocks(f, None)
            except (_MidStreamError, sf.LibsndfileError, RuntimeError, ValueError):
                got = -1
            if got == want:
                return Decoded(data, sr, start, claimed)
    # The header's length is missing or wrong (e.g. a truncated FLAC, or one written to a pipe): read
    # sequentially, keeping only a window that is the tail if the file ends where the header says or earlier.
    with sf.SoundFile(os.fsencode(path)) as f:
        keep = math.ceil(tail * sr) + sr  # one second spare for grid alignment
        data, total = _read_blocks(f, keep)
    want = _tail_frames(total, tail, sr, grid)
    return Decoded(np.ascontiguousarray(data[len(data) - want:]), sr, total - want, total)


def _decode_with_fallback(path: str, tail: float | None, grid: int | None) -> Decoded:
    """libsndfile first; ffmpeg (when installed) for formats libsndfile rejects or data it cannot finish."""
    import soundfile as sf

    try:
        return _decode_sndfile(path, tail, grid)
    except _MidStreamError as e:
        reason = f"libsndfile stopped after {e.frames_read} frames: {e}; truncated or corrupt"
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        reason = _sf_error(e)
    except MemoryError:
        reason = "header claims an impossible size"
    return _decode_ffmpeg(path, tail, grid, reason=reason)


# ---------------------------------------------------------------------------------------------------------
# ffmpeg
# ---------------------------------------------------------------------------------------------------------

def _tools() -> tuple[str | None, str | None]:
    """Paths of ffmpeg and ffprobe, or ``None`` where not installed (looked up each call: cheap, and testable)."""
    return shutil.which("ffmpeg"), shutil.which("ffprobe")


def ffmpeg_available() -> bool:
    """True when ffmpeg and ffprobe are on ``PATH`` (needed for M4A/AAC and other non-libsndfile formats)."""
    return all(_tools())


def _short(stderr: str, limit: int = 300) -> str:
    """The informative end of an ffmpeg error log, on one line."""
    import re

    stderr = re.sub(r"\[[\w.:-]+ @ 0x[0-9a-f]+\] ", "", stderr)  # "[mp3 @ 0x55d0...] " adds nothing
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    text = "; ".join(dict.fromkeys(lines[-3:]))
    return text if len(text) <= limit else "..." + text[-limit:]




def probe(path: str, ffprobe: str, reason: str) -> tuple[int, int, float | None, dict[str, str]]:
    """Sample rate, channels and duration (if known) of the first audio stream, and the container's text tags
    (keys lower-cased).

    ``reason`` (why libsndfile could not read the file) goes into the error when ffprobe cannot either.
    """
    import json

    url = "file:" + os.path.abspath(path)  # 'file:' stops a name with ':' or a leading '-' being read otherwise
    cmd = [ffprobe, "-v", "warning", "-select_streams", "a:0", "-show_entries",
           "stream=sample_rate,channels,duration:format=duration,format_name:format_tags", "-of", "json", url]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                           timeout=120)
    except subprocess.TimeoutExpired:  # run() has killed the child
        raise AudioError(f"{path}: ffprobe timed out") from None
    if "misdetection possible" in r.stderr:  # ffmpeg guessed a format from a weak signature: random bytes
        raise AudioError(f"{path}: not a recognised audio format (unknown or corrupt data)")
    try:
        meta = json.loads(r.stdout or "{}")
    except ValueError:
        meta = {}
    if r.returncode != 0 or "format" not in meta:
        raise AudioError(f"{path}: cannot decode audio (libsndfile: {reason}; "
                         f"ffprobe: {_short(r.stderr, 200) or 'unknown error'})")
    streams = meta.get("streams") or []
    if not streams:
        fmt = meta["format"].get("format_name", "unknown")
        raise AudioError(f"{path}: no audio stream (ffmpeg sees format '{fmt}')")
    st = streams[0]
    try:
        rate, channels = int(st.get("sample_rate", 0)), int(st.get("channels", 0))
    except ValueError:
        rate = channels = 0
    if rate <= 0 or channels <= 0:
        raise AudioError(f"{path}: audio stream without a sample rate or channels (corrupt header?)")
    duration = None
    for d in (st.get("duration"), meta["format"].get("duration")):
        try:
            duration = float(d)
            if duration > 0 and math.isfinite(duration):
                break
            duration = None
        except (TypeError, ValueError):
            continue
    tags = meta["format"].get("tags")
    tags = {str(k).lower(): v for k, v in tags.items() if isinstance(v, str)} if isinstance(tags, dict) else {}
    return rate, channels, duration, tags


def _ffmpeg_pcm(path: str, ffmpeg: str, rate: int, channels: int, sseof: float | None,
                keep: int | None) -> tuple[np.ndarray, int]:
    """Run ffmpeg, reading raw float32 from its stdout; keep only the last ``keep`` frames when given.

    Returns the frames and how many were decoded in all.  The process never outlives this call.
    """
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error"]
    if sseof:
        cmd += ["-sseof", f"-{sseof:.3f}"]
    cmd += ["-i", "file:" + os.path.abspath(path), "-map", "0:a:0", "-vn", "-sn", "-dn",
            "-ac", str(channels), "-ar", str(rate), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    frame_bytes = 4 * channels
    tail = _TailBlocks(None if keep is None else keep * frame_bytes)
    # stderr goes to a file: a pipe could fill up (ffmpeg logs every bad packet) and deadlock both processes
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        try:
            while True:
                b = proc.stdout.read(1 << 20)
                if not b:
                    break
                tail.add(b)
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if rc != 0:
        raise AudioError(f"{path}: cannot decode audio (ffmpeg: {_short(stderr) or f'exit status {rc}'})")
    raw = b"".join(tail.blocks)
    n = len(raw) // frame_bytes
    if keep is not None:
        n = min(n, keep)
    data = np.frombuffer(raw, np.float32, count=n * channels, offset=len(raw) - n * frame_bytes)
    return data.reshape(n, channels).copy(), tail.total // frame_bytes


def _decode_ffmpeg(path: str, tail: float | None, grid: int | None, *, reason: str) -> Decoded:
    """Decode through an ffmpeg subprocess; ``reason`` says why libsndfile could not, for the error message."""
    ffmpeg, ffprobe = _tools()
    if not (ffmpeg and ffprobe):
        raise AudioError(f"{path}: cannot decode audio ({reason}); ffmpeg, needed for M4A/AAC and other "
                         "formats libsndfile cannot read, is not installed")
    rate, channels, duration, tags = probe(path, ffprobe, reason)
    if tail is None:
        data, total = _ffmpeg_pcm(path, ffmpeg, rate, channels, None, None)
        return Decoded(data, rate, 0, total, tags)
    keep = math.ceil(tail * rate) + rate
    if duration and duration > tail + 2 * _FFMPEG_TAIL_MARGIN_S:
        sseof = tail + _FFMPEG_TAIL_MARGIN_S
        data, got = _ffmpeg_pcm(path, ffmpeg, rate, channels, sseof, keep)
        # ffmpeg seeks (sample-accurately) to the container's duration minus sseof and decodes to the real
        # end, which may differ from that duration (e.g. AAC end padding): count from the seek point
        total = round((duration - sseof) * rate) + got
        want = _tail_frames(total, tail, rate, grid)
        if len(data) >= want:
            return Decoded(data[len(data) - want:], rate, total - want, total, tags)
    # no duration, a short file, or a seek that landed late: decode all, keeping only the window
    data, total = _ffmpeg_pcm(path, ffmpeg, rate, channels, None, keep)
    want = _tail_frames(total, tail, rate, grid)
    return Decoded(data[len(data) - want:], rate, total - want, total, tags)
