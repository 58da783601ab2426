"""Verification peaks: stored with the postings, moved by merges, and the peak-by-peak check that rescues weak
true matches and doubts chance alignments."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioid import synth
from audioid.fingerprint.audio import load, resample
from audioid.fingerprint.config import LandmarkConfig
from audioid.fingerprint.landmarks import peak_band, query_peaks, reference_peaks, strongest
from audioid.index import build
from audioid.index.build import add_to_index, build_index, remove_from_index
from audioid.index.check import check_index
from audioid.index.identify import Identifier, MatchConfig, confidence, decide
from audioid.index.match import match, speed_grid
from audioid.index.postings import Segment, write_segment
from audioid.index.sources import reference_specs
from audioid.index.store import IndexReader
from audioid.index.verify import combined_p, verify

SR = 16000
CFG = LandmarkConfig()


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("refs")
    for i in range(1, 5):
        sf.write(d / f"song{i}.wav", synth.music_track(100 + i, 25.0, SR), SR)
    return d


@pytest.fixture(scope="module")
def index(refs, tmp_path_factory) -> Path:
    idx = tmp_path_factory.mktemp("idx") / "idx"
    build_index(reference_specs(str(refs)), idx, jobs=1)
    return idx


def test_peaks_round_trip_through_a_segment(tmp_path):
    rng = np.random.default_rng(0)
    tracks = np.array([[100, 500, 1], [650, 300, 2]])
    frames = np.concatenate([rng.integers(100, 600, 50), rng.integers(650, 950, 30)])
    bins = rng.integers(0, 1024, 80)
    write_segment(str(tmp_path / "s"), rng.integers(0, 1 << 20, 100).astype(np.uint32),
                  rng.integers(100, 900, 100), tracks, 23, (frames, bins))
    seg = Segment.open(str(tmp_path / "s"))
    order = np.lexsort((bins, frames))
    got = seg.all_peaks()
    assert np.array_equal(got[0], frames[order]) and np.array_equal(got[1], bins[order])
    for lo, hi in [(0, 2000), (130, 640), (600, 651), (200, 201), (949, 2000), (5, 50)]:
        f, b = seg.peaks_between(lo, hi)
        inside = (frames[order] >= lo) & (frames[order] < hi)
        assert np.array_equal(f, frames[order][inside]) and np.array_equal(b, bins[order][inside])
    with pytest.raises(ValueError, match="bin"):
        write_segment(str(tmp_path / "t"), np.zeros(1, np.uint32), [100], tracks, 23, ([100], [1024]))
    with pytest.raises(ValueError, match="outside"):
        write_segment(str(tmp_path / "u"), np.zeros(1, np.uint32), [100], tracks, 23, ([99], [5]))


def _track_peaks(reader: IndexReader, label: str) -> tuple[np.ndarray, np.ndarray]:
    """A track's stored peaks, frames relative to its start."""
    [t] = [t for t in reader.catalog.tracks() if t.label == label]
    seg = next(s for s in reader.segments if s.name == t.segment)
    f, b = seg.peaks_between(t.frame_start, t.frame_start + t.frame_count)
    return f - t.frame_start, b


def test_build_stores_each_tracks_strongest_peaks_and_merges_move_them(refs, tmp_path):
    idx = tmp_path / "idx"
    build_index(reference_specs(str(refs))[:2], idx, jobs=1)
    add_to_index(reference_specs(str(refs))[2:], idx, jobs=1)
    y = resample(load(refs / "song3.wav", SR).samples, SR, CFG.sample_rate)
    want = strongest(reference_peaks(y, CFG), CFG.verify_peaks_per_s, CFG)
    before = {f"song{i}": _track_peaks(IndexReader(str(idx)), f"song{i}") for i in range(1, 5)}
    f, b = before["song3"]
    assert np.array_equal(f, want.time.astype(np.int64)) and np.array_equal(b, np.rint(want.freq))
    assert abs(len(f) - CFG.verify_peaks_per_s * 25.0) <= CFG.verify_peaks_per_s
    remove_from_index(str(idx), ["song1"])
    build.merge_segments(idx)
    reader = IndexReader(str(idx))
    assert len(reader.segments) == 1 and check_index(idx).ok
    for label in ("song2", "song3", "song4"):          # moved to new frames, the same relative to each track
        after = _track_peaks(reader, label)
        assert all(np.array_equal(x, y) for x, y in zip(after, before[label]))
    assert len(reader.segments[0].all_peaks()[0]) == sum(len(before[f"song{i}"][0]) for i in (2, 3, 4))


