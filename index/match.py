"""Landmark matching: look query hashes up, vote on the time offset, decide match or no match."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..fingerprint.config import LandmarkConfig
from ..fingerprint.landmarks import Peaks, pair_hashes
from .postings import Segment


@dataclass(frozen=True)
class Candidate:
    """The best offset pile found for a query."""

    segment: int          # index into the segment list
    track_row: int        # row in that segment's track table
    track_id: int
    votes: int            # distinct matching (query anchor, reference anchor) pairs at the offset
    runner_up: int        # votes of the best pile belonging to another track
    n_query_hashes: int
    offset_frames: int    # reference frame (within the track) aligned with query frame 0
    speed: float
    first_frame: int      # query frames spanned by the matching hashes
    last_frame: int


def speed_grid(max_speed_change: float, step: float) -> list[float]:
    """Speeds to try, nearest to 1 first (1.0, 1+step, 1-step, ...)."""
    n = int(round(max_speed_change / step)) if step > 0 else 0
    grid = [1.0]
    for k in range(1, n + 1):
        grid += [1.0 + k * step, 1.0 - k * step]
    return grid


def _vote(segments: Sequence[Segment], hashes: np.ndarray, times: np.ndarray, max_postings: int):
    """All hits of ``hashes`` in every segment as (segment index, global frame, query frame) arrays."""
    segs, values, qtimes = [], [], []
    for s, seg in enumerate(segments):
        qidx, vals = seg.lookup(hashes, max_postings)
        if len(qidx):
            segs.append(np.full(len(qidx), s, np.int32))
            values.append(vals.astype(np.int64))
            qtimes.append(times[qidx].astype(np.int64))
    if not segs:
        return None
    return np.concatenate(segs), np.concatenate(values), np.concatenate(qtimes)


def _best_piles(diff: np.ndarray, track_key: np.ndarray, k: int):
    """Vote counts per offset, with +-1 frame tolerance; returns the top piles' (offset, count) by track."""
    order = np.lexsort((diff,))
    d = diff[order]
    uniq, counts = np.unique(d, return_counts=True)
    # Tolerate one frame of rounding either way.
    left = np.searchsorted(uniq, uniq - 1)
    right = np.searchsorted(uniq, uniq + 1, side="right")
    csum = np.concatenate([[0], np.cumsum(counts)])
    smooth = csum[right] - csum[left]
    top = np.argsort(-smooth, kind="stable")[: k]
    return uniq[top], smooth[top]


def match(peaks: Peaks, segments: Sequence[Segment], cfg: LandmarkConfig, *, speeds: Sequence[float],
          max_postings: int, stop_votes: int) -> Candidate | None:
    """Find the best reference offset for the query ``peaks``.

    Each speed hypothesis is hashed and looked up in turn (nearest to 1 first); the search stops early once a
    pile reaches ``stop_votes``.
    """
    best: Candidate | None = None
    for speed in speeds:
        hashes, times = pair_hashes(peaks, cfg, cfg.query_fanout, speed)
        if len(hashes) == 0:
            continue
        hits = _vote(segments, hashes, times, max_postings)
        if hits is None:
            continue
        seg_idx, values, qtimes = hits
        # Distinct (reference anchor, query anchor) pairs: several targets of one anchor pair still count
        # as separate evidence, but duplicate hashes must not.
        key = np.unique(np.stack([seg_idx.astype(np.int64), values, qtimes, ]), axis=1)
        seg_idx, values, qtimes = key[0], key[1], key[2]
        diff = values - qtimes
        offs, counts = _best_piles(diff, seg_idx, 8)
        # Attribute the top piles to tracks; the runner-up is the best pile of a different track.
        piles = []
        for off, cnt in zip(offs, counts):
            sel = np.abs(diff - off) <= 1
            s = int(np.bincount(seg_idx[sel]).argmax())
            seg = segments[s]
            rows = seg.track_at(values[sel & (seg_idx == s)])
            rows = rows[rows >= 0]
            if len(rows) == 0:
                continue
            row = int(np.bincount(rows).argmax())
            piles.append((int(cnt), s, row, int(off), sel))
        if not piles:
            continue
        cnt, s, row, off, sel = piles[0]
        other = [c for c, s2, r2, _, _ in piles[1:] if (s2, r2) != (s, row)]
        runner_up = other[0] if other else 0
        track = segments[s].tracks[row]
        qsel = qtimes[sel]
        cand = Candidate(segment=s, track_row=row, track_id=int(track[2]), votes=cnt, runner_up=int(runner_up),
                         n_query_hashes=len(hashes), offset_frames=int(off - track[0]), speed=speed,
                         first_frame=int(qsel.min()), last_frame=int(qsel.max()))
        if best is None or cand.votes > best.votes:
            best = cand
        if best.votes >= stop_votes:
            break
    return best
