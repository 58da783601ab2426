"""Landmark postings: immutable segments mapping hash -> global reference frame.

A segment is a folder of three ``.npy`` files, memory-mapped on open so that a lookup touches only the pages its
binary searches visit:

``hashes.npy``  uint32, sorted
``values.npy``  uint32, the global frame of each hash's anchor (track start + anchor frame)
``tracks.npy``  int64 rows ``(frame_start, frame_count, track_id)`` sorted by ``frame_start``

Every track owns a disjoint range of global frames, so one number per posting names both the track and the time,
and a true match is a pile of votes at one value of ``global frame - query frame``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


def write_segment(path: str, hashes: np.ndarray, values: np.ndarray, tracks: np.ndarray) -> None:
    """Write a segment folder (postings in any order; they are sorted by hash here)."""
    os.makedirs(path, exist_ok=False)
    order = np.argsort(hashes, kind="stable")
    for name, arr in (("hashes", hashes[order].astype(np.uint32)), ("values", values[order].astype(np.uint32)),
                      ("tracks", tracks.astype(np.int64).reshape(-1, 3))):
        with open(os.path.join(path, name + ".npy"), "wb") as f:
            np.save(f, np.ascontiguousarray(arr))
            f.flush()
            os.fsync(f.fileno())


@dataclass
class Segment:
    """An open (memory-mapped) postings segment."""

    name: str
    hashes: np.ndarray
    values: np.ndarray
    tracks: np.ndarray

    @classmethod
    def open(cls, path: str) -> "Segment":
        def load(name: str) -> np.ndarray:
            arr = np.load(os.path.join(path, name + ".npy"), mmap_mode="r")
            # np.load refuses to memory-map empty arrays' zero-length buffers on some platforms; fine either way.
            return arr

        seg = cls(os.path.basename(path), load("hashes"), load("values"), load("tracks"))
        if seg.hashes.shape != seg.values.shape or seg.tracks.ndim != 2 or seg.tracks.shape[1] != 3:
            raise ValueError(f"segment {path} is inconsistent")
        return seg

    def __len__(self) -> int:
        return len(self.hashes)

    def lookup(self, hashes: np.ndarray, max_postings: int) -> tuple[np.ndarray, np.ndarray]:
        """Find every posting of ``hashes``.

        Hashes with more than ``max_postings`` postings (sustained tones, silence) are skipped: they vote
        everywhere and identify nothing.

        Returns
        -------
        query_index : np.ndarray of int64
            Index into ``hashes`` of each hit.
        values : np.ndarray of uint32
            Global frame of each hit.
        """
        lo = np.searchsorted(self.hashes, hashes, side="left")
        hi = np.searchsorted(self.hashes, hashes, side="right")
        counts = hi - lo
        counts[counts > max_postings] = 0
        total = int(counts.sum())
        if total == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.uint32)
        qidx = np.repeat(np.arange(len(hashes)), counts)
        # Position of each hit inside its run, added to the run's start.
        run_start = np.repeat(lo - np.cumsum(counts) + counts, counts)
        pos = run_start + np.arange(total)
        return qidx, np.asarray(self.values[pos])

    def track_at(self, frames: np.ndarray) -> np.ndarray:
        """Row index into ``tracks`` of the track owning each global frame (-1 where none)."""
        starts = self.tracks[:, 0]
        row = np.searchsorted(starts, frames, side="right") - 1
        ok = row >= 0
        row_c = np.maximum(row, 0)
        ok &= frames < starts[row_c] + self.tracks[row_c, 1]
        return np.where(ok, row, -1)
