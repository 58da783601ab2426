"""Landmark matching: look query hashes up, vote on the time offset, decide match or no match.

The decision is a significance test rather than a fixed vote count.  A query whose hashes hit ``n`` postings
spread over an index of ``F`` frames puts on average ``3n/F`` random votes into each 3-frame offset bin; random
votes cluster (music repeats), so the rate is inflated by ``overdispersion``.  The expected number of bins, over
all bins and speed hypotheses tried, that reach a pile's size by chance is the pile's *false-alarm expectation*
``E``; a match needs ``E`` below a threshold.  This adapts by itself to the index size, the query's length and how
common its hashes are, where a fixed vote count would not.

The speed hypotheses do not share that false-alarm budget equally: normal speed, where nearly all real queries
are, gets ``normal_speed_share`` of it and the other speeds split the rest (a weighted Bonferroni correction, so
the expected number of false alarms over all speeds is unchanged).  On real music not in the index the chance
piles are in fact most frequent at the far speeds (fewer hits there, but as much structure), while weak true
matches (music under loud noise or speech) are at normal speed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..fingerprint.config import LandmarkConfig
from ..fingerprint.landmarks import Peaks, pair_hashes
from .postings import Segment


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
    speed: float
    first_frame: int      # densest run of matching query anchors (reference time axis)
    last_frame: int


def speed_grid(max_speed_change: float, step: float) -> list[float]:
    """Speeds to try, nearest to 1 first (1.0, 1+step, 1-step, ...)."""
    n = int(round(max_speed_change / step)) if step > 0 else 0
    grid = [1.0]
    for k in range(1, n + 1):
        grid += [1.0 + k * step, 1.0 - k * step]
    return grid


def _poisson_sf(k: int, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam), computed in log space (tiny tails matter here)."""
    if k <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    # Sum the first terms of the tail; they shrink fast once i > lam.
    log_term = k * math.log(lam) - lam - math.lgamma(k + 1)
    total, i = 0.0, k
    term = math.exp(log_term)
    while True:
        total += term
        i += 1
        term *= lam / i
        if term < total * 1e-12 or i > k + 1000:
            return min(1.0, total)


def speed_hypotheses(speed: float, speeds: Sequence[float], normal_speed_share: float) -> float:
    """Number of hypotheses a pile at ``speed`` pays for: the inverse of its share of the false-alarm budget.

    Normal speed (the grid value nearest 1) gets ``normal_speed_share``, every other speed of ``speeds`` an
    equal part of the rest; the shares sum to 1, so ``1 / len(speeds)`` is the plain Bonferroni correction.
    """
    if len(speeds) < 2:
        return 1.0
    if speed == min(speeds, key=lambda s: abs(s - 1.0)):
        return 1.0 / normal_speed_share
    return (len(speeds) - 1) / (1.0 - normal_speed_share)


def false_alarms(votes: int, hits: int, frames: int, hypotheses: float, overdispersion: float) -> float:
    """Expected number of random offset piles of at least ``votes`` (see module docstring)."""
    bins = max(frames / 3.0, 1.0)
    lam = overdispersion * hits / bins
    return bins * hypotheses * _poisson_sf(votes, lam)


