"""Content embeddings: one fixed-length vector per analysis window, for kNN classification (music / dialogue /
both) and "sounds like" neighbours in a FAISS index.

Pure functions of a mono float32 signal at ``cfg.sample_rate``.  One STFT (64 ms Hann window, 20 ms hop) feeds
every spectral block; each block summarises frame-level descriptors over the window with statistics (mean, std,
...), so the vector does not depend on where in the window an event falls.  The window is judged by its shape,
not its level: level-dependent statistics are taken relative to the window's mean log energy, and the rest are
ratios, so a quiet outro embeds like a loud one.

Blocks (see :func:`feature_names` for every dimension):

``logmel``
    Mean and std over time of the log-mel spectrum (relative to the window's mean level): the coarse spectral
    envelope (timbre, bandwidth, bass weight) and how much each band fluctuates.  Speech fluctuates strongly
    in the 300-3000 Hz bands (syllables), sustained music less so.
``mfcc``
    Mean and std of MFCCs 1..n-1 (decorrelated envelope shape; c0 is level and only its std is kept) and the
    std of their deltas: how fast the envelope changes.  Formant transitions make speech deltas large.
``contrast``
    Spectral contrast (peak minus valley level) per octave band, mean and std: tonal music has deep valleys
    between partials in every band; speech and noise are contrasted only in the formant region.
``flatness``
    Spectral flatness (geometric / arithmetic mean of power), mean and std: tonal (0) vs noise-like (1);
    speech alternates between voiced (low) and fricative (high) frames, so its std is high.
``rhythm``
    Onset strength (positive spectral flux of the log-mel spectrum) mean, its coefficient of variation, and
    pulse clarity: the highest normalised autocorrelation of the onset envelope at beat-like lags
    (0.25-1.5 s).  A steady beat gives clear periodic onsets; speech onsets are irregular.
``chroma``
    Key-invariant pitch-class statistics: the window's mean chroma sorted from strongest to weakest (a few
    dominant pitch classes = a key and chords), the mean entropy of frame chroma, and the frame-to-frame
    chroma similarity (held notes and chords vs gliding speech pitch).
``speech``
    Descriptors chosen to separate speech from music: share of the envelope's modulation energy at the
    syllable rate (3-6 Hz) in three band groups; low-energy frame ratio and near-silent frame ratio (pauses
    between phrases); the std of frame energy (dynamics); zero-crossing rate mean and std (voiced/unvoiced alternation); spectral centroid mean
    and std; and harmonic stability, the similarity of consecutive whitened spectra at 20 ms and 100 ms lags
    (partials of held notes stay in place, those of speech glide with intonation).
``background``
    What is left between the loudest events: energy percentiles relative to the mean level, the log-mel
    envelope, contrast, flatness and stability of the quietest 30 % of frames, and the share of each frame's
    log-mel rise that falls in the formant bands.  Under dialogue the background is silence or room noise;
    under speech over music it is the music bed.
``change``
    How the spectral envelope changes: the distribution (10th, 50th, 90th percentile relative to the mean, and
    log kurtosis) of the per-frame norm of MFCC deltas, for c1-12, c1-4 (tilt, formant balance), c5-12
    (formant detail) and c13-19 (fine structure).  Speech changes in bursts (syllable onsets, formant
    transitions) between steadier vowels: a heavy-tailed distribution, which survives under music louder than
    the speech, whose envelope changes more evenly.
``persistence``
    How long spectral peaks stay put: the share of bins of the whitened spectrum (100-4000 Hz) that stand out
    as peaks, and the share of peak bin-frames that belong to runs of at least 100 ms and 300 ms in the same
    bin (overall, and the 10th and 50th percentile over frames).  Held notes make long runs even under speech;
    speech harmonics glide and break them.

:func:`embed` gives the raw descriptor vector of one window; :func:`embed_windows` gives one vector per window along
a reference track, computing the STFT once (a window's vector is exactly what :func:`embed` gives for its samples,
because windows start on the frame grid).  A :class:`Standardizer` maps raw vectors to index vectors: it
standardises each dimension, weights each block, projects on the principal axes of real music, speech and
speech-over-music (fewer dimensions: faster kNN) and L2-normalises, so that inner product is cosine similarity.
The package ships one fixed transform per config version (:func:`default_standardizer`, fitted by
``bench/fit_embedding_stats.py``), so vectors mean the same in every index and after every add.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy import fft as sfft
from scipy.ndimage import uniform_filter1d   # imported by the landmark code anyway: no extra start-up cost

from .config import config_from_dict
from .landmarks import hann_window, stft

# Power floor of the log spectra, relative to a full-scale sine (-100 dB): digital silence and dither
# carry no information, and a fixed floor keeps the output finite.
_POWER_FLOOR = 1e-10

# Band groups of the background spectrum, and the share of quietest frames that make the background.
_N_BG_BANDS = 8
_BG_SHARE = 0.3

# Cepstral coefficient groups of the change block: c1-12, c1-4, c5-12, c13-19 (as slices of the MFCC matrix).
_CHANGE_GROUPS = (slice(1, 13), slice(1, 5), slice(5, 13), slice(13, None))
# A whitened-spectrum bin is a peak when it holds this many times the root-mean-square bin value (1/sqrt(bins)).
_PEAK_FACTOR = 1.5

BLOCKS = ("logmel", "mfcc", "contrast", "flatness", "rhythm", "chroma", "speech", "background", "change",
          "persistence")


@dataclass(frozen=True)
class EmbeddingConfig:
    """Parameters of the window embedding.

    Attributes
    ----------
    version : int
        Format version of the vectors; an index refuses queries embedded with another one.  Bump it whenever a
        change alters the vector a given input produces.
    sample_rate : int
        Analysis rate in Hz.  16 kHz keeps the band that separates speech from music (fricatives, cymbals)
        and stays cheap.
    window_s, hop_s : float
        Reference windows: length and step in seconds (10 s, the outro length, with 50 % overlap).
    n_fft, hop_length : int
        STFT window and hop in samples (64 ms / 20 ms at 16 kHz): 15.6 Hz bins resolve partials for chroma
        and harmonic stability; 50 frames per second resolve syllable-rate (4 Hz) modulation.
    n_mels : int
        Mel bands of the log-mel spectrum.
    fmin_hz, fmax_hz : float
        Band of the mel filterbank.
    n_mfcc : int
        Cepstral coefficients kept (c0 included, as its std only).
    delta_width : int
        Frames each side of the regression that gives MFCC deltas.
    contrast_fmin_hz, n_contrast_bands : float, int
        Lowest edge and number of octave bands of the spectral contrast.
    contrast_quantile : float
        Share of a band's bins that makes its peak and its valley.
    pulse_min_s, pulse_max_s : float
        Lag range searched for a beat period (240 to 40 beats per minute).
    stability_lags : tuple of int
        Frame lags at which harmonic stability is measured.
    persistence_runs : tuple of int
        Run lengths in frames (100 ms, 300 ms) of the persistence block.
    block_weights : tuple of (str, float)
        Relative weight of each block in the similarity, applied by :class:`Standardizer`; each block's
        weight is spread over its dimensions, so large blocks (log-mel) do not drown small ones (speech).
    """

    version: int = 2
    sample_rate: int = 16000
    window_s: float = 10.0
    hop_s: float = 5.0
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 40
    fmin_hz: float = 40.0
    fmax_hz: float = 8000.0
    n_mfcc: int = 20
    delta_width: int = 2
    contrast_fmin_hz: float = 100.0
    n_contrast_bands: int = 6
    contrast_quantile: float = 0.2
    pulse_min_s: float = 0.25
    pulse_max_s: float = 1.5
    stability_lags: tuple = (1, 5)
    persistence_runs: tuple = (5, 15)
    block_weights: tuple = (("logmel", 1.0), ("mfcc", 1.0), ("contrast", 1.0), ("flatness", 0.5),
                            ("rhythm", 1.0), ("chroma", 1.0), ("speech", 2.0), ("background", 1.0),
                            ("change", 1.5), ("persistence", 1.5))

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "stability_lags", tuple(int(v) for v in self.stability_lags))
        object.__setattr__(self, "persistence_runs", tuple(int(v) for v in self.persistence_runs))
        if any(v < 1 for v in self.persistence_runs):
            raise ValueError("persistence_runs must be positive frame counts")
        object.__setattr__(self, "block_weights", tuple((str(k), float(w)) for k, w in self.block_weights))
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0:
            raise ValueError("sample_rate, n_fft and hop_length must be positive")
        if self.window_s <= 0 or self.hop_s <= 0:
            raise ValueError("window_s and hop_s must be positive")
        if round(self.hop_s * self.sample_rate) % self.hop_length:
            # Windows must start on the frame grid for embed_windows to share one STFT.
            raise ValueError(f"hop_s * sample_rate must be a multiple of hop_length ({self.hop_length})")
        names = [k for k, _ in self.block_weights]
        if sorted(names) != sorted(BLOCKS):
            raise ValueError(f"block_weights must name each of {BLOCKS} once, got {names}")

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / self.sample_rate

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stability_lags"] = list(self.stability_lags)
        d["persistence_runs"] = list(self.persistence_runs)
        d["block_weights"] = [list(kw) for kw in self.block_weights]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EmbeddingConfig":
        return config_from_dict(cls, d)


# ---------------------------------------------------------------------------------------------------- layout

def _block_sizes(cfg: EmbeddingConfig) -> dict[str, int]:
    return {
        "logmel": 2 * cfg.n_mels,
        "mfcc": (cfg.n_mfcc - 1) + cfg.n_mfcc + cfg.n_mfcc,
        "contrast": 2 * (cfg.n_contrast_bands + 1),
        "flatness": 2,
        "rhythm": 3,
        "chroma": 12 + 2,
        "speech": 3 + 2 + 1 + 2 + 2 + 2 * len(cfg.stability_lags),
        "background": 4 + _N_BG_BANDS + 3 + 2,
        "change": 4 * len(_CHANGE_GROUPS),
        "persistence": 1 + 3 * len(cfg.persistence_runs),
    }


def feature_names(cfg: EmbeddingConfig = EmbeddingConfig()) -> list[str]:
    """Name of every dimension of :func:`embed`'s output, in order (``block.descriptor``)."""
    m, c, b = cfg.n_mels, cfg.n_mfcc, cfg.n_contrast_bands + 1
    names = [f"logmel.mean{i}" for i in range(m)] + [f"logmel.std{i}" for i in range(m)]
    names += [f"mfcc.mean{i}" for i in range(1, c)] + [f"mfcc.std{i}" for i in range(c)]
    names += [f"mfcc.delta_std{i}" for i in range(c)]
    names += [f"contrast.mean{i}" for i in range(b)] + [f"contrast.std{i}" for i in range(b)]
    names += ["flatness.mean", "flatness.std", "rhythm.onset_mean", "rhythm.onset_cv", "rhythm.pulse_clarity"]
    names += [f"chroma.sorted{i}" for i in range(12)] + ["chroma.entropy", "chroma.stability"]
    names += ["speech.mod4hz_low", "speech.mod4hz_mid", "speech.mod4hz_high", "speech.low_energy_ratio",
              "speech.pause_ratio", "speech.energy_std", "speech.zcr_mean", "speech.zcr_std",
              "speech.centroid_mean", "speech.centroid_std"]
    for lag in cfg.stability_lags:
        names += [f"speech.stability{lag}_mean", f"speech.stability{lag}_std"]
    names += [f"background.energy_p{q}" for q in (10, 25, 50, 90)]
    names += [f"background.logmel{i}" for i in range(_N_BG_BANDS)]
    names += ["background.contrast", "background.flatness", "background.stability"]
    names += ["background.midflux_ratio_mean", "background.midflux_ratio_std"]
    for g in _CHANGE_GROUPS:
        c = f"c{g.start}_{(g.stop or cfg.n_mfcc) - 1}"
        names += [f"change.{c}_p10", f"change.{c}_p50", f"change.{c}_p90", f"change.{c}_log_kurtosis"]
    names += ["persistence.peak_share"]
    for run in cfg.persistence_runs:
        ms = round(1000 * run * cfg.frame_seconds)
        names += [f"persistence.run{ms}ms", f"persistence.run{ms}ms_p10", f"persistence.run{ms}ms_p50"]
    return names


