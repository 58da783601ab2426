"""Audio in: decode any supported file to mono float32 at the analysis rate.

The one place in the package that touches audio files.  Everything downstream works on numpy arrays.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


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
    """

    samples: np.ndarray
    sample_rate: int
    start_s: float
    duration_s: float


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels of a ``(frames, channels)`` array into float32 mono."""
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    return data.mean(axis=1, dtype=np.float32)


def resample(y: np.ndarray, orig_sr: float, target_sr: int) -> np.ndarray:
    """Resample float32 mono audio with soxr (high quality); a no-op when the rates agree."""
    if orig_sr == target_sr or len(y) == 0:
        return y.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def load(path: str | os.PathLike, sample_rate: int, *, tail_seconds: float | None = None) -> Audio:
    """Decode ``path`` to mono float32 at ``sample_rate``.

    Parameters
    ----------
    path : str or path-like
        Audio file (MP3, WAV, FLAC, Ogg Vorbis, Opus; M4A/AAC when ffmpeg is installed).
    sample_rate : int
        Target rate in Hz.
    tail_seconds : float or None
        Read only the last ``tail_seconds`` of the file (seeking where the format allows).
        ``None`` or ``0`` reads the whole file.

    Returns
    -------
    Audio

    Raises
    ------
    AudioError
        The file is missing, unreadable, empty or not decodable audio.
    """
    from .decode import decode_file

    data, native_sr, start_s, duration_s = decode_file(os.fspath(path), tail_seconds)
    y = to_mono(data)
    if not np.all(np.isfinite(y)):
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    y = resample(y, native_sr, sample_rate)
    return Audio(samples=y, sample_rate=sample_rate, start_s=start_s, duration_s=duration_s)


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
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    n = int(round(seconds * sample_rate))
    pieces = []
    end = len(y)
    while end >= n:
        pieces.append(((end - n) / sample_rate, y[end - n:end]))
        end -= n
    if keep_short and end > 0:
        pieces.append((0.0, y[:end]))
    return pieces
