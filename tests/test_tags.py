"""Title and artist from files' own tags, and references indexed from a folder named by them."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from audioid import build_index, synth
from audioid.fingerprint.audio import load
from audioid.fingerprint.decode import ffmpeg_available
from audioid.fingerprint.tags import MAX_TAG_CHARS, read_tags
from audioid.index.store import IndexReader

SR = 16000


def _write(path, seed: int, **tags: str) -> None:
    with sf.SoundFile(path, "w", SR, 1, format=path.suffix[1:].upper()) as f:
        for key, value in tags.items():
            setattr(f, key, value)
        f.write(synth.music_track(seed, 20.0, SR))


@pytest.mark.parametrize("suffix", [".flac", ".wav", ".ogg"])
def test_title_and_artist_are_read_from_the_file(tmp_path, suffix):
    path = tmp_path / f"song{suffix}"
    _write(path, 1, title="Copper Lanterns", artist="The Examples")
    assert read_tags(path) == {"title": "Copper Lanterns", "artist": "The Examples"}


def test_untagged_unreadable_and_missing_files_have_no_tags(tmp_path):
    _write(tmp_path / "plain.flac", 2)
    (tmp_path / "noise.mp3").write_bytes(np.random.default_rng(0).bytes(5000))
    assert read_tags(tmp_path / "plain.flac") == {}
    assert read_tags(tmp_path / "noise.mp3") == {}
    assert read_tags(tmp_path / "nothere.wav") == {}


def test_hostile_tags_become_one_short_line_of_text(tmp_path):
    path = tmp_path / "hostile.flac"
    _write(path, 3, title="Line one\nline two\t\x07 \u202egnp.exe", artist="x" * 5000)
    tags = read_tags(path)
    assert tags["title"] == "Line one line two gnp.exe"
    assert tags["artist"] == "x" * MAX_TAG_CHARS


@pytest.mark.skipif(not ffmpeg_available(), reason="needs ffmpeg to write the tags")
@pytest.mark.parametrize("suffix, codec", [(".mp3", "libmp3lame"),    # ID3, read by libsndfile
                                           (".m4a", "aac")])           # MP4 atoms: only ffprobe reads them
def test_id3_and_mp4_tags(tmp_path, suffix, codec):
    src, out = tmp_path / "src.wav", tmp_path / f"song{suffix}"
    sf.write(src, synth.music_track(4, 5.0, SR), SR)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-metadata", "title=Night Ferry", "-metadata",
                    "artist=Harbour Band", "-c:a", codec, str(out)], check=True)
    assert read_tags(out) == {"title": "Night Ferry", "artist": "Harbour Band"}
    # What only ffmpeg decodes brings its tags along (probed once), so an index build does not probe it again.
    decoded = load(out, None).tags
    assert (decoded is None) if suffix == ".mp3" else decoded["title"] == "Night Ferry"
    assert read_tags(out, decoded) == read_tags(out)


def test_a_folder_is_indexed_with_its_tags_and_a_manifest_wins_over_them(tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    _write(refs / "01-copper.flac", 11, title="Copper Lanterns", artist="The Examples")
    _write(refs / "02-ferry.flac", 12, title="Night Ferry")
    _write(refs / "03-plain.wav", 13)
    (tmp_path / "refs.csv").write_text("path,label,title\nrefs/01-copper.flac,copper,My Own Title\n")
    build_index(refs, tmp_path / "idx", jobs=1)
    build_index(tmp_path / "refs.csv", tmp_path / "idx2", jobs=1)
    got = {}
    for idx in ("idx", "idx2"):
        reader = IndexReader(str(tmp_path / idx))
        try:
            got[idx] = {t.label: (t.title, t.artist) for t in reader.catalog.tracks()}
        finally:
            reader.close()
    assert got["idx"] == {"01-copper": ("Copper Lanterns", "The Examples"), "02-ferry": ("Night Ferry", None),
                          "03-plain": (None, None)}
    assert got["idx2"] == {"copper": ("My Own Title", "The Examples")}
