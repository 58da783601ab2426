"""Versioned analysis configs.  Every index stores the config it was built with, so a query is analysed exactly as
its references were; bump ``version`` whenever a change alters the hashes a given input produces."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


def config_from_dict(cls, d: dict):
    """Rebuild a config dataclass from its dict (as stored in an index), refusing keys it does not know: an
    index written by a newer version must not be read with silently dropped parameters."""
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**d)


@dataclass(frozen=True)
class LandmarkConfig:
    """Parameters of the spectral-peak landmark fingerprint (Wang 2003, with an asymmetric query side).

    Attributes
    ----------
    version : int
        Format version of the hashes; an index refuses queries analysed with another one.
    sample_rate : int
        Analysis rate in Hz.  8 kHz keeps the telephone band and discards what MP3 encoders and band limits
        damage first.
    n_fft, hop_length : int
        STFT window and hop in samples (256 ms / 32 ms at 8 kHz): 3.9 Hz bins make tonal peaks stand
        out of broadband noise; 32 ms steps keep hash time deltas short.
    fmin_hz, fmax_hz : float
        Band where peaks are picked.  The top stays inside the telephone band (3.4 kHz), where MP3 encoders
        and band limits leave music intact; the bottom reaches down to 100 Hz because broadband (pink) noise
        masks music least there.  Telephone-band queries lose the peaks below 300 Hz and still match on the
        rest.
    peak_freq_bins, peak_time_frames : int
        Size of the neighbourhood a reference peak must be the maximum of.
    query_peak_freq_bins, query_peak_time_frames : int
        The same for queries, smaller: a reference peak next to a louder speech or noise peak is then still a
        local maximum of the query.
    whiten_freq_bins, whiten_time_frames : int
        Size of the local-mean window subtracted from the log spectrogram before ranking peaks, so that
        loud bass or broadband noise does not take every peak.
    ref_peaks_per_s, query_peaks_per_s : float
        Peak density kept for references (sets index size) and for queries.  Queries keep more so that the
        reference peaks survive among speech and noise peaks.
    ref_fanout, query_fanout : int
        Targets paired with each anchor, nearest in time first.
    dt_min, dt_max : int
        Target zone in frames after the anchor.
    df_max : int
        Target zone half-height in frequency bins.
    freq_quant : int
        Frequency bins per hash unit: coarser units absorb small pitch and speed changes.
    persist_frames : int
        Peaks are ranked by the prominence they keep over this many frames, so sustained partials (music)
        outrank momentary maxima of noise.
    verify_peaks_per_s : float
        The strongest reference peaks kept per second for verifying weak candidates peak by peak (0: none;
        about 2 bytes each in the index).
    level_weight : float
        Peaks are ranked by prominence plus this times their level against a pink-noise slope (dB full scale
        + 10 log10(f / 1 kHz)): of two equally prominent partials, the one louder than broadband noise would
        be there is the one a noisy query still shows.
    ref_target_pool : int
        A reference anchor is paired with its ``ref_fanout`` best-ranked targets among this many nearest
        in time (``ref_fanout``: simply the nearest), so fewer of its pairs depend on a weak peak.
    """

    version: int = 2
    sample_rate: int = 8000
    n_fft: int = 2048
    hop_length: int = 256
    fmin_hz: float = 100.0
    fmax_hz: float = 3400.0
    peak_freq_bins: int = 31
    peak_time_frames: int = 9
    query_peak_freq_bins: int = 31
    query_peak_time_frames: int = 9
    whiten_freq_bins: int = 61
    whiten_time_frames: int = 31
    ref_peaks_per_s: float = 22.0
    query_peaks_per_s: float = 45.0
    ref_fanout: int = 4
    query_fanout: int = 32
    dt_min: int = 1
    dt_max: int = 48
    df_max: int = 126
    freq_quant: int = 2
    persist_frames: int = 3
    verify_peaks_per_s: float = 6.0
    level_weight: float = 1.0
    ref_target_pool: int = 8

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / self.sample_rate

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LandmarkConfig":
        # Indexes written before a parameter existed were analysed as its old value: queries must match them.
        return config_from_dict(cls, {**_VERSION_1, **d})


#: What version 1 indexes, which do not store these parameters, were built and are queried with.
_VERSION_1 = {"level_weight": 0.0, "ref_target_pool": 4}
