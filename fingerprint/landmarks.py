"""Spectral-peak landmark fingerprints: spectrogram -> constellation peaks -> anchor/target pair hashes.

Pure functions of a mono float32 signal at ``cfg.sample_rate``.  References keep a sparse set of the most
prominent peaks paired with a few targets each (small index); queries keep a denser set paired with more
targets, so that a reference pair is found in the query even when speech or noise adds peaks of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sfft
from scipy.ndimage import uniform_filter1d

from .config import LandmarkConfig

# Peaks quieter than this (dB full scale) are ignored: digital silence and dither carry no identity.
_FLOOR_DB = -85.0
_DT_BITS = 6
_DF_BITS = 8


def hash_bits(cfg: LandmarkConfig) -> int:
    """Bits a hash of ``cfg`` can occupy (the postings store sizes its bucket table from it)."""
    top_bin = int(cfg.fmax_hz * cfg.n_fft / cfg.sample_rate) + 1
    return int(top_bin // cfg.freq_quant).bit_length() + _DF_BITS + _DT_BITS


@dataclass(frozen=True)
class Peaks:
    """Constellation peaks, sorted by time.

    ``time`` is in frames, ``freq`` in (fractional, parabolically interpolated) FFT bins, ``strength`` ranks
    them (dB above the local mean, plus the level term of :func:`find_peaks`).
    """

    time: np.ndarray
    freq: np.ndarray
    strength: np.ndarray

    def __len__(self) -> int:
        return len(self.time)


def running_max(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Centred running maximum over ``size`` (odd) elements along ``axis``, edges repeated.

    Equal to ``scipy.ndimage.maximum_filter1d(a, size, axis, mode="nearest")``, but built from O(log size)
    whole-array ``np.maximum`` calls (a sparse table), which is several times faster on spectrograms.
    """
    if size % 2 != 1:
        raise ValueError(f"size must be odd, got {size}")
    half, n = size // 2, a.shape[axis]
    shape = list(a.shape)
    shape[axis] += 2 * half
    padded = np.empty(shape, a.dtype)
    dst, src = np.moveaxis(padded, axis, 0), np.moveaxis(a, axis, 0)
    dst[half: half + n] = src
    dst[:half], dst[half + n:] = src[:1], src[-1:]
    # In the flat C-order view, neighbours along axis are `unit` elements apart, so each step is one 1-D
    # np.maximum; the windows of the kept outputs never cross into the next line.  Two buffers, used in turn.
    unit = padded.strides[axis] // padded.itemsize
    m, spare = padded.ravel(), np.empty(padded.size, a.dtype)
    shifts, span = [], 1
    while span * 2 <= size:
        shifts.append(span)  # after this step: max over windows of 2 * span
        span *= 2
    shifts.append(size - span)  # two overlapping windows of span cover size
    length = m.size
    for shift in shifts:
        d = shift * unit
        np.maximum(m[:length - d], m[d:length], out=spare[:length - d])
        m, spare, length = spare, m, length - d
    return m.reshape(shape)[(slice(None),) * (axis % a.ndim) + (slice(0, n),)]


@lru_cache(maxsize=16)
def hann_window(n: int, symmetric: bool = False) -> np.ndarray:
    """Hann window of ``n`` samples, float32, built once per size (read-only: callers share it): periodic (for
    spectra), or ``symmetric`` (``np.hanning(n)``, for tapering a whole signal)."""
    window = np.hanning(n if symmetric else n + 1)[:n].astype(np.float32)
    window.flags.writeable = False
    return window


