"""Crash safety: `kill -9` of build, add, remove, relabel and compact at random moments never leaves a broken index.

Each trial copies a prepared index, starts the real `audioid` command on it, kills it with SIGKILL after a random
delay, then checks that the index opens, passes `audioid index check` and holds exactly the state before or the
state after the command; finally the same command run to completion must reach the "after" state with nothing
left over.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioid import synth
from audioid.index.build import add_to_index, build_index, merge_segments, relabel_in_index, remove_from_index
from audioid.index.check import check_index
from audioid.index.sources import reference_specs
from audioid.index.store import IndexReader, collect_garbage, read_manifest

from conftest import audioid_command

SR = 16000
TRIALS_PER_OP = 11     # 5 operations: 55 kills


def state(idx: Path) -> tuple:
    """What a reader sees, without generation numbers: live tracks, their labels and the label log."""
    reader = IndexReader(str(idx))
    try:
        tracks = sorted((t.content_hash, t.label, t.klass) for t in reader.catalog.tracks())
        log = [(e["action"], e["content_hash"], e["label"], e["class"]) for e in reader.catalog.log_entries()]
        return tuple(tracks), tuple(log), len(reader.segments)
    finally:
        reader.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("crash")
    base, extra = root / "base", root / "extra"
    base.mkdir()
    extra.mkdir()
    for i in range(4):
        sf.write(base / f"song{i}.wav", synth.music_track(700 + i, 12.0, SR), SR)
    for i in range(2):
        sf.write(extra / f"new{i}.wav", synth.music_track(800 + i, 12.0, SR), SR)
    shutil.copytree(base, root / "all")
    for f in extra.iterdir():
        shutil.copy(f, root / "all" / f.name)
    idx = root / "index"
    specs = reference_specs(str(base))
    build_index(specs[:3], idx, jobs=1)
    add_to_index(specs[3:], idx, jobs=1)      # two segments, for compact
    return {"root": root, "base": base, "extra": extra, "all": root / "all", "index": idx}


def _ops(s: dict) -> dict:
    """operation -> (CLI arguments after `audioid`, library call doing the same)"""
    return {
        "build": (["index", "build", str(s["all"]), "--jobs", "1"],
                  lambda idx: build_index(reference_specs(str(s["all"])), idx, jobs=1)),
        "add": (["index", "add", str(s["extra"]), "--jobs", "1"],
                lambda idx: add_to_index(reference_specs(str(s["extra"])), idx, jobs=1)),
        "remove": (["index", "remove", "song1", "song2"],
                   lambda idx: remove_from_index(str(idx), ["song1", "song2"])),
        "relabel": (["index", "relabel", "3", "--label", "Third", "--class", "music"],
                    lambda idx: relabel_in_index(str(idx), 3, label="Third", klass="music")),
        "compact": (["index", "compact"], lambda idx: merge_segments(idx)),
    }


@pytest.mark.parametrize("op", ["build", "add", "remove", "relabel", "compact"])
def test_kill_minus_9_leaves_before_or_after(setup, tmp_path, op):
    args, complete = _ops(setup)[op]
    before = state(setup["index"])
    ref = tmp_path / "ref"
    shutil.copytree(setup["index"], ref)
    t0 = time.monotonic()
    proc = subprocess.run([*audioid_command(), *args, "--index", str(ref)], capture_output=True, text=True)
    full_s = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    after = state(ref)
    assert after != before
    rng = random.Random(f"crash-{op}")
    outcomes = []
    for trial in range(TRIALS_PER_OP):
        idx = tmp_path / f"t{trial}"
        shutil.copytree(setup["index"], idx)
        p = subprocess.Popen([*audioid_command(), *args, "--index", str(idx)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        # Start-up (imports) takes the first part of a run, so kills favour the later part, where it writes.
        time.sleep(rng.uniform(0.3, 1.1) * full_s)
        p.send_signal(signal.SIGKILL)
        p.wait()
        rep = check_index(idx)
        assert rep.ok, (trial, rep.errors)
        got = state(idx)
        assert got in (before, after), f"trial {trial}: a state that is neither before nor after"
        outcomes.append("after" if got == after else "before")
        # The next writer cleans up and completes the operation.  Killed between its commit and its clean-up,
        # an operation leaves only what check calls leftovers, which the next writer's garbage collection removes.
        if got == before or op == "build":
            complete(idx)
        else:
            assert all("the next write removes it" in w for w in check_index(idx).warnings)
            collect_garbage(str(idx), read_manifest(str(idx)))
        rep = check_index(idx)
        assert rep.ok and not rep.warnings, (trial, rep.errors, rep.warnings)
        assert state(idx) == after
        shutil.rmtree(idx)
    print(f"{op}: {len(outcomes)} kills over {full_s:.2f} s runs: {outcomes.count('before')} before, "
          f"{outcomes.count('after')} after")


def test_check_reports_damage(setup, tmp_path):
    def fresh(name: str) -> tuple[Path, Path]:
        idx = tmp_path / name
        shutil.copytree(setup["index"], idx)
        return idx, next((idx / "postings").iterdir())

    idx, seg = fresh("postings")
    assert check_index(idx).ok
    np.save(seg / "values.npy", np.load(seg / "values.npy")[:-5])     # postings and hashes no longer line up
    rep = check_index(idx)
    assert not rep.ok and any(seg.name in e for e in rep.errors)
    proc = subprocess.run([*audioid_command(), "index", "check", "--index", str(idx)], capture_output=True,
                          text=True)
    assert proc.returncode == 1 and "INCONSISTENT" in proc.stdout
    idx, seg = fresh("vectors")
    (seg / "vectors.faiss").write_bytes(b"garbage")
    assert not check_index(idx).ok
    # Damage the reader opens fine: the check's own segment and vector tests must find it.
    idx, seg = fresh("tracks")
    tracks = np.load(seg / "tracks.npy")
    tracks[:, 1] = 1                                                   # track table shorter than its postings
    np.save(seg / "tracks.npy", tracks)
    assert any("outside every track" in e for e in check_index(idx).errors)
    idx, seg = fresh("no-vectors")
    os.remove(seg / "vectors.faiss")
    assert any("no vectors for its" in e for e in check_index(idx).errors)
    idx, seg = fresh("catalog")
    with sqlite3.connect(next(idx.glob("catalog-*.sqlite"))) as db:
        db.execute("DELETE FROM tracks WHERE id = 2")
    assert any("track table and the catalog disagree" in e for e in check_index(idx).errors)
    idx, seg = fresh("manifest")
    os.remove(idx / "MANIFEST.json")
    assert not check_index(idx).ok
