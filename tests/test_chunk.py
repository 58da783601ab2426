"""``audioid chunk`` through the real command: end-first pieces, the processed log, skips, failures, formats."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from audioid import synth
from audioid.index.chunking import ChunkOptions, chunk_folder, summary

from conftest import run_cli

SR = 16000


@pytest.fixture()
def source(tmp_path):
    src = tmp_path / "src"
    (src / "show").mkdir(parents=True)
    y = synth.music_track(1, 35.0, SR)
    sf.write(src / "show" / "a.wav", y, SR, subtype="FLOAT")
    synth.write_mp3(src / "b.mp3", synth.speech_like(2, 23.0, 44100), 44100)
    sf.write(src / "short.wav", synth.speech_like(3, 4.0, SR), SR)
    (src / "broken.mp3").write_text("not audio at all\n")
    return src, y


def test_chunk_cuts_from_the_end_logs_and_skips(source, tmp_path):
    src, y = source
    out = tmp_path / "out"
    proc = run_cli("chunk", src, out, "--summary")
    assert proc.returncode == 0, proc.stderr
    assert "2 file(s) cut into 5 piece(s)" in proc.stderr and "2 failed" in proc.stderr
    assert "broken.mp3: not an audio file" in proc.stderr
    assert "short.wav: shorter than 10 s" in proc.stderr
    assert sorted(os.listdir(out / "show")) == ["a_chunk_1.wav", "a_chunk_2.wav", "a_chunk_3.wav"]
    assert sorted(p for p in os.listdir(out) if p.startswith("b_")) == ["b_chunk_1.wav", "b_chunk_2.wav"]
    # _chunk_1 is the outro: the last 10 s of the file, sample for sample (16-bit PCM).
    last, sr = sf.read(out / "show" / "a_chunk_1.wav", dtype="float32")
    assert sr == SR and np.allclose(last, y[-10 * SR:], atol=1e-4)
    first, _ = sf.read(out / "show" / "a_chunk_3.wav", dtype="float32")
    assert np.allclose(first, y[5 * SR:15 * SR], atol=1e-4)
    assert sf.info(out / "b_chunk_1.wav").samplerate == 44100
    assert "2 file(s) chunked, 2 failed, 5 piece(s)" in proc.stdout
    # Again, with a renamed copy: nothing is redone; failures are retried and reported again.
    shutil.copy(src / "show" / "a.wav", src / "renamed.wav")
    again = run_cli("chunk", src, out)
    assert "0 file(s) cut" in again.stderr and "3 already done" in again.stderr and "2 failed" in again.stderr
    assert not (out / "renamed_chunk_1.wav").exists()
    # A changed file is redone, and its pieces that no longer exist are removed.
    sf.write(src / "show" / "a.wav", y[:22 * SR], SR, subtype="FLOAT")
    third = run_cli("chunk", src, out)
    assert "1 file(s) cut into 2 piece(s)" in third.stderr
    assert sorted(os.listdir(out / "show")) == ["a_chunk_1.wav", "a_chunk_2.wav"]
    log = [json.loads(line) for line in (out / "chunked.jsonl").read_text().splitlines()]
    assert {e["status"] for e in log} == {"done", "failed"} and all(e["content_hash"] for e in log if e["status"] == "done")


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3"])
def test_chunk_formats_and_keep_short(source, tmp_path, fmt):
    src, _ = source
    report = chunk_folder(src / "show", tmp_path / fmt, ChunkOptions(seconds=15, keep_short=True, fmt=fmt), jobs=1)
    names = sorted(c["file"] for r in report.of("done") for c in r.chunks)
    assert names == [f"a_chunk_{i}.{fmt}" for i in (1, 2, 3)]
    durations = [sf.info(tmp_path / fmt / n).duration for n in names]
    assert durations[0] == pytest.approx(15, abs=0.1) and durations[2] == pytest.approx(5, abs=0.1)
    assert summary(tmp_path / fmt)["chunks"] == 3


def test_chunk_parallel_matches_serial(source, tmp_path):
    src, _ = source
    a = chunk_folder(src, tmp_path / "serial", jobs=1)
    b = chunk_folder(src, tmp_path / "parallel", jobs=2)
    assert [(r.source, r.status, r.chunks) for r in a.results] == [(r.source, r.status, r.chunks) for r in b.results]
