"""Landmarks, postings and the on-disk index, against real files and real storage."""
from __future__ import annotations

import json
from dataclasses import replace
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioid import synth
from audioid.fingerprint.config import LandmarkConfig
from audioid.fingerprint.landmarks import (Peaks, hash_bits, hash_fields, pair_hashes, query_peaks, reference_hashes,
                                          reference_peaks)
from audioid.index.build import add_to_index, build_index, relabel_in_index, remove_from_index
from audioid.index.check import check_index
from audioid.index.identify import Identifier
from audioid.index.match import false_alarms
from audioid.index.postings import Segment, write_segment
from audioid.index.sources import ReferenceSpec, reference_specs
from audioid.index.store import IndexReader, IndexStoreError, read_manifest, writer_lock

SR = 16000
CFG = LandmarkConfig()


def _write(path: Path, y: np.ndarray, sr: int = SR) -> Path:
    sf.write(path, y, sr)
    return path


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("refs")
    for i in range(1, 5):
        _write(d / f"song{i}.wav", synth.music_track(100 + i, 25.0, SR))
    return d


def test_landmarks_are_deterministic_and_bounded():
    y = synth.music_track(1, 20.0, CFG.sample_rate)
    h1, t1 = reference_hashes(y, CFG)
    h2, t2 = reference_hashes(y.copy(), CFG)
    assert np.array_equal(h1, h2) and np.array_equal(t1, t2)
    assert len(h1) > 20 * 30  # tens of hashes per second
    assert int(h1.max()) < 2 ** hash_bits(CFG)
    assert t1.min() >= 0 and t1.max() <= len(y) // CFG.hop_length
    # Queries keep more peaks than references, so reference peaks survive added speech or noise peaks.
    assert len(query_peaks(y, CFG)) > 1.5 * 20 * CFG.ref_peaks_per_s


def test_silence_and_dc_give_no_landmarks():
    for y in (np.zeros(8000 * 5, np.float32), np.full(8000 * 5, 0.5, np.float32)):
        h, _ = reference_hashes(y, CFG)
        assert len(h) == 0


def test_config_roundtrip_and_unknown_keys_refused():
    assert LandmarkConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="unknown"):
        LandmarkConfig.from_dict({**CFG.to_dict(), "bogus": 1})


def test_a_version_1_config_reads_as_it_was_built():
    """Indexes written before the level ranking and the target pool store neither: they were built and must be
    queried without them."""
    old = {k: v for k, v in CFG.to_dict().items() if k not in ("level_weight", "ref_target_pool")}
    cfg = LandmarkConfig.from_dict({**old, "version": 1})
    assert (cfg.level_weight, cfg.ref_target_pool) == (0.0, 4)
    assert LandmarkConfig.from_dict(CFG.to_dict()).level_weight == CFG.level_weight > 0


def test_a_version_1_index_is_queried_and_extended_as_it_was_built(refs, tmp_path):
    idx = tmp_path / "idx"
    v1 = replace(CFG, version=1, level_weight=0.0, ref_target_pool=4)
    specs = reference_specs(str(refs))
    build_index(specs[:3], idx, config=v1, jobs=1)
    manifest_path = idx / "MANIFEST.json"
    m = json.loads(manifest_path.read_text())
    for key in ("level_weight", "ref_target_pool"):            # what a version 1 index stores
        del m["landmark_config"][key]
    manifest_path.write_text(json.dumps(m))
    add_to_index(specs[3:], idx, jobs=1)
    reader = IndexReader(str(idx))
    assert reader.config == v1
    ident = Identifier.open(idx)
    for spec in specs:
        y, sr = sf.read(spec.path, dtype="float32")
        assert ident.identify_samples(y[-10 * sr:], sr).label == spec.label