def _candidate(reader: IndexReader, y: np.ndarray, **search) -> tuple:
    """Spectrum, peaks and best candidate of samples ``y`` at ``CFG.sample_rate``, all of normal speed searched
    (or as ``search`` says): :func:`verify`'s arguments."""
    spectrum = peak_band(y, CFG)
    peaks = query_peaks(spectrum, CFG)
    settings = dict(frames=reader.frames, speeds=[1.0], max_postings=4000, overdispersion=16.0, stop_false_alarms=0.0,
                    removed=reader.removed)
    return spectrum, peaks, match(peaks, reader.segments, CFG, **{**settings, **search})


def _noisy(refs: Path, label: str, snr_db: float, seed: int) -> np.ndarray:
    y, _ = sf.read(refs / f"{label}.wav", dtype="float32")
    q = y[5 * SR: 15 * SR]
    return synth.mix_at_snr(q, synth.pink_noise(seed, len(q)), snr_db)


def test_the_true_offset_lines_up_and_a_wrong_one_does_not(index, refs):
    reader = IndexReader(str(index))
    spectrum, peaks, cand = _candidate(reader, resample(_noisy(refs, "song1", -10.0, 1), SR, CFG.sample_rate))
    assert reader.catalog.get(cand.track_id).label == "song1"
    assert verify(peaks, spectrum, cand, reader.segments, CFG, 4000) < 1e-5
    for shift in (-150, 90, 200):
        elsewhere = replace(cand, offset_frames=cand.offset_frames + shift)
        assert verify(peaks, spectrum, elsewhere, reader.segments, CFG, 4000) > 1e-3


def test_music_under_a_louder_voice_is_found_among_the_querys_partials(index, refs):
    """A voice 15 dB over the music takes most of the query's peaks, but the music's partials stay maxima of the
    spectrum between the voice's harmonics: the check finds the reference's peaks at the true offset (its
    query's own 45 peaks a second gave p 3e-5 to 0.09 here) and not at others."""
    reader = IndexReader(str(index))
    for i in range(1, 5):
        y, _ = sf.read(refs / f"song{i}.wav", dtype="float32")
        q = synth.mix_at_snr(y[5 * SR: 15 * SR], synth.speech_like(1, 10.0, SR), -15.0)
        spectrum, peaks, cand = _candidate(reader, resample(q, SR, CFG.sample_rate))
        assert reader.catalog.get(cand.track_id).label == f"song{i}"
        assert verify(peaks, spectrum, cand, reader.segments, CFG, 4000) < 1e-6
        for shift in (90, -150):
            elsewhere = replace(cand, offset_frames=cand.offset_frames + shift)
            assert verify(peaks, spectrum, elsewhere, reader.segments, CFG, 4000) > 1e-3


def test_a_time_compressed_match_is_checked_at_its_own_pitch(index):
    """A tempo candidate (pitch kept) lines up peak by peak only when its query's frequencies are not scaled."""
    reader = IndexReader(str(index))
    outro = synth.music_track(103, 25.0 / 1.04, SR, tempo=1.04)[-10 * SR:]   # song3, 4 % faster, pitch kept
    y = synth.mix_at_snr(outro, synth.pink_noise(1, len(outro)), -8.0)
    spectrum, peaks, cand = _candidate(reader, resample(y, SR, CFG.sample_rate), tempos=speed_grid(0.04, 0.005))
    assert reader.catalog.get(cand.track_id).label == "song3"
    assert cand.pitch == 1.0 and cand.speed == pytest.approx(1.04, abs=0.006)
    assert verify(peaks, spectrum, cand, reader.segments, CFG, 4000) < 1e-3
    assert verify(peaks, spectrum, replace(cand, pitch=cand.speed), reader.segments, CFG, 4000) > 0.5


