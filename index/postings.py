"""Landmark postings: immutable segments mapping hash -> global reference frame.

A segment is a folder of ``.npy`` files, memory-mapped on open so that a lookup touches only the pages its
binary searches visit:

``low.npy``     uint16, the low 16 bits of each hash, sorted by full hash
``buckets.npy`` int64, where each value of the hash's high bits starts in ``low`` (a few hundred entries)
``values.npy``  uint32, the global frame of each hash's anchor (track start + anchor frame)
``tracks.npy``  int64 rows ``(frame_start, frame_count, track_id)`` sorted by ``frame_start``

Splitting the hash into a bucket table and 16 stored bits makes a posting 6 bytes instead of 8.

Optionally (indexes built since verification peaks exist), the strongest reference peaks, for checking a weak
candidate peak by peak (:mod:`index.verify`), 2 bytes each:

``peaks.npy``       uint16 ``(frame - block start) << 10 | FFT bin``, sorted by global frame
``peak_blocks.npy`` uint32: the segment's first frame, then where each block of 64 frames starts in ``peaks``

Every track owns a disjoint range of global frames, so one number per posting names both the track and the time,
and a true match is a pile of votes at one value of ``global frame - query frame``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..fingerprint.config import LandmarkConfig


_LOW_BITS = 16
_PEAK_BLOCK = 64           # frames per block of the peak index (6 bits of a peak code)
_PEAK_BIN_BITS = 10        # FFT bins below 1024 (the band ends at bin 871 at the default config)


def track_gap(cfg: LandmarkConfig) -> int:
    """Frames left free after each track: as long as a target zone, so that offset piles of neighbouring
    tracks stay apart."""
    return cfg.dt_max + 2


def _save(path: str, name: str, arr: np.ndarray) -> None:
    with open(os.path.join(path, name + ".npy"), "wb") as f:
        np.save(f, np.ascontiguousarray(arr))
        f.flush()
        os.fsync(f.fileno())


def write_segment(path: str, hashes: np.ndarray, values: np.ndarray, tracks: np.ndarray, hash_bits: int,
                  peaks: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Write a segment folder (postings in any order; they are sorted by hash here).

    ``hash_bits`` bounds the hashes (every hash < 2**hash_bits); it sizes the bucket table.  ``peaks`` is
    ``(global frames, FFT bins)`` of the tracks' verification peaks, in any order.
    """
    hashes = np.asarray(hashes, dtype=np.uint32)
    n_buckets = 1 << max(0, hash_bits - _LOW_BITS)
    if len(hashes) and int(hashes.max()) >> _LOW_BITS >= n_buckets:
        raise ValueError(f"hash exceeds {hash_bits} bits")
    os.makedirs(path, exist_ok=False)
    order = np.argsort(hashes, kind="stable")
    hashes = hashes[order]
    buckets = np.searchsorted(hashes >> _LOW_BITS, np.arange(n_buckets + 1), side="left").astype(np.int64)
    tracks = tracks.astype(np.int64).reshape(-1, 3)
    for name, arr in (("low", (hashes & 0xFFFF).astype(np.uint16)), ("buckets", buckets),
                      ("values", np.asarray(values)[order].astype(np.uint32)), ("tracks", tracks)):
        _save(path, name, arr)
    if peaks is not None and len(tracks):
        codes, blocks = _encode_peaks(*peaks, base=int(tracks[:, 0].min()),
                                      end=int((tracks[:, 0] + tracks[:, 1]).max()))
        _save(path, "peaks", codes)
        _save(path, "peak_blocks", blocks)