def _survival(cfg: LandmarkConfig, seed: int) -> float:
    """Share of a synthetic track's reference peaks that its pink-noise 0 dB copy still shows as query peaks
    (within one frame and 1.5 bins)."""
    y = synth.music_track(seed, 20.0, cfg.sample_rate)
    noisy = synth.mix_at_snr(y, synth.pink_noise(seed, len(y)), 0.0).astype(np.float32)
    ref, q = reference_peaks(y, cfg), query_peaks(noisy, cfg)
    near = (np.abs(q.time[None, :] - ref.time[:, None]) <= 1) & (np.abs(q.freq[None, :] - ref.freq[:, None]) <= 1.5)
    return float(near.any(axis=1).mean())


@pytest.mark.parametrize("seed", [1, 2, 6])
def test_level_ranking_keeps_the_peaks_broadband_noise_leaves(seed):
    assert _survival(CFG, seed) > _survival(replace(CFG, level_weight=0.0), seed)


def test_reference_anchors_pair_with_their_strongest_nearby_targets():
    """An anchor followed by 8 peaks, the 2nd, 5th, 7th and 8th strongest: a pool of 8 pairs it with those, no
    pool with the 4 nearest."""
    strength = np.array([50, 1, 9, 2, 3, 8, 4, 7, 6], np.float32)
    peaks = Peaks(np.arange(9, dtype=np.float32) * 2, np.full(9, 100.0, np.float32), strength)
    first = lambda h, t: sorted(hash_fields(h[t == 0])[2].tolist())     # time deltas of anchor 0's pairs
    assert first(*pair_hashes(peaks, CFG, 4)) == [2, 4, 6, 8]
    assert first(*pair_hashes(peaks, CFG, 4, pool=8)) == [4, 10, 14, 16]