def test_a_speed_changed_match_is_checked_on_the_references_frame_grid(index):
    """Query peaks mapped to the reference's time axis fall between its frames at another speed: rounded to the
    nearest one, +-1 frame covers the three the chance model counts (unrounded, two), so the true alignment of a
    resampled, noisy outro stands out."""
    reader = IndexReader(str(index))
    p_values = []
    for seed in range(101, 105):
        outro = synth.change_speed(synth.music_track(seed, 25.0, SR), SR, 1.02)[-10 * SR:]
        y = synth.mix_at_snr(outro, synth.pink_noise(1, len(outro)), -8.0)
        spectrum, peaks, cand = _candidate(reader, resample(y, SR, CFG.sample_rate), speeds=speed_grid(0.03, 0.005))
        assert reader.catalog.get(cand.track_id).label == f"song{seed - 100}"
        assert cand.speed == pytest.approx(1.02)
        p_values.append(verify(peaks, spectrum, cand, reader.segments, CFG, 4000))
    assert np.median(p_values) < 0.01, p_values


def test_nothing_left_to_check_is_no_evidence(index, refs):
    """A short clean excerpt's votes can use every stored peak of its span: the check then has no answer
    (None), rather than a p-value of 1 that would drop a true match."""
    reader = IndexReader(str(index))
    y = load(str(refs / "song3.wav"), CFG.sample_rate).samples[8 * CFG.sample_rate: 11 * CFG.sample_rate]
    spectrum, peaks, cand = _candidate(reader, y)
    assert reader.catalog.get(cand.track_id).label == "song3"
    assert verify(peaks, spectrum, cand, reader.segments, CFG, 4000) is None


def test_weak_true_matches_are_rescued_and_unknown_audio_is_not(index, refs, tmp_path):
    checked, votes_only = Identifier.open(index), Identifier.open(index, MatchConfig(verify_p=0.0))
    noisy = _noisy(refs, "song1", -10.0, 1)                  # the votes alone reject it
    assert votes_only.identify_samples(noisy, SR).status == "no_match"
    r = checked.identify_samples(noisy, SR)
    assert (r.status, r.label) == ("match", "song1") and 0.5 < r.confidence <= 1.0
    assert r.offset_s == pytest.approx(5.0, abs=0.1)
    unknown = [synth.music_track(900 + i, 10.0, SR) for i in range(4)] + [synth.speech_like(i, 10.0, SR)
                                                                          for i in range(4)]
    for y in unknown:
        for snr in (None, -6.0):
            q = y if snr is None else synth.mix_at_snr(y, synth.pink_noise(3, len(y)), snr)
            assert checked.identify_samples(q, SR).status == "no_match"



def test_a_narrow_rejection_counts_towards_the_peak_check(index, refs):
    """Votes narrowly short and a peak check short of verify_p on its own: together they name the track."""
    checked = Identifier.open(index)
    noisy = _noisy(refs, "song2", -8.0, 1)
    spectrum, peaks, cand = checked.candidate(noisy, SR)
    p = verify(peaks, spectrum, cand, checked.reader.segments, CFG, 4000)
    mc = checked.config
    assert mc.max_false_alarms <= cand.false_alarms < 1.0 and p > mc.verify_p       # each alone falls short
    votes_only = Identifier.open(index, MatchConfig(verify_p=0.0))
    assert votes_only.identify_samples(noisy, SR).status == "no_match"
    r = checked.identify_samples(noisy, SR)
    assert (r.status, r.label) == ("match", "song2") and 0.5 < r.confidence <= 1.0