def _live(values: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Mask of global frames outside the removed tracks' ``(frame_start, frame_count)`` ranges."""
    if len(removed) == 0:
        return np.ones(len(values), bool)
    row = np.searchsorted(removed[:, 0], values, side="right") - 1
    inside = (row >= 0) & (values < removed[np.maximum(row, 0), 0] + removed[np.maximum(row, 0), 1])
    return ~inside


def _hits_by_speed(peaks: Peaks, segments: Sequence[Segment], cfg: LandmarkConfig, speeds: Sequence[float],
                   max_postings: int, removed: np.ndarray) -> dict[float, tuple[np.ndarray, np.ndarray] | None]:
    """(global reference frame, query frame) of every hit, for each speed hypothesis.

    The hashes of all the speeds are looked up together (the binary searches are the costly part, and
    neighbouring speeds share many hashes), then the hits are handed back per speed.
    """
    per_speed = [pair_hashes(peaks, cfg, cfg.query_fanout, speed) for speed in speeds]
    out: dict[float, tuple[np.ndarray, np.ndarray] | None] = {speed: None for speed in speeds}
    if not any(len(h) for h, _ in per_speed):
        return out
    uniq, inverse = np.unique(np.concatenate([h for h, _ in per_speed]), return_inverse=True)
    bounds = np.cumsum([0] + [len(h) for h, _ in per_speed])
    parts: dict[float, list[tuple[np.ndarray, np.ndarray]]] = {speed: [] for speed in speeds}
    for seg in segments:
        lo, hi = seg.ranges(uniq)
        for speed, (_, times), a, b in zip(speeds, per_speed, bounds[:-1], bounds[1:]):
            idx = inverse[a:b]
            qidx, vals = seg.gather(lo[idx], hi[idx], max_postings)
            vals = vals.astype(np.int64)
            keep = _live(vals, removed)
            if keep.any():
                parts[speed].append((vals[keep], times[qidx[keep]].astype(np.int64)))
    for speed, found in parts.items():
        if found:
            out[speed] = (np.concatenate([v for v, _ in found]), np.concatenate([t for _, t in found]))
    return out


def _top_offsets(diff_sorted: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` offsets with the most votes (+-1 frame tolerance), at least 3 frames apart.

    ``diff_sorted`` is the hits' offsets, sorted.
    """
    starts = np.flatnonzero(np.concatenate([[True], diff_sorted[1:] != diff_sorted[:-1]]))
    uniq = diff_sorted[starts]
    csum = np.append(starts, len(diff_sorted))  # hits before each distinct offset, and in all
    smooth = csum[np.searchsorted(uniq, uniq + 1, side="right")] - csum[np.searchsorted(uniq, uniq - 1)]
    m = min(8 * k, len(smooth))
    # argpartition leaves ties in a layout-dependent order: sort them so the lowest offset wins a tie, and an
    # index whose tracks sit elsewhere in the frame space (added, merged) picks the same pile.
    top = np.sort(np.argpartition(-smooth, m - 1)[:m]) if m < len(smooth) else np.arange(len(smooth))
    order = top[np.argsort(-smooth[top], kind="stable")]
    chosen: list[int] = []
    for j in order:
        if all(abs(int(uniq[j]) - c) > 2 for c in chosen):
            chosen.append(int(uniq[j]))
            if len(chosen) == k:
                break
    return np.array(chosen, np.int64)


def _matched_span(qtimes: np.ndarray, max_gap: int = 64) -> tuple[int, int]:
    """First and last query frame of the densest run of matching anchors (gaps <= ``max_gap`` frames), so a
    stray chance hit far from the music does not stretch the reported range."""
    t = np.sort(qtimes)
    breaks = np.nonzero(np.diff(t) > max_gap)[0]
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(t) - 1]])
    k = int(np.argmax(ends - starts))
    return int(t[starts[k]]), int(t[ends[k]])


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


def _best_pile(hits: tuple[np.ndarray, np.ndarray] | None, segments: Sequence[Segment], speed: float, frames: int,
               hypotheses: float, overdispersion: float) -> Candidate | None:
    """The most significant offset pile among one speed hypothesis' hits."""
    if hits is None:
        return None
    values, qtimes = hits
    diff = values - qtimes
    order = np.argsort(diff)
    diff_sorted = diff[order]
    best: Candidate | None = None
    for off in _top_offsets(diff_sorted, 5):
        # The pile: hits within one frame of the offset, a slice of the sorted order.
        sel = order[np.searchsorted(diff_sorted, off - 1): np.searchsorted(diff_sorted, off + 1, side="right")]
        # One vote per (query anchor, reference anchor) pair: the several targets one anchor pair shares are
        # one piece of evidence, not several.
        votes = len(np.unique(qtimes[sel] * 3 + (diff[sel] - off + 1)))
        where = _locate(segments, values[sel])
        if where is None:
            continue
        s, row = where
        track = segments[s].tracks[row]
        first, last = _matched_span(qtimes[sel])
        cand = Candidate(segment=s, track_row=row, track_id=int(track[2]), votes=votes, hits=len(values),
                         false_alarms=false_alarms(votes, len(values), frames, hypotheses, overdispersion),
                         offset_frames=int(off - track[0]), speed=speed,
                         first_frame=first, last_frame=last)
        if best is None or cand.false_alarms < best.false_alarms:
            best = cand
    return best


def match(peaks: Peaks, segments: Sequence[Segment], cfg: LandmarkConfig, *, frames: int, speeds: Sequence[float],
          max_postings: int, overdispersion: float, stop_false_alarms: float,
          refine_false_alarms: float = 1.0, removed: np.ndarray | None = None,
          normal_speed_share: float = 0.5) -> Candidate | None:
    """Find the most significant reference offset for the query ``peaks``.

    ``speeds`` is an evenly spaced grid.  Normal speed is tried first and ends the search when its best pile's
    false-alarm expectation is below ``stop_false_alarms`` (the usual case).  Otherwise every other speed of
    the grid is looked up in one batch; if the best pile is then at least plausible (below
    ``refine_false_alarms``) the search climbs through the neighbouring grid speeds while they improve it, so the
    reported speed is the best one and queries with nothing to find cost about half the grid.
    ``frames`` is the size of the index's frame space (its MANIFEST's ``next_frame``); hits inside the
    ``removed`` ``(frame_start, frame_count)`` ranges (sorted) are ignored.  ``normal_speed_share`` is the part
    of the false-alarm budget given to normal speed (see :func:`speed_hypotheses`).
    """
    if not 0.0 < normal_speed_share < 1.0:
        raise ValueError(f"normal_speed_share must be in (0, 1), got {normal_speed_share}")
    removed = np.zeros((0, 2), np.int64) if removed is None else removed
    tried: dict[float, Candidate | None] = {}

    def try_speeds(batch: Sequence[float]) -> None:
        hits = _hits_by_speed(peaks, segments, cfg, batch, max_postings, removed)
        for speed in batch:
            tried[speed] = _best_pile(hits[speed], segments, speed, frames,
                                      speed_hypotheses(speed, speeds, normal_speed_share), overdispersion)

    def best_so_far() -> Candidate | None:
        found = [c for c in tried.values() if c is not None]
        return min(found, key=lambda c: c.false_alarms) if found else None

    grid = sorted(speeds)
    one = min(range(len(grid)), key=lambda i: abs(grid[i] - 1.0))
    coarse = [s for s in speeds if (grid.index(s) - one) % 2 == 0]
    # Normal speed alone first: most matches are decided there with one lookup.
    try_speeds(coarse[:1])
    best = best_so_far()
    if best is not None and best.false_alarms < stop_false_alarms:
        return best
    try_speeds(coarse[1:])
    best = best_so_far()
    if best is None or best.false_alarms >= refine_false_alarms:
        return best
    for step in (1, -1):
        i = grid.index(best.speed) + step
        while 0 <= i < len(grid):
            if grid[i] not in tried:
                try_speeds([grid[i]])
            cand = tried[grid[i]]
            if cand is None or cand.false_alarms >= best.false_alarms:
                break
            best = cand
            i += step
    return best