def _pairs_one_by_one(peaks: Peaks, cfg: LandmarkConfig, fanout: int, speed: float, pool: int | None):
    """pair_hashes written anchor by anchor: the targets in the zone, nearest first, then the pool's strongest."""
    t = peaks.time * np.float32(speed)
    fq = np.floor(peaks.freq / np.float32(speed * cfg.freq_quant)).astype(np.int64)
    out = []
    for a in range(len(t)):
        zone = [b for b in range(a + 1, len(t)) if cfg.dt_min <= np.rint(t[b] - t[a]) <= cfg.dt_max
                and abs(fq[b] - fq[a]) <= cfg.df_max // cfg.freq_quant]
        if pool is not None and pool > fanout:
            zone = sorted(zone[:pool], key=lambda b: (-peaks.strength[b], b))[:fanout]
        for b in sorted(zone[:fanout]):
            dt, df = int(np.rint(t[b] - t[a])), int(fq[b] - fq[a])
            out.append(((int(fq[a]) << 14) | ((df + 128) << 6) | dt, int(np.rint(t[a]))))
    return out


@pytest.mark.parametrize("fanout, speed, pool", [(32, 1.0, None), (4, 1.02, None), (1, 0.97, None), (4, 1.0, 8),
                                                 (2, 1.0, 50), (0, 1.0, None)])
def test_pair_hashes_equal_pairing_anchor_by_anchor(fanout, speed, pool):
    rng = np.random.default_rng(fanout)
    n = 300
    peaks = Peaks(np.sort(rng.integers(0, 400, n)).astype(np.float32), rng.uniform(26, 870, n).astype(np.float32),
                  rng.normal(10, 5, n).astype(np.float32))
    h, t = pair_hashes(peaks, CFG, fanout, speed, pool=pool)
    assert list(zip(h.tolist(), t.tolist())) == _pairs_one_by_one(peaks, CFG, fanout, speed, pool)


@pytest.mark.parametrize("seed", [1, 5])
def test_peak_prominence_is_height_over_the_whitening_mean(seed):
    """With one frame of persistence and no level term, a peak's strength is its dB over scipy's uniform filter
    of the band (the peak finder reads that mean at the peaks only)."""
    from scipy.ndimage import uniform_filter

    from audioid.fingerprint.landmarks import log_spectrogram

    cfg = replace(CFG, persist_frames=1, level_weight=0.0)
    y = synth.mix_at_snr(synth.music_track(seed, 10.0, cfg.sample_rate),
                         synth.pink_noise(seed, 10 * cfg.sample_rate), 10.0).astype(np.float32)
    peaks = query_peaks(y, cfg)
    bin_hz = cfg.sample_rate / cfg.n_fft
    lo, hi = int(np.ceil(cfg.fmin_hz / bin_hz)), int(np.floor(cfg.fmax_hz / bin_hz))
    band = log_spectrogram(y, cfg)[:, lo - 1: hi + 2]
    mean = uniform_filter(band, size=(cfg.whiten_time_frames, cfg.whiten_freq_bins), mode="nearest")
    t, f = peaks.time.astype(int), np.rint(peaks.freq).astype(int) - (lo - 1)
    ok = np.abs(peaks.freq - np.rint(peaks.freq)) < 0.49        # the bin is unambiguous
    assert ok.mean() > 0.9 and len(peaks) > 100
    assert np.array_equal(peaks.strength[ok], (band - mean)[t[ok], f[ok]])


def test_postings_lookup_matches_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    bits = 23
    hashes = rng.integers(0, 2 ** bits, 50_000).astype(np.uint32)
    hashes[:500] = 12345  # a hot hash
    values = rng.integers(0, 2 ** 31, len(hashes)).astype(np.uint32)
    write_segment(str(tmp_path / "seg"), hashes, values, np.array([[0, 10, 1]]), bits)
    seg = Segment.open(str(tmp_path / "seg"))
    assert len(seg) == len(hashes)
    q = np.concatenate([hashes[rng.integers(0, len(hashes), 200)], [12345, 2 ** bits - 1]]).astype(np.uint32)
    qidx, vals = seg.lookup(q, max_postings=10_000)
    got = sorted(zip(q[qidx].tolist(), vals.tolist()))
    want = sorted((int(h), int(v)) for h in set(q.tolist()) for hh, v in zip(hashes, values) if hh == h
                  for _ in range(int(np.sum(q == h))))
    assert got == want
    # Hot hashes are skipped, not truncated.
    qidx, _ = seg.lookup(np.array([12345], np.uint32), max_postings=100)
    assert len(qidx) == 0


def test_postings_ranges_at_the_top_of_a_bucket(tmp_path):
    """Low half 0xFFFF is the last value of its bucket: its range runs to the bucket's end (the search for the
    next value wraps to 0), in a middle bucket as in the last; and ranges() equals a brute-force count."""
    rng = np.random.default_rng(1)
    bits = 20
    hashes = rng.integers(0, 2 ** bits, 20_000).astype(np.uint32)
    tops = np.array([(b << 16) | 0xFFFF for b in (0, 3, 2 ** (bits - 16) - 1)], np.uint32)
    hashes = np.concatenate([hashes, np.repeat(tops, [3, 5, 2]), [(4 << 16)]]).astype(np.uint32)
    values = np.arange(len(hashes), dtype=np.uint32)
    write_segment(str(tmp_path / "seg"), hashes, values, np.array([[0, 10, 1]]), bits)
    seg = Segment.open(str(tmp_path / "seg"))
    q = np.concatenate([tops, hashes[rng.integers(0, len(hashes), 500)], [2 ** bits - 2, 2 ** 22]]).astype(np.uint32)
    lo, hi = seg.ranges(q)
    stored = seg.hashes()
    assert all((stored[a:b] == h).all() for h, a, b in zip(q.tolist(), lo.tolist(), hi.tolist()))
    assert (hi - lo).tolist() == [int(np.sum(hashes == h)) for h in q.tolist()]
    assert (hi - lo)[:3].tolist() == [3, 5, 2]
    # Over max_postings: an empty range, not a truncated one.
    lo, hi = seg.ranges(tops, max_postings=2)
    assert (hi - lo).tolist() == [0, 0, 2]


def test_unique_inverse_equals_numpy():
    from audioid.index.match import _unique_inverse

    rng = np.random.default_rng(2)
    for h in (np.zeros(0, np.uint32), np.array([7], np.uint32), rng.integers(0, 2 ** 32, 5000, dtype=np.uint32),
              rng.integers(0, 50, 5000).astype(np.uint32)):
        uniq, inverse = _unique_inverse(h)
        want_uniq, want_inverse = np.unique(h, return_inverse=True)
        assert np.array_equal(uniq, want_uniq) and np.array_equal(inverse, want_inverse.ravel())


def test_build_identify_offset_and_negatives(refs, tmp_path):
    report = build_index(reference_specs(str(refs)), tmp_path / "idx", jobs=1)
    assert [t.label for t in report.added] == ["song1", "song2", "song3", "song4"]
    ident = Identifier.open(tmp_path / "idx")
    y, _ = sf.read(refs / "song3.wav", dtype="float32")
    q = _write(tmp_path / "q.wav", y[int(7.5 * SR): int(17.5 * SR)])
    r = ident.identify_file(str(q))
    assert (r.status, r.label) == ("match", "song3")
    assert abs(r.offset_s - 7.5) < 0.1 and r.confidence > 0.9
    # Unknown music and speech must not be named as the least-bad track.
    for name, y in {"unknown": synth.music_track(999, 10.0, SR), "speech": synth.speech_like(3, 10.0, SR),
                    "noise": synth.pink_noise(4, 10 * SR)}.items():
        r = ident.identify_file(str(_write(tmp_path / f"{name}.wav", y)))
        assert r.status == "no_match", (name, r)


def test_add_equals_one_build_and_needs_no_rebuild(refs, tmp_path):
    specs = reference_specs(str(refs))
    build_index(specs, tmp_path / "whole", jobs=1)
    build_index(specs[:2], tmp_path / "grown", jobs=1)
    ident_before = Identifier.open(tmp_path / "grown")
    rep = add_to_index(specs[2:], tmp_path / "grown", jobs=1)
    assert len(rep.added) == 2
    whole, grown = Identifier.open(tmp_path / "whole"), Identifier.open(tmp_path / "grown")
    assert len(grown.reader.segments) == 2
    for i in range(1, 5):
        y, _ = sf.read(refs / f"song{i}.wav", dtype="float32")
        q = str(_write(tmp_path / f"q{i}.wav", y[5 * SR: 15 * SR]))
        a, b = whole.identify_file(q), grown.identify_file(q)
        assert (a.status, a.label, a.track_id, a.offset_s, a.score) == (b.status, b.label, b.track_id, b.offset_s,
                                                                          b.score)
        # The embedding side too: same vectors, same neighbours, same vote.
        assert a.neighbours and a.neighbours[0]["label"] == f"song{i}"
        assert (a.klass, a.class_confidence, a.neighbours) == (b.klass, b.class_confidence, b.neighbours)
    # A reader opened before the add still sees its own generation, consistently.
    y, _ = sf.read(refs / "song4.wav", dtype="float32")
    assert ident_before.identify_file(str(_write(tmp_path / "q4b.wav", y[:10 * SR]))).status == "no_match"


def test_duplicates_are_not_indexed_twice(refs, tmp_path):
    (tmp_path / "src").mkdir()
    for name in ("a.wav", "copy-of-a.wav"):
        (tmp_path / "src" / name).write_bytes((refs / "song1.wav").read_bytes())
    rep = build_index(reference_specs(str(tmp_path / "src")), tmp_path / "idx", jobs=1)
    assert len(rep.added) == 1 and len(rep.duplicates) == 1
    rep = add_to_index(reference_specs(str(refs)), tmp_path / "idx", jobs=1)
    assert len(rep.added) == 3 and rep.duplicates[0][1] == 1


def test_bad_files_are_reported_and_skipped(refs, tmp_path):
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "text.mp3").write_text("not audio at all\n" * 100)
    specs = [ReferenceSpec(str(refs / "song1.wav"), "ok"), ReferenceSpec(str(tmp_path / "empty.mp3"), "e"),
             ReferenceSpec(str(tmp_path / "text.mp3"), "t"), ReferenceSpec(str(tmp_path / "missing.wav"), "m")]
    rep = build_index(specs, tmp_path / "idx", jobs=2)
    assert [t.label for t in rep.added] == ["ok"]
    failed = dict(rep.failed)
    assert set(failed) == {str(tmp_path / n) for n in ("empty.mp3", "text.mp3", "missing.wav")}
    for path, msg in failed.items():
        assert path in msg