def embedding_dim(cfg: EmbeddingConfig = EmbeddingConfig()) -> int:
    """Length of the vectors :func:`embed` returns under ``cfg``."""
    return sum(_block_sizes(cfg).values())


def block_weights(cfg: EmbeddingConfig = EmbeddingConfig()) -> np.ndarray:
    """Per-dimension weights that give each block ``cfg.block_weights`` of the squared norm of a standardised
    vector, whatever its number of dimensions."""
    sizes = _block_sizes(cfg)
    w = dict(cfg.block_weights)
    return np.concatenate([np.full(sizes[b], np.sqrt(w[b] / sizes[b])) for b in BLOCKS]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- filters

def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    return np.where(f < 1000.0, f / (200.0 / 3.0), 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0))


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15.0, m * (200.0 / 3.0), 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)))


class _Filterbank(NamedTuple):
    """Per-config constants of :func:`_frame_features`."""

    mel_blocks: list[tuple[slice, slice, np.ndarray]]   # Slaney mel filters as (filters, bins, (bins, filters)) blocks
    chroma: np.ndarray               # (12, chroma_bins.stop - chroma_bins.start): the bins where chroma is non-zero
    chroma_bins: slice
    bands: list[tuple[int, int, int]]   # contrast bands as [i0, i1) bin ranges, and the bins in each quantile
    freqs: np.ndarray                # (bins,) Hz
    ones: np.ndarray                 # (bins,) for row sums as BLAS matrix-vector products (a quarter of np.sum's cost)
    dct: np.ndarray                  # (n_mfcc, n_mels) orthonormal DCT-II
    rise_sums: np.ndarray            # (n_mels, 2): sums over all mel bands, and over those centred in 300-3000 Hz