def stft(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Complex spectra of the Hann-windowed frames of float32 mono ``y``, shape ``(frames, n_fft // 2 + 1)``.

    Frames start every ``hop`` samples, without centering; ``y`` shorter than a frame is zero-padded to one.
    """
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop]
    return sfft.rfft(frames * hann_window(n_fft), axis=1)


def log_spectrogram(y: np.ndarray, cfg: LandmarkConfig, bins: slice = slice(None)) -> np.ndarray:
    """Magnitude spectrogram in dB full scale, shape ``(frames, bins)``, Hann window, no centering.

    Only the FFT bins ``bins`` (default: all) are converted to dB: the log is not paid for bins left unused.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {y.shape}")
    db = np.abs(stft(y, cfg.n_fft, cfg.hop_length)[:, bins])
    # Full-scale sine -> 0 dB: 20 log10(magnitude / (n_fft / 4) + 1e-9), in float32, in place.
    db /= cfg.n_fft / 4.0
    db += 1e-9
    np.log10(db, out=db)
    db *= 20.0
    return db


@dataclass(frozen=True)
class Band:
    """The log spectrogram (dB full scale, ``(frames, bins)``) over the FFT bins peaks are picked from, ``fmin_hz``
    to ``fmax_hz`` plus one guard bin each side; column 0 is FFT bin ``first_bin``."""

    db: np.ndarray
    first_bin: int


def peak_band(y: np.ndarray, cfg: LandmarkConfig) -> Band:
    """The :class:`Band` of mono ``y`` (at ``cfg.sample_rate``) that :func:`find_peaks` picks peaks from."""
    bin_hz = cfg.sample_rate / cfg.n_fft
    lo = max(1, int(np.ceil(cfg.fmin_hz / bin_hz)))
    hi = min(cfg.n_fft // 2 - 1, int(np.floor(cfg.fmax_hz / bin_hz)))
    return Band(log_spectrogram(y, cfg, slice(lo - 1, hi + 2)), lo - 1)  # guard bins: for interpolation


def find_peaks(spectrum: Band, cfg: LandmarkConfig, peaks_per_s: float, neighbourhood: tuple[int, int]) -> Peaks:
    """Pick up to ``peaks_per_s`` constellation peaks per second of a :func:`peak_band`, spread evenly over time.

    A peak is a local maximum of the log spectrogram over a ``(frames, bins)`` ``neighbourhood`` inside
    ``[fmin_hz, fmax_hz]``; peaks are ranked by their height above the local mean (whitening) plus
    ``cfg.level_weight`` times their level against a pink-noise slope, and the best ones of each one-second
    block are kept.
    """
    band, lo = spectrum.db, spectrum.first_bin + 1
    bin_hz = cfg.sample_rate / cfg.n_fft
    # Local maxima are sparse: find them first, then test and rank only those points.
    local_max = running_max(running_max(band, neighbourhood[0], 0), neighbourhood[1], 1)
    t, f = np.divmod(np.flatnonzero(band == local_max), band.shape[1])
    keep = (f > 0) & (f < band.shape[1] - 1) & (band[t, f] > _FLOOR_DB)  # not a guard bin, not silence
    t, f = t[keep], f[keep]
    # The local mean, uniform_filter(band, (whiten_time_frames, whiten_freq_bins), mode="nearest"), is read at
    # these few points only: its time pass runs over the band, its frequency pass only at the points.  Like
    # scipy's, that pass sums the float32 values in float64 and divides the sum; a window of dB values adds up
    # exactly in float64 unless one is very close to 0 dB (within ~2e-5), so the order of the sum changes no bit.
    rows, cols = band.shape
    width = cfg.whiten_freq_bins
    left = width // 2
    time_mean = np.empty((rows, cols + width - 1), np.float32)  # edge-padded in frequency
    uniform_filter1d(band, cfg.whiten_time_frames, axis=0, output=time_mean[:, left: left + cols], mode="nearest")
    time_mean[:, :left] = time_mean[:, left: left + 1]
    time_mean[:, left + cols:] = time_mean[:, left + cols - 1: left + cols]
    windows = np.lib.stride_tricks.sliding_window_view(time_mean, width, axis=1)  # [t, f]: the bins around f

    def prominence(at: np.ndarray) -> np.ndarray:
        local_mean = windows[at, f].sum(axis=1, dtype=np.float64) / width
        return band[at, f] - local_mean.astype(np.float32)

    strength = prominence(t)
    rising = strength > 0
    t, f, strength = t[rising], f[rising], strength[rising]
    if len(t) == 0:
        return Peaks(np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
    # Rank by the prominence a peak keeps over persist_frames frames around it: sustained partials (music)
    # stay, momentary maxima of noise do not.
    half = cfg.persist_frames // 2
    for k in range(-half, cfg.persist_frames - half):
        if k:
            strength = np.minimum(strength, prominence(np.clip(t + k, 0, rows - 1)))
    fft_bin = f + (lo - 1)
    if cfg.level_weight:
        # Level against a pink slope (equal energy per octave): what broadband noise would leave standing.
        pink_level = band[t, f] + 10.0 * np.log10(fft_bin * (bin_hz / 1000.0))
        strength = strength + np.float32(cfg.level_weight) * pink_level.astype(np.float32)
    # Parabolic interpolation of the peak's frequency from its two neighbours.
    a, b, c = band[t, f - 1], band[t, f], band[t, f + 1]
    denom = a - 2 * b + c
    delta = np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, -1), 0.0)
    freq = fft_bin + np.clip(delta, -0.5, 0.5)
    chosen = _strongest_per_second(t, strength, peaks_per_s, cfg)
    return Peaks(t[chosen].astype(np.float32), freq[chosen].astype(np.float32), strength[chosen].astype(np.float32))


def _strongest_per_second(t: np.ndarray, strength: np.ndarray, per_s: float, cfg: LandmarkConfig) -> np.ndarray:
    """Indices (in time order) of the ``per_s`` strongest peaks of each one-second block: density even over time."""
    block_frames = max(1, int(round(1.0 / cfg.frame_seconds)))
    keep_per_block = max(1, int(round(per_s * block_frames * cfg.frame_seconds)))
    block = t.astype(np.int64) // block_frames
    order = np.lexsort((-strength, block))
    block_sorted = block[order]
    first = np.searchsorted(block_sorted, block_sorted, side="left")
    rank = np.arange(len(order)) - first
    return np.sort(order[rank < keep_per_block])


def strongest(peaks: Peaks, per_s: float, cfg: LandmarkConfig) -> Peaks:
    """The ``per_s`` strongest of ``peaks`` in each second (a reference's verification peaks; none for 0)."""
    keep = _strongest_per_second(peaks.time, peaks.strength, per_s, cfg) if per_s > 0 else np.zeros(0, np.intp)
    return Peaks(peaks.time[keep], peaks.freq[keep], peaks.strength[keep])


def pair_hashes(peaks: Peaks, cfg: LandmarkConfig, fanout: int, speed: float = 1.0, pool: int | None = None,
                pitch: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pair each anchor peak with up to ``fanout`` targets in its zone and hash each pair.

    Parameters
    ----------
    peaks : Peaks
        From :func:`find_peaks`.
    cfg : LandmarkConfig
    fanout : int
        Targets per anchor, nearest in time first.
    speed : float
        Playback-speed hypothesis: peaks are mapped back to the reference's time and frequency axes
        (time x speed, frequency / pitch) before hashing, so a query played ``speed`` times too fast can still
        produce reference hashes (the ``time`` it returns is on the reference's axis too).
    pool : int or None
        Choose the ``fanout`` strongest targets among the ``pool`` nearest in time (None: the nearest).
    pitch : float or None
        Frequency ratio of the query to the reference; None: ``speed``, as when a recording is played faster.
        A time-stretch that keeps the pitch (broadcast time compression) is ``speed`` != 1 with ``pitch`` 1.

    Returns
    -------
    hashes : np.ndarray of uint32
    times : np.ndarray of int32
        Anchor time of each hash in frames (on the reference's time axis).
    """
    n = len(peaks)
    if n < 2:
        return np.zeros(0, np.uint32), np.zeros(0, np.int32)
    t = peaks.time * np.float32(speed)
    fq = np.floor(peaks.freq / np.float32((speed if pitch is None else pitch) * cfg.freq_quant)).astype(np.int32)
    df_max = cfg.df_max // cfg.freq_quant
    # Peaks are time-sorted, so a target zone of dt_max frames holds at most this many following peaks.
    width = int(min(n - 1, np.max(np.searchsorted(t, t + cfg.dt_max + 1, side="left") - np.arange(n))))
    if width <= 0:
        return np.zeros(0, np.uint32), np.zeros(0, np.int32)

    def following(x: np.ndarray, fill: float) -> np.ndarray:
        """Row a: the ``width`` values after ``x[a]``, ``fill`` past the end (windows of a padded copy)."""
        padded = np.concatenate([x[1:], np.full(width, fill, x.dtype)])
        return np.lib.stride_tricks.sliding_window_view(padded, width)

    # (anchors x width) matrices, in 32 bits; past the last peak, a frequency below every zone makes no pair.
    dt = np.rint(following(t, t[-1]) - t[:, None])  # whole frames, still float32
    df = following(fq, -df_max - 1) - fq[:, None]
    ok = (dt >= cfg.dt_min) & (dt <= cfg.dt_max) & (np.abs(df) <= df_max)
    if pool is not None and pool > fanout:
        ok &= np.cumsum(ok, axis=1) <= pool
        # Rank the pool by strength (ties: the nearer first) and keep the best fanout of each row.
        score = np.where(ok, following(peaks.strength, 0.0), -np.inf)
        order = np.argsort(-score, axis=1, kind="stable")
        best = np.zeros_like(ok)
        np.put_along_axis(best, order[:, :fanout], True, axis=1)
        ok &= best
    pair = np.flatnonzero(ok)  # row-major, like np.nonzero, but much cheaper than 2-D indices
    ai = pair // width
    # Keep each anchor's fanout nearest pairs (all, after the pool's choice): those whose pair fanout places
    # earlier has another anchor.
    nearest = np.ones(len(pair), bool)
    nearest[fanout:] = ai[fanout:] != ai[:len(ai) - fanout]
    pair, ai = pair[nearest], ai[nearest]
    dt, df = dt.ravel()[pair].astype(np.int64), df.ravel()[pair]
    h = (fq[ai].astype(np.int64) << (_DF_BITS + _DT_BITS)) | ((df + (1 << (_DF_BITS - 1))) << _DT_BITS) | dt
    return h.astype(np.uint32), np.rint(t[ai]).astype(np.int32)


def hash_fields(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(anchor frequency unit, target - anchor units, time delta in frames)`` of :func:`pair_hashes` hashes; a
    unit is ``cfg.freq_quant`` FFT bins (at the speed the pair was hashed at)."""
    h = np.asarray(hashes, dtype=np.int64)
    dt = h & ((1 << _DT_BITS) - 1)
    df = ((h >> _DT_BITS) & ((1 << _DF_BITS) - 1)) - (1 << (_DF_BITS - 1))
    return h >> (_DT_BITS + _DF_BITS), df, dt


def reference_peaks(y: np.ndarray, cfg: LandmarkConfig) -> Peaks:
    """The sparse peaks of a reference track, which :func:`reference_hashes` pairs."""
    return find_peaks(peak_band(y, cfg), cfg, cfg.ref_peaks_per_s, (cfg.peak_time_frames, cfg.peak_freq_bins))


def reference_pairs(peaks: Peaks, cfg: LandmarkConfig) -> tuple[np.ndarray, np.ndarray]:
    """Hashes and anchor frames of a reference's :func:`reference_peaks` (each anchor's ``ref_fanout`` best
    targets among its ``ref_target_pool`` nearest)."""
    return pair_hashes(peaks, cfg, cfg.ref_fanout, pool=cfg.ref_target_pool)


def reference_hashes(y: np.ndarray, cfg: LandmarkConfig) -> tuple[np.ndarray, np.ndarray]:
    """Hashes and anchor frames of a reference track (sparse peaks, small fanout)."""
    return reference_pairs(reference_peaks(y, cfg), cfg)


def query_peaks(y: np.ndarray | Band, cfg: LandmarkConfig) -> Peaks:
    """Dense peaks of a query (mono samples or their :func:`peak_band`); hash them with :func:`pair_hashes` at
    ``cfg.query_fanout`` per speed hypothesis."""
    spectrum = y if isinstance(y, Band) else peak_band(y, cfg)
    return find_peaks(spectrum, cfg, cfg.query_peaks_per_s, (cfg.query_peak_time_frames, cfg.query_peak_freq_bins))