def test_rebuild_swaps_atomically_and_collects_garbage(refs, tmp_path):
    specs = reference_specs(str(refs))
    idx = tmp_path / "idx"
    build_index(specs[:1], idx, jobs=1)
    old = IndexReader(str(idx))
    (idx / ".staging-leftover").mkdir()  # as a crashed writer would leave it
    build_index(specs, idx, jobs=1)
    new = IndexReader(str(idx))
    assert new.generation == old.generation + 1
    assert new.catalog.totals()["tracks"] == 4 and old.catalog.totals()["tracks"] == 1
    names = set(os.listdir(idx))
    assert ".staging-leftover" not in names and old.manifest["catalog"] not in names
    assert set(os.listdir(idx / "postings")) == set(new.manifest["segments"])


@pytest.mark.parametrize("write", ["add", "relabel", "remove"])
def test_check_and_the_next_write_agree_on_leftovers(refs, tmp_path, write):
    specs = reference_specs(str(refs))
    idx = tmp_path / "idx"
    build_index(specs[:2], idx, jobs=1)
    m = read_manifest(str(idx))
    leftovers = {".staging-1": "dir", ".MANIFEST.json.tmp1": "file", "catalog-000099.sqlite": "file",
                 "postings/seg-000099-deadbeef": "dir"}
    for rel, kind in leftovers.items():
        (idx / rel).mkdir() if kind == "dir" else (idx / rel).write_bytes(b"x")
    in_use = idx / (m["catalog"] + "-journal")        # a live catalog's SQLite side file
    in_use.write_bytes(b"")
    rep = check_index(str(idx))
    assert rep.ok, rep.errors
    assert {w.split(":")[0] for w in rep.warnings} == set(leftovers)
    # Every writer removes them, catalog-only changes too.
    {"add": lambda: add_to_index(specs[2:3], idx, jobs=1),
     "relabel": lambda: relabel_in_index(str(idx), 1, label="renamed"),
     "remove": lambda: remove_from_index(str(idx), [2])}[write]()
    after = set(os.listdir(idx)) | {f"postings/{n}" for n in os.listdir(idx / "postings")}
    assert not set(leftovers) & after
    assert check_index(str(idx)).warnings == []


