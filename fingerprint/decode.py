"""Container/codec decoding: soundfile first, ffmpeg for what libsndfile cannot read."""
from __future__ import annotations

import os

import numpy as np

from .audio import AudioError


def decode_file(path: str, tail_seconds: float | None) -> tuple[np.ndarray, int, float, float]:
    """Decode ``path`` (or only its last ``tail_seconds``).

    Returns ``(data, native_rate, start_s, duration_s)`` with ``data`` float32 ``(frames, channels)``.
    """
    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file")
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            total = f.frames
            start = 0
            if tail_seconds and total > 0:
                start = max(0, total - int(round(tail_seconds * sr)))
                if start:
                    f.seek(start)
            data = f.read(dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        raise AudioError(f"{path}: cannot decode audio ({e.error_string})") from None
    except (RuntimeError, ValueError) as e:
        raise AudioError(f"{path}: cannot decode audio ({e})") from None
    if len(data) == 0:
        raise AudioError(f"{path}: no audio samples")
    return data, sr, start / sr, max(total, start + len(data)) / sr
