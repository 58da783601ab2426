"""Landmark matching: look query hashes up, vote on the time offset, decide match or no match.

The decision is a significance test rather than a fixed vote count.  A query whose hashes hit ``n`` postings
spread over an index of ``F`` frames puts on average ``3n/F`` random votes into each 3-frame offset bin; random
votes cluster (music repeats), so the rate is inflated by ``overdispersion``.  The expected number of bins, over
all bins and speed hypotheses tried, that reach a pile's size by chance is the pile's *false-alarm expectation*
``E``; a match needs ``E`` below a threshold.  This adapts by itself to the index size, the query's length and how
common its hashes are, where a fixed vote count would not.

A query may be played faster or slower than its reference: sped up with its pitch (a resampled or turntable
playback, a :class:`Warp` of equal speed and pitch) or time-compressed with its pitch kept (as broadcast time
compression does: pitch 1).  The matcher tries a grid of both.  The hypotheses do not share that false-alarm
budget equally: normal speed, where nearly all real queries are, gets ``normal_speed_share`` of it and the
other hypotheses split the rest (a weighted Bonferroni correction, so the expected number of false alarms over
all of them is unchanged).  On real music not in the index the chance piles are in fact most frequent at the
far speeds (fewer hits there, but as much structure), while weak true matches (music under loud noise or
speech) are at normal speed.  The largest of those chance piles lie on one frequency line, a held note or a
drone that fits some speed hypothesis; away from normal speed such a pile counts only its votes off the line
(:func:`match`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from ..fingerprint.config import LandmarkConfig
from ..fingerprint.landmarks import Peaks, hash_fields, pair_hashes
from .postings import Segment


class Warp(NamedTuple):
    """A playback hypothesis: the query runs ``speed`` times as fast as its reference, its frequencies ``pitch``
    times the reference's."""

    speed: float
    pitch: float


@dataclass(frozen=True)
class Candidate:
    """The most significant offset pile found for a query."""

    segment: int          # index into the segment list
    track_row: int        # row in that segment's track table
    track_id: int
    votes: int            # distinct (query anchor, reference anchor) pairs agreeing on the offset
    hits: int             # postings the query's hashes retrieved in all (the background)
    false_alarms: float   # expected number of random piles at least this large (E)
    offset_frames: int    # reference frame (within the track) aligned with query frame 0
    speed: float          # the Warp voted for
    pitch: float
    first_frame: int      # densest run of matching query anchors (reference time axis)
    last_frame: int


def speed_grid(max_speed_change: float, step: float) -> list[float]:
    """Speeds to try, nearest to 1 first (1.0, 1+step, 1-step, ...)."""
    n = int(round(max_speed_change / step)) if step > 0 else 0
    grid = [1.0]
    for k in range(1, n + 1):
        grid += [1.0 + k * step, 1.0 - k * step]
    return grid


def poisson_sf(k: int, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam), computed in log space (tiny tails matter here)."""
    if k <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    # Sum the first terms of the tail; they shrink fast once i > lam.
    log_term = k * math.log(lam) - lam - math.lgamma(k + 1)
    total, i = 0.0, k
    term = math.exp(log_term)
    if term == 0.0:         # below the smallest double: the sum would stay 0 through a thousand terms
        return 0.0
    while True:
        total += term
        i += 1
        term *= lam / i
        if term < total * 1e-12 or i > k + 1000:
            return min(1.0, total)


def warp_grid(speeds: Sequence[float], tempos: Sequence[float] = ()) -> list[Warp]:
    """The distinct hypotheses of speed changes ``speeds`` (with pitch) and tempo changes ``tempos`` (pitch kept),
    the normal one (speed nearest 1) first."""
    normal = min(speeds, key=lambda s: abs(s - 1.0))
    warps = [Warp(normal, normal)]
    for w in [Warp(s, s) for s in speeds] + [Warp(t, 1.0) for t in tempos]:
        if w not in warps:
            warps.append(w)
    return warps


def speed_hypotheses(warp: Warp, warps: Sequence[Warp], normal_speed_share: float) -> float:
    """Number of hypotheses a pile at ``warp`` pays for: the inverse of its share of the false-alarm budget.

    The normal hypothesis (``warps[0]``, see :func:`warp_grid`) gets ``normal_speed_share``, every other one of
    ``warps`` an equal part of the rest; the shares sum to 1, so ``1 / len(warps)`` is the plain Bonferroni
    correction.
    """
    if len(warps) < 2:
        return 1.0
    if warp == warps[0]:
        return 1.0 / normal_speed_share
    return (len(warps) - 1) / (1.0 - normal_speed_share)


def false_alarms(votes: int, hits: int, frames: int, hypotheses: float, overdispersion: float) -> float:
    """Expected number of random offset piles of at least ``votes`` (see module docstring)."""
    bins = max(frames / 3.0, 1.0)
    lam = overdispersion * hits / bins
    return bins * hypotheses * poisson_sf(votes, lam)


def _live(values: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Mask of global frames outside the removed tracks' ``(frame_start, frame_count)`` ranges (non-empty)."""
    row = np.searchsorted(removed[:, 0], values, side="right") - 1
    inside = (row >= 0) & (values < removed[np.maximum(row, 0), 0] + removed[np.maximum(row, 0), 1])
    return ~inside


