"""Peak-level verification of a landmark candidate: do the query's peaks line up with the reference's at the
offset, speed and pitch its votes chose, beyond the peaks those votes already used?

A vote needs both peaks of a pair at exactly the hashed time delta and frequency cells; under loud noise many
of a reference's peaks are still in the query (within a frame and a bin or two) while few whole pairs are.  The
reference's strongest peaks (``LandmarkConfig.verify_peaks_per_s``, stored with its postings) in the query's
span are counted where a query peak lies within +-1 frame and +-1.5 bins, leaving out those the candidate's
votes were made of (they agree by construction).  Under the null of a chance alignment, each of them is hit
with the probability that a query peak of its frequency falls within +-1 frame at a random time (the query's own
frequency profile, so that music sharing a key or an instrument with the reference does not count as
evidence); the count's Poisson tail is the p-value.  On real music and speech not in the index it behaves as a
p-value should (the smallest of 400 was 9e-4, bench/RESULTS.md).

The check leaves out the peaks the votes used, so its p-value and the votes' own evidence are close to
independent, and :func:`combined_p` joins them: a candidate the votes narrowly reject needs less from its peaks.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..fingerprint.config import LandmarkConfig
from ..fingerprint.landmarks import Peaks, hash_fields, pair_hashes
from .match import Candidate, poisson_sf
from .postings import Segment

# Tolerances: time in frames, frequency in FFT bins.
_DT, _DF = 1, 1.5


def verify(query: Peaks, cand: Candidate, segments: Sequence[Segment], cfg: LandmarkConfig,
           max_postings: int) -> float | None:
    """P-value of ``cand``'s alignment being chance, from the reference peaks its votes did not use; None when
    its segment stores no verification peaks (an index built before they existed), the query has none, or the
    votes used every reference peak of the span (a short clean query: nothing is left to check, which is no
    evidence either way)."""
    seg = segments[cand.segment]
    start, count = (int(x) for x in seg.tracks[cand.track_row][:2])
    if not len(query):
        return None
    # Query frames on the reference's frame grid, as the votes placed them: at another speed, +-1 frame around
    # the unrounded time would cover two reference frames where the chance model below counts three.
    tq = np.rint(query.time.astype(np.float64) * cand.speed)
    fq = query.freq.astype(np.float64) / cand.pitch
    span = float(tq.max()) + 1.0
    lo = start + cand.offset_frames
    got = seg.peaks_between(max(lo, start), min(lo + int(np.ceil(span)), start + count))
    if got is None:
        return None
    rt, rf = got[0].astype(np.float64) - lo, got[1].astype(np.float64)
    # The reference peaks the votes were made of: anchors and targets of the pile's postings.
    hashes, anchors = pair_hashes(query, cfg, cfg.query_fanout, cand.speed, pitch=cand.pitch)
    qi, values = seg.lookup(hashes, max_postings)
    ref_anchor = values.astype(np.int64) - lo
    voted = np.abs(ref_anchor - anchors[qi]) <= 1
    f1, df, dt = hash_fields(hashes[qi[voted]])
    used_t = np.concatenate([ref_anchor[voted], ref_anchor[voted] + dt]).astype(np.float64)
    used_f = (np.concatenate([f1, f1 + df]) + 0.5) * cfg.freq_quant
    if len(used_t):
        used = ((np.abs(rt[:, None] - used_t[None, :]) <= _DT)
                & (np.abs(rf[:, None] - used_f[None, :]) <= cfg.freq_quant)).any(axis=1)
        rt, rf = rt[~used], rf[~used]
    if not len(rt):
        return None
    near_f = np.abs(rf[:, None] - fq[None, :]) <= _DF                      # (reference peaks, query peaks)
    hits = int((near_f & (np.abs(rt[:, None] - tq[None, :]) <= _DT)).any(axis=1).sum())
    chance = np.minimum(1.0, near_f.sum(axis=1) * (2 * _DT + 1) / span)
    return poisson_sf(hits, float(chance.sum()))


def combined_p(false_alarms: float, p: float) -> float:
    """Fisher's combination of two independent p-values: the votes' false-alarm expectation (a p-value bound
    for the best pile of the whole search, capped at 1) and :func:`verify`'s ``p``.

    ``P(U1 U2 <= q) = q (1 - ln q)`` for independent uniform ``U1, U2``; with no evidence from the votes
    (``false_alarms >= 1``) it is that function of ``p`` alone.
    """
    q = min(1.0, max(false_alarms, 0.0)) * p
    return q * (1.0 - math.log(q)) if q > 0 else 0.0
