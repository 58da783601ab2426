"""Identify queries against an index: outro window (or whole file) -> landmark match -> calibrated decision
(weak candidates checked against the query's spectrum, :mod:`index.verify`), plus the music / dialogue / both
vote of the outro's embedding."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import numpy as np

from ..fingerprint.audio import Audio, AudioError, load, resample, trailing_silence
from ..fingerprint.landmarks import Band, Peaks, peak_band, query_peaks
from .classify import ClassifyConfig
from .embeddings import Vote, majority_class
from .match import Candidate, match, speed_grid
from .parallel import on_spare_core, spare_core_free
from .result import Result
from .store import IndexReader
from .verify import combined_p, verify


@dataclass(frozen=True)
class MatchConfig:
    """How queries are searched and when a pile of votes counts as a match.

    Attributes
    ----------
    max_speed_change : float
        Largest playback-speed change searched (0.03 = +-3 %), pitch changing with it (a faster turntable or
        tape, audio resampled to another rate).
    max_tempo_change : float
        Largest tempo change searched with the pitch kept (0.04 = +-4 %): broadcast time compression, a
        time-stretched edit (0 = none).
    speed_step : float
        Spacing of the speed and tempo hypotheses.
    max_postings : int
        Hashes with more postings than this are ignored (they vote everywhere).
    overdispersion : float
        How much more often random votes pile up than independent votes would (fitted on real music and
        speech that are not in the index; see ``match.false_alarms``).
    line_false_alarms : float
        Away from normal speed, a pile whose votes lie on one frequency line (a held note, a drone, hum that
        query and reference share by chance) is judged by its votes off that line when this many chance piles
        of their size are expected (``match.match``; inf = never).
    max_false_alarms : float
        A pile is a match when fewer than this many random piles of its size are expected (where the check
        below runs, votes and check decide together).
    stop_false_alarms : float
        Stop trying further speeds and tempos once a pile is this significant.
    window_s, hop_s : float
        With ``all_matches``, and for queries longer than ``max_query_s``, the audio is scanned in windows of
        ``window_s`` every ``hop_s``.
    max_query_s : float
        Longest audio analysed as one query (matching memory grows with query length).
    first_hits : float
        Postings per query hash that the first, rarest-hashes-only look at normal speed may retrieve; a match
        that clears ``stop_false_alarms`` there is decided without the common hashes (0 = always look at all).
    verify_p : float
        Votes short of ``stop_false_alarms`` are checked: the reference's peaks, one by one at the voted offset
        (:mod:`index.verify`), must be found with a p-value that together with the votes' false-alarm
        expectation (:func:`index.verify.combined_p`) is as significant as this p-value alone (``rescue_p``).
        So a candidate the votes narrowly reject can still be a match, and one they narrowly accept is dropped
        when the check does not bear it out (0 = no check: the votes decide alone).
    skip_silence_s, max_silence_s : float
        An outro is the last seconds of *sound*: trailing silence of at least ``skip_silence_s`` (0 = never) is
        left out, unless it lasts ``max_silence_s`` or more: then the file's last seconds are analysed as they
        are.
    """

    max_speed_change: float = 0.03
    max_tempo_change: float = 0.04
    speed_step: float = 0.005
    max_postings: int = 4000
    overdispersion: float = 16.0
    line_false_alarms: float = 100.0
    max_false_alarms: float = 1e-3
    stop_false_alarms: float = 1e-9
    window_s: float = 10.0
    hop_s: float = 5.0
    max_query_s: float = 60.0
    first_hits: float = 3.0
    verify_p: float = 1e-5
    skip_silence_s: float = 1.0
    max_silence_s: float = 600.0

    @property
    def rescue_p(self) -> float:
        """The combined p-value (:func:`index.verify.combined_p`) below which a checked candidate is a match:
        what ``verify_p`` gives with no evidence from the votes."""
        return combined_p(1.0, self.verify_p)


def confidence(false_alarms: float, threshold: float) -> float:
    """0..1 from a pile's false-alarm expectation: 0.5 at the decision threshold, near 1 far below it."""
    return 1.0 / (1.0 + math.sqrt(false_alarms / threshold))