def _run_starts(ordered: np.ndarray) -> np.ndarray:
    """Mask of the first element of each run of equal values in the sorted ``ordered``."""
    first = np.empty(len(ordered), bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first


def _unique_inverse(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(hashes, return_inverse=True)`` of uint32 ``hashes``, sorting (hash, position) packed in one
    64-bit key: a plain sort is several times faster than the argsort ``np.unique`` makes."""
    key = np.sort((hashes.astype(np.uint64) << 32) | np.arange(len(hashes), dtype=np.uint64))
    ordered = (key >> 32).astype(np.uint32)
    first = _run_starts(ordered)
    inverse = np.empty(len(hashes), np.intp)
    inverse[(key & 0xFFFFFFFF).astype(np.intp)] = np.cumsum(first) - 1
    return ordered[first], inverse


class Lookup(NamedTuple):
    """One playback hypothesis looked up: per query hash its anchor frame and anchor frequency unit (on the
    reference's scale), and per segment the hashes' ``[lo, hi)`` postings."""

    times: np.ndarray
    cells: np.ndarray
    ranges: list[tuple[np.ndarray, np.ndarray]]


#: Hits: per posting retrieved, (global reference frame, query anchor frame, anchor frequency unit).
Hits = tuple[np.ndarray, np.ndarray, np.ndarray]


def _lookup(peaks: Peaks, segments: Sequence[Segment], cfg: LandmarkConfig, warps: Sequence[Warp],
            max_postings: int) -> dict[Warp, Lookup]:
    """For each playback hypothesis, its :class:`Lookup`.

    The hashes of all the hypotheses are looked up together (the binary searches are the costly part, and
    neighbouring ones share many hashes).  Hashes with more than ``max_postings`` postings in a segment get
    an empty range there: they vote everywhere and identify nothing.
    """
    per_warp = [pair_hashes(peaks, cfg, cfg.query_fanout, w.speed, pitch=w.pitch) for w in warps]
    if not per_warp:
        return {}
    uniq, inverse = _unique_inverse(np.concatenate([h for h, _ in per_warp]))
    bounds = np.cumsum([0] + [len(h) for h, _ in per_warp])
    out = {w: Lookup(times, hash_fields(h)[0], []) for w, (h, times) in zip(warps, per_warp)}
    if not len(uniq):
        return out
    for seg in segments:
        lo, hi = seg.sorted_ranges(uniq, max_postings)
        for w, a, b in zip(warps, bounds[:-1], bounds[1:]):
            out[w].ranges.append((lo[inverse[a:b]], hi[inverse[a:b]]))
    return out


def _rarest(lookup: Lookup, budget: int) -> np.ndarray | None:
    """Mask of the query hashes with the fewest postings that together retrieve at most ``budget`` hits, or None
    when that is all of them."""
    if not lookup.ranges:
        return None
    counts = sum(hi - lo for lo, hi in lookup.ranges)
    if counts.sum() <= budget:
        return None
    ordered = np.sort(counts)
    cap = ordered[max(0, np.searchsorted(np.cumsum(ordered), budget, side="right") - 1)]
    return counts <= cap


def _hits(lookup: Lookup, segments: Sequence[Segment], removed: np.ndarray,
          only: np.ndarray | None = None) -> Hits | None:
    """The :data:`Hits` of a lookup (of the hashes in ``only``), outside the ``removed`` frame ranges."""
    parts = []
    for seg, (lo, hi) in zip(segments, lookup.ranges):
        qidx, vals = seg.gather(lo, hi if only is None else np.where(only, hi, lo))
        if len(removed):
            keep = _live(vals, removed)
            qidx, vals = qidx[keep], vals[keep]
        if len(vals):
            parts.append((vals.astype(np.int64), lookup.times[qidx].astype(np.int64), lookup.cells[qidx]))
    if len(parts) < 2:
        return parts[0] if parts else None
    return tuple(np.concatenate(column) for column in zip(*parts))


def _top_offsets(diff_sorted: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` offsets with the most votes (+-1 frame tolerance), at least 3 frames apart.

    ``diff_sorted`` is the hits' offsets, sorted.
    """
    starts = np.flatnonzero(_run_starts(diff_sorted))
    uniq = diff_sorted[starts]
    counts = np.diff(starts, append=len(diff_sorted))
    # Votes within one frame: add each distinct offset's neighbours where they are one frame away.
    smooth = counts.copy()
    adjacent = uniq[1:] == uniq[:-1] + 1
    smooth[:-1] += counts[1:] * adjacent
    smooth[1:] += counts[:-1] * adjacent
    m = min(8 * k, len(smooth))
    # argpartition leaves ties in a layout-dependent order: sort them so the lowest offset wins a tie, and an
    # index whose tracks sit elsewhere in the frame space (added, merged) picks the same pile.
    top = np.sort(np.argpartition(-smooth, m - 1)[:m]) if m < len(smooth) else np.arange(len(smooth))
    order = top[np.argsort(-smooth[top], kind="stable")]
    chosen: list[int] = []
    for u in uniq[order].tolist():
        if all(abs(u - c) > 2 for c in chosen):
            chosen.append(u)
            if len(chosen) == k:
                break
    return np.array(chosen, np.int64)


def _matched_span(qtimes: np.ndarray, max_gap: int = 64) -> tuple[int, int]:
    """First and last query frame of the densest run of matching anchors (gaps <= ``max_gap`` frames), so a
    stray chance hit far from the music does not stretch the reported range."""
    t = np.sort(qtimes)
    edges = [0, *(np.flatnonzero(np.diff(t) > max_gap) + 1).tolist(), len(t)]   # where each run starts
    k = max(range(len(edges) - 1), key=lambda i: edges[i + 1] - edges[i])      # the first longest
    return int(t[edges[k]]), int(t[edges[k + 1] - 1])


#: Anchor frequency units (``LandmarkConfig.freq_quant`` FFT bins, 7.8 Hz by default) each side of a line's
#: centre that count as the same line (:func:`_off_line_votes`).
_LINE_UNITS = 1


def _locate(segments: Sequence[Segment], frames: np.ndarray) -> tuple[int, int] | None:
    """(segment index, track row) owning most of ``frames``."""
    best = None
    for s, seg in enumerate(segments):
        rows = seg.track_at(frames)
        rows = rows[rows >= 0]
        if len(rows):
            row = int(np.bincount(rows).argmax())
            n = int(np.sum(rows == row))
            if best is None or n > best[0]:
                best = (n, s, row)
    return None if best is None else (best[1], best[2])


def _off_line_votes(hits: Hits, offset: int) -> int:
    """Votes of the pile at ``offset`` (+-1 frame) with an anchor off its busiest frequency line: the
    ``2 * _LINE_UNITS + 1`` neighbouring anchor frequency units holding the most votes (a held note or hum
    wavers)."""
    values, qtimes, cells = hits
    m = np.abs(values - qtimes - offset) <= 1
    pair = values[m] * (int(qtimes.max()) + 1) + qtimes[m]      # one vote: a (reference, query) anchor pair
    unit = cells[m]
    span = int(unit.max()) + 1
    distinct = np.unique(pair * span + unit)                   # each vote once per anchor unit it has
    pair, unit = distinct // span, distinct % span
    width = 2 * _LINE_UNITS + 1
    centre = int(np.convolve(np.bincount(unit), np.ones(width), "full").argmax()) - _LINE_UNITS
    return len(np.unique(pair[np.abs(unit - centre) > _LINE_UNITS]))


def _best_pile(hits: Hits | None, segments: Sequence[Segment], warp: Warp, frames: int, hypotheses: float,
               overdispersion: float, line_false_alarms: float) -> Candidate | None:
    """The most significant offset pile among one playback hypothesis' hits (see :func:`match` for
    ``line_false_alarms``)."""
    if hits is None:
        return None
    values, qtimes, _ = hits
    # Sort the hits by offset (reference frame - query frame) with the query frame in the low bits of one
    # key: each pile is then a slice, and a plain sort is several times faster than an argsort.
    base = int(qtimes.max())
    shift = max(1, base.bit_length())
    lowest = int(values.min()) - base     # offsets are >= lowest: keep keys non-negative
    key = ((values - qtimes - lowest) << shift) | qtimes
    if shift < 32 and (int(values.max()) - lowest) >> (32 - shift) == 0:
        key = key.astype(np.uint32)     # the keys fit in 32 bits (small indexes): they sort twice as fast
    key = np.sort(key).astype(np.int64, copy=False)
    diff_sorted = (key >> shift) + lowest
    # Every pile here shares the hits, frames and hypotheses, so the one with the most votes is the most
    # significant: count the votes of each, then locate only the winner (the next one if it is in no track, or
    # if it lies on one frequency line and is judged by its other votes: see match()).
    # The pile of an offset is the slice of hits within one frame of it.
    offsets = _top_offsets(diff_sorted, 5)
    piles = list(zip(diff_sorted.searchsorted(offsets - 1).tolist(),
                     diff_sorted.searchsorted(offsets + 1, side="right").tolist(), offsets.tolist()))
    # One vote per (query anchor, reference anchor) pair: the several targets one anchor pair shares are one
    # piece of evidence, not several.  Such a pair is one distinct key, and the keys are sorted.
    votes = [int(np.count_nonzero(key[a + 1:b] != key[a:b - 1])) + 1 for a, b, _ in piles]
    lines: list[Candidate] = []         # the piles so far judged by their votes off their line
    for i in sorted(range(len(piles)), key=lambda i: -votes[i]):     # stable: ties keep their order
        a, b, off = piles[i]
        pile_q = key[a:b] & ((1 << shift) - 1)
        where = _locate(segments, (key[a:b] >> shift) + lowest + pile_q)
        if where is None:
            continue
        s, row = where
        track = segments[s].tracks[row]
        first, last = _matched_span(pile_q)
        fa = false_alarms(votes[i], len(values), frames, hypotheses, overdispersion)
        on_line = False
        if fa < 1.0 and line_false_alarms < math.inf:       # (a candidate at all, where the rule applies)
            off_line = false_alarms(_off_line_votes(hits, off), len(values), frames, hypotheses, overdispersion)
            on_line = off_line >= line_false_alarms
            fa = off_line if on_line else fa
        cand = Candidate(segment=s, track_row=row, track_id=int(track[2]), votes=votes[i], hits=len(values),
                         false_alarms=fa, offset_frames=int(off - track[0]), speed=warp.speed, pitch=warp.pitch,
                         first_frame=first, last_frame=last)
        if not on_line:
            # The most votes left: the most significant pile, unless a line pile before it still is.
            return min([*lines, cand], key=lambda c: c.false_alarms)
        lines.append(cand)
    return min(lines, key=lambda c: c.false_alarms) if lines else None


def match(peaks: Peaks, segments: Sequence[Segment], cfg: LandmarkConfig, *, frames: int, speeds: Sequence[float],
          max_postings: int, overdispersion: float, stop_false_alarms: float,
          refine_false_alarms: float = 1.0, removed: np.ndarray | None = None,
          normal_speed_share: float = 0.5, first_hits: float = 0.0, tempos: Sequence[float] = (),
          line_false_alarms: float = math.inf) -> Candidate | None:
    """Find the most significant reference offset for the query ``peaks``.

    ``speeds`` (playback with pitch) and ``tempos`` (pitch kept) are evenly spaced grids around 1.  Normal speed
    is tried first and ends the search when its best pile's false-alarm expectation is below
    ``stop_false_alarms`` (the usual case).  Otherwise every other value of each grid is looked up in one
    batch; if the best pile is then at least plausible (below ``refine_false_alarms``) the search climbs
    through the neighbouring values of its grid while they improve it, so the reported speed is the best one
    and queries with nothing to find cost about half the grids.
    ``frames`` is the size of the index's frame space (its MANIFEST's ``next_frame``); hits inside the
    ``removed`` ``(frame_start, frame_count)`` ranges (sorted) are ignored.  ``normal_speed_share`` is the part
    of the false-alarm budget given to normal speed (see :func:`speed_hypotheses`).

    With ``first_hits`` > 0, normal speed is first judged on its rarest hashes alone, as many as retrieve at
    most ``first_hits`` postings per query hash, and a pile below ``stop_false_alarms`` there ends the search.
    Common hashes retrieve most of the postings (and so cost most of the time) but carry few of a true match's
    votes; a query this look does not settle is searched on all its hashes as above.

    A held note, a drone or mains hum that query and reference share piles votes all along one frequency, at
    whatever offset lines the two up: one coincidence, not one per vote.  So away from normal speed a pile
    whose votes *off* its busiest line (three neighbouring anchor frequency units) would be expected
    ``line_false_alarms`` times or more by chance gets their false-alarm expectation instead of its own (inf =
    never).  The speed and tempo grid offers such a line many chances to fit some hypothesis, and on real
    unknown music the chance piles that pass the votes' test there are of this kind (bench/RESULTS.md).  At
    normal speed a pile on one line is more often a true match under loud noise, of which only the strongest
    partial is left; the peak check (:mod:`index.verify`) judges those.
    """
    if not 0.0 < normal_speed_share < 1.0:
        raise ValueError(f"normal_speed_share must be in (0, 1), got {normal_speed_share}")
    removed = np.zeros((0, 2), np.int64) if removed is None else removed
    warps = warp_grid(speeds, tempos)
    normal = warps[0]
    tried: dict[Warp, Candidate | None] = {}

    def pile(warp: Warp, lookup: Lookup, only: np.ndarray | None = None) -> Candidate | None:
        return _best_pile(_hits(lookup, segments, removed, only), segments, warp, frames,
                          speed_hypotheses(warp, warps, normal_speed_share), overdispersion,
                          math.inf if warp == normal else line_false_alarms)

    def try_warps(batch: Sequence[Warp]) -> None:
        for warp, lookup in _lookup(peaks, segments, cfg, batch, max_postings).items():
            tried[warp] = pile(warp, lookup)

    def best_so_far() -> Candidate | None:
        found = [c for c in tried.values() if c is not None]
        return min(found, key=lambda c: c.false_alarms) if found else None

    # Each grid sorted by speed, through the normal hypothesis (shared by both).  The first look after normal
    # speed takes every other speed counted from there, and every fourth tempo: a tempo error moves only the
    # hashes' time deltas, a speed error their frequencies too, so a tempo pile still stands out further away.
    grids = [sorted({normal, *(w for w in warps if (w.speed == w.pitch) == same)}) for same in (True, False)]
    coarse = {w for g, stride in zip(grids, (2, 4)) for k, w in enumerate(g)
              if w != normal and (k - g.index(normal)) % stride == 0}
    grids = [g for g in grids if len(g) > 1]
    # Normal speed alone first: most matches are decided there with one lookup, and most of those by the
    # rarest hashes alone (a small part of the hits: common hashes cost the most and say the least).
    lookup = _lookup(peaks, segments, cfg, [normal], max_postings)[normal]
    rare = _rarest(lookup, int(first_hits * len(lookup.times))) if first_hits else None
    if rare is not None:
        cand = pile(normal, lookup, rare)
        if cand is not None and cand.false_alarms < stop_false_alarms:
            return cand
    tried[normal] = pile(normal, lookup)
    best = best_so_far()
    if best is not None and best.false_alarms < stop_false_alarms:
        return best
    try_warps([w for w in warps if w in coarse])       # nearest first: a tie goes to the nearer
    best = best_so_far()
    if best is None or best.false_alarms >= refine_false_alarms:
        return best
    for grid in grids:
        for step in (1, -1):
            at = Warp(best.speed, best.pitch)
            if at not in grid:
                continue
            i = grid.index(at) + step
            while 0 <= i < len(grid):
                if grid[i] not in tried:
                    try_warps([grid[i]])
                cand = tried[grid[i]]
                if cand is None or cand.false_alarms >= best.false_alarms:
                    break
                best = cand
                i += step
    return best
