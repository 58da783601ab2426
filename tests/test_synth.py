"""The synthetic-audio generators: deterministic, distinct per seed, and doing what their names say."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from audioid import synth

SR = 16000


def _band_power(y: np.ndarray, sr: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / sr)
    return float(spec[(f >= lo) & (f < hi)].sum())


def _peak_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spec)])


def test_music_track_is_deterministic_and_distinct_per_seed():
    a1, a2, b = synth.music_track(1, 8.0, SR), synth.music_track(1, 8.0, SR), synth.music_track(2, 8.0, SR)
    assert a1.dtype == np.float32 and a1.shape == (8 * SR,)
    assert np.array_equal(a1, a2)
    assert 0.5 < np.max(np.abs(a1)) <= 0.9 + 1e-6
    assert abs(np.corrcoef(a1, b)[0, 1]) < 0.2
    # Music-like: energy throughout (no long silences) and a rich spectrum inside the telephone band.
    frames = a1[: len(a1) // 800 * 800].reshape(-1, 800)
    assert np.sqrt((frames ** 2).mean(axis=1)).min() > 0.01
    assert _band_power(a1, SR, 300, 3400) > 0.2 * _band_power(a1, SR, 0, SR / 2)


def test_speech_like_has_syllables_and_pauses():
    y = synth.speech_like(4, 20.0, SR)
    assert np.array_equal(y, synth.speech_like(4, 20.0, SR)) and y.shape == (20 * SR,)
    assert not np.allclose(y[: 5 * SR], synth.speech_like(5, 5.0, SR))
    env = np.sqrt((y[: len(y) // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1))   # 10 ms frames
    quiet = env < 0.05 * env.max()
    assert 0.1 < quiet.mean() < 0.6                                  # pauses, but mostly talking
    # Most of the envelope's modulation is at syllable rates (2-8 Hz), not phrase rates or faster.
    mod = np.abs(np.fft.rfft(env - env.mean())) ** 2
    f = np.fft.rfftfreq(len(env), 0.01)
    assert mod[(f >= 2) & (f < 8)].sum() > 0.5 * mod[f >= 0.5].sum()
    # Voiced speech: most energy below 4 kHz.
    assert _band_power(y, SR, 80, 4000) > 0.8 * _band_power(y, SR, 0, SR / 2)


def test_babble_mixes_several_voices():
    b = synth.babble(1, 5.0, SR, voices=4)
    assert b.shape == (5 * SR,) and np.max(np.abs(b)) == pytest.approx(0.9, abs=1e-3)


def test_pink_noise_has_equal_power_per_octave():
    n = synth.pink_noise(0, 10 * SR)
    assert np.array_equal(n, synth.pink_noise(0, 10 * SR)) and np.sqrt(np.mean(n ** 2)) == pytest.approx(1, rel=1e-3)
    octaves = [_band_power(n, SR, lo, 2 * lo) for lo in (100, 200, 400, 800, 1600, 3200)]
    assert max(octaves) / min(octaves) < 1.5
    assert synth.pink_noise(0, 0).shape == (0,)


@pytest.mark.parametrize("snr_db", [10.0, 0.0, -6.0])
def test_mix_at_snr(snr_db):
    s = synth.music_track(3, 4.0, SR) * 0.5
    noise = synth.pink_noise(1, 2 * SR)                       # shorter: repeated to length
    mix = synth.mix_at_snr(s, noise, snr_db)
    assert mix.shape == s.shape and np.max(np.abs(mix)) <= 0.99 + 1e-6
    scale = np.dot(mix, s) / np.dot(s, s)                     # undo the anti-clipping gain
    added = mix / scale - s
    measured = 10 * np.log10(np.mean(s ** 2) / np.mean(added ** 2))
    assert measured == pytest.approx(snr_db, abs=0.3)


def test_telephone_band_keeps_voice_band_only():
    t = np.arange(2 * SR) / SR
    for hz, kept in ((100, False), (1000, True), (2500, True), (6000, False)):
        y = np.sin(2 * np.pi * hz * t).astype(np.float32)
        out = synth.telephone_band(y, SR)[SR // 2:]
        gain_db = 10 * np.log10(np.mean(out ** 2) / np.mean(y[SR // 2:] ** 2))
        assert (gain_db > -1.5) if kept else (gain_db < -20), (hz, gain_db)


def _crest_db(y: np.ndarray) -> float:
    return 20 * np.log10(np.max(np.abs(y)) / np.sqrt(np.mean(np.square(y, dtype=np.float64))))


def test_air_chain_compresses_and_clips():
    sr = 16000
    music = synth.music_track(2, 10.0, sr)
    loud = synth.air_chain(music, sr)
    assert loud.dtype == np.float32 and len(loud) == len(music) and np.max(np.abs(loud)) < 1.0
    assert _crest_db(loud) < _crest_db(music) - 1.5                       # compressed and clipped
    # Loud and quiet passages come closer: a tone 30 dB down, then at full level.
    t = np.arange(2 * sr) / sr
    tone = (np.sin(2 * np.pi * 440 * t) * np.where(t < 1.0, 10 ** (-30 / 20), 1.0)).astype(np.float32)
    out = synth.air_chain(tone, sr)
    rms = lambda y: np.sqrt(np.mean(np.square(y, dtype=np.float64)))
    assert 20 * np.log10(rms(out[int(1.5 * sr):]) / rms(out[int(0.5 * sr): sr])) < 22.0      # 30 dB in
    assert synth.air_chain(np.zeros(0, np.float32), sr).shape == (0,)


def test_fade_out_lowers_the_end_only():
    y = np.ones(16000 * 6, np.float32)
    f = synth.fade_out(y, 16000, 4.0, depth_db=40.0)
    assert np.all(f[: 2 * 16000] == 1.0) and f[-1] == pytest.approx(0.01, rel=1e-3)
    assert np.all(np.diff(f[2 * 16000:]) <= 0) and np.all(y == 1.0)        # the input is left alone


def test_change_speed_shifts_tempo_and_pitch_together():
    t = np.arange(4 * SR) / SR
    y = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    fast = synth.change_speed(y, SR, 1.02)
    assert len(fast) == pytest.approx(len(y) / 1.02, abs=2)
    assert _peak_hz(fast, SR) == pytest.approx(1020, abs=2)
    with pytest.raises(ValueError):
        synth.change_speed(y, SR, 0)


def _semitone_db(y: np.ndarray) -> np.ndarray:
    """Power in bands a semitone wide centred on the notes A1..A6, in dB."""
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    edges = 55.0 * 2 ** ((np.arange(62) - 0.5) / 12)
    band = np.digitize(np.fft.rfftfreq(len(y), 1 / SR), edges)
    return 10 * np.log10(np.bincount(band, spec, minlength=63)[1:62] + 1e-9)


def _envelope_db(y: np.ndarray, frame: int) -> np.ndarray:
    n = len(y) // frame
    return 10 * np.log10(np.mean(y[:n * frame].reshape(n, frame) ** 2, axis=1) + 1e-9)


def test_music_track_tempo_compresses_time_and_keeps_pitch():
    slow = synth.music_track(3, 12.0, SR)
    fast = synth.music_track(3, 12.0 / 1.05, SR, tempo=1.05)
    assert np.array_equal(synth.music_track(3, 12.0, SR, tempo=1.0), slow)
    assert len(fast) == round(12.0 / 1.05 * SR)
    # The same notes: the long-term spectrum in semitone bands is the same; a speed change moves it.
    same, moved = (np.corrcoef(_semitone_db(slow), _semitone_db(y))[0, 1]
                   for y in (fast, synth.change_speed(slow, SR, 1.05)))
    assert same > 0.95 and moved < 0.5
    # The same events 5 % sooner: the loudness envelope in frames 5 % shorter follows the original's.
    env_slow, env_fast = _envelope_db(slow, 420), _envelope_db(fast, 400)
    n = min(len(env_slow), len(env_fast))
    assert np.corrcoef(env_slow[:n], env_fast[:n])[0, 1] > 0.9
    unaligned = _envelope_db(fast, 420)                                   # frames of the original's length
    assert np.corrcoef(env_slow[:len(unaligned)], unaligned)[0, 1] < 0.7
    with pytest.raises(ValueError):
        synth.music_track(3, 1.0, SR, tempo=0)


@pytest.mark.parametrize("sr,kbps", [(16000, 32), (22050, 64), (44100, 128)])
def test_write_mp3_bitrate_and_readback(tmp_path, sr, kbps):
    y = synth.music_track(5, 6.0, sr)
    path = tmp_path / "x.mp3"
    written = synth.write_mp3(path, y, sr, kbps)
    assert written == pytest.approx(kbps, rel=0.1)
    back, back_sr = sf.read(path, dtype="float32")
    assert back_sr == sr and 0 <= len(back) - len(y) < 0.15 * sr      # plus encoder padding