def test_a_first_build_interrupted_can_be_run_again(refs, tmp_path):
    """Ctrl-C during the first build leaves the writer's LOCK alone in the folder: that is not a foreign folder."""
    def interrupt(_analysis):
        raise KeyboardInterrupt

    idx = tmp_path / "idx"
    with pytest.raises(KeyboardInterrupt):
        build_index(reference_specs(str(refs)), idx, jobs=1, progress=interrupt)
    assert os.listdir(idx) == ["LOCK"]
    build_index(reference_specs(str(refs))[:2], idx, jobs=1)
    assert IndexReader(str(idx)).catalog.count() == 2


def test_foreign_folder_and_future_format_are_refused(refs, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(IndexStoreError, match="not an ml-audio-id index"):
        build_index(reference_specs(str(refs)), tmp_path / "photos")
    assert os.listdir(tmp_path / "photos") == ["cat.jpg"]
    idx = tmp_path / "idx"
    build_index(reference_specs(str(refs))[:1], idx, jobs=1)
    manifest = json.loads((idx / "MANIFEST.json").read_text())
    (idx / "MANIFEST.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(IndexStoreError, match="format version 99 is not supported"):
        Identifier.open(idx)
    with pytest.raises(IndexStoreError, match="no such index"):
        Identifier.open(tmp_path / "nowhere")


def test_catalog_gone_under_a_reader_is_an_index_error(refs, tmp_path):
    # What a reader meets when a writer's merge removed the catalog its MANIFEST names: an IndexStoreError
    # (which LiveIndex retries with the newer MANIFEST), not a bare sqlite3 error.
    idx = tmp_path / "idx"
    build_index(reference_specs(str(refs))[:1], idx, jobs=1)
    os.remove(idx / json.loads((idx / "MANIFEST.json").read_text())["catalog"])
    with pytest.raises(IndexStoreError, match="cannot open the catalog"):
        IndexReader(str(idx))


def test_second_writer_fails_clearly(refs, tmp_path):
    idx = tmp_path / "idx"
    build_index(reference_specs(str(refs))[:1], idx, jobs=1)
    held, release = threading.Event(), threading.Event()

    def hold():
        with writer_lock(str(idx)):
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        with pytest.raises(IndexStoreError, match="another process is writing"):
            add_to_index(reference_specs(str(refs)), idx, jobs=1)
    finally:
        release.set()
        t.join()
    assert IndexReader(str(idx)).catalog.totals()["tracks"] == 1


def test_false_alarm_expectation_behaves():
    # More votes -> fewer expected chance piles; more background hits or a bigger index -> more.
    base = false_alarms(20, 5000, 1_000_000, 13, 16.0)
    assert false_alarms(30, 5000, 1_000_000, 13, 16.0) < base
    assert false_alarms(20, 50_000, 1_000_000, 13, 16.0) > base
    assert false_alarms(20, 5000, 1_000_000, 1, 16.0) < base
    assert false_alarms(0, 5000, 1_000_000, 13, 16.0) == pytest.approx(1_000_000 / 3 * 13)


@pytest.mark.parametrize("shape", [(305, 860), (1, 5), (3, 40), (50, 1)])
@pytest.mark.parametrize("size", [1, 3, 9, 31])
def test_running_max_equals_scipy_maximum_filter(shape, size):
    from scipy.ndimage import maximum_filter1d

    from audioid.fingerprint.landmarks import running_max

    a = np.random.default_rng(size).random(shape).astype(np.float32)
    for axis in (0, 1):
        assert np.array_equal(running_max(a, size, axis), maximum_filter1d(a, size, axis=axis, mode="nearest"))


def _query(refs: Path, tmp_path: Path, label: str, start_s: float = 5.0) -> str:
    y, _ = sf.read(refs / f"{label}.wav", dtype="float32")
    return str(_write(tmp_path / f"q-{label}.wav", y[int(start_s * SR): int((start_s + 10) * SR)]))


def test_remove_and_relabel_take_effect_without_rebuild(refs, tmp_path):
    idx = tmp_path / "idx"
    build_index(reference_specs(str(refs)), idx, jobs=1, who="tester")
    before = Identifier.open(idx)
    q2, q3 = _query(refs, tmp_path, "song2"), _query(refs, tmp_path, "song3")
    gone = remove_from_index(str(idx), ["song2"], who="tester")
    assert [t.label for t in gone] == ["song2"]
    after = Identifier.open(idx)
    r2 = after.identify_file(q2)
    assert r2.status == "no_match"
    assert "song2" not in [n["label"] for n in r2.neighbours]   # its vectors are gone too
    assert after.identify_file(q3).label == "song3"
    assert after.reader.catalog.totals()["tracks"] == 3
    # A reader of the previous generation keeps its consistent view.
    assert before.identify_file(q2).label == "song2"
    t3 = after.reader.catalog.by_label("song3")[0]
    relabel_in_index(str(idx), t3.id, label="Third Song", klass="music", who="editor")
    r = Identifier.open(idx).identify_file(q3)
    assert (r.label, r.track_id) == ("Third Song", t3.id)
    with pytest.raises(IndexStoreError, match="no track with id or label 'nope'"):
        remove_from_index(str(idx), ["nope"])
    with pytest.raises(ValueError, match="class must be one of"):
        relabel_in_index(str(idx), t3.id, klass="jazz")
    log = IndexReader(str(idx)).catalog.log_entries()
    assert [(e["action"], e["who"]) for e in log] == [("add", "tester")] * 4 + [("remove", "tester"),
                                                                               ("relabel", "editor")]
    assert log[4]["content_hash"] == gone[0].content_hash


def _answers(ident: Identifier, queries: list[str]) -> list[tuple]:
    out = []
    for q in queries:
        r = ident.identify_file(q)
        out.append((r.status, r.label, r.score, r.confidence, r.offset_s, r.klass, r.class_confidence,
                    [n["label"] for n in r.neighbours]))
    return out


def test_merging_segments_keeps_answers_and_drops_removed_tracks(refs, tmp_path, monkeypatch):
    import audioid.index.build as build
    from audioid.index.check import check_index

    specs = reference_specs(str(refs))
    idx = tmp_path / "idx"
    build_index(specs[:1], idx, jobs=1)
    for s in specs[1:]:
        add_to_index([s], idx, jobs=1)
    build.remove_from_index(str(idx), ["song3"])
    queries = [_query(refs, tmp_path, f"song{i}") for i in range(1, 5)]
    old = Identifier.open(idx)
    before = _answers(old, queries)
    assert len(old.reader.segments) == 4 and before[2][0] == "no_match"
    build.merge_segments(idx)
    new = Identifier.open(idx)
    assert len(new.reader.segments) == 1 and new.reader.manifest["removed"] == []
    assert _answers(new, queries) == before
    assert new.reader.catalog.totals()["tracks"] == 3 and check_index(idx).ok and not check_index(idx).warnings
    assert _answers(old, queries) == before          # a reader of the previous generation is unaffected
    # Adds merge their newer segments by themselves past MAX_SEGMENTS.
    monkeypatch.setattr(build, "MAX_SEGMENTS", 2)
    grown = tmp_path / "grown"
    build_index(specs[:1], grown, jobs=1)
    for s in specs[1:]:
        add_to_index([s], grown, jobs=1)
        assert len(IndexReader(str(grown)).segments) <= 2
    whole = tmp_path / "whole"
    build_index(specs, whole, jobs=1)
    assert _answers(Identifier.open(grown), queries) == _answers(Identifier.open(whole), queries)


def test_removed_tracks_do_not_inflate_the_no_match_decision(refs, tmp_path):
    # After a removal, the significance of a pile must be what an index without that track gives: the
    # removed frames can hold no hits, so counting them would make chance piles look rarer than they are.
    specs = reference_specs(str(refs))
    build_index(specs, tmp_path / "removed", jobs=1)
    remove_from_index(str(tmp_path / "removed"), ["song2", "song3"])
    build_index([s for s in specs if s.label not in ("song2", "song3")], tmp_path / "without", jobs=1)
    a, b = Identifier.open(tmp_path / "removed"), Identifier.open(tmp_path / "without")
    assert a.reader.live_frames == b.reader.frames < a.reader.frames
    q = _query(refs, tmp_path, "song3")
    ra, rb = a.identify_file(q), b.identify_file(q)
    assert ra.status == rb.status == "no_match"
    assert (ra.score, ra.confidence) == (rb.score, rb.confidence)


def test_label_log_survives_rebuild_and_from_log_replays_it(refs, tmp_path):
    idx = tmp_path / "idx"
    specs = reference_specs(str(refs))
    build_index(specs, idx, jobs=1)
    cat = IndexReader(str(idx)).catalog
    relabel_in_index(str(idx), cat.by_label("song1")[0].id, label="Renamed", klass="both")
    remove_from_index(str(idx), ["song4"])
    # A plain rebuild keeps the log but takes the labels from the source again.
    build_index(specs, idx, jobs=1)
    reader = IndexReader(str(idx))
    assert sorted(t.label for t in reader.catalog.tracks()) == ["song1", "song2", "song3", "song4"]
    assert len(reader.catalog.log_entries()) == 4 + 2  # re-reading known recordings is no label change
    # --from-log replays it: the relabel holds and the removed recording stays out.
    rep = build_index(specs, idx, jobs=1, from_log=True)
    assert [p for p, _ in rep.skipped] == [str(refs / "song4.wav")]
    tracks = {t.label: t for t in IndexReader(str(idx)).catalog.tracks()}
    assert sorted(tracks) == ["Renamed", "song2", "song3"] and tracks["Renamed"].klass == "both"


def test_uncommitted_writes_are_forgotten(refs, tmp_path):
    from audioid.index.catalog import Catalog

    idx = tmp_path / "idx"
    specs = reference_specs(str(refs))
    build_index(specs[:3], idx, jobs=1)
    manifest = json.loads((idx / "MANIFEST.json").read_text())
    # A remover that died after marking rows but before swapping the MANIFEST:
    cat = Catalog(str(idx / manifest["catalog"]), manifest["segments"])
    cat.mark_removed([1], manifest["generation"] + 1)
    cat.log([{"at": "x", "who": "ghost", "action": "remove", "content_hash": "h", "track_id": 1}],
            manifest["generation"] + 1)
    cat.close()
    assert IndexReader(str(idx)).catalog.totals()["tracks"] == 3  # readers never saw it
    add_to_index(specs[3:], idx, jobs=1)
    reader = IndexReader(str(idx))
    assert reader.catalog.totals()["tracks"] == 4
    assert all(e["who"] != "ghost" for e in reader.catalog.log_entries())


def test_whole_long_file_is_scanned_in_windows(refs, tmp_path):
    build_index(reference_specs(str(refs)), tmp_path / "idx", jobs=1)
    ident = Identifier.open(tmp_path / "idx")
    y, _ = sf.read(refs / "song2.wav", dtype="float32")
    talk = synth.speech_like(7, 50.0, SR)
    long = _write(tmp_path / "programme.wav", np.concatenate([talk, y[:20 * SR], talk[:20 * SR]]))
    r = ident.identify_file(str(long), outro_seconds=0)
    assert (r.status, r.label) == ("match", "song2")
    assert 49 <= r.query_start_s and r.query_end_s <= 71
    assert r.offset_s == pytest.approx(r.query_start_s - 50.0, abs=0.1)  # where the song plays in the file
    assert ident.identify_file(str(long), outro_seconds=10).status == "no_match"  # the outro is talk


def test_a_merged_all_matches_record_takes_the_class_most_of_its_windows_got():
    from audioid.index.identify import _class_of_windows
    from audioid.index.result import Result

    def window(klass, conf, who):
        return Result(path="x", status="match", klass=klass, class_confidence=conf,
                      neighbours=[{"track_id": who, "label": str(who), "similarity": conf}])

    # A first window of silence read as a pause in speech, then music: music wins, and its confidence counts
    # the windows that said so.
    rec = replace(window("dialogue", 0.9, 1))
    _class_of_windows(rec, [window("dialogue", 0.9, 1), window("music", 0.8, 2), window("music", 1.0, 3),
                            window("unknown", 0.0, 4)])
    assert rec.klass == "music" and rec.class_confidence == pytest.approx((0.8 + 1.0) / 4)
    assert rec.neighbours[0]["track_id"] == 3
    # A tie goes to the more confident class; all abstaining stays unknown.
    rec = replace(window("music", 0.6, 1))
    _class_of_windows(rec, [window("music", 0.6, 1), window("both", 0.9, 2)])
    assert rec.klass == "both"
    rec = replace(window("unknown", 0.0, 1))
    _class_of_windows(rec, [window("unknown", 0.0, 1), window("unknown", 0.0, 2)])
    assert rec.klass == "unknown" and rec.class_confidence == 0.0