def _encode_peaks(frames: np.ndarray, bins: np.ndarray, base: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    frames = np.asarray(frames, dtype=np.int64)
    bins = np.asarray(bins, dtype=np.int64)
    if len(frames) and (frames.min() < base or frames.max() >= end):
        raise ValueError("verification peak outside the segment's frames")
    if len(bins) and (bins.min() < 0 or bins.max() >= 1 << _PEAK_BIN_BITS):
        raise ValueError(f"verification peak bin outside 0..{(1 << _PEAK_BIN_BITS) - 1}")
    order = np.lexsort((bins, frames))
    frames, bins = frames[order] - base, bins[order]
    n_blocks = (end - base + _PEAK_BLOCK - 1) // _PEAK_BLOCK
    starts = np.searchsorted(frames, np.arange(n_blocks + 1) * _PEAK_BLOCK, side="left")
    codes = ((frames % _PEAK_BLOCK) << _PEAK_BIN_BITS) | bins
    return codes.astype(np.uint16), np.concatenate([[base], starts]).astype(np.uint32)


@dataclass
class Segment:
    """An open (memory-mapped) postings segment."""

    name: str
    low: np.ndarray
    buckets: np.ndarray
    values: np.ndarray
    tracks: np.ndarray
    peak_codes: np.ndarray | None = None
    peak_blocks: np.ndarray | None = None

    @classmethod
    def open(cls, path: str) -> "Segment":
        def load(name: str) -> np.ndarray:
            # A plain ndarray view of the map: slicing a np.memmap costs a Python-level hook per slice.
            return np.load(os.path.join(path, name + ".npy"), mmap_mode="r").view(np.ndarray)

        seg = cls(os.path.basename(path), load("low"), np.array(load("buckets")), load("values"), load("tracks"))
        if (seg.low.shape != seg.values.shape or seg.tracks.ndim != 2 or seg.tracks.shape[1] != 3
                or len(seg.buckets) < 2 or seg.buckets[-1] != len(seg.low)):
            raise ValueError(f"segment {path} is inconsistent")
        if os.path.exists(os.path.join(path, "peaks.npy")):
            seg.peak_codes, seg.peak_blocks = load("peaks"), np.array(load("peak_blocks"), dtype=np.int64)
            b = seg.peak_blocks
            if (seg.peak_codes.ndim != 1 or b.ndim != 1 or len(b) < 3 or b[1] != 0
                    or b[-1] != len(seg.peak_codes) or np.any(np.diff(b[1:]) < 0)):
                raise ValueError(f"segment {path}: its verification peaks are inconsistent")
        return seg

    def __len__(self) -> int:
        return len(self.low)

    @cached_property
    def bucket_edges(self) -> list[int]:
        """``buckets`` as Python ints (read once per bucket per query)."""
        return self.buckets.tolist()

    def hashes(self) -> np.ndarray:
        """Every posting's full hash, in storage order (the bucket number gives the high bits)."""
        high = np.repeat(np.arange(len(self.buckets) - 1, dtype=np.uint32), np.diff(self.buckets))
        return (high << _LOW_BITS) | np.asarray(self.low, dtype=np.uint32)

    def ranges(self, hashes: np.ndarray, max_postings: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``[lo, hi)`` of each hash's postings: bucket from the high bits, binary search on the low 16.

        Ranges longer than ``max_postings`` (sustained tones, silence) come back empty: such hashes vote
        everywhere and identify nothing.
        """
        hashes = np.asarray(hashes, dtype=np.uint32)
        order = np.argsort(hashes)
        lo, hi = np.empty(len(hashes), np.int64), np.empty(len(hashes), np.int64)
        lo[order], hi[order] = self.sorted_ranges(hashes[order], max_postings)
        return lo, hi

    def sorted_ranges(self, hashes: np.ndarray, max_postings: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`ranges` of ascending uint32 ``hashes``: each bucket is one contiguous slice of them, and one
        ``searchsorted``."""
        edges = self.bucket_edges
        n_buckets = len(edges) - 1
        high = hashes >> _LOW_BITS
        cuts = high.searchsorted(np.arange(n_buckets + 1, dtype=np.uint32)).tolist()
        inside = cuts[-1]                   # hashes past the table come after: empty ranges [0, 0)
        # The end of v's postings is the start of v + 1's: searching the keys v, v + 1 (interleaved, so still
        # ascending) finds both bounds in one call, a third cheaper than two searches.
        keys = np.repeat((hashes[:inside] & 0xFFFF).astype(np.uint16), 2)
        keys[1::2] += np.uint16(1)          # wraps at 0xFFFF: fixed below
        found = np.zeros(2 * len(hashes), np.int64)
        # A query touches most buckets: inside the loop only list lookups and the search, positions within
        # each run; the runs' starts are added to all of them at once afterwards.
        for b in range(n_buckets):
            qs, qe = cuts[b], cuts[b + 1]
            if qs < qe:
                found[2 * qs:2 * qe] = self.low[edges[b]:edges[b + 1]].searchsorted(keys[2 * qs:2 * qe])
        lo, hi = found[0::2], found[1::2]
        bucket = high[:inside].astype(np.intp)
        lo[:inside] += self.buckets[bucket]
        # v = 0xFFFF (its v + 1 wrapped to 0): the postings run to the end of the bucket.
        hi[:inside] = np.where(keys[1::2] == 0, self.buckets[bucket + 1], hi[:inside] + self.buckets[bucket])
        if max_postings is not None:
            hi = np.where(hi - lo > max_postings, lo, hi)
        return lo, hi

    def gather(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The postings in ranges from :meth:`ranges`, as (index of the range, global frame) per hit."""
        runs = np.flatnonzero(hi > lo)      # most ranges are empty: skip them from here on
        if not len(runs):
            return np.zeros(0, np.int64), np.zeros(0, np.uint32)
        lo, hi = lo[runs], hi[runs]
        counts = hi - lo
        ends = np.cumsum(counts)
        # Posting positions as a running sum of steps: 1 within a run, a jump to the next run's start after it.
        step = np.ones(int(ends[-1]), np.int64)
        step[0] = lo[0]
        step[ends[:-1]] = lo[1:] - hi[:-1] + 1
        return np.repeat(runs, counts), np.asarray(self.values[np.cumsum(step)])

    def lookup(self, hashes: np.ndarray, max_postings: int) -> tuple[np.ndarray, np.ndarray]:
        """Every posting of ``hashes`` as (index into ``hashes``, global frame) per hit; see :meth:`gather`."""
        return self.gather(*self.ranges(hashes, max_postings))

    def peaks_between(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Verification peaks with global frame in ``[lo, hi)``, as (global frames, FFT bins); None when the
        segment stores none (built before they existed)."""
        if self.peak_codes is None:
            return None
        base, starts = int(self.peak_blocks[0]), self.peak_blocks[1:]
        n_blocks = len(starts) - 1
        b0 = min(max((lo - base) // _PEAK_BLOCK, 0), n_blocks)
        b1 = min(max((hi - base + _PEAK_BLOCK - 1) // _PEAK_BLOCK, 0), n_blocks)
        i0, i1 = int(starts[b0]), int(starts[b1])
        codes = np.asarray(self.peak_codes[i0:i1], dtype=np.int64)
        # Each block's frame offset is in its code; the block number follows from the position.
        block = b0 + np.searchsorted(starts[b0:b1 + 1], np.arange(i0, i1), side="right") - 1
        frames = base + block * _PEAK_BLOCK + (codes >> _PEAK_BIN_BITS)
        keep = (frames >= lo) & (frames < hi)
        return frames[keep], (codes & ((1 << _PEAK_BIN_BITS) - 1))[keep]

    def all_peaks(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Every verification peak (for merges and checks)."""
        if self.peak_codes is None:
            return None
        base, n_blocks = int(self.peak_blocks[0]), len(self.peak_blocks) - 2
        return self.peaks_between(base, base + _PEAK_BLOCK * n_blocks)

    def track_at(self, frames: np.ndarray) -> np.ndarray:
        """Row index into ``tracks`` of the track owning each global frame (-1 where none)."""
        starts = self.tracks[:, 0]
        row = np.searchsorted(starts, frames, side="right") - 1
        ok = row >= 0
        row_c = np.maximum(row, 0)
        ok &= frames < starts[row_c] + self.tracks[row_c, 1]
        return np.where(ok, row, -1)
