"""The matcher's significance test: how the false-alarm budget is split over speed hypotheses."""
from __future__ import annotations

import numpy as np
import pytest
import soxr

from audioid import synth
from audioid.fingerprint.landmarks import query_peaks
from audioid.index.match import Lookup, Warp, _best_pile, _rarest, match, speed_grid, speed_hypotheses, warp_grid
from audioid.index.postings import Segment
from audioid.index.store import IndexReader

from conftest import Library

SPEEDS = speed_grid(0.03, 0.005)
TEMPOS = speed_grid(0.04, 0.005)
WARPS = warp_grid(SPEEDS, TEMPOS)


def test_warp_grid_holds_each_hypothesis_once_normal_first():
    assert WARPS[0] == Warp(1.0, 1.0)
    assert len(WARPS) == len(set(WARPS)) == len(SPEEDS) + len(TEMPOS) - 1      # normal speed is normal tempo
    assert {w.speed for w in WARPS if w.pitch == 1.0} == set(TEMPOS)
    assert all(w.pitch == w.speed for w in WARPS if w.pitch != 1.0)
    assert warp_grid(SPEEDS) == [Warp(s, s) for s in SPEEDS]


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_speed_shares_sum_to_the_whole_budget(share):
    # A weighted Bonferroni correction: the inverse hypothesis counts are the shares and add up to 1.
    assert sum(1.0 / speed_hypotheses(w, WARPS, share) for w in WARPS) == pytest.approx(1.0)
    assert speed_hypotheses(Warp(1.0, 1.0), WARPS, share) == pytest.approx(1.0 / share)


def test_equal_shares_are_plain_bonferroni():
    for w in WARPS:
        assert speed_hypotheses(w, WARPS, 1.0 / len(WARPS)) == pytest.approx(len(WARPS))
    assert speed_hypotheses(Warp(1.0, 1.0), [Warp(1.0, 1.0)], 0.5) == 1.0


def _match(reader: IndexReader, y: np.ndarray, **changes):
    """``match`` of 8 kHz samples ``y`` over the speed grid, with the identifier's settings but ``changes``."""
    settings = dict(frames=reader.frames, speeds=SPEEDS, max_postings=4000, overdispersion=16.0,
                    stop_false_alarms=1e-9, removed=reader.removed)
    return match(query_peaks(y, reader.config), reader.segments, reader.config, **{**settings, **changes})


def _search(reader: IndexReader, y: np.ndarray, share: float):
    # stop_false_alarms=0 searches every speed, so the piles found do not depend on the share.
    return _match(reader, y, stop_false_alarms=0.0, normal_speed_share=share)


def _query(lib: Library, label: str, seconds: float = 10.0) -> np.ndarray:
    y = lib.tracks[label][-int(seconds * lib.sr):]
    noisy = synth.mix_at_snr(y, synth.pink_noise(5, len(y)), 0.0)
    return soxr.resample(noisy, lib.sr, 8000).astype(np.float32)


def test_normal_speed_match_pays_for_its_share_only(library: Library):
    reader = IndexReader(str(library.index))
    try:
        y = _query(library, "track3")
        even, favoured = _search(reader, y, 1.0 / len(SPEEDS)), _search(reader, y, 0.5)
        assert even.speed == favoured.speed == 1.0 and favoured.track_id == even.track_id
        assert favoured.false_alarms == pytest.approx(even.false_alarms * 2 / len(SPEEDS))
        # A pile found at another speed pays for the rest of the budget's split.
        fast = soxr.resample(y, 8000, 8000 / 1.02).astype(np.float32)
        even, favoured = _search(reader, fast, 1.0 / len(SPEEDS)), _search(reader, fast, 0.5)
        assert even.speed != 1.0 and favoured.speed == even.speed
        assert favoured.false_alarms == pytest.approx(even.false_alarms * (len(SPEEDS) - 1) * 2 / len(SPEEDS))
    finally:
        reader.close()


