"""Deterministic synthetic audio for the demo and the tests: music-like tracks, speech-like voices, noise, channel
degradations and an MP3 writer.

Every generator is a pure function of its ``seed``: the same seed gives the same samples on every machine, and
different seeds give different pieces of music (key, scale, tempo, timbre, melody, chords and drum pattern all
come from the seed).  Signals are mono float32 in [-1, 1].  ``scipy.signal`` is imported inside the functions
that need it, so importing this module costs nothing.
"""
from __future__ import annotations

import os

import numpy as np

_SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "pentatonic": (0, 2, 4, 7, 9),
}

# (F1, F2, F3) in Hz of a few vowels, roughly an adult male voice.
_VOWELS = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240),
           (660, 1720, 2410), (490, 1350, 1690))


def _midi_hz(m: np.ndarray | float) -> np.ndarray | float:
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def _normalise(y: np.ndarray, peak: float = 0.9) -> np.ndarray:
    m = float(np.max(np.abs(y))) if len(y) else 0.0
    return (y * (peak / m) if m > 0 else y).astype(np.float32)


def _tone(f0: float, n: int, sr: int, amps: np.ndarray, *, vibrato: float = 0.0, phase: float = 0.0) -> np.ndarray:
    """``n`` samples of a harmonic tone at ``f0`` Hz; harmonic ``k`` has amplitude ``amps[k-1]`` (aliasing-free)."""
    t = np.arange(n) / sr
    ph = 2 * np.pi * f0 * t + phase
    if vibrato:
        ph += (vibrato * f0 / 5.5) * np.sin(2 * np.pi * 5.5 * t)
    n_harm = min(len(amps), int((sr / 2) // (f0 * (1 + vibrato))))
    # sin(k ph) by the Chebyshev recurrence sin(k x) = 2 cos(x) sin((k-1) x) - sin((k-2) x): one sin and one cos
    # per tone instead of one sin per harmonic.
    s_prev, s_k, two_cos = np.zeros(n), np.sin(ph), 2.0 * np.cos(ph)
    out = amps[0] * s_k if n_harm else np.zeros(n)
    for a in amps[1:n_harm]:
        s_prev, s_k = s_k, two_cos * s_k - s_prev
        out += a * s_k
    return out


def _envelope(n: int, sr: int, attack: float, release: float, decay: float) -> np.ndarray:
    """Attack ramp, exponential decay towards a sustain level, release ramp at the end."""
    t = np.arange(n) / sr
    env = 0.35 + 0.65 * np.exp(-t / max(decay, 1e-3))
    a = min(n, max(1, int(attack * sr)))
    env[:a] *= np.linspace(0.0, 1.0, a)
    r = min(n, max(1, int(release * sr)))
    env[n - r:] *= np.linspace(1.0, 0.0, r)
    return env


def _add(out: np.ndarray, start: int, y: np.ndarray) -> None:
    end = min(len(out), start + len(y))
    if end > start:
        out[start:end] += y[: end - start]


def music_track(seed: int, seconds: float = 45.0, sr: int = 22050, tempo: float = 1.0) -> np.ndarray:
    """A music-like track: bass, chord pad and melody with harmonics over a drum pattern, all chosen by ``seed``.

    Parameters
    ----------
    seed : int
        Selects key, scale, tempo, timbres, chord progression, melody and drum pattern.
    seconds : float
        Length of the track.
    sr : int
        Sample rate in Hz.
    tempo : float
        Play the piece this many times as fast with its pitch kept, as broadcast time compression does:
        ``seconds`` of the result hold ``seconds * tempo`` of the piece at tempo 1, every note and beat at
        its time divided by ``tempo`` (drum hits and note onsets keep their own shape).

    Returns
    -------
    np.ndarray
        float32 mono samples, peak 0.9.
    """
    if tempo <= 0:
        raise ValueError(f"tempo must be positive, got {tempo}")
    rng = np.random.default_rng([seed, 1])
    n = int(round(seconds * sr))
    # Every draw below is the same whatever the tempo: the piece's own time runs tempo times as fast.
    seconds *= tempo
    out = np.zeros(n)
    scale = _SCALES[list(_SCALES)[int(rng.integers(len(_SCALES)))]]
    root = int(rng.integers(45, 57))                      # MIDI A2..G#3
    beat = 60.0 / rng.uniform(80, 150)                     # seconds per beat
    time_scale = 1.0 / tempo                               # output seconds per second of the piece
    bar = 4 * beat

    def degree_midi(deg: int, base: int) -> int:
        octave, step = divmod(deg, len(scale))
        return base + 12 * octave + scale[step]

    def timbre(n_harm: int) -> np.ndarray:
        tilt = rng.uniform(0.7, 2.0)
        amps = rng.uniform(0.3, 1.0, n_harm) / np.arange(1, n_harm + 1) ** tilt
        return amps / amps.sum()

    pad_amps, bass_amps, lead_amps = timbre(6), timbre(8), timbre(10)
    lead_vibrato = rng.uniform(0.0, 0.006)

    # Chord progression: one chord per bar, a random walk over scale degrees.
    n_bars = int(np.ceil(seconds / bar))
    chords = rng.integers(0, len(scale), n_bars)
    for b, deg in enumerate(chords):
        start = int(b * bar * time_scale * sr)
        length = int(bar * time_scale * sr)
        env = _envelope(length, sr, 0.05, 0.15, 1.5)
        for step in (0, 2, 4):                                         # triad
            f = _midi_hz(degree_midi(int(deg) + step, root + 12))
            _add(out, start, 0.12 * env * _tone(f, length, sr, pad_amps, phase=rng.uniform(0, 2 * np.pi)))
        # Bass: chord root on every beat (sometimes the fifth).
        for k in range(4):
            bdeg = int(deg) + (4 if rng.random() < 0.25 else 0)
            f = _midi_hz(degree_midi(bdeg, root - 12))
            blen = int(beat * time_scale * sr * 0.9)
            _add(out, start + int(k * beat * time_scale * sr), 0.3 * _envelope(blen, sr, 0.01, 0.05, 0.2)
                 * _tone(f, blen, sr, bass_amps))

    # Melody: a random walk over the scale, rhythm drawn from a few note lengths, with rests.
    t = 0.0
    deg = int(rng.integers(0, len(scale)))
    lengths = np.array([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]) * beat
    while t < seconds:
        dur = float(rng.choice(lengths))
        if rng.random() > 0.12:
            deg = int(np.clip(deg + rng.integers(-3, 4), -len(scale), 2 * len(scale)))
            f = _midi_hz(degree_midi(deg, root + 24))
            m = int(dur * time_scale * sr)
            env = _envelope(m, sr, 0.01, 0.04, rng.uniform(0.1, 0.5))
            _add(out, int(t * time_scale * sr), 0.35 * env * _tone(f, m, sr, lead_amps, vibrato=lead_vibrato))
        t += dur

    # Drums: kick, snare and hi-hat on a per-seed pattern of sixteenths.
    pattern = rng.random((3, 16)) < np.array([[0.3], [0.2], [0.6]])
    pattern[0, 0] = pattern[1, 4] = pattern[1, 12] = True
    kick_len, snare_len, hat_len = int(0.15 * sr), int(0.12 * sr), int(0.04 * sr)
    tk = np.arange(kick_len) / sr
    kick = np.sin(2 * np.pi * (50 * tk + 70 * 0.03 * (1 - np.exp(-tk / 0.03)))) * np.exp(-tk / 0.05)
    six = beat / 4
    for s in range(int(seconds / six)):
        i, pos = int(s * six * time_scale * sr), s % 16
        if pattern[0, pos]:
            _add(out, i, 0.5 * kick)
        if pattern[1, pos]:
            _add(out, i, 0.25 * rng.standard_normal(snare_len) * np.exp(-np.arange(snare_len) / (0.03 * sr)))
        if pattern[2, pos]:
            hat = np.diff(rng.standard_normal(hat_len + 1))        # first difference: a high-passed click
            _add(out, i, 0.06 * hat * np.exp(-np.arange(hat_len) / (0.008 * sr)))
    return _normalise(out)


def speech_like(seed: int, seconds: float = 10.0, sr: int = 16000) -> np.ndarray:
    """A speech-like voice: a glottal pulse train through vowel formant filters, syllables and pauses.

    Syllables of 120-300 ms (about 4-5 per second) come in phrases of 3-9 with pauses of 0.15-0.6 s between
    them; each syllable has its own vowel, an intonation contour around a per-seed pitch and sometimes a
    fricative (noise) onset.  It carries the spectral structure of speech (harmonics, formants, 4 Hz
    modulation) without being anyone's recording.

    Returns
    -------
    np.ndarray
        float32 mono samples, peak 0.9.
    """
    from scipy.signal import lfilter

    rng = np.random.default_rng([seed, 2])
    n = int(round(seconds * sr))
    out = np.zeros(n)
    f0_base = rng.uniform(95, 210)
    formant_scale = 1.0 + (f0_base - 95) / 115 * 0.2          # higher voices, slightly higher formants
    i = int(rng.uniform(0.0, 0.3) * sr)
    while i < n:
        n_syl = int(rng.integers(3, 10))
        for k in range(n_syl):
            m = int(rng.uniform(0.12, 0.3) * sr)
            # Pitch: declines over the phrase, with a random accent per syllable.
            f0 = f0_base * (1.0 + 0.08 * rng.standard_normal()) * (1.0 - 0.12 * k / n_syl)
            f0_curve = f0 * np.linspace(1.0 + rng.uniform(-0.05, 0.08), 1.0 - rng.uniform(0.0, 0.08), m)
            phase = np.cumsum(f0_curve / sr)
            pulses = np.diff(np.floor(phase), prepend=0.0)
            src = lfilter([1.0], [1.0, -0.95], pulses)                 # glottal roll-off
            src += 0.02 * rng.standard_normal(m)                           # aspiration
            voiced = np.zeros(m)
            for fc, bw in zip(np.array(_VOWELS[int(rng.integers(len(_VOWELS)))]) * formant_scale, (90, 110, 170)):
                fc *= rng.uniform(0.93, 1.07)
                if fc >= sr / 2 - bw:
                    continue
                r = np.exp(-np.pi * bw / sr)
                a = [1.0, -2 * r * np.cos(2 * np.pi * fc / sr), r * r]
                voiced += lfilter([1.0 - r], a, src)
            voiced = np.diff(voiced, prepend=0.0)                          # radiation at the lips: no DC
            env = rng.uniform(0.5, 1.0) * np.sin(np.pi * np.arange(m) / m) ** 1.5   # stress, syllable shape
            syl = voiced * env
            if rng.random() < 0.4:                                         # fricative onset
                fl = min(m, int(rng.uniform(0.03, 0.08) * sr))
                noise = np.diff(rng.standard_normal(fl + 1)) * np.hanning(fl)
                syl[:fl] += 0.3 * np.std(voiced) * noise
            _add(out, i, syl)
            i += m + int(rng.uniform(0.0, 0.04) * sr)
        i += int(rng.uniform(0.15, 0.6) * sr)
    return _normalise(out)


def babble(seed: int, seconds: float = 10.0, sr: int = 16000, voices: int = 4) -> np.ndarray:
    """Several :func:`speech_like` voices talking at once (peak 0.9)."""
    return _normalise(sum(speech_like(seed * 100 + v, seconds, sr).astype(np.float64) for v in range(voices)))


def pink_noise(seed: int, n: int) -> np.ndarray:
    """``n`` samples of pink (1/f power) noise with unit RMS, shaped in the frequency domain."""
    rng = np.random.default_rng([seed, 3])
    if n <= 0:
        return np.zeros(0, np.float32)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    spec /= np.sqrt(f)
    spec[0] = 0.0
    y = np.fft.irfft(spec, n)
    return (y / (np.sqrt(np.mean(y ** 2)) or 1.0)).astype(np.float32)


def _rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if len(y) else 0.0


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` to ``signal`` so that the signal-to-noise power ratio is ``snr_db`` dB.

    ``noise`` is repeated or cut to the length of ``signal``.  The mix is scaled down as a whole only if it would
    clip, which keeps the ratio.
    """
    signal = np.asarray(signal, dtype=np.float64)
    noise = np.resize(np.asarray(noise, dtype=np.float64), len(signal))
    rs, rn = _rms(signal), _rms(noise)
    if rn == 0:
        return signal.astype(np.float32)
    mix = signal + noise * (rs / rn) * 10.0 ** (-snr_db / 20.0)
    peak = float(np.max(np.abs(mix))) if len(mix) else 0.0
    return (mix * (0.99 / peak) if peak > 0.99 else mix).astype(np.float32)


def telephone_band(y: np.ndarray, sr: int, low_hz: float = 300.0, high_hz: float = 3400.0) -> np.ndarray:
    """Band-limit ``y`` to the telephone band with a 4th-order Butterworth band-pass (causal, like a channel)."""
    from scipy.signal import butter, sosfilt

    sos = butter(4, [low_hz, min(high_hz, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")
    return sosfilt(sos, np.asarray(y, dtype=np.float64)).astype(np.float32)


def _follow(level_db: np.ndarray, rate: float, attack_s: float, release_s: float) -> np.ndarray:
    """A compressor's level detector: ``level_db`` (sampled at ``rate``) followed quickly on the way up, slowly on
    the way down."""
    up, down = np.exp(-1.0 / (attack_s * rate)), np.exp(-1.0 / (release_s * rate))
    out, g = np.empty_like(level_db), float(level_db[0])
    for i, v in enumerate(level_db.tolist()):
        c = up if v > g else down
        g = c * g + (1.0 - c) * v
        out[i] = g
    return out


def air_chain(y: np.ndarray, sr: int, *, attack_s: float = 0.005, release_s: float = 0.2,
              drive_db: float = 8.0) -> np.ndarray:
    """What a station's on-air processor does to music: bass and presence boost, fast three-band compression,
    then ``drive_db`` of gain into a soft clipper (the "loud" sound of FM and streams).

    Each band (below 200 Hz, 200-3000 Hz, above 3000 Hz) is compressed 4:1 above a threshold 10 dB under its
    own loudness (level read every millisecond, ``attack_s`` / ``release_s``) and brought back to its loudness;
    the sum is driven into ``tanh``, which flattens every peak and adds harmonics.  A voice over the music pumps
    the music's level syllable by syllable.  Returns float32 peaking below 1.
    """
    from scipy.signal import butter, sosfiltfilt

    x = np.asarray(y, dtype=np.float64)
    step = max(1, sr // 1000)
    if len(x) < step:
        return x.astype(np.float32)
    low = sosfiltfilt(butter(4, 200.0, "lowpass", fs=sr, output="sos"), x)
    high = sosfiltfilt(butter(4, min(3000.0, 0.45 * sr), "highpass", fs=sr, output="sos"), x)
    bands = [2.0 * low, x - low - high, 1.6 * high]          # +6 dB bass, +4 dB presence
    grid = (np.arange(len(x)) + 0.5) / step - 0.5             # each sample's place on the level's time grid
    out = np.zeros_like(x)
    for band in bands:
        loud = _rms(band)
        if loud == 0:
            continue
        power = np.square(band[: len(band) // step * step]).reshape(-1, step).mean(axis=1)
        level_db = _follow(10.0 * np.log10(power + 1e-12), sr / step, attack_s, release_s)
        gain_db = -np.maximum(level_db - (20.0 * np.log10(loud) - 10.0), 0.0) * (1.0 - 1.0 / 4.0)
        squashed = band * 10.0 ** (np.interp(grid, np.arange(len(gain_db)), gain_db) / 20.0)
        out += squashed * (loud / (_rms(squashed) or 1.0))
    out *= 10.0 ** (drive_db / 20.0) / (float(np.max(np.abs(out))) or 1.0)
    return (0.98 * np.tanh(out)).astype(np.float32)


def fade_out(y: np.ndarray, sr: int, seconds: float, depth_db: float = 40.0) -> np.ndarray:
    """Fade the last ``seconds`` of ``y`` down by ``depth_db`` dB, linearly in dB (a DJ's fader at the end of a
    segment)."""
    y = np.array(y, dtype=np.float32)
    n = min(len(y), int(round(seconds * sr)))
    if n:
        y[len(y) - n:] *= 10.0 ** (-np.linspace(0.0, depth_db, n) / 20.0).astype(np.float32)
    return y


def change_speed(y: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play ``y`` ``factor`` times faster, pitch and tempo together (like a faster turntable): resampling.

    ``factor=1.02`` returns 2 % fewer samples; played at ``sr`` every frequency is 2 % higher.
    """
    import soxr

    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    return soxr.resample(np.asarray(y, dtype=np.float32), sr * factor, sr, quality="HQ").astype(np.float32)


def _mp3_bitrate_range(sr: int) -> tuple[int, int]:
    """(highest, lowest) CBR bitrate in kbps of the MPEG version LAME uses at ``sr``."""
    if sr >= 32000:
        return 320, 32       # MPEG-1 layer III
    if sr >= 16000:
        return 160, 8        # MPEG-2
    return 64, 8             # MPEG-2.5


def write_mp3(path: str | os.PathLike, y: np.ndarray, sr: int, kbps: int = 128) -> float:
    """Write ``y`` as a constant-bitrate MP3 of about ``kbps`` kbit/s through libsndfile (LAME).

    libsndfile takes a 0..1 compression level rather than a bitrate; it maps the level linearly between the
    highest and lowest bitrate of the MPEG version in use and LAME rounds to a legal bitrate.

    Returns
    -------
    float
        The bitrate actually written, in kbit/s, measured from the file size.
    """
    import soundfile as sf

    hi, lo = _mp3_bitrate_range(sr)
    level = min(max((hi - kbps) / (hi - lo), 0.0), 0.999)    # libsndfile refuses exactly 1.0
    y = np.asarray(y, dtype=np.float32)
    sf.write(os.fspath(path), y, sr, format="MP3", bitrate_mode="CONSTANT", compression_level=level)
    return os.path.getsize(path) * 8 / 1000 / max(len(y) / sr, 1e-9)