def decide(false_alarms: float, check: Callable[[], float | None], mc: MatchConfig) -> tuple[bool, float]:
    """Whether a candidate is rejected, and the confidence that it is a match (0.5 at the decision's bar), from
    its votes' false-alarm expectation and, where those are not decisive, ``check()``: the peak-by-peak
    check's p-value (:func:`index.verify.verify`; None when it has nothing to check).

    Votes below ``stop_false_alarms`` decide alone, and so do the votes (against ``max_false_alarms``) when the
    check has nothing to say.  Otherwise votes and check decide together: a match when their combined p-value
    reaches ``rescue_p``, whichever side of ``max_false_alarms`` the votes fell.  Every candidate that is not
    decided by overwhelming votes thus passes one bar, and unknown audio is matched by chance at about that
    rate (``rescue_p`` per query), not at the votes' own (``max_false_alarms``).
    """
    conf = confidence(false_alarms, mc.max_false_alarms)
    rejected = false_alarms >= mc.max_false_alarms
    if false_alarms < mc.stop_false_alarms or not mc.verify_p:
        return rejected, conf
    p = check()
    if p is None:
        return rejected, conf
    both = combined_p(false_alarms, p)
    return both >= mc.rescue_p, confidence(both, mc.rescue_p)


class Identifier:
    """Identifies audio against one opened index generation.

    Examples
    --------
    >>> ident = Identifier.open("my-index")          # doctest: +SKIP
    >>> ident.identify_file("segment.mp3").label      # doctest: +SKIP
    """

    def __init__(self, reader: IndexReader, config: MatchConfig | None = None,
                 classify_config: ClassifyConfig | None = None):
        self.reader = reader
        self.config = config or MatchConfig()
        self.classify_config = classify_config or ClassifyConfig()
        self.speeds = speed_grid(self.config.max_speed_change, self.config.speed_step)
        self.tempos = speed_grid(self.config.max_tempo_change, self.config.speed_step)
        # Long audio is decoded once at the embedding's rate; landmarks resample from that.
        self.sample_rate = reader.embedding.sample_rate

    @classmethod
    def open(cls, path: str | os.PathLike, config: MatchConfig | None = None,
             classify_config: ClassifyConfig | None = None) -> "Identifier":
        return cls(IndexReader(os.fspath(path)), config, classify_config)

    def close(self) -> None:
        self.reader.close()

    def identify_samples(self, y: np.ndarray, sr: int, *, path: str | None = None, start_s: float = 0.0,
                         matched_range: bool = False) -> Result:
        """Identify mono float samples at ``sr`` Hz; ``start_s`` places them within their file.

        With ``matched_range`` a match's ``query_start_s``/``query_end_s`` span the query audio whose hashes
        matched, instead of the whole analysed window.  The class vote looks at the last embedding window
        (10 s) of ``y``: the outro.
        """
        if not len(y):
            return self._landmark_result(y, sr, path, start_s, matched_range)
        # The class vote and the landmark search are independent: the vote runs on a second core when one is free.
        with on_spare_core(self.classify_samples, y, sr) as vote_of:
            result = self._landmark_result(y, sr, path, start_s, matched_range)
            vote = vote_of()
        result.klass, result.class_confidence, result.neighbours = vote.klass, vote.confidence, vote.neighbours
        return result

    def classify_samples(self, y: np.ndarray, sr: int) -> Vote:
        """Music / dialogue / both vote and nearest reference tracks for the last window of ``y`` (at ``sr``)."""
        return self.reader.classify(self.reader.embedding.query_vector(y, sr), self.classify_config)[0]

    def candidate(self, y: np.ndarray, sr: int) -> tuple[Band, Peaks, Candidate | None]:
        """The query spectrum and peaks of mono samples ``y`` at ``sr`` and their best-voted track and offset,
        before any decision (what :meth:`identify_samples` decides on)."""
        lcfg, mc = self.reader.config, self.config
        spectrum = peak_band(resample(y, sr, lcfg.sample_rate), lcfg)
        peaks = query_peaks(spectrum, lcfg)
        return spectrum, peaks, match(peaks, self.reader.segments, lcfg, frames=self.reader.live_frames,
                                      speeds=self.speeds, max_postings=mc.max_postings,
                                      overdispersion=mc.overdispersion, stop_false_alarms=mc.stop_false_alarms,
                                      removed=self.reader.removed, first_hits=mc.first_hits, tempos=self.tempos,
                                      line_false_alarms=mc.line_false_alarms)

    def _landmark_result(self, y: np.ndarray, sr: int, path: str | None, start_s: float,
                         matched_range: bool) -> Result:
        lcfg, mc = self.reader.config, self.config
        spectrum, peaks, cand = self.candidate(y, sr)
        end_s = start_s + len(y) / sr
        base = Result(path=path, status="no_match", query_start_s=round(start_s, 3), query_end_s=round(end_s, 3))
        if cand is None:
            return base
        base.score = cand.votes
        rejected, conf = decide(cand.false_alarms, lambda: verify(peaks, spectrum, cand, self.reader.segments,
                                                                  lcfg, mc.max_postings), mc)
        if rejected:
            base.confidence = round(1.0 - conf, 4)  # confidence in the no_match
            return base
        track = self.reader.catalog.get(cand.track_id)
        if track is None:  # postings name a track this generation's catalog lacks (a damaged index)
            return base
        offset_frames = cand.offset_frames
        if matched_range:
            # Matched anchors are on the reference's time axis (query frame x speed); the last one's targets
            # reach up to dt_max frames further.  offset_s then refers to the matched start.
            to_s = lcfg.frame_seconds / cand.speed
            base.query_start_s = round(start_s + cand.first_frame * to_s, 3)
            base.query_end_s = round(min(end_s, start_s + (cand.last_frame + lcfg.dt_max) * to_s), 3)
            offset_frames += cand.first_frame
        return replace(base, status="match", label=track.label, title=track.title, artist=track.artist,
                       track_id=track.id, confidence=round(conf, 4),
                       offset_s=round(offset_frames * lcfg.frame_seconds, 3), speed=round(cand.speed, 4),
                       pitch=round(cand.pitch, 4))

    def _load(self, path: str, outro_seconds: float):
        # An outro stays at the file's rate: the landmarks and the class vote each resample it, in parallel.
        # A whole file or a long stretch is resampled once at load, so its samples take less memory.
        short = 0 < outro_seconds <= self.config.max_query_s
        return load(path, None if short else self.sample_rate, tail_seconds=outro_seconds or None,
                    helper=on_spare_core if spare_core_free() else None)

    def load_outro(self, path: str, outro_seconds: float = 10.0) -> Audio:
        """The audio :meth:`identify_file` analyses: the last ``outro_seconds`` of *sound* in the file (0 = the
        whole file).  Trailing silence (dead air after the outro, see :func:`trailing_silence`) of at least
        ``skip_silence_s`` is read past, unless it lasts ``max_silence_s`` or more."""
        last = audio = self._load(path, outro_seconds)
        mc = self.config
        quiet = trailing_silence(audio.samples, audio.sample_rate) if outro_seconds else 0.0
        if quiet < mc.skip_silence_s or not mc.skip_silence_s:
            return audio
        # Read further back until the sound before the silence fills the window (or the file starts there); a
        # window that is silent throughout doubles, so a long silence costs a few reads, not one per window.
        while audio.start_s > 0 and len(audio.samples) / audio.sample_rate - quiet < outro_seconds:
            if quiet >= mc.max_silence_s:
                return last
            audio = self._load(path, max(outro_seconds + quiet + 1.0, 2.0 * quiet))
            quiet = trailing_silence(audio.samples, audio.sample_rate)
        sr = audio.sample_rate
        end = len(audio.samples) - int(round(quiet * sr))
        if end <= 0:        # silent throughout
            return last
        start = max(0, end - int(round(outro_seconds * sr)))
        return replace(audio, samples=audio.samples[start:end], start_s=audio.start_s + start / sr)

    def _scan(self, y: np.ndarray, sr: int, path: str, start_s: float) -> Iterable[Result]:
        """Results of overlapping ``window_s`` windows every ``hop_s`` over ``y`` (matched ranges)."""
        win, hop = int(self.config.window_s * sr), int(self.config.hop_s * sr)
        starts = range(0, max(1, len(y) - win + hop), hop) if len(y) > win else [0]
        for s in starts:
            yield self.identify_samples(y[s:s + win], sr, path=path, start_s=start_s + s / sr, matched_range=True)

    def identify_file(self, path: str, *, outro_seconds: float = 10.0) -> Result:
        """Identify the last ``outro_seconds`` of a file (0 = the whole file).

        Audio longer than ``max_query_s`` is scanned in windows (so memory stays bounded) and the most
        confident match is reported, with the stretch of the file it covers.
        """
        try:
            audio = self.load_outro(path, outro_seconds)
        except AudioError as e:
            return Result(path=path, status="error", error=str(e))
        y, sr = audio.samples, audio.sample_rate
        if len(y) <= self.config.max_query_s * sr:
            return self.identify_samples(y, sr, path=path, start_s=audio.start_s)
        results = list(self._scan(y, sr, path, audio.start_s))
        matches = [r for r in results if r.status == "match"]
        if matches:
            return max(matches, key=lambda r: (r.confidence, r.score))
        # No match anywhere: the class is the outro's, the last window's.
        return replace(results[-1], score=max(r.score for r in results),
                       confidence=min(r.confidence for r in results), query_start_s=round(audio.start_s, 3),
                       query_end_s=round(audio.start_s + len(y) / sr, 3))

    def identify_all(self, path: str, *, outro_seconds: float = 0.0) -> list[Result]:
        """Every track found in the file (or its last ``outro_seconds``), each with its time range in the query.

        The audio is scanned in overlapping windows; consecutive windows matching the same track at a
        consistent offset are merged into one record.
        """
        try:
            audio = self._load(path, outro_seconds)
        except AudioError as e:
            return [Result(path=path, status="error", error=str(e))]
        found: list[Result] = []
        windows: list[list[Result]] = []     # the windows merged into each record
        last = None
        for r in self._scan(audio.samples, audio.sample_rate, path, audio.start_s):
            last = r
            if r.status != "match":
                continue
            prev = found[-1] if found else None
            drift = None if prev is None else abs((r.offset_s - r.query_start_s) - (prev.offset_s - prev.query_start_s))
            if prev and prev.track_id == r.track_id and drift is not None and drift < 1.0 \
                    and r.query_start_s <= prev.query_end_s + self.config.hop_s:
                prev.query_end_s = max(prev.query_end_s, r.query_end_s)
                prev.score = max(prev.score, r.score)
                prev.confidence = max(prev.confidence, r.confidence)
                windows[-1].append(r)
            else:
                found.append(replace(r))
                windows.append([r])
        for record, merged in zip(found, windows):
            _class_of_windows(record, merged)
        if found:
            return found
        # Nothing found: one no_match record over the whole span, classed by its last window (the outro).
        end_s = audio.start_s + len(audio.samples) / audio.sample_rate
        return [Result(path=path, status="no_match", query_start_s=round(audio.start_s, 3),
                       query_end_s=round(end_s, 3), klass=last.klass, class_confidence=last.class_confidence,
                       neighbours=last.neighbours)]


def _class_of_windows(record: Result, windows: list[Result]) -> None:
    """Give a merged record the class most of its windows got (:func:`majority_class`), with confidence = that
    class' mean window confidence x its share of the windows, and the neighbours of its most confident window
    of that class."""
    won = majority_class([(w.klass, w.class_confidence or 0.0) for w in windows])
    if won is None:
        record.klass, record.class_confidence, record.neighbours = windows[0].klass, 0.0, windows[0].neighbours
        return
    record.klass, voters = won
    record.class_confidence = round(sum(windows[i].class_confidence for i in voters) / len(windows), 4)
    record.neighbours = max((windows[i] for i in voters), key=lambda w: w.class_confidence).neighbours