def test_share_must_be_a_proper_fraction(library: Library):
    reader = IndexReader(str(library.index))
    try:
        with pytest.raises(ValueError):
            _search(reader, np.zeros(8000, np.float32), 1.0)
    finally:
        reader.close()


def test_rarest_hashes_fill_the_budget_from_the_rarest_up():
    times = np.zeros(4, np.int32)
    lookup = Lookup(times, times, [(np.array([0, 10, 20, 30]), np.array([3, 11, 20, 130])),  # 3, 1, 0, 100 postings
                                   (np.array([0, 0, 0, 0]), np.array([2, 0, 1, 0]))])         # 2, 0, 1, 0
    assert _rarest(lookup, 7).tolist() == [True, True, True, False]   # 5 + 1 + 1 = 7 hits
    assert _rarest(lookup, 6).tolist() == [False, True, True, False]
    assert _rarest(lookup, 107) is None                               # the budget holds all of them


def _first_look(reader: IndexReader, y: np.ndarray, first_hits: float):
    return _match(reader, y, first_hits=first_hits)


def test_rare_hashes_decide_clear_matches_alike(library: Library):
    reader = IndexReader(str(library.index))
    try:
        y = soxr.resample(library.tracks["track2"][-10 * library.sr:], library.sr, 8000).astype(np.float32)
        full, rare = _first_look(reader, y, 0), _first_look(reader, y, 0.2)
        assert rare.hits < full.hits                      # decided on part of the postings ...
        assert rare.false_alarms < 1e-9                   # ... and significant there
        assert (rare.track_id, rare.offset_frames, rare.speed) == (full.track_id, full.offset_frames, full.speed)
        # What the first look does not settle is searched on every hash, exactly as without it.
        noise = synth.pink_noise(9, 10 * 8000).astype(np.float32)
        assert _first_look(reader, noise, 0.2) == _first_look(reader, noise, 0)
        weak = _query(library, "track3")
        assert _first_look(reader, weak, 0).track_id == _first_look(reader, weak, 0.2).track_id
    finally:
        reader.close()


def test_a_grid_of_normal_speed_only_searches_it_alone(library: Library):
    # max_speed_change 0: nothing beyond normal speed to try once it has not decided.
    reader = IndexReader(str(library.index))
    y = soxr.resample(synth.speech_like(4, 10.0, library.sr), library.sr, 8000).astype(np.float32)
    cand = _match(reader, y, speeds=speed_grid(0.0, 0.005), stop_false_alarms=0.0)
    assert cand is None or cand.speed == 1.0


def _moved_far(seg: Segment, track_id: int, shift: int) -> Segment:
    """``seg`` with one track's postings (and its place in the frame space) ``shift`` frames further on, past
    every other track."""
    tracks = np.asarray(seg.tracks, np.int64).copy()
    (row,) = np.flatnonzero(tracks[:, 2] == track_id)
    start, n = tracks[row, 0], tracks[row, 1]
    values = np.asarray(seg.values, np.int64)
    values = np.where((values >= start) & (values < start + n), values + shift, values)
    tracks[row, 0] += shift
    return Segment(seg.name, seg.low, seg.buckets, values.astype(np.uint32), tracks[np.argsort(tracks[:, 0])])


def test_piles_spanning_more_than_32_bit_keys_are_found_alike(library: Library):
    """Hits that span more frames than 32-bit sort keys hold (an index of some 75 hours) take the 64-bit path of
    the pile search: a track moved that far finds the same pile as when moved less far (32-bit keys), while
    chance hits in the other tracks stay near the start."""
    reader = IndexReader(str(library.index))
    try:
        (seg,) = reader.segments
        track = reader.catalog.by_label("track5")[0].id
        peaks = query_peaks(_query(library, "track5"), reader.config)
        near, far = (match(peaks, [_moved_far(seg, track, shift)], reader.config, frames=1 << 30, speeds=SPEEDS,
                           max_postings=4000, overdispersion=16.0, stop_false_alarms=1e-9)
                     for shift in ((1 << 20) + 12345, (1 << 28) + 12345))   # not multiples of a wrap
        assert near.track_id == track and near == far
    finally:
        reader.close()



