"""Audio in: decode any supported file to mono float32 at the analysis rate.

The one place in the package that touches audio files.  Everything downstream works on numpy arrays.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .decode import Helper


class AudioError(Exception):
    """A file could not be decoded; the message names the file and the problem."""


@dataclass(frozen=True)
class Audio:
    """Decoded, mono, resampled audio.

    Attributes
    ----------
    samples : np.ndarray
        float32 mono samples at ``sample_rate``.
    sample_rate : int
        Rate of ``samples`` in Hz.
    start_s : float
        Where ``samples`` start in the file, in seconds (non-zero when only the tail was read).
    duration_s : float
        Duration of the whole file in seconds.
    tags : dict or None
        The container's text tags where decoding read them anyway (``Decoded.tags``), else None.
    """

    samples: np.ndarray
    sample_rate: int
    start_s: float
    duration_s: float
    tags: dict[str, str] | None = None


# Extra audio decoded before a tail so the resampler's start-up transient falls outside the returned samples.
_PREROLL_S = 0.25


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average the channels of a ``(frames, channels)`` array into contiguous float32 mono."""
    if data.ndim == 1:
        return np.ascontiguousarray(data, dtype=np.float32)
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0], dtype=np.float32)
    weights = np.full(data.shape[1], 1.0 / data.shape[1], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # huge float samples overflow: sanitize() zeroes them
        # A matrix-vector product: ~50x faster than mean(axis=1) over a (frames, 2) array.
        return np.ascontiguousarray(np.asarray(data, dtype=np.float32) @ weights)


# Float files may hold any value; beyond this level (120 dB over full scale) the analysis' power sums overflow.
_MAX_LEVEL = 1e6


def sanitize(y: np.ndarray) -> np.ndarray:
    """Replace NaN and +-Inf (float files can hold them) with silence and clip samples beyond +-``_MAX_LEVEL``.

    Returns ``y`` itself when there is nothing to fix.
    """
    if not len(y):
        return y
    # max and min propagate NaN and show +-Inf: two passes decide both questions for the usual clean input.
    top, bottom = float(y.max()), float(y.min())
    if not (math.isfinite(top) and math.isfinite(bottom)):
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        top, bottom = float(y.max()), float(y.min())
    if max(top, -bottom) > _MAX_LEVEL:
        y = np.clip(y, -_MAX_LEVEL, _MAX_LEVEL)
    return y


def resample(y: np.ndarray, orig_sr: float, target_sr: int) -> np.ndarray:
    """Resample float32 mono audio with soxr (high quality); a no-op when the rates agree."""
    if orig_sr == target_sr or len(y) == 0:
        return y.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def load(path: str | os.PathLike, sample_rate: int | None, *, tail_seconds: float | None = None,
         helper: Helper | None = None) -> Audio:
    """Decode ``path`` to mono float32 at ``sample_rate`` (or at the file's own rate).

    Parameters
    ----------
    path : str or path-like
        Audio file: MP3, WAV, FLAC, Ogg Vorbis, Opus, AIFF (libsndfile); M4A/AAC and anything else ffmpeg
        reads when ffmpeg is installed.  Any sample rate and channel count.
    sample_rate : int or None
        Target rate in Hz; ``None`` keeps the file's rate, for callers that resample to several rates.
    tail_seconds : float or None
        Read only the last ``tail_seconds`` of the file, seeking where the format allows, so a 3-hour file
        costs about what a 3-minute one does.  ``None`` or ``0`` reads the whole file; a tail longer than
        the file gives the whole file.  The samples match those of a full read at the same positions.
    helper : callable or None
        Lends this call a second core (see :func:`audioid.fingerprint.decode.decode`).

    Returns
    -------
    Audio
        ``len(samples) == round(tail_seconds * sample_rate)`` for a tail when the file is long enough.

    Raises
    ------
    AudioError
        The file is missing, unreadable, empty, too short, corrupt or not decodable audio; the message names
        the file and the problem.
    ValueError
        ``sample_rate`` or ``tail_seconds`` is not a positive number.
    """
    from .decode import decode

    if sample_rate is not None and not sample_rate > 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
    tail = tail_seconds or None
    d = decode(path, tail + _PREROLL_S if tail and sample_rate else tail, grid=sample_rate, helper=helper)
    y = sanitize(to_mono(sanitize(d.data)))  # mixing huge finite floats can overflow too
    sample_rate = sample_rate or d.sample_rate
    y = resample(y, d.sample_rate, sample_rate)
    start_s = d.start_frame / d.sample_rate
    if tail:
        # d.start_frame sits on the target grid, so dropping the pre-roll keeps samples where a full read has them
        n = int(round(tail * sample_rate))
        if len(y) > n:
            start_s += (len(y) - n) / sample_rate
            y = y[len(y) - n:]
    if len(y) == 0:
        raise AudioError(f"{os.fspath(path)}: too short to give any sample at {sample_rate} Hz")
    return Audio(samples=y, sample_rate=sample_rate, start_s=start_s, duration_s=d.total_frames / d.sample_rate,
                 tags=d.tags)


#: Quieter than this (peak level, dBFS) is silence: dead air and dither, not what was playing.
SILENCE_DBFS = -60.0


def trailing_silence(y: np.ndarray, sample_rate: int, *, frame_s: float = 0.05) -> float:
    """Seconds of silence at the end of mono ``y`` (at ``sample_rate`` Hz): the whole ``frame_s`` frames,
    counted back from the end, whose peak stays below :data:`SILENCE_DBFS`; all of ``y`` when it is silent
    throughout, 0 when its last frame is not."""
    if not len(y):
        return 0.0
    n = max(1, int(round(frame_s * sample_rate)))
    level = 10.0 ** (SILENCE_DBFS / 20.0)
    if np.abs(y[-n:]).max() >= level:   # the usual case, decided by the last frame alone
        return 0.0
    # Frames end where y ends: the front is padded with silence to whole frames.
    padded = np.concatenate([np.zeros(-len(y) % n, np.float32), np.abs(np.asarray(y, np.float32))])
    loud = np.flatnonzero(padded.reshape(-1, n).max(axis=1) >= level)
    if not len(loud):
        return len(y) / sample_rate
    return (len(padded) // n - 1 - int(loud[-1])) * n / sample_rate


def chunks_from_end(y: np.ndarray, sample_rate: int, seconds: float = 10.0, *, keep_short: bool = False
                    ) -> list[tuple[float, np.ndarray]]:
    """Cut audio into ``seconds``-long pieces from the end towards the start.

    Parameters
    ----------
    y : np.ndarray
        Mono samples.
    sample_rate : int
        Rate of ``y`` in Hz.
    seconds : float
        Length of each piece.
    keep_short : bool
        Keep the leftover piece at the start of the file when it is shorter than ``seconds``.

    Returns
    -------
    list of (start_s, samples)
        The last piece (the outro) first; ``start_s`` is its start within ``y``.
    """
    n = int(round(seconds * sample_rate))
    if n < 1:
        raise ValueError(f"seconds must give at least one sample, got {seconds} s at {sample_rate} Hz")
    pieces = []
    end = len(y)
    while end >= n:
        pieces.append(((end - n) / sample_rate, y[end - n:end]))
        end -= n
    if keep_short and end > 0:
        pieces.append((0.0, y[:end]))
    return pieces