@lru_cache(maxsize=8)
def _filters(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float, n_mfcc: int, contrast_fmin: float,
             n_bands: int, contrast_quantile: float) -> _Filterbank:
    """Mel and chroma filterbanks, contrast band edges, bin frequencies and DCT matrix (built once per config).

    Built here rather than with librosa.filters: the same Slaney mel filters, without librosa's ~1 s first-call
    cost (numba) on a cold CLI start.
    """
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    # Slaney mel filters (triangles on the mel scale, area-normalised), as librosa.filters.mel(htk=False).
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(min(fmax, sr / 2)), n_mels + 2))
    lower = (freqs[None, :] - edges_hz[:-2, None]) / np.diff(edges_hz)[:-1, None]
    upper = (edges_hz[2:, None] - freqs[None, :]) / np.diff(edges_hz)[1:, None]
    mel = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    # Chroma: each bin's partial goes to the pitch classes within a semitone of it (triangular weight), only
    # over 100-4000 Hz where partials are resolved (>= 1.5 bins per semitone) and carry pitch.
    chroma = np.zeros((12, len(freqs)))
    ok = (freqs >= 100.0) & (freqs <= 4000.0)
    pc = np.mod(12.0 * np.log2(freqs[ok] / 440.0) + 9.0, 12.0)        # 0 = C
    dist = np.abs(((pc[None, :] - np.arange(12)[:, None]) + 6.0) % 12.0 - 6.0)
    chroma[:, ok] = np.maximum(0.0, 1.0 - dist)
    on = np.flatnonzero(chroma.any(axis=0))
    chroma_bins = slice(int(on[0]), int(on[-1]) + 1) if len(on) else slice(0, 0)
    edges = [0.0] + [contrast_fmin * 2.0 ** k for k in range(n_bands)] + [sr / 2]
    bands = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        i0, i1 = int(np.searchsorted(freqs, lo)), int(np.searchsorted(freqs, hi, side="right"))
        i1 = max(i1, i0 + 2)
        bands.append((i0, i1, max(1, int(round(contrast_quantile * (i1 - i0))))))
    dct = sfft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc]
    centres = edges_hz[1:-1]
    return _Filterbank(mel_blocks=_mel_blocks(mel.astype(np.float32)), chroma=chroma[:, chroma_bins].astype(np.float32),
                       chroma_bins=chroma_bins, bands=bands, freqs=freqs.astype(np.float32),
                       ones=np.ones(len(freqs), np.float32), dct=dct.astype(np.float32),
                       rise_sums=np.column_stack([np.ones(n_mels), (centres >= 300.0) & (centres <= 3000.0)]
                                                 ).astype(np.float32))


def _mel_blocks(mel: np.ndarray, size: int = 8) -> list[tuple[slice, slice, np.ndarray]]:
    """The mel filterbank as blocks of ``size`` consecutive filters, each with only the bins it covers.

    The filters are narrow triangles: the full ``(n_mels, bins)`` product is mostly multiplications by zero,
    and these blocks cost about a third of it (the same non-zero products, summed in another order).
    """
    blocks = []
    for f0 in range(0, len(mel), size):
        filters = slice(f0, min(f0 + size, len(mel)))
        on = np.flatnonzero(mel[filters].any(axis=0))
        bins = slice(int(on[0]), int(on[-1]) + 1) if len(on) else slice(0, 0)
        blocks.append((filters, bins, np.ascontiguousarray(mel[filters, bins].T)))
    return blocks


def _cfg_filters(cfg: EmbeddingConfig) -> _Filterbank:
    return _filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin_hz, cfg.fmax_hz, cfg.n_mfcc,
                    cfg.contrast_fmin_hz, cfg.n_contrast_bands, cfg.contrast_quantile)


# ---------------------------------------------------------------------------------------------------- frames

def _validate(y: np.ndarray, sr: int, cfg: EmbeddingConfig) -> np.ndarray:
    if sr != cfg.sample_rate:
        raise ValueError(f"audio at {sr} Hz, the embedding config expects {cfg.sample_rate} Hz: resample first")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.floating):
        raise ValueError(f"expected float samples, got {y.dtype}")
    if len(y) == 0:
        raise ValueError("empty audio: nothing to embed")
    if not np.isfinite(y).all():
        raise ValueError("audio holds NaN or infinite samples")
    return np.ascontiguousarray(y, dtype=np.float32)