def _hits_with_pile(reader: IndexReader, *piles: np.ndarray) -> tuple:
    """200 chance hits over the index, plus for each of ``piles`` a pile of as many votes at frame 100 of the
    index's next track, whose query anchors have those anchor frequency units."""
    rng = np.random.default_rng(7)
    values, qtimes = [rng.integers(0, reader.frames, 200)], [rng.integers(0, 300, 200)]
    cells = [rng.integers(0, 400, 200)]
    for row, units in enumerate(piles):
        qt = rng.choice(300, len(units), replace=False)
        values.append(int(reader.segments[0].tracks[row][0]) + 100 + qt)
        qtimes.append(qt)
        cells.append(units)
    return tuple(np.concatenate(column).astype(np.int64) for column in (values, qtimes, cells))


def _pile_at_1_02(reader: IndexReader, hits: tuple, line_false_alarms: float):
    """The best pile of ``hits`` taken as those of speed 1.02 in a grid of 28 other speeds and tempos."""
    return _best_pile(hits, reader.segments, Warp(1.02, 1.02), reader.frames, 56.0, 16.0, line_false_alarms)


def test_a_pile_on_one_frequency_line_counts_as_one_coincidence(library: Library):
    # What a held note, a drone or hum shared by chance looks like at a searched speed: every vote of the pile on
    # one anchor frequency (give or take a unit).  Spread over frequencies, the same votes are a match.
    reader = IndexReader(str(library.index))
    try:
        line = _hits_with_pile(reader, np.array([50, 51, 49] * 8))
        spread = _hits_with_pile(reader, np.arange(24) * 7 + 20)
        counted, judged = _pile_at_1_02(reader, line, np.inf), _pile_at_1_02(reader, line, 100.0)
        found = _pile_at_1_02(reader, spread, 100.0)
        assert found.votes == 24 and found.offset_frames == 100 and found.false_alarms < 1e-9
        assert (counted.votes, counted.offset_frames, counted.false_alarms) == (24, 100, found.false_alarms)
        # Judged by its (no) votes off the line, the pile is no match, nor is any chance pile beside it.
        assert judged.false_alarms >= 1.0
    finally:
        reader.close()


def test_a_line_pile_gives_way_to_a_smaller_pile_of_many_frequencies(library: Library):
    reader = IndexReader(str(library.index))
    try:
        hits = _hits_with_pile(reader, np.array([50, 51, 49] * 10), np.arange(20) * 7 + 20)
        counted, judged = _pile_at_1_02(reader, hits, np.inf), _pile_at_1_02(reader, hits, 100.0)
        tracks = [int(t[2]) for t in reader.segments[0].tracks[:2]]
        assert (counted.track_id, counted.votes) == (tracks[0], 30)
        assert (judged.track_id, judged.votes) == (tracks[1], 20) and judged.false_alarms < 1e-9
    finally:
        reader.close()


def test_the_line_rule_judges_piles_away_from_normal_speed_only(library: Library):
    # With a bar of 0 every pile the rule looks at is judged by its votes off its busiest line alone: fewer
    # votes, a larger false-alarm expectation.  A match at normal speed is left as it was.
    reader = IndexReader(str(library.index))
    try:
        def search(y: np.ndarray, line_false_alarms: float):
            y8k = soxr.resample(y, library.sr, 8000).astype(np.float32)
            return _match(reader, y8k, tempos=TEMPOS, line_false_alarms=line_false_alarms)
        outro = library.tracks["track4"][-10 * library.sr:]
        assert search(outro, 0.0) == search(outro, np.inf)
        fast = synth.change_speed(library.tracks["track4"], library.sr, 1.02)[-10 * library.sr:]
        counted, judged = search(fast, np.inf), search(fast, 0.0)
        assert counted.speed == judged.speed == 1.02 and counted.track_id == judged.track_id
        assert judged.false_alarms > counted.false_alarms
    finally:
        reader.close()
