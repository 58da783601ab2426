"""Spectrum-level verification of a landmark candidate: does the query show the reference's peaks at the offset,
speed and pitch its votes chose, beyond the peaks those votes already used?

A vote needs both peaks of a pair among the query's strongest peaks (``query_peaks_per_s``), at exactly the
hashed time delta and frequency cells.  Under a louder voice most of those are the voice's, yet the music's
partials are still in the query's spectrum, as lesser maxima between the voice's harmonics.  So the reference's
strongest peaks (``LandmarkConfig.verify_peaks_per_s``, stored with its postings) in the query's span are looked
up among the query's *partials*: its strongest local maxima over +-2 frames and +-4 bins (16 Hz), ranked as
peaks are (:func:`fingerprint.landmarks.find_peaks`), 150 a second, about three times its peaks.  A reference
peak is found when a partial lies within +-1 frame and +-1 bin of it; those the candidate's votes were made of
are left out (they agree by construction).  Under the null of a chance alignment, a reference peak is found with
the probability that a random frame of the query has a partial that near its frequency (the query's own
profile, so that music sharing a key or an instrument with the reference does not count as evidence); the
count's Poisson tail is the p-value.  On real music and speech not in the index it behaves as a p-value should,
and music under a voice 12 dB louder gets a small one (bench/RESULTS.md).

The check leaves out the peaks the votes used, so its p-value and the votes' own evidence are close to
independent, and :func:`combined_p` joins them: a candidate the votes narrowly reject needs less from its peaks.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..fingerprint.config import LandmarkConfig
from ..fingerprint.landmarks import Band, Peaks, find_peaks, hash_fields, pair_hashes, running_max
from .match import Candidate, poisson_sf
from .postings import Segment

# The query's partials: the strongest local maxima of its spectrum over (frames, bins) neighbourhoods, this many
# a second.  A reference peak is found when one lies within _DT frames and _DF bins of it.
_PARTIALS_PER_S = 150.0
_NEIGHBOURHOOD = (5, 9)
_DT, _DF = 1, 1


def verify(query: Peaks, spectrum: Band, cand: Candidate, segments: Sequence[Segment], cfg: LandmarkConfig,
           max_postings: int) -> float | None:
    """P-value of ``cand``'s alignment being chance, from the reference peaks its votes did not use, looked up in
    the query's spectrum (``query`` are the peaks the votes came from, ``spectrum`` their :func:`peak_band`);
    None when its segment stores no verification peaks (an index built before they existed), the query has no
    peaks, or the votes used every reference peak of the span (a short clean query: nothing is left to check,
    which is no evidence either way)."""
    seg = segments[cand.segment]
    start, count = (int(x) for x in seg.tracks[cand.track_row][:2])
    frames, bins = spectrum.db.shape
    if not len(query) or not frames:
        return None
    lo = start + cand.offset_frames
    got = seg.peaks_between(max(lo, start), min(lo + int(np.ceil(frames * cand.speed)), start + count))
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
    # The reference peaks on the query's grid: its frames run `speed` times as fast, its frequencies at `pitch`.
    qt = np.rint(rt / cand.speed).astype(np.intp)
    qb = np.rint(rf * cand.pitch).astype(np.intp) - spectrum.first_bin
    inside = (qt >= 0) & (qt < frames) & (qb >= 0) & (qb < bins)
    if not inside.any():
        return None
    qt, qb = qt[inside], qb[inside]
    # Where one of the query's partials lies within the tolerance; a column's mean is the chance of a hit there
    # at a random frame.
    partials = find_peaks(spectrum, cfg, _PARTIALS_PER_S, _NEIGHBOURHOOD)
    marks = np.zeros((frames, bins), bool)
    marks[partials.time.astype(np.intp), np.rint(partials.freq).astype(np.intp) - spectrum.first_bin] = True
    near = running_max(running_max(marks, 2 * _DT + 1, 0), 2 * _DF + 1, 1)
    return poisson_sf(int(np.count_nonzero(near[qt, qb])), float(near.mean(axis=0)[qb].sum()))


def combined_p(false_alarms: float, p: float) -> float:
    """Fisher's combination of two independent p-values: the votes' false-alarm expectation (a p-value bound
    for the best pile of the whole search, capped at 1) and :func:`verify`'s ``p``.

    ``P(U1 U2 <= q) = q (1 - ln q)`` for independent uniform ``U1, U2``; with no evidence from the votes
    (``false_alarms >= 1``) it is that function of ``p`` alone.
    """
    q = min(1.0, max(false_alarms, 0.0)) * p
    return q * (1.0 - math.log(q)) if q > 0 else 0.0