@dataclass
class _Frames:
    """Frame-level descriptors of a signal, shape ``(frames, ...)``; a window pools a contiguous range."""

    logmel: np.ndarray      # (T, n_mels) dB
    mfcc: np.ndarray        # (T, n_mfcc)
    contrast: np.ndarray    # (T, bands) dB
    flatness: np.ndarray    # (T,)
    flux: np.ndarray        # (T,) positive log-mel flux into frame t (0 at t=0)
    chroma: np.ndarray      # (T, 12) normalised
    energy_db: np.ndarray   # (T,)
    zcr: np.ndarray         # (T,)
    centroid: np.ndarray    # (T,) Hz
    whitened: np.ndarray    # (T, bins) half-wave rectified, L2-normalised whitened log spectrum (stability)
    midflux: np.ndarray     # (T,) share of the log-mel rise into frame t that is in 300-3000 Hz
    # The same values, side by side, so that a window pools each set with one mean and std:
    env: np.ndarray         # (T, n_mels + n_mfcc + bands): logmel, mfcc and contrast are its column blocks
    scalars: np.ndarray     # (5, T): energy_db, flatness, zcr, centroid and midflux are its rows


def _frame_features(y: np.ndarray, cfg: EmbeddingConfig) -> _Frames:
    n, hop = cfg.n_fft, cfg.hop_length
    if len(y) < n:
        y = np.pad(y, (0, n - len(y)))  # here rather than in stft(): the zero-crossing count reads it too
    fb = _cfg_filters(cfg)
    # Full-scale sine -> power 1 in its bin.  In place: the operations of the plain expressions without their
    # temporaries (the thresholds of the persistence block and the quiet-frame choice see the same values).
    power = np.abs(stft(y, n, hop))
    np.square(power, out=power)
    power *= np.float32(16.0 / n ** 2)
    logpow = power + _POWER_FLOOR
    np.log10(logpow, out=logpow)
    logpow *= 10.0

    n_frames, m, c = len(power), cfg.n_mels, cfg.n_mfcc
    env = np.empty((n_frames, m + c + len(fb.bands)), np.float32)
    logmel, mfcc, contrast = env[:, :m], env[:, m:m + c], env[:, m + c:]
    scalars = np.empty((5, n_frames), np.float32)
    energy_db, flatness, zcr, centroid, midflux = scalars

    melpow = np.empty((n_frames, m), np.float32)
    for filters, bins, weights in fb.mel_blocks:
        np.matmul(power[:, bins], weights, out=melpow[:, filters])
    melpow += _POWER_FLOOR
    np.log10(melpow, out=melpow)
    np.multiply(melpow, 10.0, out=logmel)
    mfcc[:] = logmel @ fb.dct.T
    total = power @ fb.ones
    np.multiply(np.log10(total + _POWER_FLOOR), 10.0, out=energy_db)

    # Spectral contrast: mean of the top and bottom quantile of each band's bins, in dB.
    # Sorted rather than partitioned (numpy's SIMD sort is several times faster); the quantiles summed by BLAS,
    # both alike, so that a flat band has exactly 0 contrast.
    for j, (i0, i1, k) in enumerate(fb.bands):
        if k == 1:
            # Peak and valley are one bin each: max minus min (the same values), taken down the rows of the
            # transposed band, which runs across frames at once; sorting short rows costs 4x more.
            rows = np.ascontiguousarray(logpow[:, i0:i1].T)
            np.subtract(rows.max(axis=0), rows.min(axis=0), out=contrast[:, j])
            continue
        s = np.sort(logpow[:, i0:i1], axis=1)
        contrast[:, j] = (s[:, -k:] @ fb.ones[:k] - s[:, :k] @ fb.ones[:k]) / k

    # Geometric mean from the log spectrum already at hand (ln = dB * ln(10) / 10), over the bins but DC.
    nb = len(fb.ones) - 1
    flatness[:] = np.exp((logpow[:, 1:] @ fb.ones[1:]) * np.float32(np.log(10.0) / 10.0 / nb))
    flatness /= (power[:, 1:] @ fb.ones[1:]) / np.float32(nb) + _POWER_FLOOR
    rise = np.subtract(logmel[1:], logmel[:-1])
    np.maximum(rise, 0.0, out=rise)
    total_rise, mid_rise = (rise @ fb.rise_sums).T      # both sums in one pass
    flux = np.zeros(len(power), np.float32)
    np.divide(total_rise, m, out=flux[1:])
    # Share of each frame's rise that falls in the speech formant bands.
    midflux[0] = 0.0
    np.divide(mid_rise, total_rise + 1e-3, out=midflux[1:])

    chroma = power[:, fb.chroma_bins] @ fb.chroma.T
    chroma /= chroma.sum(axis=1, keepdims=True) + _POWER_FLOOR

    # Zero crossings per sample in each frame.  The n - 1 sign changes a frame spans are those of q whole hops
    # and the first r of the next hop: counted per hop, cheaper than a running count over every sample.  The
    # hops' counts as float32 BLAS sums (exact: at most hop), cheaper than integer sums of bytes; their running
    # sum in float64, exact on any track.
    q, r = divmod(n - 1, hop)
    sign = np.signbit(y)
    used = min(len(y) - 1, (n_frames + q) * hop)
    crossing = np.zeros((n_frames + q) * hop, bool)
    np.not_equal(sign[1:used + 1], sign[:used], out=crossing[:used])
    crossing = crossing.reshape(n_frames + q, hop).astype(np.float32)
    ones = np.ones(hop, np.float32)
    before = np.zeros(n_frames + q + 1)                     # changes before each hop
    np.cumsum(crossing @ ones, out=before[1:])
    head = crossing[q:, :r] @ ones[:r]
    zcr[:] = (before[q:q + n_frames] - before[:n_frames] + head[:n_frames]) / np.float32(n - 1)

    np.divide(power @ fb.freqs, total + _POWER_FLOOR, out=centroid)

    # Whitened log spectrum over 100-4000 Hz: partials stand out of the local mean; stability compares frames.
    lo, hi = int(np.searchsorted(fb.freqs, 100.0)), int(np.searchsorted(fb.freqs, 4000.0))
    band = logpow[:, lo:hi]
    white = uniform_filter1d(band, 9, axis=1, mode="nearest")     # mean of the 9 bins around each
    np.subtract(band, white, out=white)
    np.maximum(white, 0.0, out=white)
    white /= np.sqrt(np.einsum("ij,ij->i", white, white))[:, None] + 1e-6      # np.linalg.norm at half the cost

    return _Frames(logmel=logmel, mfcc=mfcc, contrast=contrast, flatness=flatness, flux=flux, chroma=chroma,
                   energy_db=energy_db, zcr=zcr, centroid=centroid, whitened=white, midflux=midflux, env=env,
                   scalars=scalars)