def test_indexes_without_verification_peaks_answer_as_before(refs, tmp_path):
    idx = tmp_path / "idx"
    build_index(reference_specs(str(refs)), idx, jobs=1, config=replace(CFG, verify_peaks_per_s=0.0))
    reader = IndexReader(str(idx))
    assert reader.segments[0].peak_codes is None
    assert not (Path(idx) / "postings" / reader.segments[0].name / "peaks.npy").exists()
    noisy = _noisy(refs, "song1", -10.0, 1)
    assert Identifier.open(idx).identify_samples(noisy, SR).status == "no_match"


def test_check_reports_verification_peaks_outside_the_tracks(refs, tmp_path):
    idx = tmp_path / "idx"
    build_index(reference_specs(str(refs))[:2], idx, jobs=1)
    assert check_index(idx).ok
    seg_dir = next((idx / "postings").iterdir())
    blocks, codes, tracks = (np.load(seg_dir / f"{n}.npy") for n in ("peak_blocks", "peaks", "tracks"))
    # Move a peak into the gap after the first track: the reader accepts the file, check must not.
    base, starts = int(blocks[0]), blocks[1:]
    gap = int(tracks[0, 0] + tracks[0, 1]) + 2 - base
    i = int(starts[gap // 64])
    assert starts[gap // 64 + 1] > i                      # that block holds peaks (the first track's last ones)
    codes = codes.copy()
    codes[i] = ((gap % 64) << 10) | (codes[i] & 1023)
    np.save(seg_dir / "peaks.npy", codes)
    rep = check_index(idx)
    assert not rep.ok and any("verification peaks lie outside" in e for e in rep.errors), rep.errors


def test_votes_and_check_pass_one_bar():
    mc = MatchConfig()

    def never() -> float:
        raise AssertionError("decisive votes, or no check configured, need no check")

    assert decide(1e-12, never, mc)[0] is False                       # decisive votes
    assert decide(3e-8, lambda: 0.6, mc)[0] is False                  # strong votes, chance-level peaks: kept
    rejected, conf = decide(2e-4, lambda: 0.6, mc)                    # weak votes, chance-level peaks: dropped
    assert rejected and conf == pytest.approx(confidence(combined_p(2e-4, 0.6), mc.rescue_p))
    assert decide(9.1e-4, lambda: 0.12, mc)[0] is True                # unknown music under a voice (a real case)
    assert decide(2e-4, lambda: 0.01, mc)[0] is False                 # weak votes the peaks bear out
    assert decide(2e-4, lambda: None, mc)[0] is False                 # nothing to check: the votes decide
    assert decide(5e-3, lambda: 1e-6, mc)[0] is False                 # rejected votes, rescued by the peaks
    assert decide(5e-3, lambda: 0.1, mc)[0] is True
    assert decide(5e-3, lambda: None, mc)[0] is True
    votes_only = MatchConfig(verify_p=0.0)
    assert decide(2e-4, never, votes_only)[0] is False and decide(5e-3, never, votes_only)[0] is True
    # For a chance-level check (p 0.9), votes and check together reach rescue_p (1.25e-4) up to false alarms of
    # about 1e-5 (combined 1.1e-4 there, 3.1e-4 at 3e-5).
    assert [decide(e, lambda: 0.9, mc)[0] for e in (1e-6, 1e-5, 3e-5, 1e-4)] == [False, False, True, True]


def test_combined_p_is_fishers_method_for_two_p_values():
    rng = np.random.default_rng(0)
    u = rng.random((2, 200_000))
    combined = np.array([combined_p(a, b) for a, b in u.T])
    for level in (0.001, 0.01, 0.1):                     # calibrated: P(combined < a) = a under the null
        assert np.mean(combined < level) == pytest.approx(level, rel=0.15)
    assert combined_p(1.0, 1e-5) == combined_p(50.0, 1e-5) == pytest.approx(1e-5 * (1 - np.log(1e-5)))
    assert combined_p(1.0, 0.0) == 0.0 and combined_p(0.3, 1.0) == pytest.approx(0.3 * (1 - np.log(0.3)))
    # A candidate the votes narrowly reject (false-alarm expectation 0.02 > 1e-3) needs less from its peaks.
    assert combined_p(0.02, 9e-5) < combined_p(1.0, 1e-5) < combined_p(1.0, 9e-5)