# ---------------------------------------------------------------------------------------------------- pooling

def _mean_std(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``x.mean(axis)`` and ``x.std(axis)``: numpy's operations (the same values) with one sum for both.

    np.std is Python code around several ufunc calls (microseconds each); a window pools dozens of descriptors.
    """
    n = x.shape[axis]
    mean = np.add.reduce(x, axis=axis, keepdims=True) / n
    dev = x - mean
    np.multiply(dev, dev, out=dev)
    return np.squeeze(mean, axis), np.sqrt(np.add.reduce(dev, axis=axis) / n)


def _percentiles(x: np.ndarray, q: tuple[float, ...]) -> np.ndarray:
    """Percentiles ``q`` of ``x`` along its last axis, shape ``x.shape[:-1] + (len(q),)``.

    ``np.percentile``'s linear interpolation (the same formula), from one sort: on the few hundred values of a
    window, ``np.percentile``'s general machinery costs several times the sort.
    """
    return _sorted_percentiles(np.sort(x, axis=-1), q)


@lru_cache(maxsize=64)
def _percentile_points(n: int, q: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorted positions below and above percentiles ``q`` of ``n`` values, and the fraction between them."""
    pos = np.asarray(q, dtype=np.float64) / 100.0 * (n - 1)
    below = np.floor(pos).astype(np.intp)
    points = below, np.minimum(below + 1, n - 1), pos - below
    for a in points:
        a.flags.writeable = False            # shared by every caller
    return points


def _sorted_percentiles(xs: np.ndarray, q: tuple[float, ...]) -> np.ndarray:
    """:func:`_percentiles` of values ``xs`` already sorted along their last axis."""
    below, above, frac = _percentile_points(xs.shape[-1], q)
    a, b = xs[..., below], xs[..., above]
    return np.where(frac >= 0.5, b - (b - a) * (1.0 - frac), a + (b - a) * frac)


def _pulse_clarity(onset: np.ndarray, cfg: EmbeddingConfig) -> float:
    lo = max(1, int(round(cfg.pulse_min_s / cfg.frame_seconds)))
    hi = int(round(cfg.pulse_max_s / cfg.frame_seconds))
    x = onset - onset.mean()
    if len(x) <= lo + 2 or not np.any(x):
        return 0.0
    # Only lags 0 and lo..top are read: direct products cost half of a full autocorrelation by FFT.
    top = min(hi, len(x) - 2)
    ac = np.correlate(np.concatenate([x, np.zeros(top, x.dtype)]), x)
    # Unbiased by the overlap length, so long lags are not penalised for having fewer products.
    ac /= len(x) - np.arange(top + 1)
    ac /= ac[0] if ac[0] > 0 else 1.0
    return float(np.max(ac[lo:]))


@lru_cache(maxsize=16)
def _modulation_bins(n_frames: int, frame_seconds: float) -> tuple[slice, slice]:
    """The rfft bins of ``n_frames`` frames at 0.5-25 Hz and at 3-6 Hz, as slices."""
    f = np.fft.rfftfreq(n_frames, d=frame_seconds)
    found = []
    for lo, hi in ((0.5, 25.0), (3.0, 6.0)):
        on = np.flatnonzero((f >= lo) & (f <= hi))
        found.append(slice(int(on[0]), int(on[-1]) + 1) if len(on) else slice(0, 0))
    return found[0], found[1]


def _modulation_share(env_db: np.ndarray, mean: np.ndarray, cfg: EmbeddingConfig) -> np.ndarray:
    """Share of each envelope's modulation power at 3-6 Hz among 0.5-25 Hz; ``env_db`` is ``(frames, bands)``
    and ``mean`` its mean over frames."""
    if len(env_db) < 8:
        return np.zeros(env_db.shape[1])
    # float32 like its input: a power ratio needs no more, and the transform is twice as fast.
    x = env_db - mean
    x *= hann_window(len(env_db), symmetric=True)[:, None]
    # Power as re**2 + im**2 of the interleaved parts, summed over each bin range, then the two parts added.
    spec = sfft.rfft(x, axis=0)
    parts = spec.view(spec.real.dtype)       # (bins, 2 x bands): real and imaginary parts side by side
    np.multiply(parts, parts, out=parts)
    full, syllable = _modulation_bins(len(x), cfg.frame_seconds)
    total, mid = (np.add.reduce(parts[bins], axis=0).reshape(-1, 2).sum(axis=1) for bins in (full, syllable))
    return np.where(total > 1e-9, mid / np.maximum(total, 1e-9), 0.0)


@lru_cache(maxsize=8)
def _change_groups(n_mfcc: int) -> np.ndarray:
    """``(n_mfcc, groups)`` float32: column ``j`` is 1 on the coefficients of ``_CHANGE_GROUPS[j]``."""
    groups = np.zeros((n_mfcc, len(_CHANGE_GROUPS)), np.float32)
    for j, g in enumerate(_CHANGE_GROUPS):
        groups[g, j] = 1.0
    groups.flags.writeable = False
    return groups


def _change(deltas: np.ndarray) -> list[float]:
    """Distribution of the per-frame norm of MFCC deltas, per coefficient group (see the ``change`` block)."""
    # Each group's sum of squares as one matrix product: summing short column slices row by row costs 8x more.
    norms = np.sqrt(np.square(deltas) @ _change_groups(deltas.shape[1])).T.astype(np.float64)
    # np.mean and np.var's operations, with the squared deviations kept for the kurtosis.
    n = norms.shape[1]
    mean = np.add.reduce(norms, axis=1) / n
    dev2 = norms - mean[:, None]
    np.square(dev2, out=dev2)
    var = np.add.reduce(dev2, axis=1) / n
    flat = (mean < 1e-6) | (var < 1e-12)       # an unchanging envelope (silence, a steady tone)
    mean, var = np.where(flat, 1.0, mean), np.where(flat, 1.0, var)
    pct = np.where(flat[:, None], 1.0, _percentiles(norms, (10, 50, 90)) / mean[:, None])
    kurt = np.where(flat, 0.0, np.log(np.maximum(np.add.reduce(dev2 * dev2, axis=1) / n / var ** 2, 1e-6)))
    return np.column_stack([pct, kurt]).ravel().tolist()


def _frames_covered(first: np.ndarray, stop: np.ndarray, n_frames: int) -> np.ndarray:
    """Per frame, how many of the runs ``[first, stop)`` (frame indices) cover it."""
    # +1 where a run starts, -1 after it ends, summed up.
    steps = np.bincount(first, minlength=n_frames + 1) - np.bincount(stop, minlength=n_frames + 1)
    return np.cumsum(steps[:n_frames])


def _persistence(white: np.ndarray, cfg: EmbeddingConfig) -> list[float]:
    """Peak share and run persistence of the whitened spectrum ``(frames, bins)`` (see the ``persistence`` block)."""
    n_frames, n_bins = white.shape
    # The runs of peak frames in every bin at once: bins laid end to end, each followed by one non-peak frame
    # so that no run crosses into the next bin, after one leading non-peak frame.  Runs start and stop where
    # the lane changes value, alternately: one pass finds both.
    lanes = np.zeros(1 + n_bins * (n_frames + 1), bool)
    np.greater(white.T, _PEAK_FACTOR / np.sqrt(n_bins), out=lanes[1:].reshape(n_bins, n_frames + 1)[:, :n_frames])
    edges = np.flatnonzero(lanes[1:] != lanes[:-1])
    first, stop = edges[0::2], edges[1::2]                  # a run is lane positions [first, stop)
    length = stop - first
    first %= n_frames + 1
    stop %= n_frames + 1
    per_frame = _frames_covered(first, stop, n_frames)
    n_peaks = int(length.sum())
    means, shares = [], []
    for run in cfg.persistence_runs:
        if n_frames < run or not n_peaks:
            means.append(0.0)
            shares.append(np.zeros(n_frames))
            continue
        long = length >= run
        inside = _frames_covered(first[long], stop[long], n_frames)
        means.append(float(inside.sum() / n_peaks))
        shares.append(inside / np.maximum(per_frame, 1))
    pct = _percentiles(np.stack(shares), (10, 50))          # one sort for every run length
    return [n_peaks / white.size, *np.column_stack([means, pct]).ravel().tolist()]


@lru_cache(maxsize=8)
def _split_groups(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts and sizes of the ``k`` groups ``np.array_split`` makes of ``n`` values."""
    sizes = np.full(k, n // k)
    sizes[:n % k] += 1
    starts = np.cumsum(sizes) - sizes
    for a in (starts, sizes):
        a.flags.writeable = False
    return starts, sizes


def _pool(fr: _Frames, a: int, b: int, cfg: EmbeddingConfig) -> np.ndarray:
    """Summarise frames ``[a, b)`` into one vector (layout of :func:`feature_names`)."""
    logmel, energy = fr.logmel[a:b], fr.energy_db[a:b]
    m, c = cfg.n_mels, cfg.n_mfcc
    em, es = _mean_std(fr.env[a:b])
    sm, ss = _mean_std(fr.scalars[:, a:b], axis=1)
    level, flat_mean, zcr_mean, cen_mean, mid_mean = sm              # level: the mean log energy
    energy_std, flat_std, zcr_std, cen_std, mid_std = ss
    parts: list = [em[:m] - level, es[:m]]                           # shape, not level
    d = cfg.delta_width
    mf = fr.mfcc[a:b]
    if len(mf) > 2 * d:
        # Regression deltas over +-d frames (as librosa's, without edge padding), summed in place.
        n = len(mf)
        deltas = mf[d + 1: n - d + 1] - mf[d - 1: n - d - 1]
        for k in range(2, d + 1):
            deltas += k * (mf[d + k: n - d + k] - mf[d - k: n - d - k])
        deltas /= 2 * sum(k * k for k in range(1, d + 1))
    else:
        deltas = np.zeros((1, cfg.n_mfcc), np.float32)
    parts += [em[m + 1:m + c], es[m:m + c], _mean_std(deltas)[1]]
    parts += [em[m + c:], es[m + c:], [flat_mean, flat_std]]

    flux = fr.flux[a + 1:b] if b - a > 1 else fr.flux[a:b]           # flux into the first frame is unknown
    fmean, fstd = _mean_std(flux)
    fmean = float(fmean)
    fcv = float(fstd / fmean) if fmean > 1e-6 else 0.0
    parts += [[fmean, fcv, _pulse_clarity(flux, cfg)]]

    ch = fr.chroma[a:b]
    profile = ch.mean(axis=0)
    profile = np.sort(profile / (profile.sum() + 1e-9))[::-1]
    # Sums of products as dot products: less than half the cost of elementwise products summed row by row.
    logch = ch + np.float32(1e-9)
    np.log(logch, out=logch)
    ent = -float(np.vdot(ch, logch)) / len(ch) / np.log(12.0)
    if len(ch) > 1:
        norm = np.sqrt(np.einsum("ij,ij->i", ch, ch)) + 1e-9
        cstab = float(np.mean(np.einsum("ij,ij->i", ch[1:], ch[:-1]) / (norm[1:] * norm[:-1])))
    else:
        cstab = 1.0
    parts += [profile, [ent, cstab]]

    # Syllable-rate modulation in three band groups (low, speech formants, high).
    # Per band, then averaged: speech formants between loud music partials still modulate their own bands.
    share = _modulation_share(logmel, em[:m], cfg)
    q1, q3 = m // 4, 3 * m // 4
    mods = np.add.reduceat(share, [0, q1, q3]) / [q1, q3 - q1, m - q3]
    elin = 10.0 ** ((energy - energy.max()) / 10.0)
    low_energy = np.count_nonzero(elin < 0.5 * elin.mean()) / len(elin)   # Scheirer & Slaney's low-energy ratio
    pauses = np.count_nonzero(energy < energy.max() - 30.0) / len(energy)  # near-silent frames
    parts += [mods, [low_energy, pauses, energy_std / 10.0, zcr_mean, zcr_std, cen_mean / 1000.0, cen_std / 1000.0]]
    w = fr.whitened[a:b]
    # Similarity of each frame to the next (also the background's stability below).
    adjacent = np.einsum("ij,ij->i", w[1:], w[:-1])
    for lag in cfg.stability_lags:
        if len(w) > lag:
            parts += [_mean_std(adjacent if lag == 1 else np.einsum("ij,ij->i", w[lag:], w[:-lag]))]
        else:
            parts += [[1.0, 0.0]]

    # Background: what is left between the loudest events.  Under dialogue it is silence or room noise; under
    # speech over music it is the music bed (tonal, contrasted, stable partials).
    by_energy = np.sort(energy)
    parts += [(_sorted_percentiles(by_energy, (10, 25, 50, 90)) - level) / 10.0]
    # The n_bg quietest frames, the earliest first among equal energies (a stable argsort's), as 0/1 weights.
    n_bg = max(1, int(round(_BG_SHARE * len(energy))))
    edge = by_energy[n_bg - 1]
    quiet = energy < edge
    ties = np.flatnonzero(energy == edge)
    quiet[ties[:n_bg - np.count_nonzero(quiet)]] = True
    weights = quiet.astype(np.float32)
    # Means over the quiet frames as BLAS matrix-vector products (one for the log-mel and contrast columns).
    bg_env = weights @ fr.env[a:b] / n_bg
    starts, sizes = _split_groups(m, _N_BG_BANDS)
    parts += [np.add.reduceat(bg_env[:m] - level, starts) / sizes]
    bg_stab = 1.0
    n_adjacent = np.count_nonzero(quiet[:-1])         # those followed by a frame of the window
    if n_adjacent:
        bg_stab = float(weights[:-1] @ adjacent) / n_adjacent
    parts += [[bg_env[m + c:].mean(), float(weights @ fr.flatness[a:b]) / n_bg, bg_stab]]
    # Speech adds onsets in the formant bands (300-3000 Hz) that music alone spreads over the spectrum.
    parts += [[mid_mean, mid_std]]
    parts += [_change(deltas), _persistence(w, cfg)]
    return np.concatenate(parts, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------- API

def embed(y: np.ndarray, sr: int, cfg: EmbeddingConfig = EmbeddingConfig()) -> np.ndarray:
    """Raw descriptor vector of one analysis window (typically the 10 s outro).

    Parameters
    ----------
    y : np.ndarray
        Mono float samples at ``sr``; any length from one sample (short input is zero-padded to one frame).
    sr : int
        Rate of ``y``; must equal ``cfg.sample_rate``.
    cfg : EmbeddingConfig

    Returns
    -------
    np.ndarray
        float32, shape ``(embedding_dim(cfg),)``, finite; not standardised (see :class:`Standardizer`).

    Raises
    ------
    ValueError
        ``y`` is not 1-D float, is empty or holds NaN/inf, or ``sr`` is not ``cfg.sample_rate``.
    """
    y = _validate(y, sr, cfg)
    fr = _frame_features(y, cfg)
    return _pool(fr, 0, len(fr.logmel), cfg)


def window_starts(n_samples: int, cfg: EmbeddingConfig = EmbeddingConfig()) -> np.ndarray:
    """Start samples of the reference windows of a signal of ``n_samples`` samples.

    Windows of ``window_s`` every ``hop_s``; when the last one stops short of the end, one more window ends
    within a frame of the end (outros are track ends); a signal shorter than a window gives one window at 0.
    """
    w = int(round(cfg.window_s * cfg.sample_rate))
    h = int(round(cfg.hop_s * cfg.sample_rate))
    if n_samples <= w:
        return np.zeros(1, np.int64)
    starts = list(range(0, n_samples - w + 1, h))
    last = ((n_samples - w) // cfg.hop_length) * cfg.hop_length     # on the frame grid
    if last > starts[-1]:
        starts.append(last)
    return np.asarray(starts, np.int64)


def embed_windows(y: np.ndarray, sr: int, cfg: EmbeddingConfig = EmbeddingConfig()
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One raw vector per reference window along a track.

    Parameters
    ----------
    y : np.ndarray
        Mono float samples of the whole track at ``sr``.
    sr : int
        Must equal ``cfg.sample_rate``.
    cfg : EmbeddingConfig

    Returns
    -------
    starts_s : np.ndarray of float64
        Start of each window in seconds (see :func:`window_starts`).
    matrix : np.ndarray of float32
        Shape ``(len(starts_s), embedding_dim(cfg))``, C-contiguous; row ``i`` is
        ``embed(y[start_i : start_i + window], sr, cfg)`` up to float rounding, except that a window after the
        first reads the spectral rise into its first frame from the frame before it, where ``embed`` has none
        (the midflux features differ by about 0.004 on noise).
    """
    y = _validate(y, sr, cfg)
    starts = window_starts(len(y), cfg)
    fr = _frame_features(y, cfg)
    w = int(round(cfg.window_s * cfg.sample_rate))
    n_total = len(fr.logmel)
    rows = []
    for s in starts:
        # Frames of the window alone: those that start at or after s and end inside it.
        a = int(s) // cfg.hop_length
        length = min(w, len(y) - int(s))
        nf = max(1, (length - cfg.n_fft) // cfg.hop_length + 1) if length >= cfg.n_fft else 1
        if length < cfg.n_fft:
            # Too short for a frame: embed() pads it, which the shared frames cannot reproduce.
            rows.append(embed(y[int(s): int(s) + length], sr, cfg))
            continue
        rows.append(_pool(fr, a, min(a + nf, n_total), cfg))
    return starts / cfg.sample_rate, np.ascontiguousarray(np.stack(rows), dtype=np.float32)


def _short_floats(a: np.ndarray) -> list:
    """Nested lists of the float32 values of ``a``, each as the float64 of its shortest float32 decimal."""
    if a.ndim > 1:
        return [_short_floats(row) for row in a]
    return [float(str(v)) for v in a.astype(np.float32)]


@dataclass(frozen=True)
class Standardizer:
    """The fixed map from raw vectors to index vectors: per-dimension standardisation, block weighting, an
    optional linear projection, then L2 normalisation (so inner products are cosine similarities).

    The package ships one per embedding config version (:func:`default_standardizer`); an index copies it
    (``to_dict``) at build and maps every reference and query with it, so an index grown by adds holds exactly
    the vectors of one built in one go.

    Attributes
    ----------
    mean, scale : np.ndarray of float32
        Subtracted and divided per dimension; ``scale`` is 1 where a dimension did not vary in the fit.
    weights : np.ndarray of float32
        Multiplied in after standardising (:func:`block_weights`).
    config_version : int
        ``EmbeddingConfig.version`` of the vectors it was fitted on.
    components : np.ndarray of float32 or None
        ``(out_dim, dim)`` projection applied to the weighted vector (principal axes of the fit set): fewer
        dimensions make exact kNN proportionally faster.  None keeps all ``dim`` dimensions.
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    config_version: int
    components: np.ndarray | None = None

    @classmethod
    def fit(cls, x: np.ndarray, cfg: EmbeddingConfig = EmbeddingConfig(), out_dim: int | None = None
            ) -> "Standardizer":
        """Fit on raw vectors ``x`` of shape ``(n, dim)``, ``n >= 1``.

        With ``out_dim``, also fit a projection on the ``out_dim`` principal axes of the standardised, weighted
        vectors (``out_dim <= min(n, dim)``); each axis' sign is fixed (largest coefficient positive) so that a
        refit on the same data gives the same transform.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] != embedding_dim(cfg):
            raise ValueError(f"expected raw vectors of shape (n >= 1, {embedding_dim(cfg)}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("vectors hold NaN or infinite values")
        mean, std = x.mean(axis=0), x.std(axis=0)
        scale = np.where(std > 1e-8 * (1.0 + np.abs(mean)), std, 1.0)
        weights = block_weights(cfg)
        components = None
        if out_dim is not None:
            if not 1 <= out_dim <= min(x.shape):
                raise ValueError(f"out_dim must be in 1..{min(x.shape)} for {x.shape[0]} vectors, got {out_dim}")
            _, _, vt = np.linalg.svd((x - mean) / scale * weights, full_matrices=False)
            vt = vt[:out_dim]
            vt *= np.sign(vt[np.arange(out_dim), np.argmax(np.abs(vt), axis=1)])[:, None]
            components = vt.astype(np.float32)
        return cls(mean=mean.astype(np.float32), scale=scale.astype(np.float32), weights=weights,
                   config_version=cfg.version, components=components)

    @property
    def dim(self) -> int:
        """Dimension of the raw vectors it takes."""
        return len(self.mean)

    @property
    def out_dim(self) -> int:
        """Dimension of the vectors it gives (the FAISS index's)."""
        return self.dim if self.components is None else len(self.components)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Index vectors, float32 C-contiguous ``(n, out_dim)``, unit length; 1-D in gives ``(1, out_dim)`` out."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dimension {self.dim}, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("vectors hold NaN or infinite values")
        z = (x - self.mean) / self.scale * self.weights
        if self.components is not None:
            z = z @ self.components.T
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        z = z / np.where(norm > 0, norm, np.float32(1.0))  # an all-mean vector stays zero rather than NaN
        return np.ascontiguousarray(z, dtype=np.float32)

    def to_dict(self) -> dict:
        """JSON-able form: each float32 value as the shortest decimal that reads back to it (every index holds a
        copy, and float64 digits would make it 1.7x the size), so a JSON round trip gives the same transform."""
        return {"config_version": self.config_version, "mean": _short_floats(self.mean),
                "scale": _short_floats(self.scale), "weights": _short_floats(self.weights),
                "components": None if self.components is None else _short_floats(self.components)}

    @classmethod
    def from_dict(cls, d: dict) -> "Standardizer":
        required, known = {"config_version", "mean", "scale", "weights"}, {"components"}
        if not required <= set(d) <= required | known:
            raise ValueError(f"standardizer needs keys {sorted(required)} (optional: {sorted(known)}), "
                             f"got {sorted(d)}")
        mean, scale, weights = (np.asarray(d[k], dtype=np.float32) for k in ("mean", "scale", "weights"))
        if not (mean.ndim == 1 and mean.shape == scale.shape == weights.shape):
            raise ValueError("standardizer mean, scale and weights must be 1-D of one length")
        if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()
                and np.isfinite(weights).all()):
            raise ValueError("standardizer scale must be positive and every value finite")
        components = d.get("components")
        if components is not None:
            components = np.asarray(components, dtype=np.float32)
            if not (components.ndim == 2 and 1 <= len(components) and components.shape[1] == len(mean)
                    and np.isfinite(components).all()):
                raise ValueError(f"standardizer components must be a finite (out_dim, {len(mean)}) matrix")
            components = np.ascontiguousarray(components)
        return cls(mean=mean, scale=scale, weights=weights, config_version=int(d["config_version"]),
                   components=components)


DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def standardizer_path(cfg: EmbeddingConfig = EmbeddingConfig()) -> str:
    """Where the package keeps the shipped transform of ``cfg.version`` (written by bench/fit_embedding_stats.py)."""
    return os.path.join(DATA_DIR, f"embedding-v{cfg.version}.json")


@lru_cache(maxsize=4)
def default_standardizer(cfg: EmbeddingConfig = EmbeddingConfig()) -> Standardizer:
    """The shipped transform for ``cfg``: fitted once on real music, speech and speech-over-music (see
    ``bench/fit_embedding_stats.py``), fixed for the config version.

    Raises
    ------
    ValueError
        The package holds no transform for ``cfg.version``, or the one it holds was fitted under other
        embedding parameters than ``cfg``'s.
    """
    path = standardizer_path(cfg)
    if not os.path.exists(path):
        raise ValueError(f"no shipped embedding transform for embedding config version {cfg.version} "
                         f"({path} is missing): fit one with bench/fit_embedding_stats.py")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if EmbeddingConfig.from_dict(data["config"]) != cfg:
        raise ValueError(f"the shipped embedding transform v{cfg.version} was fitted under other embedding "
                         f"parameters than the ones asked for; it fits only EmbeddingConfig(version={cfg.version})")
    st = Standardizer.from_dict(data["standardizer"])
    for a in (st.mean, st.scale, st.weights, st.components):
        if a is not None:
            a.flags.writeable = False        # one cached instance is shared by every caller
    return st
